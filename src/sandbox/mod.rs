//! Runs a command in the sandbox: the supervisor's side.
//!
//! The supervisor creates the run's cgroup (when the profile sets limits),
//! clones init into new user, mount, pid, net, ipc and uts namespaces,
//! writes its uid/gid maps, puts init in the cgroup, then relays signals and
//! the terminal until the command exits or the timeout ends the run. Init
//! makes its own cgroup namespace once it is in the run's group. See `init`
//! for the inside.

pub mod caps;
pub mod cgroup;
pub mod control;
pub mod harden;
pub mod init;
pub mod landlock;
pub mod mounts;
pub mod net;
mod placement;
pub mod pty;
pub mod seccomp;
mod spawn;

use crate::mount_plan::Plan;
use control::Msg;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Everything the sandbox is built from, decided before any namespace
/// exists. The cloned init reads its own copy of this.
#[derive(Debug, Clone)]
pub struct Spec {
    pub plan: Plan,
    pub hostname: String,
    pub argv: Vec<CString>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<CString>,
    /// PATH inside the sandbox, split, for finding the command.
    pub path: Vec<PathBuf>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub use_pty: bool,
    pub landlock: crate::landlock_policy::Rules,
    pub seccomp: seccomp::Program,
    /// cgroup limits with their places, and the timeout.
    pub limits: crate::cgroup::Plan,
    /// Where init binds the proxy's socket on 127.0.0.1 inside; `None`
    /// when the sandbox gets no network (`[network] mode = "none"`).
    pub proxy_port: Option<u16>,
}

/// Readies moat's proxy: called by the supervisor once, right after it
/// lets init go (so it may start threads, and its work overlaps init's
/// building of the file system); returns what starts the proxy on init's
/// socket. Errors are the reason, for the user.
pub type PrepareProxy = Box<dyn FnOnce() -> Result<StartProxy, String>>;

/// Starts the readied proxy on the socket init made inside the sandbox.
pub type StartProxy =
    Box<dyn FnOnce(std::net::TcpListener) -> Result<crate::proxy::Handle, String>>;

/// The running proxy, stopped when dropped, so that every way out of
/// [`run`] stops it after the command is gone.
struct ProxyGuard(Option<crate::proxy::Handle>);

impl ProxyGuard {
    fn stop(&mut self) -> Option<crate::proxy::Stats> {
        self.0.take().map(crate::proxy::Handle::shutdown)
    }
}

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Spec {
    /// Where to look for the command, in order, like execvp.
    pub fn exec_candidates(&self) -> Vec<CString> {
        let cmd = self.argv[0].as_bytes();
        if cmd.contains(&b'/') {
            return vec![self.argv[0].clone()];
        }
        self.path
            .iter()
            .filter_map(|dir| {
                let mut p = dir.as_os_str().as_encoded_bytes().to_vec();
                if p.is_empty() {
                    p.push(b'.');
                }
                p.push(b'/');
                p.extend_from_slice(cmd);
                CString::new(p).ok()
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    UserNamespace(String),
    #[error("setting up the sandbox failed: {0}")]
    Setup(String),
    #[error("starting the network proxy failed: {0}")]
    Proxy(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Audit(String),
}

/// Everything the supervisor learned about a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: Outcome,
    /// What the kernel enforced (empty when the command never started).
    pub hardening: harden::Report,
    /// Why the run ended early, when moat ended it (a limit, the timeout),
    /// one line each, for the user.
    pub ended_by: Vec<String>,
    /// The run's peak memory use in bytes, when a memory limit was set and
    /// the kernel keeps the figure.
    pub peak_memory: Option<u64>,
    /// What the proxy saw, when the run had one and it started.
    pub network: Option<crate::proxy::Stats>,
    /// Init was born in the run's cgroup2 group (clone3 with
    /// CLONE_INTO_CGROUP) rather than moved there.
    pub born_in_cgroup: bool,
    /// What [`Audit::record_end`] returned (`Ok` without an audit log).
    pub end_recorded: Result<(), String>,
}

/// How the command ended, as the supervisor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Wait status of the command.
    Finished(i32),
    /// The command could not be started; exit 127 (not found) or 126.
    NotStarted { code: i32, message: String },
    /// The profile's timeout ended the run: moat killed the sandbox.
    TimedOut,
}

impl Outcome {
    /// Shell conventions: the exit code, or 128+N for death by signal N.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Finished(status) => {
                if libc::WIFEXITED(*status) {
                    libc::WEXITSTATUS(*status)
                } else if libc::WIFSIGNALED(*status) {
                    128 + libc::WTERMSIG(*status)
                } else {
                    1
                }
            }
            Outcome::NotStarted { code, .. } => *code,
            Outcome::TimedOut => crate::cgroup::EXIT_TIMEOUT,
        }
    }
}

