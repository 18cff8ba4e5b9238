//! Applies a [`Plan`] inside the new mount namespace. Decides nothing: every
//! choice of what is visible was made in `mount_plan`.
//!
//! The layout follows bubblewrap's: a scratch tmpfs becomes the root for a
//! moment, with the host under `/oldroot` and the sandbox being assembled
//! under `/newroot`. While the host is out of the way, a symlink met while
//! walking a destination resolves against the scratch root, not the host, so
//! a planted link cannot steer a mount onto a host path. Host sources are
//! opened as `O_PATH` descriptors before the switch and mounted through
//! `/proc/self/fd`, so nothing is resolved twice.

use crate::mount_plan::{Access, Kind, Plan, Step};
use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};
use nix::unistd::{chdir, pivot_root, symlinkat};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// A setup failure, with enough context to tell the user what broke.
#[derive(Debug)]
pub struct MountError(pub String);

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, MountError>;

fn err(what: impl std::fmt::Display, e: Errno) -> MountError {
    MountError(format!("{what}: {}", e.desc()))
}

const NONE: Option<&str> = None;

/// Device nodes bound from the host's /dev: harmless, and needed by almost
/// every program. No disks, no /dev/mem, no /dev/kmsg.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

const SCRATCH: &str = "/tmp";

/// Result of building the root: the pty master, when one was asked for.
pub struct Built {
    pub pty: Option<(OwnedFd, u32)>,
}

fn o_path() -> OFlag {
    OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW
}

fn is_symlink(fd: &OwnedFd) -> bool {
    fstat(fd)
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
        .unwrap_or(false)
}

fn is_dir(fd: &OwnedFd) -> bool {
    fstat(fd)
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
        .unwrap_or(false)
}

fn rel_components(p: &Path) -> Vec<&std::ffi::OsStr> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// Walks `rel` from `start` one component at a time without following any
/// symlink. With `create`, missing components are made (directories, and the
/// last one as `create` says); without, a missing component is an error.
fn walk(start: &OwnedFd, rel: &Path, create: Option<Kind>, shown: &Path) -> Result<OwnedFd> {
    let comps = rel_components(rel);
    let mut cur = start
        .try_clone()
        .map_err(|e| MountError(format!("{}: {e}", shown.display())))?;
    for (i, name) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let next = match openat(&cur, *name, o_path(), Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create.is_some() => {
                if !last || create == Some(Kind::Dir) {
                    match mkdirat(&cur, *name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(err(format!("creating {}", shown.display()), e)),
                    }
                } else {
                    let f = openat(
                        &cur,
                        *name,
                        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map_err(|e| err(format!("creating {}", shown.display()), e))?;
                    drop(f);
                }
                openat(&cur, *name, o_path(), Mode::empty()).map_err(|e| err(shown.display(), e))?
            }
            Err(e) => return Err(err(shown.display(), e)),
        };
        if is_symlink(&next) {
            return Err(MountError(format!(
                "{}: the path goes through a symlink; moat does not mount through symlinks",
                shown.display()
            )));
        }
        if !last && !is_dir(&next) {
            return Err(MountError(format!(
                "{}: a component is not a directory",
                shown.display()
            )));
        }
        cur = next;
    }
    Ok(cur)
}

fn proc_fd(proc_root: &str, fd: &OwnedFd) -> String {
    format!("{proc_root}/self/fd/{}", fd.as_raw_fd())
}

// Flags from <linux/mount.h>; libc does not export the attribute bits.
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets mount attributes on the mount at `fd` and every mount below it.
/// Returns ENOSYS on kernels before 5.12.
fn setattr_recursive(fd: &OwnedFd, set: u64) -> std::result::Result<(), Errno> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a valid NUL-terminated empty string, `attr` is a
    // live, correctly laid out `struct mount_attr` and its size is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(r).map(drop)
}

