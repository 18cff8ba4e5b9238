//! moat's egress proxy on its own, without a sandbox: the library proxy
//! started on 127.0.0.1:0 with a policy, in front of upstream servers that
//! run in this test process (plain HTTP, HTTPS with a test CA, a TCP echo
//! server), reached with hand-written requests, hyper, rustls and curl.
//!
//! Names come from the `# moat-tests` block scripts/test adds to /etc/hosts
//! (allowed/denied/plain.moat.test -> 127.0.0.1, private.moat.test ->
//! 10.255.255.1, metadata.moat.test -> 169.254.169.254, ...). Every proxy
//! here runs with `loopback_only` (what MOAT_TEST_LOOPBACK_ONLY=1 turns on),
//! so even a broken policy sends nothing off this machine; the refusal tests
//! check that the 403 came from the policy (X-Moat-Blocked), not from that
//! guard.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use moat::ca::Ca;
use moat::network_policy::Policy;
use moat::profile::{Network, NetworkMode};
use moat::proxy::log::Entry;
use moat::proxy::{Config, Handle, Options};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(20);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Fails loudly unless the test names resolve where the tests expect: a
/// missing block would send the proxy's lookups to real DNS.
fn require_hosts() {
    let want = [
        ("allowed.moat.test", "127.0.0.1"),
        ("denied.moat.test", "127.0.0.1"),
        ("plain.moat.test", "127.0.0.1"),
        ("other.moat.test", "127.0.0.2"),
        ("private.moat.test", "10.255.255.1"),
        ("metadata.moat.test", "169.254.169.254"),
        ("cgnat.moat.test", "100.64.0.1"),
    ];
    let hosts = std::fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
    for (name, addr) in want {
        let found = hosts.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some(addr) && f.any(|n| n == name)
        });
        assert!(
            found,
            "/etc/hosts does not map {name} to {addr}: run scripts/test as root (it adds the \
             `# moat-tests begin` ... `# moat-tests end` block)"
        );
    }
}

// ---------------------------------------------------------------- PKI

struct Pki {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(cn: &str) -> Pki {
    // Distinct subjects: a client that trusts one CA must not mistake
    // another with the same name for it.
    static N: AtomicUsize = AtomicUsize::new(0);
    let cn = format!("{cn} {}", N.fetch_add(1, Ordering::Relaxed));
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, cn.as_str());
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let key_pem = key.serialize_pem();
    Pki {
        cert_pem: cert.pem(),
        key_pem,
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for `names` signed by `ca`.
fn leaf(ca: &Pki, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

fn server_tls(ca: &Pki, names: &[&str]) -> Arc<rustls::ServerConfig> {
    let (chain, key) = leaf(ca, names);
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A client that trusts only `ca_pem`.
fn client_tls(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

// ---------------------------------------------------------- upstreams

/// An HTTP(S) server on 127.0.0.1: echoes what it got, serves
/// `/bytes/N`, and upgrades `Upgrade: moat-echo` to a byte echo.
struct Upstream {
    port: u16,
    /// Connections accepted (TLS or not).
    conns: Arc<AtomicUsize>,
    /// Headers of every request, as received.
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

async fn upstream_service(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
) -> Result<Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>, Infallible> {
    seen.lock().unwrap().push(req.headers().clone());
    let path = req.uri().path().to_string();
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap();
        let chunks = (0..n.div_ceil(65536)).map(move |i| {
            let len = 65536.min(n - i * 65536);
            Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'x'; len])))
        });
        return Ok(Response::new(BodyExt::boxed(FrameIter(chunks))));
    }
    if req.headers().get("upgrade").map(|v| v.as_bytes()) == Some(b"moat-echo") {
        let mut req = req;
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let res = Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "moat-echo")
            .body(BodyExt::boxed(Full::new(Bytes::new())))
            .unwrap();
        return Ok(res);
    }
    let method = req.method().to_string();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len().to_string(),
        Err(_) => "incomplete".to_string(),
    };
    let text = format!("{method} {pq} host={host} body={body}\n");
    Ok(Response::new(BodyExt::boxed(Full::new(Bytes::from(text)))))
}

/// A body whose frames come from an iterator, one per poll.
struct FrameIter<I>(I);

impl<I: Iterator + Unpin> hyper::body::Body for FrameIter<I>
where
    I::Item: Into<Result<hyper::body::Frame<Bytes>, Infallible>>,
{
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.get_mut().0.next().map(Into::into))
    }
}

async fn upstream(tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c, s) = (Arc::clone(&conns), Arc::clone(&seen));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&s);
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req| upstream_service(req, Arc::clone(&seen)));
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(cfg) => {
                        let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await else {
                            return;
                        };
                        let _ = http
                            .serve_connection(TokioIo::new(s), svc)
                            .with_upgrades()
                            .await;
                    }
                    None => {
                        let _ = http
                            .serve_connection(TokioIo::new(tcp), svc)
                            .with_upgrades()
                            .await;
                    }
                }
            });
        }
    });
    Upstream { port, conns, seen }
}

/// A TCP echo server; with a banner, it speaks first.
async fn echo_server(banner: Option<&'static [u8]>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Some(b) = banner {
                    let _ = tcp.write_all(b).await;
                }
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// A port where nothing listens (bound, then closed).
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// -------------------------------------------------------------- proxy

