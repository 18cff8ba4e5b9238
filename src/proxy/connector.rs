//! Upstream connections. The connector never resolves a name: the handler
//! vets the addresses a name resolves to and hands the connector the one
//! address to use, spelled into the URI authority as `name@ip:port` (the
//! name is what TLS verifies the server's certificate against and what the
//! `Host` header says; `ip:port` is where the socket goes). The connection
//! pool keys on that whole authority, so a pooled connection is only ever
//! reused for the same name at the same vetted address.

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TLS_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an upstream connection could not be made. The handler turns it into
/// the `X-Moat-Error` header of a 502.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// MOAT_TEST_LOOPBACK_ONLY is set and this is not a loopback address.
    Guard(SocketAddr),
    Connect(SocketAddr, io::Error),
    Timeout(SocketAddr, &'static str),
    Certificate(String),
    Tls(String),
    /// The URI did not come from the handler (a bug, never user input).
    Target(String),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Guard(a) => write!(
                f,
                "MOAT_TEST_LOOPBACK_ONLY is set: refusing to connect to {a}, not a loopback address"
            ),
            UpstreamError::Connect(a, e) => write!(f, "cannot connect to {a}: {e}"),
            UpstreamError::Timeout(a, what) => write!(f, "{what} to {a} timed out"),
            UpstreamError::Certificate(e) => write!(f, "upstream certificate rejected: {e}"),
            UpstreamError::Tls(e) => write!(f, "upstream TLS handshake failed: {e}"),
            UpstreamError::Target(t) => write!(f, "bad upstream target {t}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// The certificates of the profile's `upstream_ca` files as trust anchors,
/// read and checked now, so that a bad file stops the run before it starts.
pub(crate) fn extra_roots(extra: &[PathBuf]) -> io::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for path in extra {
        let bad = |e: &dyn fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("upstream CA {}: {e}", path.display()),
            )
        };
        let pem = std::fs::read(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("reading upstream CA {}: {e}", path.display()),
            )
        })?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad(&"no PEM certificate in it"));
        }
    }
    Ok(roots)
}

/// The client TLS configuration: the host's roots added to `roots` (from
/// [`extra_roots`]), HTTP/1.1 only.
pub(crate) fn client_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    mut roots: rustls::RootCertStore,
) -> io::Result<rustls::ClientConfig> {
    // Bad entries in the host's store are skipped: one unreadable
    // certificate must not take the network away.
    roots.add_parsable_certificates(host_roots());
    if roots.is_empty() {
        // Still serve: plain HTTP and refusals work, and with no roots every
        // upstream TLS handshake fails verification, which is closed, not
        // open. Refusing the run would punish profiles that need no HTTPS.
        eprintln!(
            "moat: warning: the host has no trusted root certificates and the profile names no \
             upstream_ca, so every HTTPS request through the proxy will fail certificate checks. \
             Fix: install the host's CA bundle (e.g. `apt-get install ca-certificates`) or set \
             [network] upstream_ca."
        );
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The host's trusted roots. Where the system keeps them in one bundle
/// file (and moat's own environment names no other place), that file
/// alone: it holds every root already. rustls-native-certs would also walk
/// the certificate directory beside it, a few hundred `stat`s and a second
/// parse of the same certificates on every run's start. Elsewhere, or when
/// `SSL_CERT_FILE`/`SSL_CERT_DIR` is set, rustls-native-certs decides.
fn host_roots() -> Vec<CertificateDer<'static>> {
    let env_names_a_place =
        std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some();
    if !env_names_a_place {
        if let Some((_, pem)) = crate::ca::host_bundle() {
            let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
                .filter_map(Result::ok)
                .collect();
            if !certs.is_empty() {
                return certs;
            }
        }
    }
    rustls_native_certs::load_native_certs().certs
}

struct Inner {
    tls: OnceLock<Result<TlsConnector, String>>,
    /// How to build `tls` on first use: the host's roots take milliseconds
    /// to parse, which every run's start would pay even when the command
    /// never makes an HTTPS request.
    recipe: Mutex<Option<(Arc<rustls::crypto::CryptoProvider>, rustls::RootCertStore)>>,
    loopback_only: bool,
}

/// The one way moat's proxy opens upstream sockets, for pooled HTTP(S)
/// requests (as a hyper-util connector) and for tunnels ([`Connector::tcp`]).
#[derive(Clone)]
pub(crate) struct Connector(Arc<Inner>);

impl Connector {
    #[cfg(test)]
    pub fn new(tls: rustls::ClientConfig, loopback_only: bool) -> Connector {
        Connector(Arc::new(Inner {
            tls: OnceLock::from(Ok(TlsConnector::from(Arc::new(tls)))),
            recipe: Mutex::new(None),
            loopback_only,
        }))
    }

    /// A connector whose TLS configuration (the host's roots added to
    /// `extra`) is made at its first HTTPS connection.
    pub fn lazy(
        provider: Arc<rustls::crypto::CryptoProvider>,
        extra: rustls::RootCertStore,
        loopback_only: bool,
    ) -> Connector {
        Connector(Arc::new(Inner {
            tls: OnceLock::new(),
            recipe: Mutex::new(Some((provider, extra))),
            loopback_only,
        }))
    }

    fn tls(&self) -> Result<&TlsConnector, UpstreamError> {
        let made = self.0.tls.get_or_init(|| {
            let recipe = self
                .0
                .recipe
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let (provider, extra) = recipe.ok_or("no TLS configuration to build")?;
            client_config(provider, extra)
                .map(|c| TlsConnector::from(Arc::new(c)))
                .map_err(|e| e.to_string())
        });
        made.as_ref().map_err(|e| UpstreamError::Tls(e.clone()))
    }

    /// A TCP connection to exactly `addr`.
    pub async fn tcp(&self, addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
        if self.0.loopback_only && !addr.ip().to_canonical().is_loopback() {
            return Err(UpstreamError::Guard(addr));
        }
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamError::Connect(addr, e)),
            Err(_) => return Err(UpstreamError::Timeout(addr, "connecting")),
        };
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    async fn open(self, uri: Uri) -> Result<TokioIo<Stream>, UpstreamError> {
        let (name, addr) = target(&uri).ok_or_else(|| UpstreamError::Target(uri.to_string()))?;
        let tcp = self.tcp(addr).await?;
        match uri.scheme_str() {
            Some("http") => Ok(TokioIo::new(Stream::Plain(tcp))),
            Some("https") => {
                let server_name = match name {
                    Some(n) => ServerName::try_from(n.to_string())
                        .map_err(|_| UpstreamError::Target(uri.to_string()))?,
                    None => ServerName::IpAddress(addr.ip().into()),
                };
                // rustls reads at most 4 KiB per call: a buffer below it
                // turns that into one system call per 64 KiB.
                let buffered = tokio::io::BufReader::with_capacity(64 * 1024, tcp);
                let hs = self.tls()?.connect(server_name, buffered);
                match tokio::time::timeout(TLS_TIMEOUT, hs).await {
                    Ok(Ok(s)) => Ok(TokioIo::new(Stream::Tls(Box::new(s)))),
                    Ok(Err(e)) => Err(tls_error(e)),
                    Err(_) => Err(UpstreamError::Timeout(addr, "TLS handshake")),
                }
            }
            _ => Err(UpstreamError::Target(uri.to_string())),
        }
    }
}

