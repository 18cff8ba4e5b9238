//! The channel between the supervisor and the sandbox's init: a
//! SOCK_SEQPACKET socketpair, so each message arrives whole, and file
//! descriptors (the pty master) can travel with SCM_RIGHTS.

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Messages, each one datagram: a tag byte and a payload.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    /// Supervisor -> init: init is in the run's cgroup and the proxy, if
    /// any, accepts on its socket (start the command).
    Go,
    /// Init -> supervisor: init could not map its ids in its new user
    /// namespace (errno, and what it was writing).
    MapFailed { errno: i32, what: String },
    /// Init -> supervisor: the pty master (sent with the fd).
    Pty,
    /// Init -> supervisor: the proxy's listening socket, bound inside the
    /// sandbox's network namespace (sent with the fd).
    Listener,
    /// Init -> supervisor: setting up the sandbox failed.
    SetupFailed(String),
    /// Init -> supervisor: the command could not be executed (errno).
    ExecFailed { errno: i32, what: String },
    /// Init -> supervisor: what the hardening layers enforced (JSON of
    /// `harden::Report`).
    Hardened(String),
    /// Init -> supervisor: the command is running.
    Started,
    /// Init -> supervisor: the command ended with this wait status.
    Exited(i32),
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            Msg::Go => v.push(b'G'),
            Msg::Pty => v.push(b'P'),
            Msg::Listener => v.push(b'L'),
            Msg::SetupFailed(s) => {
                v.push(b'F');
                v.extend_from_slice(s.as_bytes());
            }
            Msg::ExecFailed { errno, what } => errno_and_text(&mut v, b'N', *errno, what),
            Msg::MapFailed { errno, what } => errno_and_text(&mut v, b'M', *errno, what),
            Msg::Hardened(s) => {
                v.push(b'H');
                v.extend_from_slice(s.as_bytes());
            }
            Msg::Started => v.push(b'S'),
            Msg::Exited(status) => {
                v.push(b'X');
                v.extend_from_slice(&status.to_le_bytes());
            }
        }
        v
    }

    fn decode(b: &[u8]) -> Option<Msg> {
        let (tag, rest) = b.split_first()?;
        let int =
            |r: &[u8]| -> Option<i32> { Some(i32::from_le_bytes(r.get(..4)?.try_into().ok()?)) };
        let text = |r: &[u8]| String::from_utf8_lossy(r).into_owned();
        Some(match tag {
            b'G' => Msg::Go,
            b'P' => Msg::Pty,
            b'L' => Msg::Listener,
            b'F' => Msg::SetupFailed(text(rest)),
            b'N' => Msg::ExecFailed {
                errno: int(rest)?,
                what: text(&rest[4..]),
            },
            b'M' => Msg::MapFailed {
                errno: int(rest)?,
                what: text(&rest[4..]),
            },
            b'H' => Msg::Hardened(text(rest)),
            b'S' => Msg::Started,
            b'X' => Msg::Exited(int(rest)?),
            _ => return None,
        })
    }
}

/// A tag, an errno and the text saying what failed.
fn errno_and_text(v: &mut Vec<u8>, tag: u8, errno: i32, what: &str) {
    v.push(tag);
    v.extend_from_slice(&errno.to_le_bytes());
    v.extend_from_slice(what.as_bytes());
}

pub struct Channel(pub OwnedFd);

pub fn pair() -> nix::Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((Channel(a), Channel(b)))
}

impl Channel {
    pub fn send(&self, msg: &Msg) -> nix::Result<()> {
        self.send_with_fd(msg, None)
    }

    pub fn send_with_fd(&self, msg: &Msg, fd: Option<RawFd>) -> nix::Result<()> {
        let data = msg.encode();
        let iov = [IoSlice::new(&data)];
        let fds;
        let cmsgs: Vec<ControlMessage> = match fd {
            Some(f) => {
                fds = [f];
                vec![ControlMessage::ScmRights(&fds)]
            }
            None => vec![],
        };
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    /// Receives one message; `None` at end of stream (the peer is gone).
    pub fn recv(&self) -> nix::Result<Option<(Msg, Option<OwnedFd>)>> {
        self.recv_with(MsgFlags::empty())
    }

    /// [`Channel::recv`] that fails with EAGAIN instead of waiting.
    pub fn try_recv(&self) -> nix::Result<Option<(Msg, Option<OwnedFd>)>> {
        self.recv_with(MsgFlags::MSG_DONTWAIT)
    }

    /// From now on the kernel sends this process SIGIO whenever a message
    /// arrives, so a wait for signals also wakes for messages.
    pub fn signal_on_input(&self) -> nix::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let fd = self.0.as_raw_fd();
        // SAFETY: F_SETOWN takes a pid and no pointers; this process's own
        // pid always names it.
        if unsafe { libc::fcntl(fd, libc::F_SETOWN, libc::getpid()) } < 0 {
            return Err(nix::errno::Errno::last());
        }
        let flags = OFlag::from_bits_retain(fcntl(&self.0, FcntlArg::F_GETFL)?);
        fcntl(&self.0, FcntlArg::F_SETFL(flags | OFlag::O_ASYNC))?;
        Ok(())
    }

    fn recv_with(&self, flags: MsgFlags) -> nix::Result<Option<(Msg, Option<OwnedFd>)>> {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let (n, fd) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let r = loop {
                match recvmsg::<()>(
                    self.0.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_CMSG_CLOEXEC | flags,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other?,
                }
            };
            let mut fd = None;
            for c in r.cmsgs()? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for f in fds {
                        // SAFETY: SCM_RIGHTS just installed `f` in our fd
                        // table and nothing else owns it.
                        let owned = unsafe { OwnedFd::from_raw_fd(f) };
                        if fd.is_none() {
                            fd = Some(owned);
                        }
                    }
                }
            }
            (r.bytes, fd)
        };
        if n == 0 {
            return Ok(None);
        }
        Ok(Msg::decode(&buf[..n]).map(|m| (m, fd)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_fd() {
        let (a, b) = pair().unwrap();
        for m in [
            Msg::Go,
            Msg::Started,
            Msg::Exited(0x8f00),
            Msg::SetupFailed("boom".into()),
            Msg::ExecFailed {
                errno: 2,
                what: "foo".into(),
            },
            Msg::MapFailed {
                errno: 1,
                what: "writing /proc/self/uid_map".into(),
            },
        ] {
            a.send(&m).unwrap();
            assert_eq!(b.recv().unwrap().unwrap().0, m);
        }
        let f = std::fs::File::open("/dev/null").unwrap();
        a.send_with_fd(&Msg::Pty, Some(f.as_raw_fd())).unwrap();
        let (m, fd) = b.recv().unwrap().unwrap();
        assert_eq!(m, Msg::Pty);
        assert!(fd.is_some());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        a.send_with_fd(&Msg::Listener, Some(l.as_raw_fd())).unwrap();
        let (m, fd) = b.recv().unwrap().unwrap();
        assert_eq!(m, Msg::Listener);
        let got = std::net::TcpListener::from(fd.unwrap());
        assert_eq!(got.local_addr().unwrap(), l.local_addr().unwrap());
        drop(a);
        assert!(b.recv().unwrap().is_none());
    }
}
