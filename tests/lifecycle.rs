//! The command's life: exit status, signals, terminal, and what happens
//! when moat itself dies.

mod common;

use common::*;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

sandbox_test! {
    /// The command's exit status is moat's.
    fn exit_status_passes_through(r: &Runner) {
        let ws = r.workspace();
        for code in [0, 1, 42, 255] {
            r.sh(&ws, &format!("exit {code}")).assert_code(code);
        }
        r.exec(&ws).cmd(["false"]).run().assert_code(1);
        r.exec(&ws).cmd(["true"]).run().assert_code(0);
    }
}

sandbox_test! {
    /// Death by signal N is 128+N, as in a shell.
    fn killed_by_signal_is_128_plus_n(r: &Runner) {
        let ws = r.workspace();
        r.sh(&ws, "kill -KILL $$").assert_code(128 + 9);
        r.sh(&ws, "kill -TERM $$").assert_code(128 + 15);
        r.sh(&ws, "kill -SEGV $$").assert_code(128 + 11);
    }
}

sandbox_test! {
    /// A command that is not there: 127 and a message.
    fn command_not_found_is_127(r: &Runner) {
        let ws = r.workspace();
        let name = unique("moat-no-such-command-");
        let out = r.exec(&ws).cmd([name.as_str(), "arg"]).run();
        out.assert_code(127).assert_stderr_has(&name);
        let out = r.exec(&ws).cmd(["./missing-script"]).run();
        out.assert_code(127).assert_stderr_has("missing-script");
    }
}

sandbox_test! {
    /// A command that is there but cannot be run: 126 and a message.
    fn not_executable_is_126(r: &Runner) {
        let ws = r.workspace();
        let script = ws.write("script.sh", "#!/bin/sh\necho should not run\n");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = r.exec(&ws).cmd(["./script.sh"]).run();
        out.assert_code(126).assert_stderr_has("script.sh");
        assert!(!out.stdout.contains("should not run"), "{out}");
        // A directory is not executable either.
        r.exec(&ws).cmd(["/usr"]).run().assert_code(126);
    }
}

