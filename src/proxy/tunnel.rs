//! After an allowed CONNECT: look at what the client sends first. A TLS
//! ClientHello is intercepted (moat's CA signs a certificate for the name,
//! and every request inside goes through the handler like any other); a
//! plain HTTP request line is served the same way without TLS; anything
//! else (SSH, a protocol where the server speaks first) is passed through to
//! the address the CONNECT was vetted for, and logged when it closes.
//!
//! Also the I/O wrappers: idle tracking for client connections and byte
//! counting for tunnels.

use super::handler::{self, Conn, Target};
use super::record::{Record, Scheme};
use hudsucker::certificate_authority::CertificateAuthority;
use hyper::http::uri::Authority;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::Method;
use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// How long moat waits for the client's first bytes before deciding it is
/// a protocol where the server speaks first and passing it through.
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(1);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
const TUNNEL_BUF: usize = 64 * 1024;

/// A vetted CONNECT destination.
pub(crate) struct Dest {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
    pub start: Instant,
}

fn clock_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When a connection last moved a byte.
pub(crate) struct Activity(AtomicU64);

impl Activity {
    pub fn new() -> Activity {
        Activity(AtomicU64::new(clock_ms()))
    }

    fn touch(&self) {
        self.0.store(clock_ms(), Relaxed);
    }

    /// Completes once no byte has moved for `limit`.
    pub async fn idle(&self, limit: Duration) {
        let limit_ms = limit.as_millis() as u64;
        loop {
            let quiet = clock_ms().saturating_sub(self.0.load(Relaxed));
            if quiet >= limit_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(limit_ms - quiet)).await;
        }
    }
}

/// A client connection: notes activity, and holds the connection slot until
/// the socket is closed (wherever it ends up: a tunnel outlives the HTTP
/// connection it came from).
pub(crate) struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl<T> Watched<T> {
    pub fn new(io: T, activity: Arc<Activity>, slot: Option<OwnedSemaphorePermit>) -> Self {
        Watched {
            io,
            activity,
            _slot: slot,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The bytes read to decide what a tunnel carries, given back to whoever
/// reads next.
struct Prefixed<T> {
    head: [u8; 16],
    len: usize,
    pos: usize,
    io: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.len {
            let n = (this.len - this.pos).min(buf.remaining());
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One side of a spliced connection: bytes read from it are counted as
/// going up (client side) or down (server side).
struct Counted<'a, T> {
    io: T,
    rec: &'a Record,
    up: bool,
    activity: &'a Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            this.activity.touch();
            if this.up {
                this.rec.add_up(n);
            } else {
                this.rec.add_down(n);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Copies both ways until both sides are done or nothing moved for `idle`,
/// counting into `rec`.
pub(crate) async fn splice<A, B>(client: A, server: B, rec: &Record, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut a = Counted {
        io: client,
        rec,
        up: true,
        activity: &activity,
    };
    let mut b = Counted {
        io: server,
        rec,
        up: false,
        activity: &activity,
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, TUNNEL_BUF, TUNNEL_BUF) => {
            if let Err(e) = r {
                rec.note(&format!("tunnel ended: {e}"));
            }
        }
        _ = activity.idle(idle) => {
            rec.note(&format!("closed after {} s without traffic", idle.as_secs()));
        }
    }
}

const HTTP_METHODS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"REPORT",
    b"SEARCH",
];

/// What the client's first bytes in a tunnel say it speaks.
#[derive(Debug, PartialEq, Eq)]
enum Carries {
    Tls,
    Http,
    Other,
}

fn classify(head: &[u8]) -> Carries {
    // A TLS record starts with content type 22 (handshake); no HTTP method
    // and no text protocol starts with that byte.
    if head.first() == Some(&0x16) {
        return Carries::Tls;
    }
    // An HTTP/1 request line starts with a method and a space. Only the
    // registered methods count: a text protocol that opens with another
    // upper-case word (IRC's `NICK x`) is passed through untouched.
    let token = head.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if head.get(token) == Some(&b' ') && HTTP_METHODS.contains(&&head[..token]) {
        return Carries::Http;
    }
    Carries::Other
}

/// Reads until `classify` can decide, the client stops, or the wait is over.
async fn first_bytes<T: AsyncRead + Unpin>(io: &mut T, head: &mut [u8; 16]) -> (usize, bool) {
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + FIRST_BYTES_WAIT;
    loop {
        let read = tokio::time::timeout_at(deadline, io.read(&mut head[n..])).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return (n, true),
            Ok(Ok(k)) => n += k,
            Err(_) => return (n, false),
        }
        let h = &head[..n];
        let decided = h[0] == 0x16 || h.contains(&b' ') || !h.iter().all(u8::is_ascii_uppercase);
        if n == head.len() || decided {
            return (n, false);
        }
    }
}

/// Serves a tunnel once the client has it. Boxed with `Send` spelled out:
/// requests inside a tunnel go back through the handler, which starts
/// tunnels, and the compiler cannot see through that cycle on its own.
pub(crate) fn run(
    conn: Conn,
    on_upgrade: OnUpgrade,
    dest: Dest,
) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(run_tunnel(conn, on_upgrade, dest))
}

async fn run_tunnel(conn: Conn, on_upgrade: OnUpgrade, dest: Dest) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut io = TokioIo::new(upgraded);
    let mut head = [0u8; 16];
    let (len, ended) = first_bytes(&mut io, &mut head).await;
    let carries = classify(&head[..len]);
    let io = Prefixed {
        head,
        len,
        pos: 0,
        io,
    };
    if ended && len == 0 {
        let rec = tunnel_record(&conn, &dest, Scheme::Tunnel);
        rec.note("client closed the tunnel without sending anything");
        return;
    }
    match carries {
        Carries::Tls => intercept(conn, io, dest).await,
        Carries::Http => serve_inner(conn, io, dest, Scheme::Http).await,
        Carries::Other => pass_through(conn, io, dest).await,
    }
}

/// A CONNECT's own log line: the client was sent 200.
fn tunnel_record(conn: &Conn, dest: &Dest, scheme: Scheme) -> Record {
    let rec = Record::new(
        &conn.shared.sink,
        dest.start,
        Method::CONNECT,
        scheme,
        dest.host.clone(),
        dest.port,
        "",
    );
    rec.set_status(200);
    rec
}

async fn intercept<T>(conn: Conn, io: T, dest: Dest)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |reason: String| {
        let rec = tunnel_record(&conn, &dest, Scheme::Https);
        rec.note(&reason);
    };
    // rustls reads at most 4 KiB per call: a buffer below it turns that
    // into one read of the socket per 64 KiB of upload.
    let io = tokio::io::BufReader::with_capacity(64 * 1024, io);
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return failed(format!("reading the client's TLS hello: {e}")),
        Err(_) => return failed("the client's TLS hello timed out".into()),
    };
    // The certificate is for the name the client asked for (SNI); the
    // requests inside must still name the CONNECT target.
    let name = start
        .client_hello()
        .server_name()
        .map(str::to_owned)
        .unwrap_or_else(|| dest.host.clone());
    let Ok(authority) = Authority::try_from(name.as_str()) else {
        return failed(format!("cannot issue a certificate for `{name}`"));
    };
    let cfg = conn.shared.ca.gen_server_config(&authority).await;
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(cfg)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return failed(format!(
                "TLS handshake with the client failed (does it trust moat's CA?): {e}"
            ))
        }
        Err(_) => return failed("TLS handshake with the client timed out".into()),
    };
    serve_inner(conn, tls, dest, Scheme::Https).await
}

