//! The supervisor's side of the command's terminal.
//!
//! When moat runs in a terminal, the command gets a pty of its own instead of
//! the caller's terminal: the host terminal is never reachable from inside
//! (no TIOCSTI injection into the caller's shell), and job control works
//! inside as usual. The caller's terminal is put in raw mode and bytes are
//! copied both ways; window size changes are passed on.

use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::thread::JoinHandle;

/// Whether to give the command a pty: only when the caller is interactive.
pub fn wanted() -> bool {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    nix::unistd::isatty(stdin.as_fd()).unwrap_or(false)
        && nix::unistd::isatty(stdout.as_fd()).unwrap_or(false)
}

/// The caller's terminal in raw mode; restored when dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Copies the caller's window size to the pty; the kernel then signals
/// SIGWINCH to the command's foreground process group.
pub fn sync_window_size(master: &OwnedFd) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read and write a `winsize` we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Starts copying stdin -> pty and pty -> stdout. The returned handle ends
/// when the pty has no more output (every process inside has closed it);
/// join it before exiting so no output is lost. The input side is left to
/// die with the process: it may be blocked reading the caller's terminal.
pub fn relay(master: &OwnedFd) -> std::io::Result<JoinHandle<()>> {
    let mut to_pty = std::fs::File::from(master.try_clone()?);
    let mut from_pty = std::fs::File::from(master.try_clone()?);
    std::thread::Builder::new()
        .name("pty-in".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to_pty.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        })?;
    std::thread::Builder::new()
        .name("pty-out".into())
        .spawn(move || {
            let mut stdout = std::io::stdout().lock();
            let mut buf = [0u8; 8192];
            loop {
                match from_pty.read(&mut buf) {
                    Ok(0) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // EIO: the last slave descriptor closed.
                    Err(_) => break,
                    Ok(n) => {
                        if stdout
                            .write_all(&buf[..n])
                            .and_then(|_| stdout.flush())
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        })
}
