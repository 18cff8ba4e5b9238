//! The sandbox's pid 1. It builds the file system view, starts the command
//! as pid 2, forwards signals to it, reaps orphans, and reports the
//! command's exit to the supervisor. When it exits, the kernel kills every
//! other process in the pid namespace, so nothing outlives the run.

use super::control::{Channel, Msg};
use super::placement::Placement;
use super::{mounts, net, spawn, Spec};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
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
pub fn run(spec: &Spec, chan: Channel, placement: Option<&Placement>) -> ! {
    // If the supervisor dies (even by SIGKILL), so does init, and with it
    // the whole pid namespace.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and no pointers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if let Some(p) = placement {
        p.move_apart(Pid::from_raw(0));
    }
    close_inherited_fds(chan.0.as_raw_fd());
    scrub_host_strings();

    // Init maps its own ids (a process may map its own uid and gid in a
    // user namespace it is root in), so it builds at once instead of
    // waiting for the supervisor to write the maps and say so.
    if let Err((errno, what)) = map_own_ids(spec.uid, spec.gid) {
        let _ = chan.send(&Msg::MapFailed { errno, what });
        exit(1);
    }
    if let Err(e) = setup_network(spec) {
        let _ = chan.send(&Msg::SetupFailed(e));
        exit(1);
    }

    // The proxy's socket is made first, in the sandbox's network
    // namespace, so the supervisor starts the proxy on it while init
    // builds the file system. Init keeps no copy, so neither does the
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

    let built = match mounts::build_root(&spec.plan, spec.use_pty) {
        Ok(b) => b,
        Err(e) => {
            let _ = chan.send(&Msg::SetupFailed(e.to_string()));
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

    // The supervisor puts us in the run's cgroup while we build (moving a
    // task between cgroups can wait out an RCU grace period, milliseconds
    // better spent here) and starts the proxy on that socket. It may have
    // died meanwhile: end of stream here means nothing runs. Nothing
    // limits the command or confines its traffic before both are done:
    // wait for the word, so a proxy that fails to start never leaves a
    // command running.
    match chan.recv() {
        Ok(Some((Msg::Go, _))) => {}
        _ => exit(1),
    }
    // The supervisor is done with its part (and has moved us, if it had
    // to, before it said Go): the command gets every CPU the caller had.
    if let Some(p) = placement {
        if let Err(e) = p.restore() {
            let _ = chan.send(&Msg::SetupFailed(e));
            exit(1);
        }
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

/// Maps `uid` and `gid` (the caller's, which this process still has in
/// the parent namespace) to themselves in init's user namespace.
fn map_own_ids(uid: u32, gid: u32) -> Result<(), (i32, String)> {
    let write = |file: &str, data: String| {
        let path = format!("/proc/self/{file}");
        std::fs::write(&path, data).map_err(|e| {
            (
                e.raw_os_error().unwrap_or(libc::EPERM),
                format!("writing {path}: {e}"),
            )
        })
    };
    // Without CAP_SETGID in the parent namespace, setgroups must be given
    // up before a gid map may be written.
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{uid} {uid} 1\n"))?;
    write("gid_map", format!("{gid} {gid} 1\n"))
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running the parent's atexit
    // handlers or flushing its stdio buffers copied by clone.
    unsafe { libc::_exit(code) }
}

/// The host name, and `lo` up (the proxy's socket is bound on it).
fn setup_network(spec: &Spec) -> Result<(), String> {
    nix::unistd::sethostname(&spec.hostname).map_err(|e| format!("sethostname: {}", e.desc()))?;
    net::loopback_up().map_err(|e| format!("bringing up lo: {}", e.desc()))
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

/// Starts the command as init's child. Returns once it runs, or why it
/// could not.
fn start_command(spec: &Spec, slave: Option<&str>) -> Result<Pid, (i32, String)> {
    let cwd = CString::new(spec.cwd.as_os_str().as_encoded_bytes()).unwrap_or_default();
    let slave = slave.map(|s| CString::new(s).unwrap_or_default());
    let launch = spawn::Launch::new(spec.exec_candidates(), &spec.argv, &spec.env, cwd, slave);
    launch.start().map_err(|f| {
        let what = match f.stage {
            spawn::Stage::Prepare => format!(
                "preparing to run (working directory {})",
                spec.cwd.display()
            ),
            spawn::Stage::Exec => spec.argv[0].to_string_lossy().into_owned(),
        };
        (f.errno, what)
    })
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