sandbox_test! {
    /// stdin, stdout and stderr are relayed unchanged when they are not a
    /// terminal, and the command then gets no terminal.
    fn stdio_without_terminal(r: &Runner) {
        let ws = r.workspace();
        // Bytes of every value, more than any pipe buffer holds.
        let mut x: u32 = 0x1234_5678;
        let input: Vec<u8> = (0..1_500_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect();
        let out = r.exec(&ws).stdin(input.clone()).cmd(["cat"]).run();
        out.assert_ok();
        assert!(out.stdout_bytes == input, "cat did not return its input unchanged ({} of {} bytes)", out.stdout_bytes.len(), input.len());

        let out = r.sh(&ws, "echo to-stdout; echo to-stderr >&2; tty; true");
        out.assert_ok().assert_stderr_has("to-stderr").assert_stdout_has("not a tty");
        assert!(!out.stdout.contains("to-stderr"), "{out}");
        assert!(!out.stderr.contains("to-stdout"), "{out}");
    }
}

/// Starts a command that traps `sig`, waits until the trap is set, sends
/// `sig` to moat and checks that the command's handler ran.
fn signal_reaches_command(r: &Runner, sig: i32, name: &str, code: i32) {
    let ws = r.workspace();
    let script = format!(
        "trap 'echo got-{name}; exit {code}' {name}; echo ready; sleep 1000 & wait $!; echo wait-returned"
    );
    let mut m = r.exec(&ws);
    m.cmd(["sh", "-c", &script]);
    let mut run = m.spawn();
    run.wait_for_stdout("ready", Duration::from_secs(20));
    // Give sh a moment to reach `wait`; the trap is already in place.
    std::thread::sleep(Duration::from_millis(100));
    run.signal(sig);
    let out = run.finish(TIMEOUT);
    out.assert_code(code)
        .assert_stdout_has(&format!("got-{name}"));
}

sandbox_test! {
    fn sigterm_reaches_command(r: &Runner) {
        signal_reaches_command(r, libc::SIGTERM, "TERM", 71);
    }
}

sandbox_test! {
    fn sigint_reaches_command(r: &Runner) {
        signal_reaches_command(r, libc::SIGINT, "INT", 72);
    }
}

sandbox_test! {
    fn sighup_reaches_command(r: &Runner) {
        signal_reaches_command(r, libc::SIGHUP, "HUP", 73);
    }
}

sandbox_test! {
    fn sigquit_reaches_command(r: &Runner) {
        signal_reaches_command(r, libc::SIGQUIT, "QUIT", 74);
    }
}

sandbox_test! {
    /// SIGWINCH is forwarded too (it does not end the command).
    fn sigwinch_reaches_command(r: &Runner) {
        let ws = r.workspace();
        let script = "trap 'echo got-WINCH' WINCH; trap 'exit 75' TERM; echo ready; \
                      while :; do sleep 1000 & wait $!; done";
        let mut m = r.exec(&ws);
        m.cmd(["sh", "-c", script]);
        let mut run = m.spawn();
        run.wait_for_stdout("ready", Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(100));
        run.signal(libc::SIGWINCH);
        run.wait_for_stdout("got-WINCH", Duration::from_secs(10));
        run.signal(libc::SIGTERM);
        run.finish(TIMEOUT).assert_code(75);
    }
}

sandbox_test! {
    /// A command that does not handle SIGTERM dies of it, and moat reports
    /// that as 128+15.
    fn unhandled_sigterm_is_143(r: &Runner) {
        let ws = r.workspace();
        let mut m = r.exec(&ws);
        m.cmd(["sh", "-c", "echo ready; exec sleep 1000"]);
        let mut run = m.spawn();
        run.wait_for_stdout("ready", Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(200));
        run.signal(libc::SIGTERM);
        run.finish(TIMEOUT).assert_code(128 + 15);
    }
}

sandbox_test! {
    /// kill -9 of moat takes the whole sandbox with it: nothing it started
    /// survives on the host.
    fn sigkill_of_moat_leaves_no_orphans(r: &Runner) {
        let ws = r.workspace();
        let mut m = r.exec(&ws);
        m.cmd([
            "sh",
            "-c",
            // A detached grandchild too: setsid makes it its own session, the
            // way daemons escape.
            "sleep 1001 & sleep 1002 & setsid sh -c 'sleep 1003' & sleep 0.3; echo ready; wait",
        ]);
        let mut run = m.spawn();
        run.wait_for_stdout("ready", Duration::from_secs(20));
        let moat_pid = run.pid();
        let tree = descendants(moat_pid);
        let sleeps = tree.iter().filter(|p| p.comm == "sleep").count();
        assert!(
            sleeps >= 3,
            "expected the sandbox's sleeps among moat's descendants, found {tree:#?}"
        );
        run.signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut alive: Vec<ProcStat> = tree.clone();
        while Instant::now() < deadline {
            alive.retain(still_alive);
            if alive.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Do not leave them behind for the next test, then report.
        for p in &alive {
            // SAFETY: kill has no memory-safety preconditions; starttime was
            // checked by still_alive, so the pid is still that process.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
        let out = run.finish(TIMEOUT);
        assert_eq!(out.status.code(), None, "moat should have died of SIGKILL{out}");
        assert!(
            alive.is_empty(),
            "sandbox processes outlived moat by 5 s: {alive:#?}"
        );
    }
}

/// The master side of a pseudo-terminal made by the test, as a terminal
/// emulator would.
struct Pty {
    master: File,
}

fn set_winsize(fd: i32, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
}

impl Pty {
    /// Returns the master and the slave end.
    fn open(rows: u16, cols: u16) -> (Pty, OwnedFd) {
        let (mut m, mut s) = (-1, -1);
        // SAFETY: openpty writes two fds; name, termios and winsize may be null.
        let rc = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty succeeded, both fds are ours.
        let (master, slave) = unsafe { (File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        set_winsize(slave.as_raw_fd(), rows, cols);
        (Pty { master }, slave)
    }

    /// Reads what is available within `wait` (nothing, if nothing came).
    /// Returns None at end of output (all slave ends closed).
    fn read_some(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) };
        if n <= 0 {
            return Some(Vec::new());
        }
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => Some(buf[..n].to_vec()),
            // EIO: the other side is closed for good.
            Err(_) => None,
        }
    }
}

/// Reads from the pty into `seen` until it contains `needle`.
fn expect(pty: &mut Pty, seen: &mut String, needle: &str, timeout: Duration, from: usize) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if seen[from.min(seen.len())..].contains(needle) {
            return true;
        }
        match pty.read_some(Duration::from_millis(100)) {
            Some(b) => seen.push_str(&String::from_utf8_lossy(&b)),
            None => break,
        }
    }
    seen[from.min(seen.len())..].contains(needle)
}