const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWUSER
    .union(CloneFlags::CLONE_NEWNS)
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWNET)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS);
// No CLONE_NEWCGROUP: a cgroup namespace is rooted where its creator is at
// that moment, and on cgroup v1 init is not in the run's group yet. Init
// unshares it once the supervisor says it is (the Go).

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

enum Forked {
    Child,
    Parent(Pid),
}

/// clone3 used like fork, with the sandbox's namespaces, the child born in
/// the cgroup2 directory `cgroup_dir`. Only while the process is
/// single-threaded: the child runs on a copy of this thread alone.
fn clone_into_cgroup(cgroup_dir: std::os::fd::RawFd) -> Result<Forked, Errno> {
    let mut args = CloneArgs {
        flags: NAMESPACES.bits() as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_dir as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed, it lives
    // across the call, and with no stack given the child continues on a
    // copy of this one, as after fork; the caller is single-threaded.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => Err(Errno::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// The lines about limits that the sandbox's teardown still hit: those
/// of the final report that the end recorded early did not have (a count
/// that grew is a new line).
fn late_limits<'a>(
    recorded: &'a [String],
    last: &'a [String],
) -> impl Iterator<Item = &'a String> + 'a {
    last.iter().filter(move |l| !recorded.contains(l))
}

/// Makes `recv` on the channel give up with EAGAIN after `t`, or never
/// again for `None`.
fn set_recv_timeout(chan: &control::Channel, t: Option<Duration>) {
    // A zero timeval means "no timeout": a deadline already passed gets
    // the shortest wait instead.
    let t = match t {
        Some(t) => t.max(Duration::from_micros(1)),
        None => Duration::ZERO,
    };
    let tv = nix::sys::time::TimeVal::new(t.as_secs() as _, t.subsec_micros() as _);
    let _ = nix::sys::socket::setsockopt(&chan.0, nix::sys::socket::sockopt::ReceiveTimeout, &tv);
}

/// Waits for a signal in `set` until `deadline`; `Ok(None)` when it passes.
fn wait_signal(set: &SigSet, deadline: Option<Instant>) -> Result<Option<Signal>, Errno> {
    let Some(deadline) = deadline else {
        return set.wait().map(Some);
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let ts = libc::timespec {
        tv_sec: left.as_secs() as libc::time_t,
        tv_nsec: left.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are valid for the duration of the call, and
    // sigtimedwait accepts a null siginfo pointer.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if r < 0 {
        return match Errno::last() {
            Errno::EAGAIN => Ok(None),
            e => Err(e),
        };
    }
    Signal::try_from(r).map(Some)
}

/// The run's audit log, and what to record in it before the command can
/// start: [`run`] calls `record_start` while init builds the sandbox (the
/// command waits for the supervisor's word, which comes after it).
///
/// `record_end` is called once with the run's report. When init reports
/// the command's exit, that is at once, while init is still tearing the
/// sandbox down (the limit counters are read then); limits that the
/// teardown still hits are recorded after it, as `limit` events with a
/// checkpoint of their own. Otherwise (a timeout, init killed) it is
/// called once init is gone.
pub struct Audit<'a> {
    pub recorder: &'a std::sync::Arc<crate::audit::Recorder>,
    pub record_start: Box<dyn FnOnce() -> Result<(), String> + 'a>,
    pub record_end: RecordEnd<'a>,
}

/// Records the end of a run in the audit log (see [`Audit`]).
pub type RecordEnd<'a> = Box<dyn FnOnce(&RunReport) -> Result<(), String> + 'a>;

/// Runs `spec` to completion. Must be called while the process is still
/// single-threaded: the clone child runs Rust code that may allocate.
/// `prepare_proxy` is required exactly when `spec.proxy_port` is set.
/// `audit` records what the kernel enforced and, from the clone on, kills
/// the sandbox if the audit log cannot be written.
pub fn run(
    spec: &Spec,
    prepare_proxy: Option<PrepareProxy>,
    audit: Option<Audit<'_>>,
) -> Result<RunReport, RunError> {
    let (recorder, record_start, mut record_end) = match audit {
        Some(a) => (Some(a.recorder), Some(a.record_start), Some(a.record_end)),
        None => (None, None, None),
    };
    let mut report = run_inner(spec, prepare_proxy, recorder, record_start, &mut record_end)?;
    if let Some(end) = record_end.take() {
        report.end_recorded = end(&report);
    }
    Ok(report)
}

fn run_inner(
    spec: &Spec,
    prepare_proxy: Option<PrepareProxy>,
    audit: Option<&std::sync::Arc<crate::audit::Recorder>>,
    record_start: Option<Box<dyn FnOnce() -> Result<(), String> + '_>>,
    record_end: &mut Option<RecordEnd<'_>>,
) -> Result<RunReport, RunError> {
    let internal = |what: &str, e: Errno| RunError::Internal(format!("{what}: {}", e.desc()));
    if spec.proxy_port.is_some() != prepare_proxy.is_some() {
        return Err(RunError::Internal(
            "a proxy port needs a proxy to start, and a proxy needs a port".into(),
        ));
    }
    // Declared before anything that waits for init, so that it is dropped
    // (the proxy stopped) only after the command is gone.
    let mut proxy = ProxyGuard(None);
    // With a cgroup2 site, made (with its limits) before init exists, so
    // that init is born in it. Without one (cgroup v1 only), made while
    // init builds the file system, where it costs no time: init is moved
    // in then anyway. Either way init is in it before it starts the
    // command, and a failure kills init before anything runs. Dropping it
    // removes it, on every path out of this function, after init is
    // reaped.
    let create_group = || {
        cgroup::RunGroup::create(&spec.limits)
            .map_err(|e| RunError::Setup(format!("creating the run's cgroup: {e}")))
    };
    let born_in_group = spec
        .limits
        .sites
        .iter()
        .any(|s| s.version == crate::cgroup::Version::V2);
    let mut group = if spec.limits.needs_group() && born_in_group {
        Some(create_group()?)
    } else {
        None
    };
    // Blocked here and waited for synchronously below; init inherits the
    // mask and waits for the same set. SIGIO too: here it says that init
    // sent a message (see below), and it must reach no other thread (they
    // all start from this mask).
    let mut waited = init::handled_set();
    waited.add(Signal::SIGIO);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited), None)
        .map_err(|e| internal("sigprocmask", e))?;

    let (ours, theirs) = control::pair().map_err(|e| internal("socketpair", e))?;
    let placement = placement::Placement::here();
    let ours_raw = ours.0.as_raw_fd();
    // On cgroup2, init is born in the run's group: moving a task between
    // groups can wait out an RCU grace period (milliseconds), being born
    // there does not.
    let v2_dir = group.as_ref().and_then(|g| g.v2_dir());
    let born = match &v2_dir {
        Some(dir) => clone_into_cgroup(dir.as_raw_fd()),
        None => Err(Errno::ENOTSUP),
    };
    drop(v2_dir);
    let (child, v2_joined) = match born {
        Ok(Forked::Child) => {
            // SAFETY: this is the child of a fork-like clone3 of a
            // single-threaded process: the supervisor's end is a plain
            // descriptor in our copy, and init never returns into the
            // frames above (it leaves by _exit).
            unsafe { libc::close(ours_raw) };
            init::run(spec, theirs, placement.as_ref())
        }
        Ok(Forked::Parent(pid)) => {
            drop(theirs);
            (pid, true)
        }
        // A kernel before 5.7, or one that refuses: clone, then move.
        Err(_) => {
            let mut stack = vec![0u8; 1 << 20];
            let child_spec = spec.clone();
            let mut theirs_slot = Some(theirs);
            let child_placement = placement.clone();
            let cb = Box::new(move || {
                // SAFETY: the supervisor's end is a plain descriptor in this
                // fresh copy of the address space; closing it only drops our
                // reference, and its OwnedFd is never dropped because init
                // never returns.
                unsafe { libc::close(ours_raw) };
                let chan = theirs_slot.take().expect("clone callback runs once");
                init::run(&child_spec, chan, child_placement.as_ref())
            });
            // SAFETY: the process is single-threaded (see above), the stack
            // is exclusively the child's, and the child never returns into
            // our frames.
            match unsafe { nix::sched::clone(cb, &mut stack, NAMESPACES, Some(libc::SIGCHLD)) } {
                Ok(pid) => (pid, false),
                Err(e) => {
                    return Err(RunError::UserNamespace(crate::userns::explain(
                        e as i32,
                        &crate::userns::Knobs::read(),
                        spec.uid == 0,
                    )))
                }
            }
        }
    };

    if let Some(p) = &placement {
        p.move_apart(child);
    }
    let fail = |err: RunError| {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        err
    };
    if let Some(a) = audit {
        a.attach(child.as_raw())
            .map_err(|e| fail(RunError::Audit(format!("audit log: {e}"))))?;
    }
    if let Some(record) = record_start {
        record().map_err(|e| fail(RunError::Audit(e)))?;
    }
    // The timeout counts from here: building the sandbox is part of the run.
    let deadline = spec
        .limits
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    // Both while init builds the file system on another core. Init waits
    // for the Go before it starts the command.
    if group.is_none() && spec.limits.needs_group() {
        group = Some(create_group().map_err(fail)?);
    }
    if let Some(g) = &group {
        g.attach(child, v2_joined).map_err(|e| {
            fail(RunError::Setup(format!(
                "putting the sandbox in its cgroup: {e}"
            )))
        })?;
    }
    let mut start_proxy = match prepare_proxy {
        Some(prepare) => Some(prepare().map_err(|e| fail(RunError::Proxy(e)))?),
        None => {
            ours.send(&Msg::Go)
                .map_err(|e| fail(internal("control channel", e)))?;
            None
        }
    };

    // Building the sandbox counts against the timeout too: a setup that
    // hangs (a bind of a stuck network file system) must not outlast it.
    if let Some(d) = deadline {
        set_recv_timeout(&ours, Some(d.saturating_duration_since(Instant::now())));
    }
    let mut master = None;
    let mut hardening = harden::Report::default();
    loop {
        match ours.recv() {
            Ok(Some((Msg::Pty, fd))) => master = fd,
            Ok(Some((Msg::Listener, fd))) => {
                // Fail closed: a sandbox that was promised a proxy does not
                // run without one.
                let started = match (fd, start_proxy.take()) {
                    (Some(fd), Some(start)) => start(std::net::TcpListener::from(fd)),
                    (None, _) => Err("init sent no socket".to_string()),
                    (_, None) => Err("init sent a second socket".to_string()),
                };
                match started {
                    Ok(h) => proxy.0 = Some(h),
                    Err(e) => return Err(fail(RunError::Proxy(e))),
                }
                // Init holds the command back until this. The proxy's
                // runtime may still be starting: the command's first
                // connections wait in the socket's backlog meanwhile, and
                // a proxy that never starts ends the run right here.
                ours.send(&Msg::Go)
                    .map_err(|e| fail(internal("control channel", e)))?;
                if let Some(Err(e)) = proxy.0.as_mut().map(|h| h.started()) {
                    return Err(fail(RunError::Proxy(e.to_string())));
                }
            }
            Ok(Some((Msg::Hardened(json), _))) => {
                hardening = serde_json::from_str(&json).unwrap_or_default();
                if let Some(a) = audit {
                    let data = serde_json::json!({
                        "landlock": hardening.landlock,
                        "capabilities": hardening.capabilities,
                        "seccomp": hardening.seccomp,
                        "cgroup": {
                            "group": group.is_some(),
                            "memory": spec.limits.memory,
                            "pids": spec.limits.pids,
                            "cpu_millis": spec.limits.cpu_millis,
                            "timeout_ms": spec.limits.timeout_ms,
                        },
                    });
                    if let Err(e) = a.event("enforced", data) {
                        return Err(fail(RunError::Audit(e)));
                    }
                }
            }
            Ok(Some((Msg::Started, _))) => {
                if spec.proxy_port.is_some() && proxy.0.is_none() {
                    return Err(fail(RunError::Internal(
                        "the command started before the proxy did".into(),
                    )));
                }
                break;
            }
            Ok(Some((Msg::SetupFailed(m), _))) => return Err(fail(RunError::Setup(m))),
            Ok(Some((Msg::MapFailed { errno, what }, _))) => {
                let mut msg =
                    crate::userns::explain(errno, &crate::userns::Knobs::read(), spec.uid == 0);
                msg.push_str(&format!("\n  ({what})"));
                return Err(fail(RunError::UserNamespace(msg)));
            }
            Ok(Some((Msg::ExecFailed { errno, what }, _))) => {
                let _ = waitpid(child, None);
                let (code, message) = match errno {
                    libc::ENOENT => (127, format!("{what}: command not found in the sandbox")),
                    _ => (
                        126,
                        format!("{what}: cannot run: {}", Errno::from_raw(errno).desc()),
                    ),
                };
                return Ok(RunReport {
                    outcome: Outcome::NotStarted { code, message },
                    hardening,
                    ended_by: Vec::new(),
                    peak_memory: None,
                    network: proxy.stop(),
                    born_in_cgroup: v2_joined,
                    end_recorded: Ok(()),
                });
            }
            Ok(Some(_)) => {}
            Err(Errno::EAGAIN) if deadline.is_some_and(|d| Instant::now() >= d) => {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                let events = group.as_ref().map(|g| g.events()).unwrap_or_default();
                return Ok(RunReport {
                    outcome: Outcome::TimedOut,
                    hardening,
                    ended_by: crate::cgroup::ended_by(&spec.limits, &events, None, true),
                    peak_memory: events.memory_peak,
                    network: proxy.stop(),
                    born_in_cgroup: v2_joined,
                    end_recorded: Ok(()),
                });
            }
            Err(Errno::EAGAIN) => {}
            Ok(None) | Err(_) => {
                let status = waitpid(child, None);
                return Err(RunError::Internal(format!(
                    "the sandbox's init ended before starting the command ({status:?})"
                )));
            }
        }
    }
    if deadline.is_some() {
        set_recv_timeout(&ours, None);
    }

    // Init reports the command's status before it exits, and its exit
    // (the teardown of the sandbox's mounts and namespaces) takes a while:
    // the proxy is stopped and the end recorded as soon as the report
    // comes, while init ends. Without SIGIO the report is read after
    // init's exit.
    let _ = ours.signal_on_input();
    let mut status = None;
    let mut network = None;
    // The end as recorded early: the limit lines it had, and the result.
    let mut early: Option<(Vec<String>, Result<(), String>)> = None;
    let mut read_reports = || {
        while let Ok(Some((m, _))) = ours.try_recv() {
            let Msg::Exited(s) = m else { continue };
            status = Some(s);
            network = proxy.stop();
            if let Some(end) = record_end.take() {
                let events = group.as_ref().map(|g| g.events()).unwrap_or_default();
                let report = RunReport {
                    outcome: Outcome::Finished(s),
                    hardening: hardening.clone(),
                    ended_by: crate::cgroup::ended_by(&spec.limits, &events, Some(s), false),
                    peak_memory: events.memory_peak,
                    network: network.clone(),
                    born_in_cgroup: v2_joined,
                    end_recorded: Ok(()),
                };
                let recorded = end(&report);
                early = Some((report.ended_by, recorded));
            }
        }
    };
    // A report that came before the kernel was asked to say so.
    read_reports();

    let raw = master.as_ref().and_then(|_| pty::RawMode::enter());
    let output = match &master {
        Some(m) => {
            pty::sync_window_size(m);
            Some(pty::relay(m).map_err(|e| fail(RunError::Internal(format!("pty relay: {e}"))))?)
        }
        None => None,
    };

    let mut timed_out = false;
    let init_status = loop {
        let sig = match wait_signal(&waited, deadline.filter(|_| !timed_out)) {
            Ok(Some(s)) => s,
            Ok(None) => {
                // Killing init ends the pid namespace and everything in it.
                timed_out = true;
                let _ = kill(child, Signal::SIGKILL);
                continue;
            }
            Err(_) => continue,
        };
        match sig {
            Signal::SIGCHLD => match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => break (code & 0xff) << 8,
                Ok(WaitStatus::Signaled(_, s, _)) => break s as i32,
                _ => {}
            },
            Signal::SIGIO => read_reports(),
            Signal::SIGWINCH if master.is_some() => pty::sync_window_size(master.as_ref().unwrap()),
            other => {
                let _ = kill(child, other);
            }
        }
    };

    // Init reports the command's status just before it exits.
    while let Ok(Some((m, _))) = ours.recv() {
        if let Msg::Exited(s) = m {
            status = Some(s);
        }
    }
    drop(ours);
    // The channel is closed, so no SIGIO comes any more; one may be
    // pending, and it must not end the process if it is ever unblocked.
    let mut sigio = SigSet::empty();
    sigio.add(Signal::SIGIO);
    let _ = wait_signal(&sigio, Some(Instant::now()));
    if let Some(h) = output {
        let _ = h.join();
    }
    drop(raw);
    // Init is reaped, so its pid namespace and every process in the group
    // are gone: the counters are final and the group can go.
    let events = group.as_ref().map(|g| g.events()).unwrap_or_default();
    if let Some(g) = group {
        if let Err(e) = g.remove() {
            eprintln!("moat: warning: could not remove the run's cgroup: {e}");
        }
    }
    // A command that ended by itself just as the timeout hit was not
    // ended by it: init could only report it before it was killed.
    let timed_out = timed_out && status.is_none();
    let init_killed =
        libc::WIFSIGNALED(init_status) && libc::WTERMSIG(init_status) == libc::SIGKILL;
    let ended_by = crate::cgroup::ended_by(&spec.limits, &events, status, timed_out);
    let outcome = match status {
        Some(s) => Outcome::Finished(s),
        None if timed_out => Outcome::TimedOut,
        // The OOM killer chose init itself; the command died with it.
        None if init_killed && events.oom_kills.unwrap_or(0) > 0 => {
            Outcome::Finished(libc::SIGKILL)
        }
        None => {
            return Err(RunError::Internal(format!(
                "the sandbox's init ended without reporting the command's status (init wait status {init_status:#x})"
            )))
        }
    };
    let end_recorded = match early {
        Some((recorded, Ok(()))) => {
            let late: Vec<(&str, serde_json::Value)> = late_limits(&recorded, &ended_by)
                .map(|l| ("limit", serde_json::json!({ "reason": l })))
                .collect();
            match (audit, late.is_empty()) {
                (Some(a), false) => a.finish_with(&late),
                _ => Ok(()),
            }
        }
        Some((_, Err(e))) => Err(e),
        None => Ok(()),
    };
    Ok(RunReport {
        outcome,
        hardening,
        ended_by,
        peak_memory: events.memory_peak,
        network: network.or_else(|| proxy.stop()),
        born_in_cgroup: v2_joined,
        end_recorded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_limits_are_what_the_early_end_did_not_say() {
        let early = vec!["the pids limit (8) refused 3 forks".to_string()];
        let same = early.clone();
        assert_eq!(late_limits(&early, &same).count(), 0);
        let more = vec![
            "the memory limit (1 MiB) was reached: the kernel killed a process in the sandbox"
                .to_string(),
            "the pids limit (8) refused 5 forks".to_string(),
        ];
        assert_eq!(
            late_limits(&early, &more).collect::<Vec<_>>(),
            vec![&more[0], &more[1]]
        );
        assert_eq!(late_limits(&[], &early).count(), 1);
    }
}
