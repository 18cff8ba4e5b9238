//! Every request the proxy sees, plain or from inside an intercepted
//! tunnel, goes through [`handle`]: find the destination in the request
//! itself, check the name, resolve it, check every address, and send the
//! request to exactly the address that was checked.

use super::connector::{self, UpstreamError};
use super::record::{ProxyBody, Record, Scheme, UpBody};
use super::tunnel::{self, Activity, Dest};
use super::Shared;
use crate::network_policy::{normalize_host, Decision};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The CONNECT target an intercepted (or plain-HTTP-in-CONNECT) connection
/// was opened for: every request inside must name it.
pub(crate) struct Target {
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
}

/// What a request needs from its connection.
#[derive(Clone)]
pub(crate) struct Conn {
    pub shared: Arc<Shared>,
    pub activity: Arc<Activity>,
    pub target: Option<Arc<Target>>,
}

const BLOCKED: HeaderName = HeaderName::from_static("x-moat-blocked");
const ERROR: HeaderName = HeaderName::from_static("x-moat-error");

/// Why a request does not go through.
enum Refusal {
    /// The policy said no: 403 with `X-Moat-Blocked`.
    Blocked(String),
    /// Something failed: this status with `X-Moat-Error`.
    Failed(StatusCode, String),
}

pub(crate) async fn handle(
    conn: Conn,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    Ok(if req.method() == Method::CONNECT {
        connect(conn, req, start).await
    } else {
        forward(conn, req, start).await
    })
}

/// A short answer of moat's own: the status, the header saying why, and the
/// reason again as a one-line body.
fn answer(status: StatusCode, refusal_header: HeaderName, reason: &str) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::text(format!("{reason}\n")));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(refusal_header, header_value(reason));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A reason as a header value: visible ASCII only, bounded.
fn header_value(reason: &str) -> HeaderValue {
    let clean: String = reason
        .chars()
        .take(400)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

fn refuse(rec: Record, refusal: Refusal) -> Response<ProxyBody> {
    match refusal {
        Refusal::Blocked(reason) => {
            rec.set_deny(&reason);
            rec.set_status(403);
            answer(StatusCode::FORBIDDEN, BLOCKED, &reason)
        }
        Refusal::Failed(status, reason) => {
            rec.set_reason(&reason);
            rec.set_status(status.as_u16());
            answer(status, ERROR, &reason)
        }
    }
}

/// Host names as moat forwards them: DNS spelling (letters, digits, `-`,
/// `_`, dots) or an IP literal. Anything else never reaches the policy or
/// the URI moat builds.
fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !host.starts_with('.')
        && !host.contains("..")
}

/// The name and port a request goes to, and how.
struct Destination {
    scheme: Scheme,
    host: String,
    port: u16,
}

fn destination(req: &Request<Incoming>, target: Option<&Target>) -> Result<Destination, Refusal> {
    let bad = |s: &str| Refusal::Failed(StatusCode::BAD_REQUEST, s.to_string());
    let Some(target) = target else {
        // A request to the proxy itself: the absolute-form URI names the
        // destination (a proxy ignores Host then: RFC 9112 3.2.2).
        let scheme = match req.uri().scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            Some(s) => return Err(bad(&format!("unsupported URI scheme `{s}`"))),
            None => {
                return Err(bad(
                    "moat's proxy needs an absolute URI (http://host/path) or CONNECT",
                ))
            }
        };
        let auth = req
            .uri()
            .authority()
            .ok_or_else(|| bad("the request URI names no host"))?;
        let host = normalize_host(auth.host());
        if !valid_host(&host) {
            return Err(bad("the request URI names an invalid host"));
        }
        let port = auth.port_u16().unwrap_or(scheme.default_port());
        return Ok(Destination { scheme, host, port });
    };
    // Inside a tunnel: the request's own authority (absolute-form URI, else
    // Host) must be the CONNECT target, so one allowed CONNECT cannot carry
    // requests for other names (to a shared front end, say).
    let auth = match req.uri().authority() {
        Some(a) => a.clone(),
        None => {
            let h = req
                .headers()
                .get(header::HOST)
                .ok_or_else(|| bad("the request has no Host header"))?;
            h.to_str()
                .ok()
                .and_then(|s| s.parse::<Authority>().ok())
                .ok_or_else(|| bad("the request's Host header is not a valid host"))?
        }
    };
    let host = normalize_host(auth.host());
    let port = auth.port_u16().unwrap_or(target.scheme.default_port());
    if host != target.host || port != target.port {
        return Err(Refusal::Blocked(format!(
            "request for {} does not match the CONNECT target {}",
            show(&host, port),
            show(&target.host, target.port)
        )));
    }
    Ok(Destination {
        scheme: target.scheme,
        host,
        port,
    })
}

