//! moat's egress proxy: runs inside the supervisor on its own tokio runtime,
//! accepts on a listening socket created inside the sandbox's network
//! namespace, enforces the network policy on every request, intercepts TLS
//! with moat's CA, and logs every request.
//!
//! Layout:
//! - [`handler`](self): each request: destination, policy, forwarding.
//! - `tunnel`: CONNECT: interception, pass-through, I/O wrappers.
//! - `connector`: the only place upstream sockets are opened.
//! - `record`: one log line per request, bodies that count bytes.
//! - `inject`: credential grants on requests (token in, placeholders out).
//! - `redact`: granted tokens masked in responses, streaming.
//! - [`log`]: the request log file and `moat log`.
//! - [`serve`]: `moat proxy serve`, the proxy on its own.
//!
//! hudsucker provides the leaf certificates (its `RcgenAuthority`, with a
//! bounded cache). Its `Proxy` front end is not used: it answers a CONNECT
//! before looking at the client's bytes and then dials
//! `TcpStream::connect(authority)` itself for anything it does not
//! intercept (a second DNS resolution, past the policy), waits for the
//! client to speak first (which hangs protocols where the server does),
//! cannot count tunnel bytes, and sends WebSocket upgrades through its own
//! connector with other roots. moat serves HTTP/1 with hyper directly and
//! keeps every upstream connection in one place.

mod connector;
mod handler;
mod inject;
pub mod log;
mod record;
mod redact;
pub mod serve;
mod tunnel;

use crate::ca::Ca;
use crate::network_policy::Policy;
use hudsucker::certificate_authority::RcgenAuthority;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use record::{Sink, UpBody};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use log::path as log_path;

pub struct Config {
    pub policy: Policy,
    pub ca: Ca,
    /// Extra PEM files trusted for upstream TLS besides the host's roots.
    pub upstream_ca: Vec<PathBuf>,
    /// JSON-lines request log for this run.
    pub log_path: PathBuf,
    pub run_id: String,
    /// Credential grants of the run, with their tokens.
    pub grants: Vec<crate::grants::Grant>,
}

/// Limits and switches with defaults fit for a sandbox; tests and
/// `moat proxy serve` change them through [`spawn_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// A client connection (or tunnel) that moves no byte for this long is
    /// closed, even mid-request. Long: an API answer can take minutes.
    pub idle_timeout: Duration,
    /// Time a client has to send a request's headers, and how long an idle
    /// keep-alive connection stays open.
    pub header_timeout: Duration,
    /// Client connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Refuse (with an error, never connecting) every upstream address that
    /// is not loopback. Also turned on by MOAT_TEST_LOOPBACK_ONLY=1 in
    /// moat's environment: tests set it so a policy bug still sends
    /// nothing off the machine.
    pub loopback_only: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            idle_timeout: Duration::from_secs(600),
            header_timeout: Duration::from_secs(60),
            max_connections: 256,
            loopback_only: false,
        }
    }
}

/// Largest request head (request line and headers) accepted; larger gets
/// 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What every connection shares.
pub(crate) struct Shared {
    policy: Policy,
    ca: RcgenAuthority,
    client: Client<connector::Connector, UpBody>,
    connector: connector::Connector,
    resolver: handler::Resolver,
    sink: Arc<Sink>,
    grants: inject::Grants,
    http: hyper::server::conn::http1::Builder,
    idle_timeout: Duration,
}

/// A running proxy.
pub struct Handle {
    stop: watch::Sender<bool>,
    /// Until stopped. The proxy's thread is not joined: stopping waits for
    /// `drained`, and the runtime winds down in the background.
    running: bool,
    drained: std::sync::mpsc::Receiver<()>,
    writer: log::Writer,
    sink: Arc<Sink>,
    addr: SocketAddr,
    gate: Arc<Gate>,
    /// Until [`Handle::started`]: the word from the proxy's thread.
    starting: Option<(
        std::sync::mpsc::Receiver<io::Result<()>>,
        std::thread::JoinHandle<()>,
    )>,
}

/// Which accepted connections the proxy serves: none once it is told to
/// stop. A stop that finds that none was ever served knows, without a
/// round trip through the proxy's threads, that no request can be logged
/// any more: the common run that makes no request ends sooner.
#[derive(Default)]
struct Gate(std::sync::Mutex<Admitted>);

#[derive(Default)]
struct Admitted {
    closed: bool,
    any: bool,
}

impl Gate {
    /// Takes a just-accepted connection, unless the proxy is stopping.
    fn admit(&self) -> bool {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.any |= !g.closed;
        !g.closed
    }

    /// Lets no more in; says whether none ever came.
    fn close(&self) -> bool {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.closed = true;
        !g.any
    }
}

/// What the proxy saw over a run.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Requests logged: every request, refused or not, and every tunnel.
    pub requests: u64,
    /// Of those, refused by the policy or as malformed.
    pub denied: u64,
}

