//! `moat proxy serve`: the proxy on a host address, with a profile's
//! network policy, for benchmarks and debugging. No sandbox: whatever can
//! reach the address can use the proxy.

use super::{log, spawn, Config};
use crate::exec::Caller;
use crate::network_policy::Policy;
use crate::profile::{Network, NetworkMode};
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A PEM file of extra CAs the proxy trusts upstream, for test servers with
/// their own CA.
const UPSTREAM_CA_ENV: &str = "MOAT_UPSTREAM_CA";

/// The upstream CA files of a profile's `[network]` table (optional ones
/// skipped when missing) plus `MOAT_UPSTREAM_CA` from moat's environment
/// (the tests' way to trust their own CA).
pub fn upstream_ca_files(net: &Network, home: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for spec in &net.upstream_ca {
        let p = spec.expand(home);
        if !p.is_file() {
            if spec.optional {
                continue;
            }
            bail!(
                "[network] upstream_ca: {}: no such file (prefix it with `-` to make it optional)",
                p.display()
            );
        }
        files.push(p);
    }
    if let Some(v) = std::env::var_os(UPSTREAM_CA_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        if !p.is_absolute() || !p.is_file() {
            bail!(
                "{UPSTREAM_CA_ENV}={}: not an absolute path to a PEM file",
                p.display()
            );
        }
        files.push(p);
    }
    Ok(files)
}

/// `moat proxy ...`. Returns the exit code.
pub fn command(cmd: &crate::cli::ProxyCommand) -> Result<i32> {
    match cmd {
        crate::cli::ProxyCommand::Serve {
            listen,
            profile,
            log,
        } => run(listen, profile, log.as_deref()),
    }
}

pub fn run(listen: &str, profile: &str, log_file: Option<&Path>) -> Result<i32> {
    let caller = Caller::current()?;
    let profile = crate::profile::load(profile).map_err(|e| anyhow!("{e}"))?;
    let net = &profile.network;
    if net.mode == NetworkMode::None {
        bail!(
            "the profile's [network] mode is \"none\": there is no policy to serve (use a \
             profile with mode \"allowlist\" or \"open\")"
        );
    }
    let policy = Policy::new(net).map_err(|e| anyhow!("{e}"))?;
    let ca = crate::ca::load_or_create(&crate::ca::data_dir(&caller.home))?;
    let ca_path = ca.cert_path.clone();
    let run_id = crate::runs::new_id();
    let log_path = match log_file {
        Some(p) => p.to_path_buf(),
        None => {
            let dir = crate::runs::dir(&caller.home);
            log::ensure_dir(&dir)?;
            log::path(&dir, &run_id)
        }
    };
    let cfg = Config {
        grants: Vec::new(),
        policy,
        ca,
        upstream_ca: upstream_ca_files(net, &caller.home)?,
        log_path: log_path.clone(),
        run_id: run_id.clone(),
    };

    // Blocked before any thread exists, so that every thread inherits the
    // mask and sigwait below is the only taker.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .context("blocking SIGINT and SIGTERM")?;

    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let handle = spawn(listener, cfg).context("starting the proxy")?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "moat proxy listening on {addr}");
        let _ = writeln!(out, "CA certificate: {}", ca_path.display());
        let _ = writeln!(out, "request log: {}", log_path.display());
        let _ = writeln!(out, "run: {run_id}");
        let _ = out.flush();
    }
    let sig = set.wait().context("waiting for SIGINT or SIGTERM")?;
    let stats = handle.shutdown();
    eprintln!(
        "moat: proxy stopped ({sig}): {} requests, {} refused",
        stats.requests, stats.denied
    );
    Ok(0)
}
