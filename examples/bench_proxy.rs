//! Benchmark of moat's egress proxy against a local HTTPS server: what the
//! proxy adds to keep-alive request latency, to the rate of new TLS
//! connections and to the throughput of a large download. Driven by
//! `scripts/bench-proxy`, which starts the two halves below and moat's
//! proxy (`moat proxy serve`) between them.
//!
//! `bench_proxy server --dir DIR` generates a throw-away test CA and a
//! certificate for the benchmark host, writes `DIR/ca.pem`, binds
//! 127.0.0.1:0, writes the port to `DIR/port` and serves until killed:
//! `/small` (100 bytes), `/big` (1 GiB) and `/bytes/N`, bodies streamed from
//! one shared buffer so a large download costs no memory.
//!
//! `bench_proxy client --port PORT --server-ca DIR/ca.pem [--proxy ADDR
//! --proxy-ca MOAT_CA.pem]` measures the direct path and, given a proxy, the
//! same through it (HTTP CONNECT, then TLS through the tunnel; the proxy
//! intercepts, so that leg trusts only moat's CA) and prints one table.
//!
//! Every connection goes to a loopback address; the client refuses to run if
//! the host name resolves anywhere else.

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const HOST: &str = "allowed.moat.test";
const SMALL: u64 = 100;
const BIG: u64 = 1 << 30;
/// Size of the shared buffer bodies are sliced from: large enough that a
/// 1 GiB body is few frames, small enough to stay in cache.
const CHUNK: usize = 256 * 1024;

#[derive(Parser)]
#[command(about = "Benchmark moat's proxy against a local HTTPS server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve HTTPS on 127.0.0.1 with a freshly generated test CA.
    Server {
        /// Where to write ca.pem and port.
        #[arg(long)]
        dir: PathBuf,
        /// Host name the certificate is for.
        #[arg(long, default_value = HOST)]
        host: String,
    },
    /// Measure direct and, with --proxy, through the proxy.
    Client(ClientArgs),
}

