//! Runs a command in the sandbox: the supervisor's side.
//!
//! The supervisor clones init into new user, mount, pid, net, ipc, uts and
//! cgroup namespaces, writes its uid/gid maps, then relays signals and the
//! terminal until the command exits. See `init` for the inside.

pub mod caps;
pub mod control;
pub mod harden;
pub mod init;
pub mod landlock;
pub mod mounts;
pub mod net;
pub mod pty;
pub mod seccomp;

use crate::mount_plan::Plan;
use control::Msg;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, sigprocmask, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

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
    #[error("{0}")]
    Internal(String),
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
}

/// How the command ended, as the supervisor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Wait status of the command.
    Finished(i32),
    /// The command could not be started; exit 127 (not found) or 126.
    NotStarted { code: i32, message: String },
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
        }
    }
}

const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWUSER
    .union(CloneFlags::CLONE_NEWNS)
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWNET)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWCGROUP);

fn write_maps(pid: Pid, uid: u32, gid: u32) -> Result<(), (Errno, String)> {
    let write = |file: &str, data: String| {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, data).map_err(|e| {
            (
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EPERM)),
                format!("writing {path}: {e}"),
            )
        })
    };
    // An unprivileged writer must give up setgroups before it may map gids.
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{uid} {uid} 1\n"))?;
    write("gid_map", format!("{gid} {gid} 1\n"))?;
    Ok(())
}

/// Runs `spec` to completion. Must be called while the process is still
/// single-threaded: the clone child runs Rust code that may allocate.
pub fn run(spec: &Spec) -> Result<RunReport, RunError> {
    let internal = |what: &str, e: Errno| RunError::Internal(format!("{what}: {}", e.desc()));
    // Blocked here and waited for synchronously below; init inherits the
    // mask and waits for the same set.
    let handled = init::handled_set();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled), None)
        .map_err(|e| internal("sigprocmask", e))?;

    let (ours, theirs) = control::pair().map_err(|e| internal("socketpair", e))?;
    let ours_raw = ours.0.as_raw_fd();
    let mut stack = vec![0u8; 1 << 20];
    let child_spec = spec.clone();
    let mut theirs_slot = Some(theirs);
    let cb = Box::new(move || {
        // SAFETY: the supervisor's end is a plain descriptor in this fresh
        // copy of the address space; closing it only drops our reference,
        // and its OwnedFd is never dropped because init never returns.
        unsafe { libc::close(ours_raw) };
        let chan = theirs_slot.take().expect("clone callback runs once");
        init::run(&child_spec, chan)
    });
    // SAFETY: the process is single-threaded (see above), the stack is
    // exclusively the child's, and the child never returns into our frames.
    let child = match unsafe { nix::sched::clone(cb, &mut stack, NAMESPACES, Some(libc::SIGCHLD)) }
    {
        Ok(pid) => pid,
        Err(e) => {
            return Err(RunError::UserNamespace(crate::userns::explain(
                e as i32,
                &crate::userns::Knobs::read(),
                spec.uid == 0,
            )))
        }
    };

    let fail = |err: RunError| {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        err
    };
    if let Err((errno, detail)) = write_maps(child, spec.uid, spec.gid) {
        let mut msg =
            crate::userns::explain(errno as i32, &crate::userns::Knobs::read(), spec.uid == 0);
        msg.push_str(&format!("\n  ({detail})"));
        return Err(fail(RunError::UserNamespace(msg)));
    }
    ours.send(&Msg::Go)
        .map_err(|e| fail(internal("control channel", e)))?;

    let mut master = None;
    let mut hardening = harden::Report::default();
    loop {
        match ours.recv() {
            Ok(Some((Msg::Pty, fd))) => master = fd,
            Ok(Some((Msg::Hardened(json), _))) => {
                hardening = serde_json::from_str(&json).unwrap_or_default();
            }
            Ok(Some((Msg::Started, _))) => break,
            Ok(Some((Msg::SetupFailed(m), _))) => return Err(fail(RunError::Setup(m))),
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
                });
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                let status = waitpid(child, None);
                return Err(RunError::Internal(format!(
                    "the sandbox's init ended before starting the command ({status:?})"
                )));
            }
        }
    }

    let raw = master.as_ref().and_then(|_| pty::RawMode::enter());
    let output = match &master {
        Some(m) => {
            pty::sync_window_size(m);
            Some(pty::relay(m).map_err(|e| fail(RunError::Internal(format!("pty relay: {e}"))))?)
        }
        None => None,
    };

    let init_status = loop {
        let sig = match handled.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        match sig {
            Signal::SIGCHLD => match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => break (code & 0xff) << 8,
                Ok(WaitStatus::Signaled(_, s, _)) => break s as i32,
                _ => {}
            },
            Signal::SIGWINCH if master.is_some() => pty::sync_window_size(master.as_ref().unwrap()),
            other => {
                let _ = kill(child, other);
            }
        }
    };

    // Init reports the command's status just before it exits.
    let mut status = None;
    while let Ok(Some((m, _))) = ours.recv() {
        if let Msg::Exited(s) = m {
            status = Some(s);
        }
    }
    if let Some(h) = output {
        let _ = h.join();
    }
    drop(raw);
    match status {
        Some(s) => Ok(RunReport {
            outcome: Outcome::Finished(s),
            hardening,
            ended_by: Vec::new(),
        }),
        None => Err(RunError::Internal(format!(
            "the sandbox's init ended without reporting the command's status (init wait status {init_status:#x})"
        ))),
    }
}
