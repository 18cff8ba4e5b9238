//! moat's egress proxy: runs inside the supervisor on its own tokio runtime,
//! accepts on a listening socket created inside the sandbox's network
//! namespace, enforces the network policy on every request, intercepts TLS
//! with moat's CA, and logs every request.

use crate::ca::Ca;
use crate::network_policy::Policy;
use std::path::PathBuf;

pub struct Config {
    pub policy: Policy,
    pub ca: Ca,
    /// Extra PEM files trusted for upstream TLS besides the host's roots.
    pub upstream_ca: Vec<PathBuf>,
    /// JSON-lines request log for this run.
    pub log_path: PathBuf,
    pub run_id: String,
}

/// A running proxy.
pub struct Handle {}

/// What the proxy saw over a run.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub requests: u64,
    pub denied: u64,
}

/// Starts the proxy on its own thread. Call only after the sandbox's init
/// is cloned (the supervisor must be single-threaded when it clones).
pub fn spawn(_listener: std::net::TcpListener, _cfg: Config) -> std::io::Result<Handle> {
    Err(std::io::Error::other("proxy not implemented"))
}

impl Handle {
    /// Stops accepting, lets in-flight requests end briefly, flushes the log.
    pub fn shutdown(self) -> Stats {
        Stats::default()
    }
}