#[derive(clap::Args, Clone)]
struct ClientArgs {
    /// Host name of the server (must resolve to loopback).
    #[arg(long, default_value = HOST)]
    host: String,
    /// Port the server listens on.
    #[arg(long)]
    port: u16,
    /// The server's test CA (trusted on the direct path).
    #[arg(long)]
    server_ca: PathBuf,
    /// The proxy's address (127.0.0.1:PORT); without it only the direct path
    /// is measured.
    #[arg(long)]
    proxy: Option<SocketAddr>,
    /// moat's CA certificate (trusted on the proxied path).
    #[arg(long, requires = "proxy")]
    proxy_ca: Option<PathBuf>,
    /// Sequential keep-alive requests timed one by one (over all rounds).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Untimed requests first on each keep-alive connection.
    #[arg(long, default_value_t = 1_000)]
    warmup: usize,
    /// The latency, concurrent and new-connection runs are split in rounds,
    /// direct and proxy alternating.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Connections of the concurrent keep-alive run.
    #[arg(long, default_value_t = 4)]
    conns: usize,
    /// Seconds each concurrent and new-connection run lasts, per round.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Size of the large download, MiB.
    #[arg(long, default_value_t = 1024)]
    big_mib: u64,
    /// Large downloads per path; the median is reported.
    #[arg(long, default_value_t = 3)]
    big_runs: usize,
    /// Exit 1 if a target is missed.
    #[arg(long)]
    strict: bool,
    /// The server's pid, to report its CPU time (read from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// The proxy's pid, to report its CPU time.
    #[arg(long)]
    proxy_pid: Option<u32>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Server { dir, host } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(server(&dir, &host)),
        // One thread: the client's own scheduling stays out of the figures,
        // and it takes one core of the machine, the same on both paths.
        Cmd::Client(args) => {
            let ok = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(client(args.clone()))?;
            if !ok && args.strict {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------- server

async fn server(dir: &Path, host: &str) -> Result<()> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "moat bench test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let leaf_key = rcgen::KeyPair::generate()?;
    let mut leaf_params = rcgen::CertificateParams::new(vec![host.to_string()])?;
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

    let mut tls = ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    // The port file appears last, once the CA is in place: the script waits
    // for it.
    let tmp = dir.join("port.tmp");
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, dir.join("port"))?;

    let chunk = Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    loop {
        let (tcp, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let chunk = chunk.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let chunk = chunk.clone();
                async move { Ok::<_, Infallible>(respond(&req, chunk)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

fn respond(req: &Request<Incoming>, chunk: Bytes) -> Response<Repeat> {
    let path = req.uri().path();
    let len = match path {
        "/small" => Some(SMALL),
        "/big" => Some(BIG),
        _ => path.strip_prefix("/bytes/").and_then(|n| n.parse().ok()),
    };
    let mut resp = Response::new(Repeat {
        chunk,
        remaining: len.unwrap_or(0),
    });
    if len.is_none() {
        *resp.status_mut() = StatusCode::NOT_FOUND;
    }
    resp
}

/// A body of `remaining` bytes handed out as slices of one shared buffer.
struct Repeat {
    chunk: Bytes,
    remaining: u64,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = this.remaining.min(this.chunk.len() as u64) as usize;
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

// ---------------------------------------------------------------- client

/// How to reach the server: directly, or through the proxy's CONNECT.
#[derive(Clone)]
struct Route {
    name: &'static str,
    host: String,
    port: u16,
    /// The server's resolved loopback address (resolved once, so the
    /// direct path pays no name lookup per connection).
    server: SocketAddr,
    proxy: Option<SocketAddr>,
    tls: TlsConnector,
}

type Sender = SendRequest<Empty<Bytes>>;

impl Route {
    async fn connect(&self) -> Result<Sender> {
        let tcp = match self.proxy {
            None => TcpStream::connect(self.server).await?,
            Some(proxy) => {
                let mut tcp = TcpStream::connect(proxy)
                    .await
                    .with_context(|| format!("connecting to the proxy at {proxy}"))?;
                tcp.set_nodelay(true)?;
                connect_tunnel(&mut tcp, &self.host, self.port).await?;
                tcp
            }
        };
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(self.host.clone())?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake ({})", self.name))?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// One GET on `send`; returns the body length after checking it
    /// against the expected size.
    async fn get(&self, send: &mut Sender, len: u64) -> Result<u64> {
        let path = match len {
            SMALL => "/small".to_string(),
            _ => format!("/bytes/{len}"),
        };
        let req = Request::get(path)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .body(Empty::new())?;
        send.ready().await?;
        let resp = send.send_request(req).await?;
        if resp.status() != StatusCode::OK {
            let blocked = resp
                .headers()
                .get("x-moat-blocked")
                .or_else(|| resp.headers().get("x-moat-error"))
                .map(|v| format!(" ({})", v.to_str().unwrap_or("?")))
                .unwrap_or_default();
            bail!("{}: status {}{blocked}", self.name, resp.status());
        }
        let mut body = resp.into_body();
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                got += data.len() as u64;
            }
        }
        ensure!(
            got == len,
            "{}: body of {got} bytes, wanted {len}",
            self.name
        );
        Ok(got)
    }
}

/// Asks the proxy for a tunnel and reads its answer, leaving the stream at
/// the first byte of the tunnel. The server speaks only after our TLS hello,
/// so nothing can follow the proxy's header yet.
async fn connect_tunnel(tcp: &mut TcpStream, host: &str, port: u16) -> Result<()> {
    let req = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut tmp = [0u8; 512];
    let end = loop {
        let n = tcp.read(&mut tmp).await?;
        ensure!(n > 0, "proxy closed the connection after CONNECT");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        ensure!(buf.len() < 16 * 1024, "proxy's CONNECT answer is too long");
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head.lines().next().unwrap_or("");
    ensure!(
        status.split_whitespace().nth(1) == Some("200"),
        "proxy refused CONNECT {host}:{port}: {}",
        head.trim_end()
    );
    ensure!(
        end == buf.len(),
        "proxy sent bytes after its CONNECT answer"
    );
    Ok(())
}

fn tls_connector(ca: &Path) -> Result<TlsConnector> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert: CertificateDer<'static> = cert?;
        roots.add(cert)?;
    }
    ensure!(!roots.is_empty(), "no certificate in {}", ca.display());
    let mut cfg = ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every new connection pays a full handshake, on both paths.
    cfg.resumption = Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// What one path measured.
#[derive(Clone, Copy)]
struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    rps_1: f64,
    rps_n: f64,
    conn_rate: f64,
    conn_p50_ms: f64,
    big_mib_s: f64,
    req_cpu: Cpu,
    big_cpu: Cpu,
}

async fn client(args: ClientArgs) -> Result<bool> {
    let mut addrs = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("resolving {}", args.host))?;
    let server = addrs
        .find(|a| a.ip().is_loopback())
        .with_context(|| format!("{} does not resolve to a loopback address", args.host))?;
    if let Some(p) = args.proxy {
        ensure!(
            p.ip().is_loopback(),
            "the proxy must be on loopback, not {p}"
        );
    }

    let direct = Route {
        name: "direct",
        host: args.host.clone(),
        port: args.port,
        server,
        proxy: None,
        tls: tls_connector(&args.server_ca)?,
    };
    let proxied = match (args.proxy, &args.proxy_ca) {
        (Some(p), Some(ca)) => Some(Route {
            name: "proxy",
            proxy: Some(p),
            tls: tls_connector(ca)?,
            ..direct.clone()
        }),
        (Some(_), None) => bail!("--proxy needs --proxy-ca (moat's CA certificate)"),
        _ => None,
    };
    let routes: Vec<&Route> = std::iter::once(&direct).chain(proxied.as_ref()).collect();

    // Each path must work before anything is timed.
    for r in &routes {
        let mut s = r.connect().await?;
        r.get(&mut s, SMALL).await?;
        r.get(&mut s, 1 << 20).await?;
    }

    // Rounds, and within a round metric by metric, direct then proxy: a
    // drift of the machine's load over the run touches both paths alike.
    let k = routes.len();
    let meter = Meter::new(args.server_pid, args.proxy_pid);
    let rounds = args.rounds.max(1);
    let per_round = args.requests.div_ceil(rounds);
    let dur = Duration::from_secs_f64(args.seconds);
    let mut lat = vec![Vec::new(); k];
    let mut rps_n = vec![Vec::new(); k];
    let mut req_cpu = vec![(0u64, Cpu::default()); k];
    let mut conn = vec![Vec::new(); k];
    for round in 1..=rounds {
        for (r, v) in routes.iter().zip(lat.iter_mut()) {
            eprintln!(
                "[{round}/{rounds}] {}: {per_round} keep-alive requests",
                r.name
            );
            v.extend(keep_alive(r, args.warmup, per_round).await?);
        }
        for (i, r) in routes.iter().enumerate() {
            eprintln!(
                "[{round}/{rounds}] {}: {} connections, {dur:?}",
                r.name, args.conns
            );
            let (n, secs, cpu) = concurrent(r, args.conns, dur, &meter).await?;
            rps_n[i].push(n as f64 / secs);
            req_cpu[i].0 += n;
            req_cpu[i].1.add(&cpu);
        }
        for (r, v) in routes.iter().zip(conn.iter_mut()) {
            eprintln!(
                "[{round}/{rounds}] {}: new TLS connections, {dur:?}",
                r.name
            );
            v.extend(new_connections(r, dur).await?);
        }
    }
    let big = args.big_mib << 20;
    let big_runs = args.big_runs.max(1);
    let mut runs = vec![Vec::new(); k];
    let mut big_cpu = vec![Cpu::default(); k];
    for i in 1..=big_runs {
        for (j, r) in routes.iter().enumerate() {
            eprintln!("[{i}/{big_runs}] {}: download {} MiB", r.name, args.big_mib);
            let (secs, cpu) = download(r, big, &meter).await?;
            runs[j].push(big as f64 / (1 << 20) as f64 / secs);
            big_cpu[j].add(&cpu);
        }
    }
    let gib = (big * big_runs as u64) as f64 / (1u64 << 30) as f64;
    let figs: Vec<Figures> = (0..k)
        .map(|i| Figures {
            p50_ms: percentile(&lat[i], 50.0) * 1e3,
            p99_ms: percentile(&lat[i], 99.0) * 1e3,
            rps_1: lat[i].len() as f64 / lat[i].iter().sum::<f64>(),
            rps_n: percentile(&rps_n[i], 50.0),
            conn_rate: conn[i].len() as f64 / conn[i].iter().sum::<f64>(),
            conn_p50_ms: percentile(&conn[i], 50.0) * 1e3,
            big_mib_s: percentile(&runs[i], 50.0),
            // Microseconds per request, seconds per GiB.
            req_cpu: req_cpu[i].1.per(req_cpu[i].0 as f64 / 1e6),
            big_cpu: big_cpu[i].per(gib),
        })
        .collect();

    Ok(report(&args, &figs, &runs))
}

async fn keep_alive(r: &Route, warmup: usize, n: usize) -> Result<Vec<f64>> {
    let mut s = r.connect().await?;
    for _ in 0..warmup {
        r.get(&mut s, SMALL).await?;
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        r.get(&mut s, SMALL).await?;
        lat.push(t.elapsed().as_secs_f64());
    }
    Ok(lat)
}

/// Requests on `conns` keep-alive connections at once for `dur`: how many,
/// in how long, and the CPU time the processes spent meanwhile.
async fn concurrent(
    r: &Route,
    conns: usize,
    dur: Duration,
    meter: &Meter,
) -> Result<(u64, f64, Cpu)> {
    let mut senders = Vec::new();
    for _ in 0..conns {
        let mut s = r.connect().await?;
        r.get(&mut s, SMALL).await?;
        senders.push(s);
    }
    let before = meter.sample();
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = tokio::task::JoinSet::new();
    for mut s in senders {
        let r = r.clone();
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                r.get(&mut s, SMALL).await?;
                n += 1;
            }
            anyhow::Ok(n)
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n??;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((total, secs, meter.sample().since(&before)))
}

/// Connect, handshake, one small request, close; over and over. Returns
/// each connection's time.
async fn new_connections(r: &Route, dur: Duration) -> Result<Vec<f64>> {
    let deadline = Instant::now() + dur;
    let mut lat = Vec::new();
    while Instant::now() < deadline {
        let t = Instant::now();
        let mut s = r.connect().await?;
        r.get(&mut s, SMALL).await?;
        drop(s);
        lat.push(t.elapsed().as_secs_f64());
    }
    Ok(lat)
}

/// One download of `len` bytes on a warm connection: its time and the CPU
/// time the processes spent meanwhile.
async fn download(r: &Route, len: u64, meter: &Meter) -> Result<(f64, Cpu)> {
    let mut s = r.connect().await?;
    r.get(&mut s, SMALL).await?;
    let before = meter.sample();
    let t = Instant::now();
    r.get(&mut s, len).await?;
    let secs = t.elapsed().as_secs_f64();
    Ok((secs, meter.sample().since(&before)))
}

/// CPU seconds of the client, the server and the proxy; None where the pid
/// is unknown or its /proc entry unreadable.
#[derive(Clone, Copy, Default)]
struct Cpu([Option<f64>; 3]);

impl Cpu {
    fn since(&self, before: &Cpu) -> Cpu {
        let mut d = Cpu::default();
        for i in 0..3 {
            d.0[i] = self.0[i].zip(before.0[i]).map(|(a, b)| a - b);
        }
        d
    }

    fn add(&mut self, other: &Cpu) {
        for i in 0..3 {
            self.0[i] = match (self.0[i], other.0[i]) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
        }
    }

    fn per(&self, units: f64) -> Cpu {
        Cpu(self.0.map(|v| v.map(|v| v / units)))
    }
}

/// Reads the CPU time (user + system) of the client, server and proxy.
struct Meter {
    pids: [Option<u32>; 3],
    tick: f64,
}

impl Meter {
    fn new(server: Option<u32>, proxy: Option<u32>) -> Meter {
        // SAFETY: sysconf only reads a constant of the running system.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Meter {
            pids: [Some(std::process::id()), server, proxy],
            tick: 1.0 / if hz > 0 { hz as f64 } else { 100.0 },
        }
    }

    fn sample(&self) -> Cpu {
        Cpu(self.pids.map(|p| p.and_then(|p| self.read(p))))
    }

    fn read(&self, pid: u32) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and ')': count fields from the
        // last ')'. utime and stime are fields 14 and 15 of the line.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 * self.tick)
    }
}

/// Nearest-rank percentile.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Prints the table; false if a target is missed.
fn report(args: &ClientArgs, figs: &[Figures], runs: &[Vec<f64>]) -> bool {
    let d = figs[0];
    let p = figs.get(1).copied();
    println!();
    println!(
        "moat proxy benchmark: https://{}:{}{}",
        args.host,
        args.port,
        args.proxy
            .map(|a| format!(", proxy {a}"))
            .unwrap_or_else(|| " (direct only)".into())
    );
    println!(
        "{} rounds: {} sequential requests (after {} warm-up), {} connections for {} s, new \
         connections for {} s; {} MiB download x{} (median)",
        args.rounds.max(1),
        args.requests.div_ceil(args.rounds.max(1)),
        args.warmup,
        args.conns,
        args.seconds,
        args.seconds,
        args.big_mib,
        args.big_runs
    );
    println!();
    println!(
        "{:<34} {:>10} {:>10} {:>16}  target",
        "metric", "direct", "proxy", "proxy vs direct"
    );
    let mut ok = true;
    let mut row = |name: &str, dv: f64, pv: Option<f64>, cmp: Cmp| {
        let (pcol, ccol, tcol) = match pv {
            None => ("-".to_string(), "-".to_string(), String::new()),
            Some(pv) => {
                let (c, t) = cmp.judge(dv, pv, &mut ok);
                (fmt_num(pv), c, t)
            }
        };
        let line = format!(
            "{name:<34} {:>10} {pcol:>10} {ccol:>16}  {tcol}",
            fmt_num(dv)
        );
        println!("{}", line.trim_end());
    };
    row(
        "keep-alive latency p50 (ms)",
        d.p50_ms,
        p.map(|p| p.p50_ms),
        Cmp::AddedBelow(0.3),
    );
    row(
        "keep-alive latency p99 (ms)",
        d.p99_ms,
        p.map(|p| p.p99_ms),
        Cmp::Added,
    );
    row(
        "keep-alive req/s, 1 connection",
        d.rps_1,
        p.map(|p| p.rps_1),
        Cmp::Ratio,
    );
    row(
        &format!("keep-alive req/s, {} connections", args.conns),
        d.rps_n,
        p.map(|p| p.rps_n),
        Cmp::Ratio,
    );
    row(
        "new TLS connections/s",
        d.conn_rate,
        p.map(|p| p.conn_rate),
        Cmp::Ratio,
    );
    row(
        "new TLS connection p50 (ms)",
        d.conn_p50_ms,
        p.map(|p| p.conn_p50_ms),
        Cmp::Added,
    );
    row(
        &format!("{} MiB download (MiB/s)", args.big_mib),
        d.big_mib_s,
        p.map(|p| p.big_mib_s),
        Cmp::RatioAtLeast(0.7),
    );
    println!();
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("download runs (MiB/s): direct {}", list(&runs[0]));
    if let Some(v) = runs.get(1) {
        println!("                       proxy  {}", list(v));
    }
    cpu_report(args, figs);
    ok
}

/// CPU time per unit of work, where the pids were given: what each process
/// pays, so that a throughput limited by the machine's cores can be told
/// from one limited by the proxy.
fn cpu_report(args: &ClientArgs, figs: &[Figures]) {
    if args.server_pid.is_none() && args.proxy_pid.is_none() {
        return;
    }
    let col = |v: Option<f64>, prec: usize| match v {
        Some(v) => format!("{v:.prec$}"),
        None => "-".into(),
    };
    let total = |c: &Cpu| -> f64 { c.0.iter().flatten().sum() };
    let names = ["direct", "proxy"];
    println!();
    println!(
        "CPU time (/proc, 10 ms ticks)      {:>10} {:>10} {:>10} {:>10}",
        "client", "server", "proxy", "total"
    );
    for (f, name) in figs.iter().zip(names) {
        let c = f.req_cpu;
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>10.1}",
            format!("us/request ({} conns), {name}", args.conns),
            col(c.0[0], 1),
            col(c.0[1], 1),
            col(c.0[2], 1),
            total(&c)
        );
    }
    for (f, name) in figs.iter().zip(names) {
        let c = f.big_cpu;
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>10.3}",
            format!("s/GiB downloaded, {name}"),
            col(c.0[0], 3),
            col(c.0[1], 3),
            col(c.0[2], 3),
            total(&c)
        );
    }
    if let Some(p) = figs
        .get(1)
        .and_then(|f| f.big_cpu.0[2])
        .filter(|p| *p > 0.0)
    {
        println!(
            "the proxy alone would forward {:.0} MiB/s per core it is given",
            1024.0 / p
        );
    }
}

enum Cmp {
    /// Difference proxy - direct, in the metric's unit (ms).
    Added,
    /// Difference, with a ceiling (ms).
    AddedBelow(f64),
    /// proxy / direct.
    Ratio,
    /// proxy / direct, with a floor.
    RatioAtLeast(f64),
}

impl Cmp {
    fn judge(&self, d: f64, p: f64, ok: &mut bool) -> (String, String) {
        let verdict = |pass: bool, ok: &mut bool| {
            *ok &= pass;
            if pass {
                "PASS"
            } else {
                "MISS"
            }
        };
        match *self {
            Cmp::Added => (format!("{:+.3} ms", p - d), String::new()),
            Cmp::AddedBelow(max) => (
                format!("{:+.3} ms", p - d),
                format!("added < {max} ms: {}", verdict(p - d < max, ok)),
            ),
            Cmp::Ratio => (format!("x{:.2}", p / d), String::new()),
            Cmp::RatioAtLeast(min) => (
                format!("x{:.2}", p / d),
                format!(">= x{min:.2}: {}", verdict(p / d >= min, ok)),
            ),
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}