/// Certificate problems apart from other handshake failures: the first is
/// a server (or something in between) that is not who it claims to be.
fn tls_error(e: io::Error) -> UpstreamError {
    let rustls_err = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_err {
        Some(
            err @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_)),
        ) => UpstreamError::Certificate(err.to_string()),
        Some(err) => UpstreamError::Tls(err.to_string()),
        None => UpstreamError::Tls(e.to_string()),
    }
}

/// The URI authority the handler builds for a vetted destination:
/// `name@ip:port`, or `ip:port` when the request named an address.
pub(crate) fn authority(name: &str, addr: SocketAddr) -> String {
    if name.parse::<std::net::IpAddr>().is_ok() {
        addr.to_string()
    } else {
        format!("{name}@{addr}")
    }
}

/// The name (if any) and the vetted address out of an authority made by
/// [`authority`].
fn target(uri: &Uri) -> Option<(Option<&str>, SocketAddr)> {
    let auth = uri.authority()?.as_str();
    match auth.rsplit_once('@') {
        Some((name, addr)) => Some((Some(name), addr.parse().ok()?)),
        None => Some((None, auth.parse().ok()?)),
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = UpstreamError;
    type Future =
        Pin<Box<dyn Future<Output = Result<TokioIo<Stream>, UpstreamError>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().open(uri))
    }
}

/// A plain or TLS upstream socket.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<tokio::io::BufReader<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_upstream_ca_files_are_named() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("missing.pem");
        let err = extra_roots(std::slice::from_ref(&missing)).unwrap_err();
        assert!(err.to_string().starts_with("reading upstream CA"), "{err}");
        let empty = t.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = extra_roots(std::slice::from_ref(&empty)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("upstream CA {}: no PEM certificate in it", empty.display())
        );
        let junk = t.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = extra_roots(std::slice::from_ref(&junk)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("upstream CA {}: ", junk.display())),
            "{err}"
        );
        assert!(extra_roots(&[]).unwrap().is_empty());
    }

    #[test]
    fn authority_round_trips() {
        let v4: SocketAddr = "93.184.216.34:443".parse().unwrap();
        let v6: SocketAddr = "[2606:2800:220:1::1]:8443".parse().unwrap();
        for (name, addr) in [("example.com", v4), ("a-b.example.org", v6)] {
            let uri: Uri = format!("https://{}/x?y", authority(name, addr))
                .parse()
                .unwrap();
            assert_eq!(target(&uri), Some((Some(name), addr)));
        }
        let uri: Uri = format!("http://{}/", authority("93.184.216.34", v4))
            .parse()
            .unwrap();
        assert_eq!(target(&uri), Some((None, v4)));
    }

    #[tokio::test]
    async fn guard_refuses_non_loopback_without_connecting() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let c = Connector::new(cfg, true);
        // Never attempted: the guard answers before any socket exists.
        for a in [
            "10.255.255.1:80",
            "169.254.169.254:80",
            "[::ffff:10.0.0.1]:80",
        ] {
            let err = c.tcp(a.parse().unwrap()).await.unwrap_err();
            assert!(matches!(err, UpstreamError::Guard(_)), "{a}: {err}");
        }
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        c.tcp(l.local_addr().unwrap()).await.unwrap();
        let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", l.local_addr().unwrap().port())
            .parse()
            .unwrap();
        assert!(!matches!(c.tcp(mapped).await, Err(UpstreamError::Guard(_))));
    }
}