/// Makes the mount at `target` read-only (and nosuid/nodev) including its
/// submounts. Older kernels only get the top mount remounted; the flags the
/// kernel locked for us (user namespace) must be carried over or it refuses.
fn restrict(
    root: &OwnedFd,
    rel: &Path,
    shown: &Path,
    proc_root: &str,
    ro: bool,
    nodev: bool,
) -> Result<()> {
    // Reopen: the fd from before the mount refers to what lay underneath.
    let fd = walk(root, rel, None, shown)?;
    let mut set = MOUNT_ATTR_NOSUID;
    if ro {
        set |= MOUNT_ATTR_RDONLY;
    }
    if nodev {
        set |= MOUNT_ATTR_NODEV;
    }
    match setattr_recursive(&fd, set) {
        Ok(()) => Ok(()),
        Err(Errno::ENOSYS) => {
            let st = nix::sys::statvfs::fstatvfs(&fd).map_err(|e| err(shown.display(), e))?;
            use nix::sys::statvfs::FsFlags;
            let f = st.flags();
            let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID;
            if ro {
                flags |= MsFlags::MS_RDONLY;
            }
            if nodev || f.contains(FsFlags::ST_NODEV) {
                flags |= MsFlags::MS_NODEV;
            }
            for (fs, ms) in [
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if f.contains(fs) {
                    flags |= ms;
                }
            }
            mount(NONE, proc_fd(proc_root, &fd).as_str(), NONE, flags, NONE)
                .map_err(|e| err(format!("remounting {} read-only", shown.display()), e))
        }
        Err(e) => Err(err(format!("restricting {}", shown.display()), e)),
    }
}