/// Serves the HTTP/1 requests inside a tunnel, each checked against the
/// CONNECT target and the policy.
async fn serve_inner<T>(conn: Conn, io: T, dest: Dest, scheme: Scheme)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Conn {
        target: Some(Arc::new(Target {
            host: dest.host,
            port: dest.port,
            scheme,
        })),
        ..conn
    };
    let svc_conn = conn.clone();
    let svc = service_fn(move |req| handler::handle(svc_conn.clone(), req));
    let serving = conn
        .shared
        .http
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::select! {
        r = serving => {
            if let Err(e) = r {
                handler::connection_error(&conn, &e);
            }
        }
        _ = conn.activity.idle(conn.shared.idle_timeout) => {}
    }
}

async fn pass_through<T>(conn: Conn, io: T, dest: Dest)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let rec = tunnel_record(&conn, &dest, Scheme::Tunnel);
    match conn.shared.connector.tcp(dest.addr).await {
        Ok(server) => splice(io, server, &rec, conn.shared.idle_timeout).await,
        Err(e) => rec.note(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Carries::Tls);
        assert_eq!(classify(b"GET / HT"), Carries::Http);
        assert_eq!(classify(b"OPTIONS "), Carries::Http);
        assert_eq!(classify(b"SSH-2.0-"), Carries::Other);
        assert_eq!(classify(b"\x00\x01"), Carries::Other);
        assert_eq!(classify(b""), Carries::Other);
        assert_eq!(classify(b"PROPPATCH /x HTTP"), Carries::Http);
        assert_eq!(classify(b"NICK moat\r\n"), Carries::Other);
        assert_eq!(classify(b"GETTING "), Carries::Other);
        assert_eq!(classify(b"get / HTTP/1.1"), Carries::Other);
    }

    #[tokio::test]
    async fn first_bytes_stops_early_and_waits_at_most_a_second() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"\x16\x03")
            .await
            .unwrap();
        let mut head = [0u8; 16];
        let (n, ended) = first_bytes(&mut b, &mut head).await;
        assert_eq!((n, ended), (2, false));

        let (_a, mut b) = tokio::io::duplex(64);
        let t = Instant::now();
        let (n, ended) = first_bytes(&mut b, &mut head).await;
        assert_eq!((n, ended), (0, false));
        assert!(t.elapsed() >= FIRST_BYTES_WAIT);
    }

    #[tokio::test]
    async fn idle_fires_after_quiet_period_only() {
        let a = Arc::new(Activity::new());
        let t = Instant::now();
        let toucher = {
            let a = Arc::clone(&a);
            tokio::spawn(async move {
                for _ in 0..6 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    a.touch();
                }
            })
        };
        a.idle(Duration::from_millis(150)).await;
        // Touched every 50 ms for 300 ms, then quiet for 150 ms.
        assert!(
            t.elapsed() >= Duration::from_millis(440),
            "{:?}",
            t.elapsed()
        );
        toucher.await.unwrap();
    }
}