fn leaf_authority(
    ca: &Ca,
    provider: &rustls::crypto::CryptoProvider,
) -> io::Result<RcgenAuthority> {
    let bad = |what: &str, e: rcgen::Error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("moat CA {}: {what}: {e}", ca.cert_path.display()),
        )
    };
    let key = rcgen::KeyPair::from_pem(&ca.key_pem).map_err(|e| bad("key", e))?;
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(|e| bad("certificate", e))?;
    Ok(RcgenAuthority::new(issuer, 1000, provider.clone()))
}

/// Starts the proxy on its own thread. Call only after the sandbox's init
/// is cloned (the supervisor must be single-threaded when it clones).
///
/// Everything that can fail on bad input (the CA, the upstream CA files,
/// the log file) fails here, before the thread starts.
pub fn spawn(listener: std::net::TcpListener, cfg: Config) -> io::Result<Handle> {
    spawn_with(listener, cfg, Options::default())
}

/// Everything of [`spawn`] but the socket, for a sandbox run: the TLS
/// setup, the CA, the log and the proxy's thread, made while the sandbox's
/// init is still building its file system; [`Ready::serve`] then starts on
/// init's socket at once. Every request is also recorded in the audit log,
/// as a `request` event whose data is the request log's [`log::Entry`].
pub fn prepare_audited(cfg: Config, audit: Arc<crate::audit::Recorder>) -> io::Result<Ready> {
    prepare(cfg, Options::default(), Some(audit))
}

/// [`spawn`] with other [`Options`].
pub fn spawn_with(
    listener: std::net::TcpListener,
    cfg: Config,
    opts: Options,
) -> io::Result<Handle> {
    spawn_inner(listener, cfg, opts, None)
}

fn spawn_inner(
    listener: std::net::TcpListener,
    cfg: Config,
    opts: Options,
    audit: Option<Arc<crate::audit::Recorder>>,
) -> io::Result<Handle> {
    let mut h = prepare(cfg, opts, audit)?.serve(listener)?;
    h.started()?;
    Ok(h)
}

/// A proxy with everything in place but the socket it accepts on. Dropped
/// without [`Ready::serve`], its thread ends and nothing was served.
pub struct Ready {
    listener_tx: std::sync::mpsc::Sender<std::net::TcpListener>,
    ready_rx: std::sync::mpsc::Receiver<io::Result<()>>,
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
    /// Says when no connection is left, so nothing more will be logged.
    drained: std::sync::mpsc::Receiver<()>,
    writer: log::Writer,
    sink: Arc<Sink>,
    gate: Arc<Gate>,
}

fn prepare(
    cfg: Config,
    opts: Options,
    audit: Option<Arc<crate::audit::Recorder>>,
) -> io::Result<Ready> {
    // Both ring and aws-lc-rs are linked in; rustls must not guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let loopback_only =
        opts.loopback_only || std::env::var_os("MOAT_TEST_LOOPBACK_ONLY").is_some_and(|v| v == "1");
    let extra = connector::extra_roots(&cfg.upstream_ca)?;
    let connector = connector::Connector::lazy(Arc::clone(&provider), extra, loopback_only);
    let ca = leaf_authority(&cfg.ca, &provider)?;
    let writer = log::Writer::open(&cfg.log_path, cfg.run_id.clone(), audit).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("opening the request log {}: {e}", cfg.log_path.display()),
        )
    })?;
    let sink = Arc::new(Sink::new(writer.tx.clone()));

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(32);
    let shared = Arc::new(Shared {
        policy: cfg.policy,
        ca,
        client: client.build(connector.clone()),
        connector,
        resolver: handler::Resolver::new(),
        sink: Arc::clone(&sink),
        grants: inject::Grants::new(cfg.grants),
        http,
        idle_timeout: opts.idle_timeout,
    });
    let (stop, stop_rx) = watch::channel(false);
    let max_connections = opts.max_connections.max(1);
    let (listener_tx, listener_rx) = std::sync::mpsc::channel::<std::net::TcpListener>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (drained_tx, drained) = std::sync::mpsc::channel::<()>();
    let gate = Arc::new(Gate::default());
    let admit = Arc::clone(&gate);
    let thread = std::thread::Builder::new()
        .name("moat-proxy".into())
        .spawn(move || {
            block_signals();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(16)
                .thread_name("moat-proxy")
                .enable_all()
                .build();
            // No socket: the run ended before init made one.
            let Ok(listener) = listener_rx.recv() else {
                return;
            };
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let listener = {
                let _guard = rt.enter();
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
            };
            let _ = ready_tx.send(Ok(()));
            let ours = Arc::clone(&shared);
            rt.block_on(accept_loop(
                listener,
                shared,
                stop_rx,
                max_connections,
                admit,
            ));
            // A task that may still make a record holds `Shared`; one
            // that holds a record (a spliced upgrade) may not. With neither
            // left, every log line is sent, and the run need not wait for
            // the runtime's threads to wind down.
            if Arc::strong_count(&ours) == 1 && ours.sink.all_sent() {
                let _ = drained_tx.send(());
            }
            drop(ours);
            // Tunnels still open are cut here; their log lines are sent as
            // their tasks are dropped.
            rt.shutdown_timeout(Duration::from_millis(200));
            let _ = drained_tx.send(());
        })?;
    Ok(Ready {
        listener_tx,
        ready_rx,
        stop,
        thread,
        drained,
        writer,
        sink,
        gate,
    })
}

