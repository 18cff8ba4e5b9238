//! The sandbox's pid 1. It builds the file system view, starts the command
//! as pid 2, forwards signals to it, reaps orphans, and reports the
//! command's exit to the supervisor. When it exits, the kernel kills every
//! other process in the pid namespace, so nothing outlives the run.

use super::control::{Channel, Msg};
use super::{mounts, net, Spec};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

/// Signals the supervisor forwards and init passes on to the command.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCONT,
];

/// Every signal init waits for: the forwarded ones plus SIGCHLD.
pub fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Entry point in the cloned child. Never returns.
pub fn run(spec: &Spec, chan: Channel) -> ! {
    // If the supervisor dies (even by SIGKILL), so does init, and with it
    // the whole pid namespace.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and no pointers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    close_inherited_fds(chan.0.as_raw_fd());
    scrub_host_strings();

    // The supervisor writes our uid/gid maps, then says go. End of stream
    // here means it died before that: nothing to do.
    match chan.recv() {
        Ok(Some((Msg::Go, _))) => {}
        _ => exit(1),
    }
    let built = match setup(spec) {
        Ok(b) => b,
        Err(e) => {
            let _ = chan.send(&Msg::SetupFailed(e));
            exit(1);
        }
    };
    let slave = match built.pty {
        Some((master, index)) => {
            copy_window_size(&master);
            if chan
                .send_with_fd(&Msg::Pty, Some(master.as_raw_fd()))
                .is_err()
            {
                exit(1);
            }
            Some(format!("/dev/pts/{index}"))
        }
        None => None,
    };

    // The proxy's socket is made here, in the sandbox's network namespace,
    // and handed over before any layer goes on: the supervisor accepts on
    // it from the host side. Init keeps no copy, so neither does the
    // command.
    if let Some(port) = spec.proxy_port {
        let listener = match proxy_listener(port) {
            Ok(l) => l,
            Err(e) => {
                let _ = chan.send(&Msg::SetupFailed(format!(
                    "the proxy's socket on 127.0.0.1:{port}: {}",
                    e.desc()
                )));
                exit(1);
            }
        };
        if chan
            .send_with_fd(&Msg::Listener, Some(listener.as_raw_fd()))
            .is_err()
        {
            exit(1);
        }
        drop(listener);
    }
    // The supervisor puts us in the run's cgroup while we build (moving a
    // task between cgroups can wait out an RCU grace period, milliseconds
    // better spent here) and starts the proxy on that socket. Nothing
    // limits the command or confines its traffic before both are done:
    // wait for the word, so a proxy that fails to start never leaves a
    // command running.
    match chan.recv() {
        Ok(Some((Msg::Go, _))) => {}
        _ => exit(1),
    }
    // In the run's cgroup now: a cgroup namespace made here is rooted
    // there, so the sandbox sees it as `/`.
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP) {
        let _ = chan.send(&Msg::SetupFailed(format!("cgroup namespace: {}", e.desc())));
        exit(1);
    }

    // Every layer goes on before the command exists, so its first
    // instruction already runs confined.
    match super::harden::apply(spec) {
        Ok(report) => {
            let json = serde_json::to_string(&report).unwrap_or_default();
            if chan.send(&Msg::Hardened(json)).is_err() {
                exit(1);
            }
        }
        Err(e) => {
            let _ = chan.send(&Msg::SetupFailed(e));
            exit(1);
        }
    }

    let child = match start_command(spec, slave.as_deref()) {
        Ok(pid) => pid,
        Err((errno, what)) => {
            let _ = chan.send(&Msg::ExecFailed { errno, what });
            exit(1);
        }
    };
    let _ = chan.send(&Msg::Started);

    // Only the command should hold the caller's stdio; init keeps nothing
    // of the host that the command could reach through /proc/1/fd.
    if let Ok(null) = open("/dev/null", OFlag::O_RDWR, Mode::empty()) {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this
            // single-threaded process; `null` stays open for the call.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }

    let status = reap_until(child);
    let _ = chan.send(&Msg::Exited(status));
    exit(0)
}

/// Init is a copy of the supervisor, so its argv and environment blocks
/// (what /proc/1/cmdline and /proc/1/environ show) hold the caller's whole
/// environment and moat's arguments. Init never reads them again; zero them
/// so nothing inside can read them even if it got at init's memory.
fn scrub_host_strings() {
    extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    // SAFETY: init is single-threaded and nothing in it reads the
    // environment or argv after this point. Each pointer in `environ` is a
    // NUL-terminated string owned by the process; we overwrite its bytes in
    // place without changing its length.
    unsafe {
        let mut p = std::ptr::addr_of_mut!(environ).read();
        while !p.is_null() && !(*p).is_null() {
            let s = *p;
            let len = libc::strlen(s);
            std::ptr::write_bytes(s, 0, len);
            p = p.add(1);
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields 48 and 49 (1-based) are arg_start and arg_end; the command
        // name field may contain spaces, so count from after its ')'.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let (start, end) = (
                f.get(45).and_then(|v| v.parse::<usize>().ok()),
                f.get(46).and_then(|v| v.parse::<usize>().ok()),
            );
            if let (Some(start), Some(end)) = (start, end) {
                if end > start && end - start < (1 << 20) {
                    // Keep argv[0] so `ps` still names init.
                    // SAFETY: [arg_start, arg_end) is this process's argv
                    // block as the kernel reports it: mapped, writable
                    // (it lives on the initial stack) and unused by init.
                    unsafe {
                        let base = start as *mut u8;
                        let first = libc::strlen(base as *const libc::c_char) + 1;
                        if first < end - start {
                            std::ptr::write_bytes(base.add(first), 0, end - start - first);
                        }
                    }
                }
            }
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running the parent's atexit
    // handlers or flushing its stdio buffers copied by clone.
    unsafe { libc::_exit(code) }
}

fn setup(spec: &Spec) -> Result<mounts::Built, String> {
    let built = mounts::build_root(&spec.plan, spec.use_pty).map_err(|e| e.to_string())?;
    nix::unistd::sethostname(&spec.hostname).map_err(|e| format!("sethostname: {}", e.desc()))?;
    net::loopback_up().map_err(|e| format!("bringing up lo: {}", e.desc()))?;
    Ok(built)
}

/// A listening TCP socket on 127.0.0.1:`port`. Close-on-exec, so that even
/// a copy that outlived init's own would not reach the command.
fn proxy_listener(port: u16) -> Result<OwnedFd, Errno> {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port))?;
    listen(&fd, Backlog::new(1024)?)?;
    Ok(fd)
}