struct TestProxy {
    handle: Option<Handle>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    log: PathBuf,
    ca_pem: String,
    ca_file: PathBuf,
    run_id: String,
}

struct Setup {
    mode: NetworkMode,
    allow: Vec<String>,
    deny: Vec<String>,
    upstream_ca: Vec<PathBuf>,
    opts: Options,
}

impl Setup {
    fn allow(allow: &[String]) -> Setup {
        Setup {
            mode: NetworkMode::Allowlist,
            allow: allow.to_vec(),
            deny: Vec::new(),
            upstream_ca: Vec::new(),
            opts: Options {
                loopback_only: true,
                ..Options::default()
            },
        }
    }

    fn start(self) -> TestProxy {
        require_hosts();
        let dir = tempfile::tempdir().unwrap();
        let moat_ca = new_ca("moat test CA");
        let ca_file = dir.path().join("moat-ca.pem");
        std::fs::write(&ca_file, &moat_ca.cert_pem).unwrap();
        let net = Network {
            mode: self.mode,
            allow: self.allow,
            deny: self.deny,
            ..Network::default()
        };
        let policy = Policy::new(&net).unwrap();
        let run_id = format!("test-{}", std::process::id());
        let log = dir.path().join("run.requests.jsonl");
        let cfg = Config {
            grants: Vec::new(),
            policy,
            ca: Ca {
                cert_pem: moat_ca.cert_pem.clone(),
                key_pem: moat_ca.key_pem.clone(),
                cert_path: ca_file.clone(),
            },
            upstream_ca: self.upstream_ca,
            log_path: log.clone(),
            run_id: run_id.clone(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let handle = moat::proxy::spawn_with(listener, cfg, self.opts).unwrap();
        TestProxy {
            addr: handle.local_addr(),
            handle: Some(handle),
            _dir: dir,
            log,
            ca_pem: moat_ca.cert_pem,
            ca_file,
            run_id,
        }
    }
}

impl TestProxy {
    /// Stops the proxy; returns its log, one entry per line, and the raw
    /// text.
    fn finish(&mut self) -> (Vec<Entry>, String, moat::proxy::Stats) {
        let stats = self.handle.take().expect("finished once").shutdown();
        let text = std::fs::read_to_string(&self.log).unwrap();
        let entries = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (entries, text, stats)
    }
}

/// What a client got back.
#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A refusal by the policy: 403, X-Moat-Blocked, the reason as body.
    fn assert_blocked(&self, reason_part: &str) {
        assert_eq!(self.status, StatusCode::FORBIDDEN, "{self:?}");
        let why = self
            .header("x-moat-blocked")
            .unwrap_or_else(|| panic!("no X-Moat-Blocked: {self:?}"));
        assert!(
            why.contains(reason_part),
            "X-Moat-Blocked `{why}` lacks `{reason_part}`"
        );
        assert_eq!(self.body, format!("{why}\n"));
        assert!(self.header("x-moat-error").is_none(), "{self:?}");
    }

    fn assert_error(&self, status: u16, part: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        let why = self
            .header("x-moat-error")
            .unwrap_or_else(|| panic!("no X-Moat-Error: {self:?}"));
        assert!(why.contains(part), "X-Moat-Error `{why}` lacks `{part}`");
        assert!(self.header("x-moat-blocked").is_none(), "{self:?}");
    }
}

async fn send_on<I>(io: I, req: Request<Full<Bytes>>) -> Resp
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = tx.send_request(req).await.unwrap();
    collect(res).await
}

/// The next request on a client connection (hyper wants the previous
/// exchange finished first).
async fn send(
    tx: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Resp {
    tokio::time::timeout(T, async {
        tx.ready().await.unwrap();
        collect(tx.send_request(req).await.unwrap()).await
    })
    .await
    .unwrap()
}

async fn collect(res: Response<Incoming>) -> Resp {
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::new(Bytes::new())).unwrap()
}

/// One request through the proxy with an absolute URI, on its own
/// connection.
async fn via(proxy: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    tokio::time::timeout(T, send_on(tcp, req)).await.unwrap()
}

/// Sends a CONNECT; returns the stream and the response head.
async fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut tcp).await;
    (tcp, head)
}