/// `host:port`, IPv6 in brackets.
fn show(host: &str, port: u16) -> String {
    format!("{}:{port}", bracketed(host))
}

/// A host as URIs and `Host` headers spell it: IPv6 in brackets.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Positive answers of the system resolver, kept briefly: a busy client
/// would otherwise pay a getaddrinfo per request. Only the answer is
/// cached; the policy checks it again on every request.
pub(crate) struct Resolver {
    cache: Mutex<DnsCache>,
}

/// Name -> when it was resolved, what it resolved to.
type DnsCache = HashMap<String, (Instant, Arc<[IpAddr]>)>;

const DNS_TTL: Duration = Duration::from_secs(10);
const DNS_CACHE_MAX: usize = 4096;

impl Resolver {
    pub fn new() -> Resolver {
        Resolver {
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Arc<[IpAddr]>> {
        if let Some((at, ips)) = self.lock().get(host) {
            if at.elapsed() < DNS_TTL {
                return Ok(Arc::clone(ips));
            }
        }
        let mut ips: Vec<IpAddr> = Vec::with_capacity(4);
        for a in tokio::net::lookup_host((host, port)).await? {
            let ip = a.ip();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        if ips.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address",
            ));
        }
        let ips: Arc<[IpAddr]> = ips.into();
        let mut cache = self.lock();
        if cache.len() >= DNS_CACHE_MAX {
            cache.clear();
        }
        cache.insert(host.to_owned(), (Instant::now(), Arc::clone(&ips)));
        Ok(ips)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DnsCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The policy on a destination: the name, then every address it resolves
/// to. Returns the address to connect to.
async fn vet(shared: &Shared, host: &str, port: u16) -> Result<SocketAddr, Refusal> {
    if let Decision::Deny(r) = shared.policy.check_name(host, port) {
        return Err(Refusal::Blocked(r));
    }
    let ips: Arc<[IpAddr]> = match host.parse::<IpAddr>() {
        Ok(ip) => Arc::new([ip.to_canonical()]),
        Err(_) => shared.resolver.resolve(host, port).await.map_err(|e| {
            Refusal::Failed(
                StatusCode::BAD_GATEWAY,
                format!("cannot resolve {host}: {e}"),
            )
        })?,
    };
    if let Decision::Deny(r) = shared.policy.check_addrs(host, port, &ips) {
        return Err(Refusal::Blocked(r));
    }
    Ok(SocketAddr::new(ips[0], port))
}

async fn connect(conn: Conn, mut req: Request<Incoming>, start: Instant) -> Response<ProxyBody> {
    let shared = &conn.shared;
    let (host, port) = match req.uri().authority() {
        Some(a) => (normalize_host(a.host()), a.port_u16()),
        None => (String::new(), None),
    };
    // Only refusals are logged here: an open tunnel logs itself (one line
    // when it closes if it passes bytes through, one line per request
    // inside if it is intercepted).
    let refused = |r: Refusal| {
        let rec = Record::new(
            &shared.sink,
            start,
            Method::CONNECT,
            Scheme::Tunnel,
            host.clone(),
            port.unwrap_or(0),
            "",
        );
        refuse(rec, r)
    };
    if conn.target.is_some() {
        return refused(Refusal::Blocked(
            "CONNECT inside a CONNECT tunnel is not allowed".into(),
        ));
    }
    let Some(port) = port.filter(|_| valid_host(&host)) else {
        return refused(Refusal::Failed(
            StatusCode::BAD_REQUEST,
            "CONNECT needs host:port".to_string(),
        ));
    };
    let addr = match vet(shared, &host, port).await {
        Ok(a) => a,
        Err(r) => return refused(r),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let dest = Dest {
        host,
        port,
        addr,
        start,
    };
    tokio::spawn(tunnel::run(conn.clone(), on_upgrade, dest));
    Response::new(ProxyBody::Empty)
}

/// Headers that belong to one connection and are not forwarded (RFC 9110
/// 7.6.1), besides those the `Connection` header itself names.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::UPGRADE,
];

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers; keeps `Connection: upgrade` and `Upgrade`
/// when `keep_upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| *n != header::UPGRADE)
        .collect();
    for n in named {
        headers.remove(n);
    }
    let upgrade = keep_upgrade
        .then(|| headers.remove(header::UPGRADE))
        .flatten();
    for n in HOP_BY_HOP.iter() {
        headers.remove(n);
    }
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

/// The error an upstream request failed with, in words for the client.
fn upstream_failure(err: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut chain = String::new();
    while let Some(e) = source {
        if let Some(u) = e.downcast_ref::<UpstreamError>() {
            return u.to_string();
        }
        let s = e.to_string();
        if !chain.contains(&s) {
            if !chain.is_empty() {
                chain.push_str(": ");
            }
            chain.push_str(&s);
        }
        source = e.source();
    }
    format!("upstream request failed: {chain}")
}

async fn forward(conn: Conn, mut req: Request<Incoming>, start: Instant) -> Response<ProxyBody> {
    let shared = &conn.shared;
    let dest = destination(&req, conn.target.as_deref());
    let (scheme, host, port) = match &dest {
        Ok(d) => (d.scheme, d.host.clone(), d.port),
        Err(_) => (
            conn.target.as_ref().map_or(Scheme::Http, |t| t.scheme),
            req.uri().host().map(normalize_host).unwrap_or_default(),
            req.uri().port_u16().unwrap_or(0),
        ),
    };
    let rec = Record::new(
        &shared.sink,
        start,
        req.method().clone(),
        scheme,
        host,
        port,
        req.uri().path(),
    );
    if let Err(r) = dest {
        return refuse(rec, r);
    }
    let addr = match vet(shared, rec.host(), port).await {
        Ok(a) => a,
        Err(r) => return refuse(rec, r),
    };

    let upgrade =
        req.headers().contains_key(header::UPGRADE) && connection_has(req.headers(), "upgrade");
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    // A placeholder in the query string goes nowhere but its grant's hosts.
    let (stripped, uses) = shared.grants.strip_query(rec.host(), port, pq);
    for (grant, action) in &uses {
        rec.credential(grant, action);
    }
    let pq = stripped.as_deref().unwrap_or(pq);
    let uri = Uri::builder()
        .scheme(if scheme == Scheme::Https {
            "https"
        } else {
            "http"
        })
        .authority(connector::authority(rec.host(), addr))
        .path_and_query(pq)
        .build();
    let uri = match uri {
        Ok(u) => u,
        Err(e) => {
            return refuse(
                rec,
                Refusal::Failed(StatusCode::BAD_REQUEST, format!("bad request target: {e}")),
            )
        }
    };
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, upgrade);
    let host_header = if port == scheme.default_port() {
        bracketed(rec.host())
    } else {
        show(rec.host(), port)
    };
    match HeaderValue::from_str(&host_header) {
        Ok(v) => {
            parts.headers.insert(header::HOST, v);
        }
        Err(_) => {
            return refuse(
                rec,
                Refusal::Failed(StatusCode::BAD_REQUEST, "invalid host".into()),
            )
        }
    }

    // Credential grants: the token in, placeholders out. Header values are
    // never logged, only the grant and what was done.
    let applied = shared.grants.apply(
        scheme,
        rec.host(),
        port,
        parts.uri.path(),
        &mut parts.headers,
    );
    for (grant, action) in &applied.uses {
        rec.credential(grant, action);
    }
    let redactor = applied.redactor.map(Arc::new);

    let rec = Arc::new(rec);
    let upstream_req = Request::from_parts(parts, UpBody::new(body, Arc::clone(&rec)));
    let mut res = match shared.client.request(upstream_req).await {
        Ok(mut res) => {
            if let Some(r) = &redactor {
                for g in r.headers(res.headers_mut()) {
                    rec.credential(r.name(g), "redact");
                }
            }
            res
        }
        Err(e) => {
            let reason = upstream_failure(&e);
            // A client that hung up mid-body already said why.
            rec.note(&reason);
            rec.set_status(502);
            return answer(StatusCode::BAD_GATEWAY, ERROR, &reason);
        }
    };
    rec.set_status(res.status().as_u16());
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            let reason = "the server switched protocols unasked";
            rec.set_reason(reason);
            rec.set_status(502);
            return answer(StatusCode::BAD_GATEWAY, ERROR, reason);
        };
        // Both ends switch once the 101 is through; then bytes are copied
        // (and counted) both ways, like a tunnel.
        let upstream_upgrade = hyper::upgrade::on(&mut res);
        let idle = shared.idle_timeout;
        let r = Arc::clone(&rec);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((c, u)) => {
                    tunnel::splice(
                        hyper_util::rt::TokioIo::new(c),
                        hyper_util::rt::TokioIo::new(u),
                        &r,
                        idle,
                    )
                    .await
                }
                Err(e) => r.note(&format!("upgrade failed: {e}")),
            }
        });
        let (mut parts, _) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        return Response::from_parts(parts, ProxyBody::Empty);
    }
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    // Only moat says what moat refused.
    parts.headers.remove(BLOCKED);
    parts.headers.remove(ERROR);
    let Some(r) = redactor else {
        return Response::from_parts(parts, ProxyBody::upstream(body, rec));
    };
    // moat asked for `identity`; a compressed body could hide the token
    // from the redaction, so it does not go through.
    let encoded = parts
        .headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        let reason = "the response from a granted host is compressed (Content-Encoding) although \
                      moat asked for identity; it cannot be checked for the credential";
        rec.set_reason(reason);
        rec.set_status(502);
        return answer(StatusCode::BAD_GATEWAY, ERROR, reason);
    }
    let inner = ProxyBody::upstream(body, Arc::clone(&rec));
    Response::from_parts(
        parts,
        ProxyBody::Redacted(Box::new(super::redact::RedactBody::new(inner, r, rec))),
    )
}

/// A connection that ended on a request hyper could not parse (it already
/// answered 400, 414 or 431): one log line, so bad input is visible.
pub(crate) fn connection_error(conn: &Conn, err: &hyper::Error) {
    if !err.is_parse() {
        return;
    }
    let status = if err.is_parse_too_large() {
        if err.to_string().contains("URI") {
            414
        } else {
            431
        }
    } else {
        400
    };
    let (scheme, host, port) = match &conn.target {
        Some(t) => (t.scheme, t.host.clone(), t.port),
        None => (Scheme::Http, String::new(), 0),
    };
    let rec = Record::new(
        &conn.shared.sink,
        Instant::now(),
        Method::from_bytes(b"-").unwrap_or(Method::GET),
        scheme,
        host,
        port,
        "",
    );
    rec.set_status(status);
    rec.set_deny(&format!("malformed request: {err}"));
}