/// Closes every descriptor but stdio and `keep`: the caller may have leaked
/// descriptors into moat, and none of them belong in the sandbox.
fn close_inherited_fds(keep: i32) {
    // SAFETY: close_range only closes descriptors; nothing in this
    // single-threaded child uses any descriptor but stdio and `keep`.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        let r = libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
        if r != 0 {
            // Kernels before 5.9: close one by one.
            for fd in 3..1024 {
                if fd != keep {
                    libc::close(fd);
                }
            }
        }
    }
}

fn copy_window_size(master: &OwnedFd) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read and write a `winsize` we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Forks the command. Reports exec failure through a close-on-exec pipe:
/// end of file there means the exec succeeded.
fn start_command(spec: &Spec, slave: Option<&str>) -> Result<Pid, (i32, String)> {
    let (rd, wr) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| (e as i32, "pipe".to_string()))?;
    let cwd = CString::new(spec.cwd.as_os_str().as_encoded_bytes()).unwrap_or_default();
    let candidates = spec.exec_candidates();
    let slave = slave.map(|s| CString::new(s).unwrap_or_default());
    // SAFETY: init is single-threaded, so the child may run arbitrary code.
    match unsafe { fork() } {
        Err(e) => Err((e as i32, "fork".to_string())),
        Ok(ForkResult::Child) => {
            drop(rd);
            let fail = |errno: i32, stage: u8| -> ! {
                let mut b = [0u8; 5];
                b[0] = stage;
                b[1..].copy_from_slice(&errno.to_le_bytes());
                let _ = nix::unistd::write(&wr, &b);
                exit(if errno == libc::ENOENT { 127 } else { 126 });
            };
            if let Err(e) = prepare_child(&cwd, slave.as_deref()) {
                fail(e as i32, b'c');
            }
            let mut last = libc::ENOENT;
            for path in &candidates {
                let Err(e) = nix::unistd::execve(path, &spec.argv, &spec.env);
                match e {
                    Errno::ENOENT | Errno::ENOTDIR => {}
                    other => last = other as i32,
                }
            }
            fail(last, b'x')
        }
        Ok(ForkResult::Parent { child }) => {
            drop(wr);
            let mut b = [0u8; 5];
            let n = loop {
                match nix::unistd::read(&rd, &mut b) {
                    Err(Errno::EINTR) => continue,
                    other => break other.unwrap_or(0),
                }
            };
            if n == 5 {
                let errno = i32::from_le_bytes(b[1..].try_into().unwrap());
                let _ = waitpid(child, None);
                let what = if b[0] == b'c' {
                    format!(
                        "preparing to run (working directory {})",
                        spec.cwd.display()
                    )
                } else {
                    spec.argv[0].to_string_lossy().into_owned()
                };
                return Err((errno, what));
            }
            Ok(child)
        }
    }
}

/// In the forked command, before exec: own session (so the caller's
/// terminal signals reach it only through moat), the pty as its terminal,
/// default signal handling.
fn prepare_child(cwd: &CString, slave: Option<&std::ffi::CStr>) -> Result<(), Errno> {
    nix::unistd::setsid()?;
    if let Some(slave) = slave {
        // SAFETY: plain syscalls on descriptors this process owns; the
        // path is a valid C string.
        unsafe {
            let fd = libc::open(slave.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                return Err(Errno::last());
            }
            if libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(Errno::last());
            }
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
    }
    nix::unistd::chdir(cwd.as_c_str())?;
    // Rust ignores SIGPIPE and the supervisor blocked the forwarded signals;
    // both would leak into the command through exec.
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: resetting to the default disposition installs no handler.
            unsafe {
                let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl);
            }
        }
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    Ok(())
}

/// Waits for signals: forwards the forwarded ones to the command, reaps
/// every child on SIGCHLD, and returns the command's wait status once it is
/// gone.
fn reap_until(child: Pid) -> i32 {
    let set = handled_set();
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(child, sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(WaitStatus::Exited(pid, code)) if pid == child => return (code & 0xff) << 8,
                Ok(WaitStatus::Signaled(pid, sig, core)) if pid == child => {
                    return sig as i32 | if core { 0x80 } else { 0 };
                }
                Ok(_) => {}
            }
        }
    }
}