sandbox_test! {
    /// On a terminal, the command gets a terminal of its own: an
    /// interactive shell works, `tty` names a /dev/pts device, the window
    /// size matches the outer one and follows it when it changes, and the
    /// exit status passes through.
    fn interactive_shell_on_pty(r: &Runner) {
        let ws = r.workspace();
        let (mut pty, slave) = Pty::open(37, 123);
        // As login(1) would: the caller owns its terminal.
        // SAFETY: fchown on a valid fd.
        unsafe { libc::fchown(slave.as_raw_fd(), r.uid, r.gid) };
        let mut m = r.exec(&ws);
        m.args(["-e", "PS1=moat-prompt> "]).cmd(["sh", "-i"]);
        let (mut cmd, what) = m.into_command();
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()))
            .env("TERM", "xterm");
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
        // Only moat may hold the slave now, so its exit ends our reads.
        drop(cmd);
        drop(slave);

        let mut seen = String::new();
        let mut ok = expect(&mut pty, &mut seen, "moat-prompt> ", Duration::from_secs(20), 0);
        let mut failure = String::new();
        if ok {
            pty.master.write_all(b"tty; stty size; echo MARK-$((6*7))\n").unwrap();
            ok = expect(&mut pty, &mut seen, "MARK-42", Duration::from_secs(10), 0);
        } else {
            failure = "no prompt".into();
        }
        if ok {
            let mark = seen.len();
            set_winsize(pty.master.as_raw_fd(), 50, 100);
            // Resizing the outer terminal signals moat; allow for it to pass
            // the new size on before asking.
            let mut resized = false;
            for _ in 0..20 {
                pty.master.write_all(b"stty size\n").unwrap();
                if expect(&mut pty, &mut seen, "50 100", Duration::from_millis(500), mark) {
                    resized = true;
                    break;
                }
            }
            if !resized {
                failure = "window size change did not reach the command".into();
            }
            pty.master.write_all(b"exit 7\n").unwrap();
        } else if failure.is_empty() {
            failure = "typed command did not run".into();
        }
        // Read to the end so moat is never blocked writing to us.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match pty.read_some(Duration::from_millis(100)) {
                Some(b) => seen.push_str(&String::from_utf8_lossy(&b)),
                None => break,
            }
            if child.try_wait().unwrap().is_some() {
                // Drain what is left, without waiting on a closed pty.
                while let Some(b) = pty.read_some(Duration::from_millis(50)) {
                    if b.is_empty() {
                        break;
                    }
                    seen.push_str(&String::from_utf8_lossy(&b));
                }
                break;
            }
        }
        // The terminal closes a moment before moat is gone.
        let exit_deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > exit_deadline {
                let _ = child.kill();
                failure.push_str("; moat did not exit after `exit 7`");
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let ctx = format!("\n--- ran: {what}\n--- status: {status}\n--- terminal:\n{seen}\n---");
        assert!(failure.is_empty(), "{failure}{ctx}");
        let tty_line = seen
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("/dev/"))
            .unwrap_or_else(|| panic!("`tty` printed no device{ctx}"));
        assert!(tty_line.starts_with("/dev/pts/"), "tty inside is {tty_line}{ctx}");
        assert!(seen.contains("37 123"), "inner window size differs from the outer one{ctx}");
        assert_eq!(status.code(), Some(7), "{ctx}");
    }
}

/// `Cpus_allowed_list` of /proc/self/status, as printed there.
fn cpus_allowed(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no Cpus_allowed_list in {status}"))
}

sandbox_test! {
    /// Init builds away from the supervisor's CPU, but the command gets
    /// every CPU the caller had, and no more: also when the caller is
    /// pinned to one.
    fn the_command_runs_on_the_callers_cpus(r: &Runner) {
        let ws = r.workspace();
        let ours = cpus_allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
        // Several runs: init lands on either CPU.
        for _ in 0..6 {
            let out = r.exec(&ws).cmd(["cat", "/proc/self/status"]).run();
            out.assert_ok();
            assert_eq!(cpus_allowed(&out.stdout), ours, "{out}");
        }
        // SAFETY: sched_getcpu reads the calling thread's CPU.
        let pin = unsafe { libc::sched_getcpu() };
        assert!(pin >= 0, "sched_getcpu failed");
        let mut m = r.exec(&ws);
        m.cmd(["cat", "/proc/self/status"]);
        let (mut cmd, what) = m.into_command();
        // SAFETY: only sched_setaffinity, async-signal-safe, on a set built
        // on this stack.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(pin as usize, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = run_command(cmd, what, None, TIMEOUT);
        out.assert_ok();
        assert_eq!(cpus_allowed(&out.stdout), pin.to_string(), "{out}");
    }
}
