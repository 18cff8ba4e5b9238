//! Starts the command from init, the way posix_spawn does: a child that
//! shares init's memory (CLONE_VM) while init waits (CLONE_VFORK), so no
//! copy of init's page tables is made only to be thrown away by exec.
//!
//! The price is discipline in the child: it runs on its own small stack in
//! init's address space, so it may not allocate, take a lock or unwind.
//! Everything it needs (paths, argv and envp as pointer arrays) is built
//! before the clone, and it makes only plain system calls.

use nix::errno::Errno;
use nix::unistd::Pid;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the child was when it gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before exec: session, terminal, working directory, signals.
    Prepare,
    /// exec itself, for every candidate path.
    Exec,
}

/// Why the command could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub stage: Stage,
    pub errno: i32,
}

/// A command ready to start: everything the child touches, made now.
pub struct Launch {
    candidates: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    cwd: CString,
    slave: Option<CString>,
    /// Written by the child before it exits on failure: stage in the high
    /// half, errno in the low half; 0 while nothing failed.
    failed: AtomicU64,
}

impl Launch {
    /// `argv` and `env` must outlive the launch (the pointer arrays point
    /// into them).
    pub fn new(
        candidates: Vec<CString>,
        argv: &[CString],
        env: &[CString],
        cwd: CString,
        slave: Option<CString>,
    ) -> Launch {
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Launch {
            candidates,
            argv: ptrs(argv),
            envp: ptrs(env),
            cwd,
            slave,
            failed: AtomicU64::new(0),
        }
    }

    /// Starts the command; returns once it has exec'd (its pid) or given
    /// up (the child is reaped then). The caller must be single-threaded.
    pub fn start(&self) -> Result<Pid, Failure> {
        // The child's stack: only system call wrappers run on it.
        let mut stack = vec![0u8; 64 * 1024];
        // SAFETY: the stack grows down from its end, which is 16-byte
        // aligned after rounding down; the buffer outlives the child's use
        // of it, because CLONE_VFORK suspends us until the child has
        // exec'd or exited. `self` stays borrowed, and so alive and
        // unmoved, for as long.
        let pid = unsafe {
            let top = stack.as_mut_ptr().add(stack.len()) as usize & !0xf;
            libc::clone(
                child,
                top as *mut c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                self as *const Launch as *mut c_void,
            )
        };
        drop(stack);
        if pid < 0 {
            return Err(Failure {
                stage: Stage::Prepare,
                errno: Errno::last() as i32,
            });
        }
        let pid = Pid::from_raw(pid);
        match self.failed.load(Ordering::SeqCst) {
            0 => Ok(pid),
            f => {
                let _ = nix::sys::wait::waitpid(pid, None);
                Err(Failure {
                    stage: if f >> 32 == 1 {
                        Stage::Prepare
                    } else {
                        Stage::Exec
                    },
                    errno: (f & 0xffff_ffff) as i32,
                })
            }
        }
    }
}

/// The child. Runs in init's memory on its own stack: plain system calls
/// only.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Launch` that `start` passed, alive and not
    // moved while we run (the parent is suspended until we exec or exit).
    let l = unsafe { &*(arg as *const Launch) };
    let fail = |stage: u64, errno: i32| -> c_int {
        l.failed
            .store((stage << 32) | (errno as u32 as u64), Ordering::SeqCst);
        // SAFETY: _exit runs no handlers of init's and frees nothing.
        unsafe { libc::_exit(if errno == libc::ENOENT { 127 } else { 126 }) }
    };
    if let Err(e) = prepare(&l.cwd, l.slave.as_deref()) {
        return fail(1, e);
    }
    let mut last = libc::ENOENT;
    for path in &l.candidates {
        // SAFETY: path, argv and envp are NUL-terminated strings and
        // null-terminated pointer arrays built before the clone.
        unsafe { libc::execve(path.as_ptr(), l.argv.as_ptr(), l.envp.as_ptr()) };
        match Errno::last_raw() {
            libc::ENOENT | libc::ENOTDIR => {}
            other => last = other,
        }
    }
    fail(2, last)
}

/// Before exec: own session (so the caller's terminal signals reach the
/// command only through moat), the pty as its terminal, default signal
/// dispositions and an empty mask (init's blocked set and Rust's ignored
/// SIGPIPE would otherwise pass through exec).
fn prepare(cwd: &CStr, slave: Option<&CStr>) -> Result<(), i32> {
    let check = |r: c_int| if r < 0 { Err(Errno::last_raw()) } else { Ok(r) };
    // SAFETY: plain system calls on this process's own descriptors,
    // session and signal state (CLONE_SIGHAND is not set: the dispositions
    // are the child's copy); every pointer is a valid C string or a
    // sigset on this stack.
    unsafe {
        check(libc::setsid())?;
        if let Some(slave) = slave {
            let fd = check(libc::open(slave.as_ptr(), libc::O_RDWR))?;
            check(libc::ioctl(fd, libc::TIOCSCTTY, 0))?;
            let stderr_is_tty = libc::isatty(2) == 1;
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            if stderr_is_tty {
                libc::dup2(fd, 2);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
        check(libc::chdir(cwd.as_ptr()))?;
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            &empty,
            std::ptr::null_mut(),
        ))?;
    }
    Ok(())
}