/// Opens every host source before the host leaves `/`.
fn open_sources(plan: &Plan) -> Result<Vec<Option<OwnedFd>>> {
    plan.steps
        .iter()
        .map(|step| match step {
            Step::Bind {
                src, kind, beneath, ..
            } => {
                let fd = match beneath {
                    Some(base) => {
                        let start = open(
                            base.as_path(),
                            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(|e| err(base.display(), e))?;
                        let rel = src.strip_prefix(base).map_err(|_| {
                            MountError(format!("{} is not under {}", src.display(), base.display()))
                        })?;
                        walk(&start, rel, None, src)?
                    }
                    None => open(
                        src.as_path(),
                        OFlag::O_PATH | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| err(src.display(), e))?,
                };
                if (*kind == Kind::Dir) != is_dir(&fd) {
                    return Err(MountError(format!(
                        "{}: changed type since moat looked at it",
                        src.display()
                    )));
                }
                Ok(Some(fd))
            }
            _ => Ok(None),
        })
        .collect()
}

fn rel_of(p: &Path) -> PathBuf {
    rel_components(p).iter().collect()
}

/// Builds the sandbox root from `plan` and switches to it. Must run in a
/// fresh mount namespace, as pid 1 of a fresh pid namespace (for /proc).
pub fn build_root(plan: &Plan, want_pty: bool) -> Result<Built> {
    // Nothing we do may propagate back to the host's mounts.
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(|e| err("making mounts private", e))?;

    let sources = open_sources(plan)?;
    let devices: Vec<OwnedFd> = DEVICES
        .iter()
        .map(|d| {
            let p = format!("/dev/{d}");
            open(p.as_str(), OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| err(&p, e))
        })
        .collect::<Result<_>>()?;

    // The scratch root. Mounted over /tmp only inside our namespace; once
    // pivoted, the host's /tmp is reachable again under /oldroot.
    let fs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("tmpfs"),
        SCRATCH,
        Some("tmpfs"),
        fs_flags,
        Some("mode=0755"),
    )
    .map_err(|e| err("mounting the scratch tmpfs", e))?;
    for d in ["newroot", "oldroot"] {
        std::fs::create_dir(format!("{SCRATCH}/{d}"))
            .map_err(|e| MountError(format!("creating {SCRATCH}/{d}: {e}")))?;
    }
    std::fs::create_dir(format!("{SCRATCH}/masks"))
        .and_then(|_| std::fs::write(format!("{SCRATCH}/masks/empty-file"), b""))
        .and_then(|_| std::fs::create_dir(format!("{SCRATCH}/masks/empty-dir")))
        .map_err(|e| MountError(format!("creating mask sources: {e}")))?;
    mount(
        Some("tmpfs"),
        format!("{SCRATCH}/newroot").as_str(),
        Some("tmpfs"),
        fs_flags,
        Some("mode=0755"),
    )
    .map_err(|e| err("mounting the new root", e))?;
    chdir(SCRATCH).map_err(|e| err("chdir scratch", e))?;
    pivot_root(".", "oldroot").map_err(|e| err("pivot_root to scratch", e))?;
    chdir("/").map_err(|e| err("chdir /", e))?;
    let proc_root = "/oldroot/proc";
    // The masks' sources sit on a read-only, nosuid, nodev mount of their
    // own: a bind mount takes its source mount's flags, so every mask is
    // born read-only and needs no remount of its own.
    mount(Some("/masks"), "/masks", NONE, MsFlags::MS_BIND, NONE)
        .map_err(|e| err("binding the mask sources", e))?;
    mount(
        NONE,
        "/masks",
        NONE,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | fs_flags,
        NONE,
    )
    .map_err(|e| err("making the mask sources read-only", e))?;

    let open_root = || {
        open(
            "/newroot",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err("/newroot", e))
    };
    let mut root = open_root()?;
    let mut root_is_bound = false;

    for (step, src) in plan.steps.iter().zip(sources.iter()) {
        let dst = step.dst();
        let rel = rel_of(dst);
        match step {
            Step::Tmpfs { mode, .. } => {
                let fd = walk(&root, &rel, Some(Kind::Dir), dst)?;
                mount(
                    Some("tmpfs"),
                    proc_fd(proc_root, &fd).as_str(),
                    Some("tmpfs"),
                    fs_flags,
                    Some(format!("mode={mode:o}").as_str()),
                )
                .map_err(|e| err(format!("tmpfs on {}", dst.display()), e))?;
            }
            Step::Bind { access, kind, .. } => {
                let src = src.as_ref().expect("bind steps have a source");
                if rel.as_os_str().is_empty() {
                    root_is_bound = true;
                }
                let fd = walk(&root, &rel, Some(*kind), dst)?;
                mount(
                    Some(proc_fd(proc_root, src).as_str()),
                    proc_fd(proc_root, &fd).as_str(),
                    NONE,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    NONE,
                )
                .map_err(|e| err(format!("binding {}", dst.display()), e))?;
                if rel.as_os_str().is_empty() {
                    // Later walks must start on top of the new mount.
                    root = open_root()?;
                }
                restrict(
                    &root,
                    &rel,
                    dst,
                    proc_root,
                    *access == Access::ReadOnly,
                    true,
                )?;
            }
            Step::Symlink { target, .. } => {
                let parent = rel.parent().unwrap_or(Path::new(""));
                let name = rel
                    .file_name()
                    .ok_or_else(|| MountError(format!("{}: bad symlink path", dst.display())))?;
                let pfd = walk(&root, parent, Some(Kind::Dir), dst)?;
                symlinkat(target.as_path(), &pfd, name)
                    .map_err(|e| err(format!("symlink {}", dst.display()), e))?;
            }
            Step::Mask { kind, .. } => {
                let fd = walk(&root, &rel, None, dst)?;
                let empty = match kind {
                    Kind::Dir => "/masks/empty-dir",
                    Kind::File => "/masks/empty-file",
                };
                // Read-only, nosuid and nodev from its source (above).
                mount(
                    Some(empty),
                    proc_fd(proc_root, &fd).as_str(),
                    NONE,
                    MsFlags::MS_BIND,
                    NONE,
                )
                .map_err(|e| err(format!("masking {}", dst.display()), e))?;
            }
        }
    }

    // /proc for the new pid namespace. The kernel allows this only while a
    // fully visible proc exists in the namespace, so before the host goes.
    let pfd = walk(
        &root,
        Path::new("proc"),
        Some(Kind::Dir),
        Path::new("/proc"),
    )?;
    mount(
        Some("proc"),
        proc_fd(proc_root, &pfd).as_str(),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        NONE,
    )
    .map_err(|e| err("mounting /proc", e))?;

    build_dev(&root, &devices, proc_root)?;

    let pty = if want_pty { Some(open_pty()?) } else { None };

    // Nothing may be written outside the mounts the plan made writable.
    if !root_is_bound {
        mount(
            NONE,
            "/newroot",
            NONE,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | fs_flags,
            Some("mode=0755"),
        )
        .map_err(|e| err("making the root read-only", e))?;
    }

    drop(sources);
    drop(devices);
    drop(root);
    chdir("/newroot").map_err(|e| err("chdir /newroot", e))?;
    // Stack the old root on top of the new one and detach it: no directory
    // is needed for it, and the host disappears from the namespace entirely.
    pivot_root(".", ".").map_err(|e| err("pivot_root into the sandbox", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| err("detaching the host root", e))?;
    chdir("/").map_err(|e| err("chdir /", e))?;
    Ok(Built { pty })
}

fn build_dev(root: &OwnedFd, devices: &[OwnedFd], proc_root: &str) -> Result<()> {
    let dev = walk(root, Path::new("dev"), Some(Kind::Dir), Path::new("/dev"))?;
    mount(
        Some("tmpfs"),
        proc_fd(proc_root, &dev).as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )
    .map_err(|e| err("mounting /dev", e))?;
    for (name, src) in DEVICES.iter().zip(devices) {
        let rel = PathBuf::from("dev").join(name);
        let shown = Path::new("/").join(&rel);
        let fd = walk(root, &rel, Some(Kind::File), &shown)?;
        mount(
            Some(proc_fd(proc_root, src).as_str()),
            proc_fd(proc_root, &fd).as_str(),
            NONE,
            MsFlags::MS_BIND,
            NONE,
        )
        .map_err(|e| err(format!("binding {}", shown.display()), e))?;
        restrict(root, &rel, &shown, proc_root, false, false)?;
    }
    let pts = walk(
        root,
        Path::new("dev/pts"),
        Some(Kind::Dir),
        Path::new("/dev/pts"),
    )?;
    mount(
        Some("devpts"),
        proc_fd(proc_root, &pts).as_str(),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| err("mounting /dev/pts", e))?;
    let shm = walk(
        root,
        Path::new("dev/shm"),
        Some(Kind::Dir),
        Path::new("/dev/shm"),
    )?;
    mount(
        Some("tmpfs"),
        proc_fd(proc_root, &shm).as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .map_err(|e| err("mounting /dev/shm", e))?;
    let devfd = walk(root, Path::new("dev"), None, Path::new("/dev"))?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlinkat(target, &devfd, name).map_err(|e| err(format!("symlink /dev/{name}"), e))?;
    }
    mount(
        NONE,
        "/newroot/dev",
        NONE,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )
    .map_err(|e| err("making /dev read-only", e))?;
    Ok(())
}

/// Opens a pty in the sandbox's own devpts, so the command's terminal has a
/// name that resolves inside (`tty` works) and the host's terminal is never
/// handed to it.
fn open_pty() -> Result<(OwnedFd, u32)> {
    let master = open(
        "/newroot/dev/pts/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err("opening /dev/pts/ptmx", e))?;
    let mut unlock: libc::c_int = 0;
    let mut index: libc::c_uint = 0;
    // SAFETY: `master` is an open pty master; TIOCSPTLCK reads a c_int and
    // TIOCGPTN writes a c_uint through the pointers, both valid for the call.
    let r = unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) < 0 {
            -1
        } else {
            libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut index)
        }
    };
    Errno::result(r).map_err(|e| err("setting up the pty", e))?;
    Ok((master, index))
}