/// Reads a response head byte by byte (so nothing after it is consumed).
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(T, tcp.read(&mut b)).await.unwrap() {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads everything until the proxy closes the connection.
async fn read_all(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// CONNECT then TLS, trusting only moat's CA.
async fn tls_via(
    p: &TestProxy,
    name: &str,
    port: u16,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (tcp, head) = connect(p.addr, &format!("{name}:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "CONNECT answered {head}");
    let sn = ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(T, client_tls(&p.ca_pem).connect(sn, tcp))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("TLS through the proxy to {name}: {e}"))
}

async fn https_upstream() -> (Upstream, tempfile::TempDir, PathBuf) {
    let ca = new_ca("upstream test CA");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upstream-ca.pem");
    std::fs::write(&file, &ca.cert_pem).unwrap();
    let up = upstream(Some(server_tls(
        &ca,
        &["allowed.moat.test", "denied.moat.test"],
    )))
    .await;
    (up, dir, file)
}

fn entry(log: &[Entry], pred: impl Fn(&Entry) -> bool) -> &Entry {
    log.iter()
        .find(|e| pred(e))
        .unwrap_or_else(|| panic!("no matching log entry in {log:#?}"))
}

// -------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercepted_https_reaches_the_allowed_host_with_a_moat_certificate() {
    let (up, _d, up_ca) = https_upstream().await;
    let mut s = Setup::allow(&[format!("allowed.moat.test:{}", up.port)]);
    s.upstream_ca = vec![up_ca];
    let mut p = s.start();

    let tls = tls_via(&p, "allowed.moat.test", up.port).await;
    // The client trusted only moat's CA: the handshake succeeding means the
    // certificate chains to it, for the name asked.
    let (_, session) = tls.get_ref();
    let chain = session.peer_certificates().unwrap();
    assert_eq!(chain.len(), 1);
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::get(format!("/hello/{i}?q=1"))
            .header("host", format!("allowed.moat.test:{}", up.port))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = send(&mut tx, req).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.body,
            format!(
                "GET /hello/{i}?q=1 host=allowed.moat.test:{} body=0\n",
                up.port
            )
        );
    }
    drop(tx);
    let (log, _, stats) = p.finish();
    assert_eq!(log.len(), 3, "{log:#?}");
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.method, "GET");
        assert_eq!(e.scheme, "https");
        assert_eq!(e.host, "allowed.moat.test");
        assert_eq!(e.port, up.port);
        assert_eq!(e.path, format!("/hello/{i}"));
        assert_eq!(e.status, Some(200));
        assert_eq!(e.decision, "allow");
        assert!(e.bytes_down > 0);
        assert_eq!(e.run, p.run_id);
    }
    assert_eq!((stats.requests, stats.denied), (3, 0));
    // Three requests, one upstream connection.
    assert_eq!(up.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_allowed_denied_and_not_listed() {
    let up = upstream(None).await;
    let mut s = Setup::allow(&[format!("plain.moat.test:{}", up.port)]);
    s.deny = vec![format!("denied.moat.test:{}", up.port)];
    let mut p = s.start();
    let port = up.port;

    let r = via(
        p.addr,
        get(&format!("http://plain.moat.test:{port}/a/b?c=d")),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        format!("GET /a/b?c=d host=plain.moat.test:{port} body=0\n")
    );

    let r = via(p.addr, get(&format!("http://denied.moat.test:{port}/x"))).await;
    r.assert_blocked("network.deny");
    let r = via(p.addr, get(&format!("http://allowed.moat.test:{port}/x"))).await;
    r.assert_blocked("not in network.allow");
    // Upper case and a trailing dot are the same name.
    let r = via(p.addr, get(&format!("http://PLAIN.moat.test.:{port}/y"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    // Not a proxy request at all.
    let r = via(p.addr, get("/relative")).await;
    r.assert_error(400, "absolute URI");

    let (log, _, stats) = p.finish();
    assert_eq!(log.len(), 5, "{log:#?}");
    let e = entry(&log, |e| e.host == "denied.moat.test");
    assert_eq!(
        (
            e.decision.as_str(),
            e.status,
            e.scheme.as_str(),
            e.path.as_str()
        ),
        ("deny", Some(403), "http", "/x")
    );
    assert!(e.reason.contains("network.deny"), "{e:?}");
    assert_eq!(stats.denied, 2);
    assert_eq!(
        up.seen.lock().unwrap().len(),
        2,
        "refused requests reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_denied_host_is_refused_before_the_tunnel() {
    let (up, _d, up_ca) = https_upstream().await;
    let mut s = Setup::allow(&[format!("allowed.moat.test:{}", up.port)]);
    s.deny = vec!["denied.moat.test".into()];
    s.upstream_ca = vec![up_ca];
    let mut p = s.start();

    for target in [
        format!("denied.moat.test:{}", up.port),
        "denied.moat.test:443".to_string(),
        format!("plain.moat.test:{}", up.port),
    ] {
        let (mut tcp, head) = connect(p.addr, &target).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{target}: {head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("x-moat-blocked: "), "{head}");
        let len: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        tcp.read_exact(&mut body).await.unwrap();
        assert!(lower.contains(&format!(
            "x-moat-blocked: {}",
            String::from_utf8_lossy(&body)
                .trim_end()
                .to_ascii_lowercase()
        )));
        // The connection is still HTTP: a following request is answered.
        tcp.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let again = read_head(&mut tcp).await;
        assert!(again.starts_with("HTTP/1.1 400"), "{again}");
    }
    let (log, _, _) = p.finish();
    let e = entry(&log, |e| e.method == "CONNECT" && e.port == 443);
    assert_eq!(
        (e.scheme.as_str(), e.decision.as_str(), e.status),
        ("tunnel", "deny", Some(403))
    );
    assert_eq!(up.conns.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercepted_request_must_name_the_connect_target() {
    let (up, _d, up_ca) = https_upstream().await;
    let mut s = Setup::allow(&[
        format!("allowed.moat.test:{}", up.port),
        format!("denied.moat.test:{}", dead_port()),
    ]);
    s.upstream_ca = vec![up_ca];
    let mut p = s.start();

    let tls = tls_via(&p, "allowed.moat.test", up.port).await;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let port = up.port;
    let cases = [
        (
            format!("denied.moat.test:{port}"),
            "does not match the CONNECT target",
        ),
        (format!("allowed.moat.test:{}", port + 1), "does not match"),
        ("allowed.moat.test".to_string(), "does not match"),
    ];
    for (host, why) in &cases {
        let req = Request::get("/x")
            .header("host", host.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = send(&mut tx, req).await;
        r.assert_blocked(why);
    }
    // An absolute URI naming another host is refused the same way.
    let req = Request::get(format!("https://denied.moat.test:{port}/abs"))
        .header("host", format!("allowed.moat.test:{port}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(&mut tx, req).await.assert_blocked("does not match");
    // The connection still serves the right host.
    let req = Request::get("/fine")
        .header("host", format!("allowed.moat.test:{port}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(&mut tx, req).await;
    assert_eq!(r.status, 200, "{r:?}");
    drop(tx);
    let (log, _, stats) = p.finish();
    assert_eq!((stats.requests, stats.denied), (5, 4), "{log:#?}");
    assert_eq!(up.seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_needs_the_exact_host_and_port() {
    let up = upstream(None).await;
    let port = up.port;
    let url = format!("http://plain.moat.test:{port}/");

    for allow in [
        format!("*.moat.test:{port}"),
        "plain.moat.test".to_string(),
        "*.moat.test".to_string(),
    ] {
        let mut p = Setup::allow(std::slice::from_ref(&allow)).start();
        let r = via(p.addr, get(&url)).await;
        assert_eq!(r.status, 403, "allow {allow}: {r:?}");
        assert!(r.header("x-moat-blocked").is_some(), "{r:?}");
        p.finish();
    }
    // A wildcard with the port reaches the policy's address check.
    let mut p = Setup::allow(&[format!("*.moat.test:{port}")]).start();
    via(p.addr, get(&url)).await.assert_blocked("loopback");
    p.finish();

    let mut p = Setup::allow(&[format!("plain.moat.test:{port}")]).start();
    assert_eq!(via(p.addr, get(&url)).await.status, 200);
    via(p.addr, get(&format!("http://127.0.0.1:{port}/")))
        .await
        .assert_blocked("loopback");
    p.finish();

    let mut p = Setup::allow(&[format!("127.0.0.1:{port}")]).start();
    assert_eq!(
        via(p.addr, get(&format!("http://127.0.0.1:{port}/")))
            .await
            .status,
        200
    );
    p.finish();
    assert_eq!(up.seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_metadata_addresses_are_refused_by_the_policy() {
    // Open mode: the name check lets everything through, so only the
    // address check stands between these names and their addresses.
    let mut s = Setup::allow(&[]);
    s.mode = NetworkMode::Open;
    let mut p = s.start();
    for (url, addr) in [
        ("http://private.moat.test/", "10.255.255.1"),
        (
            "http://metadata.moat.test/latest/meta-data/",
            "169.254.169.254",
        ),
        ("http://cgnat.moat.test:8080/", "100.64.0.1"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
        ),
        ("http://10.255.255.1:22/", "10.255.255.1"),
        ("http://[::ffff:10.255.255.1]/", "10.255.255.1"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254"),
    ] {
        let r = via(p.addr, get(url)).await;
        r.assert_blocked(addr);
    }
    for target in [
        "private.moat.test:443",
        "metadata.moat.test:443",
        "10.255.255.1:22",
    ] {
        let (_tcp, head) = connect(p.addr, target).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{target}: {head}");
        assert!(
            head.to_ascii_lowercase().contains("x-moat-blocked"),
            "{head}"
        );
    }
    // The metadata name is refused by name as well, in any mode.
    via(p.addr, get("http://metadata.google.internal/"))
        .await
        .assert_blocked("metadata");
    let (log, _, stats) = p.finish();
    assert_eq!(stats.denied as usize, log.len());
    assert!(log
        .iter()
        .all(|e| e.decision == "deny" && e.status == Some(403)));

    // Named exactly, the policy lets private.moat.test:80 through; then
    // the test guard answers (an error, not a connection).
    let mut p = Setup::allow(&["private.moat.test:80".into()]).start();
    via(p.addr, get("http://private.moat.test/"))
        .await
        .assert_error(502, "MOAT_TEST_LOOPBACK_ONLY");
    p.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_clean_errors() {
    let up = upstream(None).await;
    let mut p = Setup::allow(&[format!("plain.moat.test:{}", up.port)]).start();
    let good = format!(
        "GET http://plain.moat.test:{}/ok HTTP/1.1\r\nHost: plain.moat.test\r\nConnection: close\r\n\r\n",
        up.port
    );

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"THIS IS NOT HTTP\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            b"GET http://plain.moat.test/ HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            format!(
                "GET http://plain.moat.test:{}/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                up.port,
                "a".repeat(100 * 1024)
            )
            .into_bytes(),
            "HTTP/1.1 431",
        ),
        (
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
    ];
    for (bytes, want) in cases {
        let mut tcp = TcpStream::connect(p.addr).await.unwrap();
        let _ = tcp.write_all(&bytes).await;
        let got = read_all(&mut tcp).await;
        assert!(
            got.starts_with(want),
            "sent {:?}...: got {got:?}",
            &bytes[..20]
        );
        // And the proxy still serves.
        let mut tcp = TcpStream::connect(p.addr).await.unwrap();
        tcp.write_all(good.as_bytes()).await.unwrap();
        let got = read_all(&mut tcp).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    }
    let (log, _, _) = p.finish();
    let bad: Vec<&Entry> = log.iter().filter(|e| e.method == "-").collect();
    assert_eq!(bad.len(), 4, "{log:#?}");
    assert!(bad.iter().any(|e| e.status == Some(431)));
    assert!(bad
        .iter()
        .all(|e| e.decision == "deny" && e.reason.starts_with("malformed request")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hanging_up_mid_body_is_logged_and_harmless() {
    let up = upstream(None).await;
    let mut p = Setup::allow(&[format!("plain.moat.test:{}", up.port)]).start();
    let mut tcp = TcpStream::connect(p.addr).await.unwrap();
    tcp.write_all(
        format!(
            "POST http://plain.moat.test:{}/upload HTTP/1.1\r\nHost: plain.moat.test\r\nContent-Length: 100000\r\n\r\n{}",
            up.port,
            "z".repeat(5000)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = via(
        p.addr,
        get(&format!("http://plain.moat.test:{}/after", up.port)),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let (log, _, _) = p.finish();
    let e = entry(&log, |e| e.path == "/upload");
    assert_eq!(e.bytes_up, 5000, "{e:?}");
    assert!(!e.reason.is_empty(), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_gets_502_with_the_reason() {
    let up = upstream(None).await;
    let dead = dead_port();
    let mut p = Setup::allow(&[
        format!("plain.moat.test:{}", up.port),
        format!("plain.moat.test:{dead}"),
        format!("allowed.moat.test:{dead}"),
        format!("other.moat.test:{}", up.port),
    ])
    .start();
    via(p.addr, get(&format!("http://plain.moat.test:{dead}/")))
        .await
        .assert_error(502, "Connection refused");
    // other.moat.test is 127.0.0.2, where nothing listens: the proxy
    // connects to the address it vetted, not to wherever else the port is
    // open.
    via(p.addr, get(&format!("http://other.moat.test:{}/", up.port)))
        .await
        .assert_error(502, &format!("cannot connect to 127.0.0.2:{}", up.port));
    // Through an intercepted tunnel, too (the tunnel opens: the request
    // inside fails).
    let tls = tls_via(&p, "allowed.moat.test", dead).await;
    let req = Request::get("/")
        .header("host", format!("allowed.moat.test:{dead}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send_on(tls, req)
        .await
        .assert_error(502, "Connection refused");
    let r = via(p.addr, get(&format!("http://plain.moat.test:{}/", up.port))).await;
    assert_eq!(r.status, 200);
    let (log, _, _) = p.finish();
    let e = entry(&log, |e| e.port == dead && e.scheme == "http");
    assert_eq!((e.status, e.decision.as_str()), (Some(502), "allow"));
    assert!(e.reason.contains("refused"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upstream_certificate_gets_502() {
    // The upstream's CA is not given to the proxy: its certificate is from
    // an unknown issuer.
    let (bad, _d, _unused_ca) = https_upstream().await;
    // And one whose certificate is for another name.
    let (good_ca_up, _d2, up_ca) = https_upstream().await;
    let other = new_ca("other");
    let wrong_name = upstream(Some(server_tls(&other, &["someone-else.example"]))).await;
    let other_file = _d2.path().join("other.pem");
    std::fs::write(&other_file, &other.cert_pem).unwrap();

    let mut s = Setup::allow(&[
        format!("allowed.moat.test:{}", bad.port),
        format!("allowed.moat.test:{}", good_ca_up.port),
        format!("allowed.moat.test:{}", wrong_name.port),
    ]);
    s.upstream_ca = vec![up_ca, other_file];
    let mut p = s.start();
    for (port, why) in [
        (bad.port, "UnknownIssuer"),
        (wrong_name.port, "not valid for name"),
    ] {
        let tls = tls_via(&p, "allowed.moat.test", port).await;
        let req = Request::get("/secret")
            .header("host", format!("allowed.moat.test:{port}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = send_on(tls, req).await;
        r.assert_error(502, "upstream certificate rejected: ");
        assert!(r.header("x-moat-error").unwrap().contains(why), "{r:?}");
    }
    assert!(bad.seen.lock().unwrap().is_empty());
    assert!(wrong_name.seen.lock().unwrap().is_empty());
    let tls = tls_via(&p, "allowed.moat.test", good_ca_up.port).await;
    let req = Request::get("/fine")
        .header("host", format!("allowed.moat.test:{}", good_ca_up.port))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send_on(tls, req).await.status, 200);
    let (log, _, _) = p.finish();
    let e = entry(&log, |e| e.port == bad.port);
    assert_eq!(e.status, Some(502));
    assert!(
        e.reason.starts_with("upstream certificate rejected"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_never_holds_header_values_or_query_strings() {
    let plain = upstream(None).await;
    let (tls_up, _d, up_ca) = https_upstream().await;
    let mut s = Setup::allow(&[
        format!("plain.moat.test:{}", plain.port),
        format!("allowed.moat.test:{}", tls_up.port),
    ]);
    s.upstream_ca = vec![up_ca];
    let mut p = s.start();
    let secret = format!(
        "s3cr3t-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let with_secrets = |uri: String| {
        Request::post(uri)
            .header("authorization", format!("Bearer auth-{secret}"))
            .header("cookie", format!("session=cookie-{secret}"))
            .header("x-api-key", format!("key-{secret}"))
            .header("proxy-authorization", format!("Basic proxy-{secret}"))
            .body(Full::new(Bytes::from(format!("body-{secret}"))))
            .unwrap()
    };
    let r = via(
        p.addr,
        with_secrets(format!(
            "http://plain.moat.test:{}/api/v1?token=query-{secret}",
            plain.port
        )),
    )
    .await;
    assert_eq!(r.status, 200);
    let tls = tls_via(&p, "allowed.moat.test", tls_up.port).await;
    let mut req = with_secrets(format!("/tls/path?token=query-{secret}"));
    req.headers_mut().insert(
        "host",
        format!("allowed.moat.test:{}", tls_up.port)
            .parse()
            .unwrap(),
    );
    assert_eq!(send_on(tls, req).await.status, 200);
    let r = via(
        p.addr,
        with_secrets(format!("http://denied.moat.test/x?token=query-{secret}")),
    )
    .await;
    assert_eq!(r.status, 403);

    // The upstreams got the credentials meant for them, never the one for
    // the proxy.
    for seen in [&plain.seen, &tls_up.seen] {
        let seen = seen.lock().unwrap();
        let h = &seen[0];
        assert_eq!(h["authorization"], format!("Bearer auth-{secret}").as_str());
        assert!(h.get("proxy-authorization").is_none(), "{h:?}");
    }
    let (log, text, _) = p.finish();
    assert!(
        !text.contains(&secret),
        "the request log holds a header value, query or body:\n{text}"
    );
    assert_eq!(log.len(), 3);
    let e = entry(&log, |e| e.scheme == "http" && e.decision == "allow");
    assert_eq!(e.path, "/api/v1");
    assert_eq!(e.method, "POST");
    assert_eq!(e.bytes_up, format!("body-{secret}").len() as u64);
    let e = entry(&log, |e| e.scheme == "https");
    assert_eq!(e.path, "/tls/path");
    for e in &log {
        assert!(
            e.ts_ms > 1_600_000_000_000 && e.duration_ms < 20_000,
            "{e:?}"
        );
    }
    // Every line has every field.
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for k in [
            "ts_ms",
            "run",
            "method",
            "scheme",
            "host",
            "port",
            "path",
            "status",
            "bytes_up",
            "bytes_down",
            "duration_ms",
            "decision",
            "reason",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_tls_connect_is_passed_through_and_logged_as_a_tunnel() {
    let echo = echo_server(None).await;
    let banner = echo_server(Some(b"220 banner from the server\r\n")).await;
    let mut p = Setup::allow(&[
        format!("allowed.moat.test:{echo}"),
        format!("allowed.moat.test:{banner}"),
    ])
    .start();

    let (mut tcp, head) = connect(p.addr, &format!("allowed.moat.test:{echo}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let hello = b"SSH-2.0-moat_test\r\n";
    tcp.write_all(hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(T, tcp.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, hello);
    let big = vec![7u8; 300_000];
    let (mut r, mut w) = tcp.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&big).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    tokio::time::timeout(T, r.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), 300_000);

    // A server that speaks first: the proxy stops waiting for the client.
    let (mut tcp, head) = connect(p.addr, &format!("allowed.moat.test:{banner}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut line = vec![0u8; 28];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut line))
        .await
        .expect("the banner never came")
        .unwrap();
    assert_eq!(&line, b"220 banner from the server\r\n");
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (log, _, _) = p.finish();
    let e = entry(&log, |e| e.port == echo);
    assert_eq!(
        (
            e.method.as_str(),
            e.scheme.as_str(),
            e.status,
            e.decision.as_str()
        ),
        ("CONNECT", "tunnel", Some(200), "allow")
    );
    assert_eq!(e.bytes_up, (hello.len() + 300_000) as u64);
    assert_eq!(e.bytes_down, (hello.len() + 300_000) as u64);
    let e = entry(&log, |e| e.port == banner);
    assert_eq!(e.bytes_down, 28);
}

/// An upgrade request (`moat-echo`, which the test upstream answers with
/// 101 and then echoes) for `host:port/path`.
fn upgrade_request(host: &str, port: u16, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{host}:{port}{path}"))
        .header("connection", "Upgrade")
        .header("upgrade", "moat-echo")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Upgrades a connection through the proxy at `addr` and checks that
/// `ping` comes back over it; returns the upgraded connection, open.
async fn open_upgrade(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
    ping: &[u8],
) -> TokioIo<hyper::upgrade::Upgraded> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let res = tx.send_request(req).await.unwrap();
    assert_eq!(res.status(), 101);
    let mut io = TokioIo::new(hyper::upgrade::on(res).await.unwrap());
    io.write_all(ping).await.unwrap();
    let mut back = vec![0u8; ping.len()];
    tokio::time::timeout(T, io.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, ping);
    io
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_vetted_and_spliced() {
    let up = upstream(None).await;
    let mut p = Setup::allow(&[format!("plain.moat.test:{}", up.port)]).start();
    let io = open_upgrade(
        p.addr,
        upgrade_request("plain.moat.test", up.port, "/ws"),
        b"ping over the upgrade",
    )
    .await;
    drop(io);

    via(p.addr, upgrade_request("denied.moat.test", up.port, "/ws"))
        .await
        .assert_blocked("not in network.allow");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (log, _, _) = p.finish();
    let e = entry(&log, |e| e.path == "/ws" && e.decision == "allow");
    assert_eq!(e.status, Some(101));
    assert_eq!((e.bytes_up, e.bytes_down), (21, 21));
}

/// A spliced upgrade still open when the proxy stops holds its request's
/// record, not the proxy's shared state: stopping must still wait for its
/// line, so the run's log (and audit) misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_open_at_shutdown_is_still_logged() {
    let up = upstream(None).await;
    let mut p = Setup::allow(&[format!("plain.moat.test:{}", up.port)]).start();
    let io = open_upgrade(
        p.addr,
        upgrade_request("plain.moat.test", up.port, "/ws-open"),
        b"still open",
    )
    .await;
    // `io` stays open across the stop.
    let (log, _, stats) = tokio::task::block_in_place(|| p.finish());
    drop(io);
    let e = entry(&log, |e| e.path == "/ws-open");
    assert_eq!(e.status, Some(101));
    assert_eq!((e.bytes_up, e.bytes_down), (10, 10));
    assert_eq!(stats.requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_and_tunnels_are_closed() {
    let echo = echo_server(None).await;
    let mut s = Setup::allow(&[format!("allowed.moat.test:{echo}")]);
    s.opts.header_timeout = Duration::from_secs(1);
    s.opts.idle_timeout = Duration::from_secs(2);
    let mut p = s.start();

    // Half a request head, then nothing.
    let mut tcp = TcpStream::connect(p.addr).await.unwrap();
    tcp.write_all(b"GET http://allowed.moat.test/ HTTP/1.1\r\nHost: a")
        .await
        .unwrap();
    let t = Instant::now();
    let _ = read_all(&mut tcp).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A silent tunnel.
    let (mut tcp, head) = connect(p.addr, &format!("allowed.moat.test:{echo}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let t = Instant::now();
    let rest = read_all(&mut tcp).await;
    assert!(rest.is_empty());
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    let (log, _, _) = p.finish();
    let e = entry(&log, |e| e.scheme == "tunnel");
    assert!(e.reason.contains("without traffic"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_proxy() {
    let curl = Path::new("/usr/bin/curl");
    assert!(
        curl.exists(),
        "curl is missing: run scripts/test as root (it installs it)"
    );
    let plain = upstream(None).await;
    let (tls_up, _d, up_ca) = https_upstream().await;
    let mut s = Setup::allow(&[
        format!("plain.moat.test:{}", plain.port),
        format!("allowed.moat.test:{}", tls_up.port),
    ]);
    s.upstream_ca = vec![up_ca];
    let mut p = s.start();
    let dir = tempfile::tempdir().unwrap();
    let upload = dir.path().join("upload");
    std::fs::write(&upload, vec![b'u'; 1 << 20]).unwrap();
    let proxy = format!("http://{}", p.addr);
    let run = |args: Vec<String>| {
        let proxy = proxy.clone();
        let ca = p.ca_file.clone();
        async move {
            let out = tokio::process::Command::new(curl)
                .args([
                    "-sS",
                    "--max-time",
                    "15",
                    "--noproxy",
                    "",
                    "-x",
                    &proxy,
                    "--cacert",
                ])
                .arg(ca)
                .args(&args)
                .env_clear()
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "curl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
    };
    let https = format!("https://allowed.moat.test:{}", tls_up.port);
    let out = run(vec![format!("{https}/curl?x=1")]).await;
    assert_eq!(
        out,
        format!(
            "GET /curl?x=1 host=allowed.moat.test:{} body=0\n",
            tls_up.port
        )
    );
    let out = run(vec![
        format!("{https}/upload"),
        "--data-binary".into(),
        format!("@{}", upload.display()),
    ])
    .await;
    assert!(out.ends_with("body=1048576\n"), "{out}");
    let out = run(vec![
        format!("{https}/bytes/5000000"),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{size_download}".into(),
    ])
    .await;
    assert_eq!(out, "5000000");
    let out = run(vec![format!("http://plain.moat.test:{}/plain", plain.port)]).await;
    assert_eq!(
        out,
        format!("GET /plain host=plain.moat.test:{} body=0\n", plain.port)
    );
    // Refused: curl reports the CONNECT's 403 and fails.
    let out = tokio::process::Command::new(curl)
        .args([
            "-sS",
            "--max-time",
            "15",
            "-x",
            &proxy,
            "https://denied.moat.test/",
        ])
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CONNECT tunnel failed, response 403"), "{err}");

    let (log, _, _) = p.finish();
    let e = entry(&log, |e| e.path == "/upload");
    assert_eq!((e.bytes_up, e.method.as_str()), (1 << 20, "POST"));
    let e = entry(&log, |e| e.path == "/bytes/5000000");
    assert_eq!(e.bytes_down, 5_000_000);
    let e = entry(&log, |e| e.host == "denied.moat.test");
    assert_eq!(
        (e.method.as_str(), e.scheme.as_str()),
        ("CONNECT", "tunnel")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_the_log_and_counts() {
    let up = upstream(None).await;
    let mut p = Setup::allow(&[format!("plain.moat.test:{}", up.port)]).start();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let addr = p.addr;
        let host = if i % 4 == 0 {
            "denied.moat.test"
        } else {
            "plain.moat.test"
        };
        let url = format!("http://{host}:{}/n/{i}", up.port);
        tasks.push(tokio::spawn(
            async move { via(addr, get(&url)).await.status },
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (log, text, stats) = p.finish();
    assert_eq!(log.len(), 40);
    assert_eq!(text.lines().count(), 40);
    assert_eq!((stats.requests, stats.denied), (40, 10));
}

/// `moat proxy serve` and `moat log`, as a user runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moat_proxy_serve_and_moat_log() {
    require_hosts();
    let (tls_up, _d, up_ca) = https_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("net.toml");
    std::fs::write(
        &profile,
        format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"allowed.moat.test:{}\"]\n",
            tls_up.port
        ),
    )
    .unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let env = |c: &mut tokio::process::Command| {
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("MOAT_TEST_LOOPBACK_ONLY", "1")
            .env("MOAT_UPSTREAM_CA", &up_ca);
    };
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_moat"));
    cmd.args(["proxy", "serve", "--listen", "127.0.0.1:0", "--profile"])
        .arg(&profile)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    env(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..4 {
        let mut l = String::new();
        tokio::time::timeout(T, tokio::io::AsyncBufReadExt::read_line(&mut out, &mut l))
            .await
            .unwrap()
            .unwrap();
        lines.push(l.trim_end().to_string());
    }
    let addr = lines[0]
        .strip_prefix("moat proxy listening on ")
        .unwrap_or_else(|| panic!("{lines:?}"));
    let ca_path = lines[1].strip_prefix("CA certificate: ").unwrap();
    assert!(ca_path.starts_with(dir.path().join("data").to_str().unwrap()));
    let status = |url: String| {
        let addr = addr.to_string();
        let ca = ca_path.to_string();
        async move {
            let out = tokio::process::Command::new("/usr/bin/curl")
                .args([
                    "-sS",
                    "--max-time",
                    "15",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ])
                .args(["-x", &format!("http://{addr}"), "--cacert", &ca, &url])
                .env_clear()
                .output()
                .await
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        }
    };
    assert_eq!(
        status(format!(
            "https://allowed.moat.test:{}/via-serve?k=v",
            tls_up.port
        ))
        .await,
        "200"
    );
    assert_eq!(status("http://denied.moat.test/".into()).await, "403");
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) with the pid of the child this test spawned and
    // still owns (not yet waited for).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let res = tokio::time::timeout(T, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(res.status.success(), "{res:?}");
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("2 requests, 1 refused"), "{err}");

    let mut log = tokio::process::Command::new(env!("CARGO_BIN_EXE_moat"));
    log.args(["log", "latest"]);
    env(&mut log);
    let table = log.output().await.unwrap();
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains(&format!("allowed.moat.test:{}", tls_up.port)),
        "{table}"
    );
    assert!(table.contains("/via-serve"), "{table}");
    assert!(!table.contains("k=v"), "{table}");
    assert!(table.contains("denied.moat.test:80"), "{table}");

    let run = lines[3].strip_prefix("run: ").unwrap();
    let mut log = tokio::process::Command::new(env!("CARGO_BIN_EXE_moat"));
    log.args(["log", &run[..12], "--json"]);
    env(&mut log);
    let json = log.output().await.unwrap();
    assert!(json.status.success(), "{json:?}");
    let entries: Vec<Entry> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e.run == run));

    let mut log = tokio::process::Command::new(env!("CARGO_BIN_EXE_moat"));
    log.args(["log", "no-such-run"]);
    env(&mut log);
    let missing = log.output().await.unwrap();
    assert_eq!(missing.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("moat: "));
}

/// A proxy stopped before any client came (most sandbox runs) says so at
/// once: no line in its log, zero counts, and whoever connects afterwards
/// is served nothing.
#[test]
fn a_proxy_stopped_unused_logs_nothing_and_serves_no_one_after() {
    let mut p = Setup::allow(&["plain.moat.test".to_string()]).start();
    let addr = p.addr;
    let (entries, text, stats) = p.finish();
    assert!(entries.is_empty(), "{text}");
    assert_eq!((stats.requests, stats.denied), (0, 0));
    if let Ok(mut tcp) = std::net::TcpStream::connect(addr) {
        use std::io::{Read, Write};
        tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ =
            tcp.write_all(b"GET http://plain.moat.test/ HTTP/1.1\r\nHost: plain.moat.test\r\n\r\n");
        let mut got = Vec::new();
        let _ = tcp.read_to_end(&mut got);
        assert!(
            got.is_empty(),
            "a stopped proxy answered: {}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(std::fs::read_to_string(&p.log).unwrap(), "");
}