impl Ready {
    /// Hands `listener` to the proxy's thread, which accepts on it as soon
    /// as its runtime is up; [`Handle::started`] says when it is (or why
    /// it never will be). Connections made before wait in the listener's
    /// backlog.
    pub fn serve(self, listener: std::net::TcpListener) -> io::Result<Handle> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let Ready {
            listener_tx,
            ready_rx,
            stop,
            thread,
            drained,
            writer,
            sink,
            gate,
        } = self;
        if listener_tx.send(listener).is_err() {
            let _ = thread.join();
            return Err(died());
        }
        Ok(Handle {
            stop,
            running: true,
            drained,
            writer,
            sink,
            addr,
            gate,
            starting: Some((ready_rx, thread)),
        })
    }
}

fn died() -> io::Error {
    io::Error::other("the proxy thread died while starting")
}

/// The supervisor waits for its signals synchronously and forwards them to
/// the sandbox: no thread of the proxy may take one. Threads the runtime
/// starts inherit this mask.
fn block_signals() {
    let mut set = crate::sandbox::init::handled_set();
    set.add(nix::sys::signal::Signal::SIGPIPE);
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&set),
        None,
    );
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    max_connections: usize,
    gate: Arc<Gate>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut conns = JoinSet::new();
    'accepting: loop {
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => s.expect("the semaphore is never closed"),
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = stopped(&mut stop) => break,
        };
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((tcp, _peer)) => {
                        if !gate.admit() {
                            // Stopping: dropped unserved, and unlogged.
                            break 'accepting;
                        }
                        conns.spawn(connection(Arc::clone(&shared), tcp, slot, stop.clone()));
                        continue 'accepting;
                    }
                    // Out of descriptors, or a connection reset before it
                    // was accepted: wait a little rather than spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = stopped(&mut stop) => break 'accepting,
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

async fn connection(
    shared: Arc<Shared>,
    tcp: tokio::net::TcpStream,
    slot: tokio::sync::OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let activity = Arc::new(tunnel::Activity::new());
    let io = tunnel::Watched::new(tcp, Arc::clone(&activity), Some(slot));
    let conn = handler::Conn {
        shared: Arc::clone(&shared),
        activity: Arc::clone(&activity),
        target: None,
    };
    let svc_conn = conn.clone();
    let serving = shared
        .http
        .serve_connection(
            TokioIo::new(io),
            service_fn(move |req| handler::handle(svc_conn.clone(), req)),
        )
        .with_upgrades();
    tokio::pin!(serving);
    tokio::select! {
        r = serving.as_mut() => {
            if let Err(e) = r {
                handler::connection_error(&conn, &e);
            }
        }
        _ = activity.idle(shared.idle_timeout) => {}
        _ = stopped(&mut stop) => {
            serving.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, serving).await;
        }
    }
}

impl Handle {
    /// The address the proxy accepts on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counts so far.
    pub fn stats(&self) -> Stats {
        Stats {
            requests: self.sink.requests.load(Relaxed),
            denied: self.sink.denied.load(Relaxed),
        }
    }

    /// Returns once the proxy accepts on its listener, or why it cannot.
    pub fn started(&mut self) -> io::Result<()> {
        let Some((ready, thread)) = self.starting.take() else {
            return Ok(());
        };
        let r = ready.recv().unwrap_or_else(|_| Err(died()));
        if r.is_err() {
            self.running = false;
            let _ = thread.join();
        }
        r
    }

    fn stop(&mut self) {
        let served_none = self.gate.close();
        let _ = self.stop.send(true);
        if served_none {
            // No connection, so no record: nothing is left to log, and
            // the proxy's threads wind down by themselves.
            self.running = false;
            self.writer.forget();
            return;
        }
        if std::mem::take(&mut self.running) {
            // Ends early when the thread dies: its sender goes with it.
            let _ = self.drained.recv();
        }
        self.writer.finish();
    }

    /// Stops accepting, lets in-flight requests end briefly, flushes the log.
    pub fn shutdown(mut self) -> Stats {
        self.stop();
        self.stats()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Completes when shutdown is asked for (holding no borrow of the channel
/// afterwards, so the caller may await more).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[test]
    fn the_gate_says_whether_any_connection_was_served() {
        let g = Gate::default();
        assert!(g.close(), "nothing came: the stop need not wait");
        assert!(!g.admit(), "closed: a late connection is not served");
        assert!(g.close());

        let g = Gate::default();
        assert!(g.admit());
        assert!(!g.close(), "one was served: the stop waits for its record");
        assert!(!g.admit());
    }
}
