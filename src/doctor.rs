//! `moat doctor`: what this kernel offers and what moat will enforce.
//!
//! Two halves. [`probe`] asks the kernel: forked children try what a
//! sandbox start does (a user namespace, the namespaces inside it, a new
//! `/proc`, a seccomp filter), and harmless queries cover the rest. [`assess`]
//! turns those facts into checks, each saying what was found, what moat does
//! without it and how to get it; it is a plain function, so every verdict
//! and every fix is unit-tested with made-up probe results.

use crate::cgroup::{self, Availability, Layout};
use crate::cli::DoctorArgs;
use crate::profile::Enforcement;
use crate::userns::{self, Knobs};
use nix::errno::Errno;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::io::Read;
use std::os::fd::FromRawFd;

/// The Landlock ABI that carries every right moat's rules use: file system
/// access (1), refer (2), truncate (3), TCP ports (4), device ioctl (5) and
/// scoping of abstract unix sockets and signals (6).
pub const LANDLOCK_FULL_ABI: i32 = 6;

/// What each Landlock ABI adds: (ABI, short name, what it controls, first
/// Linux release).
const LANDLOCK_FEATURES: [(i32, &str, &str, &str); 9] = [
    (1, "fs", "file system access beneath granted paths", "5.13"),
    (
        2,
        "refer",
        "renaming and linking across directories",
        "5.19",
    ),
    (3, "truncate", "truncating files", "6.2"),
    (4, "tcp", "TCP bind and connect by port", "6.7"),
    (5, "ioctl-dev", "ioctl on device files", "6.10"),
    (
        6,
        "scope",
        "abstract unix sockets and signals kept inside",
        "6.12",
    ),
    (7, "log", "logging of denials to the audit log", "6.15"),
    (8, "tsync", "restricting every thread at once", "7.0"),
    (9, "resolve-unix", "connecting to named unix sockets", "7.1"),
];

/// The unprivileged uid the rootless trial switches to when moat runs as
/// root (the kernel's overflow uid, `nobody` on most systems).
const ROOTLESS_PROBE_UID: u32 = 65534;

/// The errno the probe filter makes `getppid` fail with: one no real
/// `getppid` can return, so seeing it proves the filter ran.
const PROBE_ERRNO: i32 = libc::ENOANO;

// ---------------------------------------------------------------------------
// Probe results: plain data.

/// A step of a forked trial. The numbers travel through a pipe from the
/// child, so they are fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Switching to an unprivileged uid (the rootless trial as root).
    Drop = 1,
    UserNs = 2,
    Maps = 3,
    Mount = 4,
    Pid = 5,
    Net = 6,
    Ipc = 7,
    Uts = 8,
    Cgroup = 9,
    Fork = 10,
    Proc = 11,
    NoNewPrivs = 12,
    FilterSupport = 13,
    Build = 14,
    Install = 15,
    Enforce = 16,
    Done = 100,
}

impl Step {
    fn from_code(code: i32) -> Option<Step> {
        use Step::*;
        [
            Drop,
            UserNs,
            Maps,
            Mount,
            Pid,
            Net,
            Ipc,
            Uts,
            Cgroup,
            Fork,
            Proc,
            NoNewPrivs,
            FilterSupport,
            Build,
            Install,
            Enforce,
            Done,
        ]
        .into_iter()
        .find(|s| *s as i32 == code)
    }

    fn describe(self) -> &'static str {
        match self {
            Step::Drop => "switching to an unprivileged uid",
            Step::UserNs => "creating a user namespace",
            Step::Maps => "writing the uid and gid maps of the new user namespace",
            Step::Mount => "creating a mount namespace inside the user namespace",
            Step::Pid => "creating a pid namespace inside the user namespace",
            Step::Net => "creating a network namespace inside the user namespace",
            Step::Ipc => "creating an ipc namespace inside the user namespace",
            Step::Uts => "creating a uts namespace inside the user namespace",
            Step::Cgroup => "creating a cgroup namespace inside the user namespace",
            Step::Fork => "starting pid 1 of the new pid namespace",
            Step::Proc => "mounting a new /proc for the new pid namespace",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::FilterSupport => "asking whether the kernel takes seccomp filters",
            Step::Build => "building a seccomp filter for this architecture",
            Step::Install => "installing a seccomp filter",
            Step::Enforce => "checking that the installed filter denies what it should",
            Step::Done => "done",
        }
    }

    /// The namespace a step creates, as `unshare(2)` names it.
    fn namespace(self) -> Option<&'static str> {
        Some(match self {
            Step::Mount => "mount",
            Step::Pid => "pid",
            Step::Net => "net",
            Step::Ipc => "ipc",
            Step::Uts => "uts",
            Step::Cgroup => "cgroup",
            _ => return None,
        })
    }
}

/// How a forked trial went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trial {
    Passed,
    /// The kernel refused `step` with `errno` (0 when no call failed, e.g.
    /// a filter that was installed but did not deny).
    Failed {
        step: Step,
        errno: i32,
    },
    /// The trial itself could not run or report; says why.
    Broken(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// `uname -r`.
    pub release: String,
    /// `uname -m`.
    pub arch: String,
}

impl Kernel {
    /// Major, minor and patch level from the release string.
    pub fn version(&self) -> Option<(u32, u32, u32)> {
        let mut parts = self.release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some((major, minor, patch))
    }

    fn at_least(&self, major: u32, minor: u32) -> Option<bool> {
        self.version().map(|(a, b, _)| (a, b) >= (major, minor))
    }
}

/// Everything `moat doctor` learned from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probes {
    pub kernel: Kernel,
    /// Effective uid of the caller.
    pub uid: u32,
    pub knobs: Knobs,
    /// A user namespace and everything moat builds inside it, as the caller.
    pub userns: Trial,
    /// The same as an unprivileged uid, tried only when the caller is root.
    pub userns_rootless: Option<Trial>,
    /// `landlock_create_ruleset(NULL, 0, VERSION)`: the ABI, or the errno.
    pub landlock: Result<i32, i32>,
    /// The default profile's `[landlock] mode`, or why it did not load.
    pub landlock_mode: Result<Enforcement, String>,
    /// `prctl(PR_GET_SECCOMP)` in this process: its mode, or the errno.
    pub seccomp_mode: Result<i32, i32>,
    /// `Seccomp_filters` of /proc/self/status: filters already on us.
    pub seccomp_filters: Option<u32>,
    /// no_new_privs, then filter support, install and enforcement.
    pub seccomp: Trial,
    /// The ambient capability set exists (Linux 4.3+).
    pub ambient_caps: bool,
    pub cgroup: Availability,
    /// Whether the syscall exists: `Err(errno)` when it did not run.
    pub close_range: Result<(), i32>,
    pub mount_setattr: Result<(), i32>,
}

// ---------------------------------------------------------------------------
// Assessment: plain data out.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Present, but with less than moat can use.
    Limited,
    Missing,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Limited => "limited",
            Status::Missing => "missing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier (`user-namespaces`, `landlock`, ...).
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What moat does without it.
    pub meaning: String,
    /// How to get it, when it is not ok.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelReport {
    pub release: String,
    /// `MAJOR.MINOR.PATCH`, when the release string has one.
    pub version: Option<String>,
    pub arch: String,
}

/// What a `moat exec` started now would get, layer by layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enforce {
    /// The sandbox can be built at all (user namespace, the namespaces
    /// inside it, /proc).
    pub namespaces: bool,
    /// 0 when Landlock is unavailable.
    pub landlock_abi: i32,
    /// "full", "partial" or "none", against [`LANDLOCK_FULL_ABI`].
    pub landlock: &'static str,
    /// Short names of what the ABI offers (`fs`, `refer`, ..., `log`).
    pub landlock_features: Vec<&'static str>,
    /// The default profile's Landlock mode, when it loaded.
    pub landlock_mode: Option<Enforcement>,
    pub seccomp: bool,
    pub capabilities: bool,
    pub cgroup_layout: Layout,
    pub cgroup_limits: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub moat_version: &'static str,
    pub kernel: KernelReport,
    pub uid: u32,
    pub root: bool,
    /// The sysctls that gate unprivileged user namespaces (null = absent).
    pub sysctls: BTreeMap<&'static str, Option<u64>>,
    pub checks: Vec<Check>,
    pub enforce: Enforce,
    /// The cgroup probe as `moat exec` sees it: where each controller's
    /// group would go, or why it cannot.
    pub cgroup: Availability,
    /// Everything moat needs to run is there for this caller.
    pub ready: bool,
    /// One line: what moat will enforce.
    pub summary: String,
}

impl Report {
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// 0 when moat can run here, 1 when it cannot.
    pub fn exit_code(&self) -> i32 {
        if self.ready {
            0
        } else {
            1
        }
    }
}

fn errno_text(errno: i32) -> String {
    if errno == 0 {
        "no error".into()
    } else {
        Errno::from_raw(errno).to_string()
    }
}

fn check(
    name: &'static str,
    status: Status,
    detail: impl Into<String>,
    meaning: impl Into<String>,
    fix: Option<String>,
) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        meaning: meaning.into(),
        fix: if status == Status::Ok { None } else { fix },
    }
}

/// The fix part of [`userns::explain`]: its first line restates the
/// failure, which the check's detail already says.
fn userns_fix(errno: i32, knobs: &Knobs, is_root: bool) -> String {
    let text = userns::explain(errno, knobs, is_root);
    // explain() indents its advice under the first line and labels it
    // "Fix:"; here the whole text is the fix. Deeper indentation (a file
    // to write) stays.
    let rest: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .map(|l| l.strip_prefix("Fix: ").unwrap_or(l))
        .collect();
    if rest.is_empty() {
        "Find out what refuses user namespaces here (a security module, a seccomp filter \
         around moat, a container runtime) and allow them for moat."
            .into()
    } else {
        rest.join("\n")
    }
}

/// Whether a failure inside an already created user namespace is the
/// AppArmor restriction: Ubuntu lets the unshare succeed and then denies
/// every capability in the new namespace.
fn apparmor_blocks(knobs: &Knobs, is_root: bool) -> bool {
    knobs.apparmor_restrict == Some(1) && !is_root
}

fn sysctl_line(knobs: &Knobs) -> String {
    let show = |v: Option<u64>| v.map_or("absent".to_string(), |v| v.to_string());
    format!(
        "user.max_user_namespaces={}, kernel.unprivileged_userns_clone={}, \
         kernel.apparmor_restrict_unprivileged_userns={}",
        show(knobs.max_user_namespaces),
        show(knobs.unprivileged_clone),
        show(knobs.apparmor_restrict)
    )
}

fn failure_line(step: Step, errno: i32) -> String {
    format!("{} failed: {}", step.describe(), errno_text(errno))
}

/// The fix for a namespace that cannot be created inside the user
/// namespace.
fn namespace_fix(step: Step, errno: i32, p: &Probes, is_root: bool) -> String {
    if apparmor_blocks(&p.knobs, is_root) {
        return userns_fix(errno, &p.knobs, is_root);
    }
    if errno == libc::EINVAL {
        let ns = step.namespace().unwrap_or("this");
        let (config, since) = match step {
            Step::Cgroup => ("CONFIG_CGROUPS", "4.6"),
            Step::Net => ("CONFIG_NET_NS", "3.8"),
            Step::Pid => ("CONFIG_PID_NS", "3.8"),
            Step::Ipc => ("CONFIG_IPC_NS", "3.8"),
            Step::Uts => ("CONFIG_UTS_NS", "3.8"),
            _ => ("CONFIG_NAMESPACES", "3.8"),
        };
        return format!(
            "This kernel has no {ns} namespaces: use Linux {since} or newer built with {config}=y \
             (every mainstream distribution kernel is)."
        );
    }
    userns_fix(errno, &p.knobs, is_root)
}

const PROC_FIX: &str = "The kernel gives a user namespace a new /proc only when the host's /proc \
     is fully visible: nothing may be mounted over parts of it. Container runtimes mask \
     /proc/kcore, /proc/sys and others; run moat on the host, or start the container with an \
     unmasked /proc (e.g. docker run --security-opt systempaths=unconfined).";

/// The checks that follow from one namespace trial: the user namespace
/// itself, the namespaces inside it, and /proc.
fn namespace_checks(p: &Probes, is_root: bool) -> [Check; 3] {
    let userns_meaning = "moat builds every sandbox in a new user namespace; without one \
                          `moat exec` stops with exit 125.";
    let ns_meaning = "The command gets new mount, pid, net, ipc, uts and cgroup namespaces; \
                      without any of them `moat exec` stops with exit 125.";
    let proc_meaning = "The sandbox gets its own /proc showing only its own processes; \
                        without it `moat exec` stops with exit 125.";
    let untried = |name, meaning: &str| {
        check(
            name,
            Status::Missing,
            "not tried: no user namespace to try it in",
            meaning,
            Some("See user-namespaces.".into()),
        )
    };
    let who = if is_root {
        format!("as root (uid {})", p.uid)
    } else {
        format!("as uid {}", p.uid)
    };
    match &p.userns {
        Trial::Broken(why) => {
            let b = |name, meaning: &str| {
                check(
                    name,
                    Status::Missing,
                    format!("could not be tried: {why}"),
                    meaning,
                    Some("Run `moat doctor` again; if this persists, report it.".into()),
                )
            };
            [
                b("user-namespaces", userns_meaning),
                b("namespaces", ns_meaning),
                b("proc", proc_meaning),
            ]
        }
        Trial::Failed {
            step: step @ (Step::Drop | Step::UserNs | Step::Maps),
            errno,
        } => [
            check(
                "user-namespaces",
                Status::Missing,
                format!(
                    "{who}: {}; {}",
                    failure_line(*step, *errno),
                    sysctl_line(&p.knobs)
                ),
                userns_meaning,
                Some(userns_fix(*errno, &p.knobs, is_root)),
            ),
            untried("namespaces", ns_meaning),
            untried("proc", proc_meaning),
        ],
        other => {
            let userns_ok = check(
                "user-namespaces",
                Status::Ok,
                format!("{who}: created one and mapped the caller's uid and gid into it"),
                userns_meaning,
                None,
            );
            let ns_ok = check(
                "namespaces",
                Status::Ok,
                "mount, pid, net, ipc, uts and cgroup namespaces created inside it",
                ns_meaning,
                None,
            );
            match other {
                Trial::Failed {
                    step: Step::Proc,
                    errno,
                } => [
                    userns_ok,
                    ns_ok,
                    check(
                        "proc",
                        Status::Missing,
                        failure_line(Step::Proc, *errno),
                        proc_meaning,
                        Some(PROC_FIX.into()),
                    ),
                ],
                Trial::Failed { step, errno } => [
                    userns_ok,
                    check(
                        "namespaces",
                        Status::Missing,
                        failure_line(*step, *errno),
                        ns_meaning,
                        Some(namespace_fix(*step, *errno, p, is_root)),
                    ),
                    untried("proc", proc_meaning),
                ],
                _ => [
                    userns_ok,
                    ns_ok,
                    check(
                        "proc",
                        Status::Ok,
                        "a new /proc mounts in the new pid namespace",
                        proc_meaning,
                        None,
                    ),
                ],
            }
        }
    }
}

/// As root: whether users other than root could run moat.
fn rootless_check(p: &Probes, trial: &Trial) -> Check {
    let meaning = "Users other than root cannot run moat: their `moat exec` stops with exit 125. \
                   Root can.";
    let sysctls = sysctl_line(&p.knobs);
    match trial {
        Trial::Passed => check(
            "user-namespaces-rootless",
            Status::Ok,
            format!(
                "as uid {ROOTLESS_PROBE_UID}: created a user namespace, the namespaces inside it \
                 and a /proc, so moat runs rootless here too; {sysctls}"
            ),
            meaning,
            None,
        ),
        Trial::Failed {
            step: Step::Drop,
            errno,
        } => {
            // Could not try (e.g. root of a user namespace with one uid
            // mapped): judge from the sysctls alone.
            let off = p.knobs.max_user_namespaces == Some(0)
                || p.knobs.unprivileged_clone == Some(0)
                || p.knobs.apparmor_restrict == Some(1);
            let detail = format!(
                "could not try as uid {ROOTLESS_PROBE_UID} ({}); {sysctls}",
                failure_line(Step::Drop, *errno)
            );
            if off {
                check(
                    "user-namespaces-rootless",
                    Status::Missing,
                    detail,
                    meaning,
                    Some(userns_fix(libc::EPERM, &p.knobs, false)),
                )
            } else {
                check(
                    "user-namespaces-rootless",
                    Status::Limited,
                    format!("{detail}; none of them turns user namespaces off"),
                    meaning,
                    Some("Run `moat doctor` as the user who will run moat to be sure.".to_string()),
                )
            }
        }
        Trial::Failed { step, errno } => {
            let fix = match step {
                Step::Proc => PROC_FIX.to_string(),
                Step::UserNs | Step::Maps => userns_fix(*errno, &p.knobs, false),
                _ => namespace_fix(*step, *errno, p, false),
            };
            check(
                "user-namespaces-rootless",
                Status::Missing,
                format!(
                    "as uid {ROOTLESS_PROBE_UID}: {}; {sysctls}",
                    failure_line(*step, *errno)
                ),
                meaning,
                Some(fix),
            )
        }
        Trial::Broken(why) => check(
            "user-namespaces-rootless",
            Status::Limited,
            format!("could not be tried: {why}; {sysctls}"),
            meaning,
            Some("Run `moat doctor` as the user who will run moat.".into()),
        ),
    }
}

fn kernel_check(p: &Probes) -> Check {
    let meaning = "moat needs Linux 4.6 or newer (cgroup namespaces); the checks below say \
                   what each newer feature adds.";
    let k = &p.kernel;
    match k.version() {
        None => check(
            "kernel",
            Status::Limited,
            format!(
                "cannot read a version from release {:?} ({})",
                k.release, k.arch
            ),
            meaning,
            Some("The checks below tried each feature directly; trust them.".into()),
        ),
        Some((a, b, c)) if (a, b) < (4, 6) => check(
            "kernel",
            Status::Missing,
            format!("Linux {a}.{b}.{c} ({}): older than 4.6", k.arch),
            meaning,
            Some(
                "Upgrade to Linux 4.6 or newer; 6.12 or newer gives every layer moat uses.".into(),
            ),
        ),
        Some((a, b, c)) if (a, b) < (5, 12) => check(
            "kernel",
            Status::Limited,
            format!(
                "Linux {a}.{b}.{c} ({}): older than 5.12, so some layers fall back (see below)",
                k.arch
            ),
            meaning,
            Some("Linux 6.12 or newer gives every layer moat uses.".into()),
        ),
        Some((a, b, c)) => check(
            "kernel",
            Status::Ok,
            format!("Linux {a}.{b}.{c} ({})", k.arch),
            meaning,
            None,
        ),
    }
}

fn landlock_features(abi: i32) -> Vec<&'static str> {
    LANDLOCK_FEATURES
        .iter()
        .filter(|f| f.0 <= abi)
        .map(|f| f.1)
        .collect()
}

/// What moat loses at `abi`, below the full ABI: one phrase per missing
/// right.
fn landlock_losses(abi: i32) -> Vec<&'static str> {
    let mut lost = Vec::new();
    if abi < 2 {
        lost.push(
            "the kernel refuses renaming or linking a file into another directory \
             (ABI 1 has no refer right), which breaks tools that do",
        );
    }
    if abi < 3 {
        lost.push("truncation is not checked (read-only mounts still refuse it)");
    }
    if abi < 4 {
        lost.push("TCP ports are not restricted (the network namespace still has only lo)");
    }
    if abi < 5 {
        lost.push("ioctl on device files is not restricted");
    }
    if abi < 6 {
        lost.push(
            "abstract unix sockets and signals are not scoped (the net and pid namespaces \
             still separate them)",
        );
    }
    lost
}

fn landlock_coverage(abi: i32) -> &'static str {
    if abi >= LANDLOCK_FULL_ABI {
        "full"
    } else if abi >= 1 {
        "partial"
    } else {
        "none"
    }
}

fn landlock_check(p: &Probes) -> Check {
    let meaning = "Landlock is the second wall behind the mount namespace: the command may \
                   touch only the paths its profile grants, and connect only to allowed TCP \
                   ports, even if it got past the mount namespace. Without it (profile mode \
                   best-effort, the default) moat runs and says so at --verbose and in the run \
                   record; a profile with mode = \"required\" refuses to start.";
    let mode = match &p.landlock_mode {
        Ok(Enforcement::BestEffort) => {
            "the default profile's mode is best-effort: moat applies what the kernel offers \
             and reports the rest"
                .to_string()
        }
        Ok(Enforcement::Required) => {
            "the default profile's mode is required: moat refuses to start without full \
             Landlock"
                .to_string()
        }
        Err(e) => format!("the default profile did not load ({e})"),
    };
    match p.landlock {
        Ok(abi) if abi >= 1 => {
            let offers: Vec<&str> = LANDLOCK_FEATURES
                .iter()
                .filter(|f| f.0 <= abi)
                .map(|f| f.2)
                .collect();
            let mut detail = format!(
                "ABI {abi} ({}): {}; {mode}",
                landlock_coverage(abi),
                offers.join(", ")
            );
            if abi >= LANDLOCK_FULL_ABI {
                return check("landlock", Status::Ok, detail, meaning, None);
            }
            let _ = write!(
                detail,
                "; below ABI {LANDLOCK_FULL_ABI}: {}",
                landlock_losses(abi).join("; ")
            );
            check(
                "landlock",
                Status::Limited,
                detail,
                meaning,
                Some(format!(
                    "Landlock ABI {LANDLOCK_FULL_ABI} comes with Linux 6.12: upgrade the kernel \
                     for the rest."
                )),
            )
        }
        Ok(abi) => check(
            "landlock",
            Status::Missing,
            format!("the kernel reports Landlock ABI {abi}; {mode}"),
            meaning,
            Some("Use a kernel with Landlock (Linux 5.13+, CONFIG_SECURITY_LANDLOCK=y).".into()),
        ),
        Err(errno) if errno == libc::EOPNOTSUPP => check(
            "landlock",
            Status::Missing,
            format!("built into this kernel but not enabled at boot (EOPNOTSUPP); {mode}"),
            meaning,
            Some(
                "Add landlock to the kernel's list of security modules: keep the current list \
                 (cat /sys/kernel/security/lsm) and put landlock first, e.g. \
                 lsm=landlock,lockdown,yama,integrity,apparmor,bpf on the kernel command line \
                 (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot."
                    .into(),
            ),
        ),
        Err(errno) if errno == libc::ENOSYS => {
            let fix = if p.kernel.at_least(5, 13) == Some(false) {
                "Landlock needs Linux 5.13 or newer (6.12 or newer for everything moat uses): \
                 upgrade the kernel."
            } else {
                "This kernel is built without Landlock (CONFIG_SECURITY_LANDLOCK): use a \
                 distribution kernel that has it, or rebuild with CONFIG_SECURITY_LANDLOCK=y \
                 and landlock in CONFIG_LSM."
            };
            check(
                "landlock",
                Status::Missing,
                format!("not in this kernel (ENOSYS); {mode}"),
                meaning,
                Some(fix.into()),
            )
        }
        Err(errno) => check(
            "landlock",
            Status::Missing,
            format!(
                "landlock_create_ruleset failed: {}; {mode}",
                errno_text(errno)
            ),
            meaning,
            Some(
                "Something around moat (a container runtime's seccomp filter?) blocks the \
                 Landlock system calls: run moat on the host or allow them."
                    .into(),
            ),
        ),
    }
}

fn seccomp_check(p: &Probes) -> Check {
    let meaning = "moat's filter denies system calls a sandboxed agent has no use for; \
                   without it they stay callable from inside (the namespaces, Landlock and \
                   the dropped capabilities still apply).";
    let outer = match (p.seccomp_mode, p.seccomp_filters) {
        (Ok(2), Some(n)) => format!(
            "; moat itself already runs under {n} seccomp filter(s) (a container runtime or an \
             outer sandbox): moat's filter stacks on top, and what they deny stays denied"
        ),
        (Ok(2), None) => "; moat itself already runs under a seccomp filter (a container \
                          runtime or an outer sandbox): moat's filter stacks on top"
            .into(),
        _ => String::new(),
    };
    if p.seccomp_mode == Err(libc::EINVAL) {
        return check(
            "seccomp",
            Status::Missing,
            "this kernel has no seccomp (prctl PR_GET_SECCOMP: EINVAL)",
            meaning,
            Some("Use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y.".into()),
        );
    }
    match &p.seccomp {
        Trial::Passed => check(
            "seccomp",
            Status::Ok,
            format!("filter mode works: a test filter was installed and denied its call{outer}"),
            meaning,
            None,
        ),
        Trial::Failed {
            step: Step::FilterSupport,
            errno,
        } if *errno == libc::EINVAL => check(
            "seccomp",
            Status::Missing,
            format!("the kernel takes no seccomp filters (EINVAL){outer}"),
            meaning,
            Some(
                "Use a kernel built with CONFIG_SECCOMP_FILTER=y (every mainstream \
                 distribution kernel is)."
                    .into(),
            ),
        ),
        Trial::Failed {
            step: Step::Build, ..
        } => check(
            "seccomp",
            Status::Missing,
            format!(
                "moat cannot build seccomp filters for {} (its filter compiler knows x86_64, \
                 aarch64 and riscv64)",
                p.kernel.arch
            ),
            meaning,
            Some("None on this architecture yet.".into()),
        ),
        Trial::Failed { step, errno } => check(
            "seccomp",
            Status::Missing,
            format!("{}{outer}", failure_line(*step, *errno)),
            meaning,
            Some(
                "Something around moat (a container runtime or an outer sandbox) keeps it from \
                 installing filters: run moat on the host."
                    .into(),
            ),
        ),
        Trial::Broken(why) => check(
            "seccomp",
            Status::Limited,
            format!("could not be tried: {why}{outer}"),
            meaning,
            Some("Run `moat doctor` again; if this persists, report it.".into()),
        ),
    }
}

fn capabilities_check(p: &Probes) -> Check {
    let meaning = "moat drops every capability and sets no_new_privs, so nothing in the \
                   sandbox (setuid binaries included) gains privileges; without no_new_privs an \
                   unprivileged moat can install neither Landlock nor seccomp.";
    let ambient = if p.ambient_caps {
        "the ambient set exists and is cleared too"
    } else {
        "this kernel has no ambient set (before Linux 4.3), so there is none to clear"
    };
    match &p.seccomp {
        Trial::Failed {
            step: Step::NoNewPrivs,
            errno,
        } => check(
            "capabilities",
            Status::Missing,
            failure_line(Step::NoNewPrivs, *errno),
            meaning,
            Some("no_new_privs needs Linux 3.5 or newer: upgrade the kernel.".into()),
        ),
        Trial::Broken(why) => check(
            "capabilities",
            Status::Limited,
            format!("no_new_privs could not be tried: {why}"),
            meaning,
            Some("Run `moat doctor` again; if this persists, report it.".into()),
        ),
        _ => check(
            "capabilities",
            Status::Ok,
            format!("no_new_privs works; {ambient}"),
            meaning,
            None,
        ),
    }
}

fn cgroup_check(p: &Probes) -> Check {
    let meaning = "Profile [limits] (memory, pids, cpu) need a cgroup moat may write to. \
                   Without one moat warns and runs without them, or refuses to start when the \
                   profile says required = true; the timeout works either way.";
    let a = &p.cgroup;
    let layout = match a.layout {
        Layout::V2 => "cgroup v2",
        Layout::V1 => "cgroup v1",
        Layout::Hybrid => "hybrid (v1 controllers, cgroup2 at /sys/fs/cgroup/unified)",
        Layout::None => "no cgroup file system",
    };
    let detail = format!("{layout}: {}", a.detail);
    if a.limits_available {
        return check("cgroups", Status::Ok, detail, meaning, None);
    }
    let status = if a.layout == Layout::None {
        Status::Missing
    } else {
        Status::Limited
    };
    let fix = a.fix.clone().unwrap_or_else(|| {
        "Mount the cgroup file system, or run moat as a user with a delegated cgroup \
         (systemd-run --user --scope -p Delegate=yes moat exec ...)."
            .into()
    });
    check("cgroups", status, detail, meaning, Some(fix))
}

fn syscall_check(
    name: &'static str,
    syscall: &str,
    since: &str,
    result: Result<(), i32>,
    meaning: &str,
) -> Check {
    match result {
        Ok(()) => check(name, Status::Ok, format!("{syscall} exists"), meaning, None),
        Err(errno) if errno == libc::ENOSYS => check(
            name,
            Status::Missing,
            format!("{syscall} is not in this kernel (ENOSYS)"),
            meaning,
            Some(format!(
                "{syscall} needs Linux {since} or newer: upgrade the kernel."
            )),
        ),
        Err(errno) => check(
            name,
            Status::Missing,
            format!("{syscall} is refused: {}", errno_text(errno)),
            meaning,
            Some(format!(
                "Something around moat (a container runtime's seccomp filter?) blocks \
                 {syscall}: run moat on the host or allow it."
            )),
        ),
    }
}

fn summary(e: &Enforce) -> String {
    let yn = |b: bool| if b { "yes" } else { "no" };
    let landlock = if e.landlock_abi >= 1 {
        format!("ABI {} ({})", e.landlock_abi, e.landlock)
    } else {
        "no".into()
    };
    format!(
        "moat will enforce: namespaces {}, Landlock {landlock}, seccomp {}, capabilities {}, \
         cgroup limits {}",
        yn(e.namespaces),
        yn(e.seccomp),
        yn(e.capabilities),
        yn(e.cgroup_limits)
    )
}

/// Turns probe results into the report.
pub fn assess(p: &Probes) -> Report {
    let is_root = p.uid == 0;
    let mut checks = vec![kernel_check(p)];
    let [userns, namespaces, proc] = namespace_checks(p, is_root);
    checks.push(userns);
    if let Some(t) = &p.userns_rootless {
        checks.push(rootless_check(p, t));
    }
    checks.push(namespaces);
    checks.push(proc);
    checks.push(landlock_check(p));
    checks.push(seccomp_check(p));
    checks.push(capabilities_check(p));
    checks.push(cgroup_check(p));
    checks.push(syscall_check(
        "close-range",
        "close_range",
        "5.9",
        p.close_range,
        "moat closes every descriptor the caller leaked into it before the command starts; \
         without close_range it closes 3 to 1023 one by one, so a leaked descriptor numbered \
         1024 or above would stay open in the sandbox.",
    ));
    checks.push(syscall_check(
        "mount-setattr",
        "mount_setattr",
        "5.12",
        p.mount_setattr,
        "moat makes read-only binds read-only recursively; without mount_setattr only the top \
         mount of each bind is, and mounts nested below a read-only path stay as the host has \
         them (writable, if they are there).",
    ));

    let ok = |name: &str| {
        checks
            .iter()
            .any(|c| c.name == name && c.status == Status::Ok)
    };
    let namespaces = ok("user-namespaces") && ok("namespaces") && ok("proc");
    let abi = match p.landlock {
        Ok(abi) if abi > 0 => abi,
        _ => 0,
    };
    let enforce = Enforce {
        namespaces,
        landlock_abi: abi,
        landlock: landlock_coverage(abi),
        landlock_features: landlock_features(abi),
        landlock_mode: p.landlock_mode.as_ref().ok().copied(),
        seccomp: ok("seccomp"),
        capabilities: ok("capabilities"),
        cgroup_layout: p.cgroup.layout,
        cgroup_limits: p.cgroup.limits_available,
    };
    let sysctls = BTreeMap::from([
        ("user.max_user_namespaces", p.knobs.max_user_namespaces),
        (
            "kernel.unprivileged_userns_clone",
            p.knobs.unprivileged_clone,
        ),
        (
            "kernel.apparmor_restrict_unprivileged_userns",
            p.knobs.apparmor_restrict,
        ),
    ]);
    Report {
        moat_version: env!("CARGO_PKG_VERSION"),
        kernel: KernelReport {
            release: p.kernel.release.clone(),
            version: p.kernel.version().map(|(a, b, c)| format!("{a}.{b}.{c}")),
            arch: p.kernel.arch.clone(),
        },
        uid: p.uid,
        root: is_root,
        sysctls,
        summary: summary(&enforce),
        ready: namespaces,
        enforce,
        cgroup: p.cgroup.clone(),
        checks,
    }
}

/// Breaks `text` into lines of at most `width` columns at spaces. Lines
/// that start with a space are preformatted (a file to write) and kept.
fn wrap(text: &str, width: Option<usize>) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(width) = width.filter(|_| !line.starts_with(' ')) else {
            out.push(line.to_string());
            continue;
        };
        let mut cur = String::new();
        for word in line.split(' ').filter(|w| !w.is_empty()) {
            if !cur.is_empty() && cur.len() + 1 + word.len() > width {
                out.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
        out.push(cur);
    }
    out
}

/// The human-readable report, wrapped to `width` columns if given.
pub fn render(r: &Report, width: Option<usize>) -> String {
    const STATUS_W: usize = 9;
    let name_w = r.checks.iter().map(|c| c.name.len()).max().unwrap_or(0) + 2;
    let indent = " ".repeat(STATUS_W + name_w);
    // Room for the text column, never so narrow that words pile up.
    let text_w = width.map(|w| w.saturating_sub(STATUS_W + name_w).max(30));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "moat {} on Linux {} ({}), as {}\n",
        r.moat_version,
        r.kernel.release,
        r.kernel.arch,
        if r.root {
            "root".to_string()
        } else {
            format!("uid {}", r.uid)
        }
    );
    let _ = writeln!(out, "{:STATUS_W$}{:name_w$}DETAIL", "STATUS", "CHECK");
    let block = |out: &mut String, label: &str, text: &str| {
        let pad = " ".repeat(label.len());
        let w = text_w.map(|w| w.saturating_sub(label.len()).max(20));
        for (i, l) in wrap(text, w).iter().enumerate() {
            let _ = writeln!(out, "{indent}{}{l}", if i == 0 { label } else { &pad });
        }
    };
    for c in &r.checks {
        let detail = wrap(&c.detail, text_w);
        let _ = writeln!(
            out,
            "{:STATUS_W$}{:name_w$}{}",
            c.status.as_str(),
            c.name,
            detail.first().map_or("", String::as_str)
        );
        for l in detail.iter().skip(1) {
            let _ = writeln!(out, "{indent}{l}");
        }
        if c.status != Status::Ok {
            block(&mut out, "without it: ", &c.meaning);
            if let Some(fix) = &c.fix {
                block(&mut out, "fix: ", fix);
            }
        }
    }
    let _ = writeln!(out);
    for l in wrap(&r.summary, width) {
        let _ = writeln!(out, "{l}");
    }
    if r.ready {
        let _ = writeln!(out, "moat can run here.");
    } else {
        let failed: Vec<&str> = r
            .checks
            .iter()
            .filter(|c| {
                matches!(c.name, "user-namespaces" | "namespaces" | "proc")
                    && c.status != Status::Ok
            })
            .map(|c| c.name)
            .collect();
        let _ = writeln!(
            out,
            "moat cannot run here: see {} above.",
            failed.join(", ")
        );
    }
    out
}

/// Columns of the terminal on stdout; `None` when stdout is not one, so a
/// pipe gets one line per check.
fn terminal_width() -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into memory we own.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

pub fn run(args: &DoctorArgs) -> i32 {
    let report = assess(&probe());
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("moat: cannot write the report as JSON: {e}");
                return crate::exec::EXIT_MOAT_ERROR;
            }
        }
    } else {
        print!("{}", render(&report, terminal_width()));
    }
    report.exit_code()
}

// ---------------------------------------------------------------------------
// Probing: the kernel-facing half.

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs `body` in a forked child that reports `(step, errno)` records
/// through a pipe, and returns the last record. `body` runs between fork
/// and `_exit`: it may only make system calls on data prepared before the
/// fork (no allocation, no locks), since another thread may have held a
/// lock at the fork.
fn in_child(body: impl FnOnce(&Reporter)) -> Trial {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Trial::Broken(format!("pipe2: {}", errno_text(last_errno())));
    }
    // SAFETY: the child only runs `body`, which is restricted to raw system
    // calls on memory prepared before the fork, then `_exit`s without
    // running any destructor or atexit handler of the parent's state.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = last_errno();
        // SAFETY: closing the two descriptors pipe2 just gave us.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        return Trial::Broken(format!("fork: {}", errno_text(e)));
    }
    if pid == 0 {
        // SAFETY: in the child: close the read end and report through the
        // write end; `_exit` never returns and skips the parent's cleanup.
        unsafe {
            libc::close(fds[0]);
            body(&Reporter { fd: fds[1] });
            libc::_exit(0);
        }
    }
    // SAFETY: the write end belongs to this process and is not used again.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end is a fresh descriptor nothing else owns; the File
    // takes it over and closes it.
    let mut reader = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut bytes = Vec::new();
    let read = reader.read_to_end(&mut bytes);
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; `status` is a valid int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || last_errno() != libc::EINTR {
            break;
        }
    }
    if let Err(e) = read {
        return Trial::Broken(format!("reading the probe's report: {e}"));
    }
    let last = bytes.chunks_exact(8).last().map(|c| {
        let step = i32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
        let errno = i32::from_ne_bytes([c[4], c[5], c[6], c[7]]);
        (step, errno)
    });
    match last.map(|(s, e)| (Step::from_code(s), e)) {
        Some((Some(Step::Done), _)) => Trial::Passed,
        Some((Some(step), errno)) => Trial::Failed { step, errno },
        Some((None, _)) => Trial::Broken("the probe reported an unknown step".into()),
        None => Trial::Broken(format!(
            "the probe ended without reporting (wait status {status:#x})"
        )),
    }
}

/// The write end of a probe child's pipe.
struct Reporter {
    fd: i32,
}

impl Reporter {
    fn report(&self, step: Step, errno: i32) {
        let mut rec = [0u8; 8];
        rec[..4].copy_from_slice(&(step as i32).to_ne_bytes());
        rec[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: writes 8 bytes from a live stack buffer; a pipe write of
        // that size is atomic, so records never interleave.
        unsafe { libc::write(self.fd, rec.as_ptr().cast(), rec.len()) };
    }

    /// Reports a failure of `step` if `r` is not 0; true when it failed.
    fn failed(&self, step: Step, r: libc::c_int) -> bool {
        if r != 0 {
            self.report(step, last_errno());
            true
        } else {
            false
        }
    }
}

/// Writes `data` to the file at `path`; 0 or -1 with errno set. Only raw
/// system calls, for use after fork.
fn write_file(path: &CStr, data: &[u8]) -> libc::c_int {
    // SAFETY: `path` is NUL-terminated; `data` is a live buffer of its length.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let e = last_errno();
        libc::close(fd);
        if n == data.len() as isize {
            0
        } else {
            if n >= 0 {
                *libc::__errno_location() = libc::EIO;
            } else {
                *libc::__errno_location() = e;
            }
            -1
        }
    }
}

/// Tries, in a child, what a sandbox start does: a user namespace with the
/// caller's ids mapped, the other namespaces inside it, and a new /proc
/// from pid 1 of the new pid namespace. With `as_user`, the child first
/// switches to that uid and gid (root asking for everyone else).
fn try_namespaces(as_user: Option<(u32, u32)>) -> Trial {
    let (uid, gid) = as_user.unwrap_or_else(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    });
    let uid_map = format!("{uid} {uid} 1\n");
    let gid_map = format!("{gid} {gid} 1\n");
    let inner = [
        (libc::CLONE_NEWNS, Step::Mount),
        (libc::CLONE_NEWNET, Step::Net),
        (libc::CLONE_NEWIPC, Step::Ipc),
        (libc::CLONE_NEWUTS, Step::Uts),
        (libc::CLONE_NEWCGROUP, Step::Cgroup),
        (libc::CLONE_NEWPID, Step::Pid),
    ];
    in_child(|rep| {
        // SAFETY (whole block): raw system calls on stack data and on
        // buffers built before the fork; this child owns its namespaces.
        unsafe {
            if let Some((u, g)) = as_user {
                if rep.failed(Step::Drop, libc::setgroups(0, std::ptr::null()))
                    || rep.failed(Step::Drop, libc::setresgid(g, g, g))
                    || rep.failed(Step::Drop, libc::setresuid(u, u, u))
                    // A uid change makes the process undumpable, which makes
                    // its /proc files root's and the maps unwritable.
                    || rep.failed(Step::Drop, libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0))
                {
                    return;
                }
            }
            if rep.failed(Step::UserNs, libc::unshare(libc::CLONE_NEWUSER))
                || rep.failed(Step::Maps, write_file(c"/proc/self/setgroups", b"deny"))
                || rep.failed(
                    Step::Maps,
                    write_file(c"/proc/self/uid_map", uid_map.as_bytes()),
                )
                || rep.failed(
                    Step::Maps,
                    write_file(c"/proc/self/gid_map", gid_map.as_bytes()),
                )
            {
                return;
            }
            for (flag, step) in inner {
                if rep.failed(step, libc::unshare(flag)) {
                    return;
                }
                if step == Step::Mount
                    && rep.failed(
                        Step::Mount,
                        libc::mount(
                            std::ptr::null(),
                            c"/".as_ptr(),
                            std::ptr::null(),
                            libc::MS_REC | libc::MS_PRIVATE,
                            std::ptr::null(),
                        ),
                    )
                {
                    return;
                }
            }
            let pid = libc::fork();
            if pid < 0 {
                rep.report(Step::Fork, last_errno());
                return;
            }
            if pid == 0 {
                if !rep.failed(
                    Step::Proc,
                    libc::mount(
                        c"proc".as_ptr(),
                        c"/proc".as_ptr(),
                        c"proc".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ),
                ) {
                    rep.report(Step::Done, 0);
                }
                libc::_exit(0);
            }
            let mut status = 0;
            while libc::waitpid(pid, &mut status, 0) < 0 && last_errno() == libc::EINTR {}
        }
    })
}

/// A filter that makes `getppid` fail with [`PROBE_ERRNO`] and allows
/// everything else.
fn probe_filter() -> Result<seccompiler::BpfProgram, String> {
    let arch =
        seccompiler::TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let filter = seccompiler::SeccompFilter::new(
        [(libc::SYS_getppid, Vec::new())].into_iter().collect(),
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(PROBE_ERRNO as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    seccompiler::BpfProgram::try_from(filter).map_err(|e| e.to_string())
}

/// Tries, in a child: no_new_privs, whether filters are supported at all
/// (a NULL program gives EFAULT when they are, EINVAL when not), then
/// installs a real filter and checks that it denies.
fn try_seccomp() -> Trial {
    let program = probe_filter();
    in_child(|rep| {
        // SAFETY (whole block): prctl and syscall with constant arguments or
        // a pointer to the program built before the fork, which outlives
        // these calls; the filter applies to this child only.
        unsafe {
            if rep.failed(
                Step::NoNewPrivs,
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            ) {
                return;
            }
            let r = libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                std::ptr::null::<libc::sock_fprog>(),
            );
            let e = last_errno();
            if r == 0 || e != libc::EFAULT {
                rep.report(Step::FilterSupport, e);
                return;
            }
            let Ok(program) = &program else {
                rep.report(Step::Build, 0);
                return;
            };
            let fprog = libc::sock_fprog {
                len: program.len() as u16,
                // seccompiler's sock_filter has the kernel's layout.
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            if rep.failed(
                Step::Install,
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &fprog as *const libc::sock_fprog,
                ),
            ) {
                return;
            }
            let r = libc::syscall(libc::SYS_getppid);
            if r == -1 && last_errno() == PROBE_ERRNO {
                rep.report(Step::Done, 0);
            } else {
                rep.report(Step::Enforce, 0);
            }
        }
    })
}

/// `Ok` when the syscall ran (it is called so that it fails harmlessly),
/// `Err(errno)` when it is missing or blocked.
fn syscall_exists(r: libc::c_long) -> Result<(), i32> {
    if r >= 0 {
        return Ok(());
    }
    match last_errno() {
        libc::ENOSYS => Err(libc::ENOSYS),
        libc::EPERM | libc::EACCES => Err(last_errno()),
        _ => Ok(()),
    }
}

fn seccomp_filters_of_self() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp_filters:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Asks the kernel everything [`assess`] needs.
pub fn probe() -> Probes {
    let uts = nix::sys::utsname::uname().ok();
    let kernel = Kernel {
        release: uts
            .as_ref()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        arch: uts
            .as_ref()
            .map(|u| u.machine().to_string_lossy().into_owned())
            .unwrap_or_else(|| std::env::consts::ARCH.to_string()),
    };
    let uid = nix::unistd::geteuid().as_raw();

    let userns = try_namespaces(None);
    let userns_rootless =
        (uid == 0).then(|| try_namespaces(Some((ROOTLESS_PROBE_UID, ROOTLESS_PROBE_UID))));
    let seccomp = try_seccomp();

    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a NULL attribute only
    // returns the ABI version; no descriptor is created.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    let landlock = if r >= 0 {
        Ok(r as i32)
    } else {
        Err(last_errno())
    };

    // SAFETY: PR_GET_SECCOMP only reads this process's mode.
    let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    let seccomp_mode = if r >= 0 { Ok(r) } else { Err(last_errno()) };

    // SAFETY: PR_CAP_AMBIENT_IS_SET only reads the ambient set.
    let ambient_caps = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_IS_SET,
            0, // CAP_CHOWN
            0,
            0,
        )
    } >= 0;

    // SAFETY: flags the kernel rejects (EINVAL) before looking at the range,
    // and a range past any possible descriptor besides: nothing is closed.
    let close_range = syscall_exists(unsafe {
        libc::syscall(libc::SYS_close_range, u32::MAX, u32::MAX, 1u32 << 31)
    });
    // SAFETY: an unknown flag makes the kernel return EINVAL before it reads
    // the path or the attribute; nothing is changed.
    let mount_setattr = syscall_exists(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1i32,
            c"".as_ptr(),
            1u32 << 31,
            std::ptr::null::<libc::c_void>(),
            0usize,
        )
    });

    Probes {
        kernel,
        uid,
        knobs: Knobs::read(),
        userns,
        userns_rootless,
        landlock,
        landlock_mode: crate::profile::load("default")
            .map(|p| p.landlock.mode)
            .map_err(|e| e.to_string()),
        seccomp_mode,
        seccomp_filters: seccomp_filters_of_self(),
        seccomp,
        ambient_caps,
        cgroup: cgroup::probe(),
        close_range,
        mount_setattr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup probe result with what the doctor reads from it.
    fn avail(layout: Layout, available: bool, detail: &str, fix: Option<&str>) -> Availability {
        Availability {
            layout,
            limits_available: available,
            detail: detail.into(),
            fix: fix.map(String::from),
            sites: Vec::new(),
            missing: Vec::new(),
        }
    }

    /// This machine as it should look: kernel 6.18, root, everything there,
    /// hybrid cgroups with limits.
    fn good() -> Probes {
        Probes {
            kernel: Kernel {
                release: "6.18.44-fc-v669".into(),
                arch: "x86_64".into(),
            },
            uid: 0,
            knobs: Knobs {
                apparmor_restrict: None,
                unprivileged_clone: None,
                max_user_namespaces: Some(96365),
            },
            userns: Trial::Passed,
            userns_rootless: Some(Trial::Passed),
            landlock: Ok(7),
            landlock_mode: Ok(Enforcement::BestEffort),
            seccomp_mode: Ok(0),
            seccomp_filters: Some(0),
            seccomp: Trial::Passed,
            ambient_caps: true,
            cgroup: avail(
                Layout::Hybrid,
                true,
                "v1 controllers under /sys/fs/cgroup",
                None,
            ),
            close_range: Ok(()),
            mount_setattr: Ok(()),
        }
    }

    fn rootless() -> Probes {
        Probes {
            uid: 1001,
            userns_rootless: None,
            ..good()
        }
    }

    fn get<'a>(r: &'a Report, name: &str) -> &'a Check {
        r.check(name)
            .unwrap_or_else(|| panic!("no check {name} in {:#?}", r.checks))
    }

    #[test]
    fn everything_there() {
        let r = assess(&good());
        for c in &r.checks {
            assert_eq!(c.status, Status::Ok, "{c:#?}");
            assert_eq!(c.fix, None, "{c:#?}");
        }
        assert!(r.ready);
        assert_eq!(r.exit_code(), 0);
        assert_eq!(
            r.summary,
            "moat will enforce: namespaces yes, Landlock ABI 7 (full), seccomp yes, \
             capabilities yes, cgroup limits yes"
        );
        assert_eq!(r.kernel.version.as_deref(), Some("6.18.44"));
        let names: Vec<&str> = r.checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "kernel",
                "user-namespaces",
                "user-namespaces-rootless",
                "namespaces",
                "proc",
                "landlock",
                "seccomp",
                "capabilities",
                "cgroups",
                "close-range",
                "mount-setattr"
            ]
        );
        // Not root: nobody else to ask for.
        let r = assess(&rootless());
        assert!(r.check("user-namespaces-rootless").is_none());
        assert!(!r.root);
    }

    #[test]
    fn landlock_abi_7_is_full_and_names_each_feature() {
        let r = assess(&good());
        assert_eq!(r.enforce.landlock_abi, 7);
        assert_eq!(r.enforce.landlock, "full");
        assert_eq!(
            r.enforce.landlock_features,
            [
                "fs",
                "refer",
                "truncate",
                "tcp",
                "ioctl-dev",
                "scope",
                "log"
            ]
        );
        assert_eq!(r.enforce.landlock_mode, Some(Enforcement::BestEffort));
        let c = get(&r, "landlock");
        assert!(c.detail.starts_with("ABI 7 (full)"), "{c:#?}");
        assert!(c.detail.contains("audit log"), "{c:#?}");
        assert!(c.detail.contains("best-effort"), "{c:#?}");
    }

    #[test]
    fn landlock_abi_3_is_partial_and_says_what_is_lost() {
        let r = assess(&Probes {
            landlock: Ok(3),
            ..good()
        });
        let c = get(&r, "landlock");
        assert_eq!(c.status, Status::Limited);
        assert!(c.detail.contains("TCP ports are not restricted"), "{c:#?}");
        assert!(c.detail.contains("ioctl"), "{c:#?}");
        assert!(c.detail.contains("not scoped"), "{c:#?}");
        assert!(!c.detail.contains("truncation"), "ABI 3 has truncate{c:#?}");
        assert!(c.fix.as_deref().unwrap().contains("6.12"), "{c:#?}");
        assert_eq!(r.enforce.landlock, "partial");
        assert_eq!(r.enforce.landlock_features, ["fs", "refer", "truncate"]);
        assert!(
            r.summary.contains("Landlock ABI 3 (partial)"),
            "{}",
            r.summary
        );
        // An optional layer: moat still runs.
        assert!(r.ready);
        // ABI 6 is everything moat's rules use.
        assert_eq!(
            get(
                &assess(&Probes {
                    landlock: Ok(6),
                    ..good()
                }),
                "landlock"
            )
            .status,
            Status::Ok
        );
        let abi1 = assess(&Probes {
            landlock: Ok(1),
            ..good()
        });
        assert!(get(&abi1, "landlock")
            .detail
            .contains("renaming or linking"));
    }

    #[test]
    fn landlock_abi_0_and_errors() {
        let r = assess(&Probes {
            landlock: Ok(0),
            ..good()
        });
        assert_eq!(get(&r, "landlock").status, Status::Missing);
        assert_eq!(r.enforce.landlock, "none");
        assert!(r.summary.contains("Landlock no"), "{}", r.summary);
        assert!(r.enforce.landlock_features.is_empty());

        let r = assess(&Probes {
            landlock: Err(libc::EOPNOTSUPP),
            ..good()
        });
        let c = get(&r, "landlock");
        assert_eq!(c.status, Status::Missing);
        assert!(c.detail.contains("not enabled at boot"), "{c:#?}");
        assert!(
            c.fix.as_deref().unwrap().contains("lsm=landlock,"),
            "{c:#?}"
        );
        assert_eq!(r.enforce.landlock_abi, 0);
        assert!(r.ready, "Landlock is optional");
        assert_eq!(r.exit_code(), 0);

        let built_without = assess(&Probes {
            landlock: Err(libc::ENOSYS),
            ..good()
        });
        let fix = get(&built_without, "landlock").fix.clone().unwrap();
        assert!(fix.contains("CONFIG_SECURITY_LANDLOCK"), "{fix}");
        let too_old = assess(&Probes {
            landlock: Err(libc::ENOSYS),
            kernel: Kernel {
                release: "5.10.0-28-amd64".into(),
                arch: "x86_64".into(),
            },
            ..good()
        });
        let fix = get(&too_old, "landlock").fix.clone().unwrap();
        assert!(fix.contains("5.13"), "{fix}");
    }

    #[test]
    fn landlock_required_by_the_profile_is_said() {
        let r = assess(&Probes {
            landlock: Ok(2),
            landlock_mode: Ok(Enforcement::Required),
            ..good()
        });
        let c = get(&r, "landlock");
        assert!(c.detail.contains("refuses to start"), "{c:#?}");
        assert_eq!(r.enforce.landlock_mode, Some(Enforcement::Required));
    }

    #[test]
    fn userns_denied_by_apparmor_knob() {
        // Ubuntu 23.10+: unprivileged unshare is refused outright...
        let p = Probes {
            knobs: Knobs {
                apparmor_restrict: Some(1),
                ..good().knobs
            },
            userns: Trial::Failed {
                step: Step::UserNs,
                errno: libc::EACCES,
            },
            ..rootless()
        };
        let r = assess(&p);
        let c = get(&r, "user-namespaces");
        assert_eq!(c.status, Status::Missing);
        assert!(
            c.detail.contains("creating a user namespace failed"),
            "{c:#?}"
        );
        assert!(
            c.detail
                .contains("kernel.apparmor_restrict_unprivileged_userns=1"),
            "{c:#?}"
        );
        let fix = c.fix.as_deref().unwrap();
        assert!(fix.contains("apparmor_parser"), "{fix}");
        assert!(
            fix.contains("apparmor_restrict_unprivileged_userns=0"),
            "{fix}"
        );
        assert_eq!(get(&r, "namespaces").status, Status::Missing);
        assert_eq!(get(&r, "proc").status, Status::Missing);
        assert!(!r.ready);
        assert_eq!(r.exit_code(), 1);
        assert!(r.summary.contains("namespaces no"), "{}", r.summary);
        let text = render(&r, None);
        assert!(text.contains("moat cannot run here"), "{text}");
        assert!(text.contains("fix: "), "{text}");

        // ...or allowed, with every capability in it denied.
        let r = assess(&Probes {
            userns: Trial::Failed {
                step: Step::Mount,
                errno: libc::EPERM,
            },
            ..p
        });
        assert_eq!(get(&r, "user-namespaces").status, Status::Ok);
        let c = get(&r, "namespaces");
        assert_eq!(c.status, Status::Missing);
        assert!(c.detail.contains("mount namespace"), "{c:#?}");
        assert!(
            c.fix.as_deref().unwrap().contains("apparmor_parser"),
            "{c:#?}"
        );
        assert!(!r.ready);
    }

    #[test]
    fn userns_limit_zero() {
        let r = assess(&Probes {
            knobs: Knobs {
                max_user_namespaces: Some(0),
                ..Default::default()
            },
            userns: Trial::Failed {
                step: Step::UserNs,
                errno: libc::ENOSPC,
            },
            ..rootless()
        });
        let c = get(&r, "user-namespaces");
        assert!(c
            .fix
            .as_deref()
            .unwrap()
            .contains("user.max_user_namespaces=15000"));
        assert!(!r.ready);
    }

    #[test]
    fn root_sees_whether_others_can() {
        // Debian's old knob: root can, others cannot.
        let p = Probes {
            knobs: Knobs {
                unprivileged_clone: Some(0),
                ..good().knobs
            },
            userns_rootless: Some(Trial::Failed {
                step: Step::UserNs,
                errno: libc::EPERM,
            }),
            ..good()
        };
        let r = assess(&p);
        assert_eq!(get(&r, "user-namespaces").status, Status::Ok);
        let c = get(&r, "user-namespaces-rootless");
        assert_eq!(c.status, Status::Missing);
        assert!(c.detail.contains("as uid 65534"), "{c:#?}");
        assert!(
            c.detail.contains("kernel.unprivileged_userns_clone=0"),
            "{c:#?}"
        );
        assert!(
            c.fix
                .as_deref()
                .unwrap()
                .contains("unprivileged_userns_clone=1"),
            "{c:#?}"
        );
        assert!(r.ready, "root can run moat");

        // Root that cannot switch uid (a user namespace with one uid
        // mapped): judged from the sysctls.
        let unknown = assess(&Probes {
            userns_rootless: Some(Trial::Failed {
                step: Step::Drop,
                errno: libc::EINVAL,
            }),
            ..good()
        });
        assert_eq!(
            get(&unknown, "user-namespaces-rootless").status,
            Status::Limited
        );
        let off = assess(&Probes {
            userns_rootless: Some(Trial::Failed {
                step: Step::Drop,
                errno: libc::EINVAL,
            }),
            ..p
        });
        assert_eq!(
            get(&off, "user-namespaces-rootless").status,
            Status::Missing
        );
    }

    #[test]
    fn proc_refused_in_a_container() {
        let r = assess(&Probes {
            userns: Trial::Failed {
                step: Step::Proc,
                errno: libc::EPERM,
            },
            ..rootless()
        });
        assert_eq!(get(&r, "user-namespaces").status, Status::Ok);
        assert_eq!(get(&r, "namespaces").status, Status::Ok);
        let c = get(&r, "proc");
        assert_eq!(c.status, Status::Missing);
        assert!(
            c.fix.as_deref().unwrap().contains("fully visible"),
            "{c:#?}"
        );
        assert!(!r.ready);
    }

    #[test]
    fn no_cgroup_namespace_names_the_kernel_option() {
        let r = assess(&Probes {
            userns: Trial::Failed {
                step: Step::Cgroup,
                errno: libc::EINVAL,
            },
            ..rootless()
        });
        let c = get(&r, "namespaces");
        assert!(c.fix.as_deref().unwrap().contains("4.6"), "{c:#?}");
        assert!(!r.ready);
    }

    #[test]
    fn seccomp_verdicts() {
        let r = assess(&Probes {
            seccomp: Trial::Failed {
                step: Step::FilterSupport,
                errno: libc::EINVAL,
            },
            ..good()
        });
        let c = get(&r, "seccomp");
        assert_eq!(c.status, Status::Missing);
        assert!(c.fix.as_deref().unwrap().contains("CONFIG_SECCOMP_FILTER"));
        assert!(r.summary.contains("seccomp no"), "{}", r.summary);
        assert!(r.ready, "seccomp is optional");
        // no_new_privs worked before the filter check.
        assert_eq!(get(&r, "capabilities").status, Status::Ok);

        let r = assess(&Probes {
            seccomp: Trial::Failed {
                step: Step::Enforce,
                errno: 0,
            },
            ..good()
        });
        assert_eq!(get(&r, "seccomp").status, Status::Missing);

        let r = assess(&Probes {
            seccomp_mode: Ok(2),
            seccomp_filters: Some(2),
            ..good()
        });
        let c = get(&r, "seccomp");
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.detail.contains("already runs under 2 seccomp filter"),
            "{c:#?}"
        );

        let r = assess(&Probes {
            seccomp: Trial::Failed {
                step: Step::NoNewPrivs,
                errno: libc::EINVAL,
            },
            ..good()
        });
        assert_eq!(get(&r, "capabilities").status, Status::Missing);
        assert_eq!(get(&r, "seccomp").status, Status::Missing);
        assert!(r.summary.contains("capabilities no"), "{}", r.summary);
    }

    #[test]
    fn cgroups_without_limits_carry_the_fix() {
        let r = assess(&Probes {
            cgroup: avail(
                Layout::Hybrid,
                false,
                "no writable cgroup for uid 1001",
                Some("ask root for a delegated cgroup"),
            ),
            ..rootless()
        });
        let c = get(&r, "cgroups");
        assert_eq!(c.status, Status::Limited);
        assert!(c.detail.starts_with("hybrid"), "{c:#?}");
        assert_eq!(c.fix.as_deref(), Some("ask root for a delegated cgroup"));
        assert!(r.summary.ends_with("cgroup limits no"), "{}", r.summary);
        assert_eq!(r.enforce.cgroup_layout, Layout::Hybrid);
        assert!(r.ready);

        let none = assess(&Probes {
            cgroup: avail(Layout::None, false, "nothing mounted", None),
            ..good()
        });
        let c = get(&none, "cgroups");
        assert_eq!(c.status, Status::Missing);
        assert!(c.fix.is_some(), "a missing check always says how to fix it");
    }

    #[test]
    fn old_kernel_fallbacks_say_what_they_lose() {
        let r = assess(&Probes {
            kernel: Kernel {
                release: "5.4.0-150-generic".into(),
                arch: "x86_64".into(),
            },
            close_range: Err(libc::ENOSYS),
            mount_setattr: Err(libc::ENOSYS),
            landlock: Err(libc::ENOSYS),
            ..good()
        });
        assert_eq!(get(&r, "kernel").status, Status::Limited);
        let c = get(&r, "close-range");
        assert_eq!(c.status, Status::Missing);
        assert!(c.meaning.contains("1024"), "{c:#?}");
        assert!(c.fix.as_deref().unwrap().contains("5.9"), "{c:#?}");
        let c = get(&r, "mount-setattr");
        assert!(c.meaning.contains("nested"), "{c:#?}");
        assert!(c.fix.as_deref().unwrap().contains("5.12"), "{c:#?}");
        assert!(get(&r, "landlock").fix.as_deref().unwrap().contains("5.13"));
        assert!(r.ready);

        let ancient = assess(&Probes {
            kernel: Kernel {
                release: "4.4.0".into(),
                arch: "x86_64".into(),
            },
            ..good()
        });
        assert_eq!(get(&ancient, "kernel").status, Status::Missing);
    }

    #[test]
    fn every_check_that_is_not_ok_has_a_fix() {
        let bad = Probes {
            kernel: Kernel {
                release: "weird".into(),
                arch: "s390x".into(),
            },
            knobs: Knobs::default(),
            userns: Trial::Broken("fork: EAGAIN".into()),
            userns_rootless: Some(Trial::Broken("fork: EAGAIN".into())),
            landlock: Err(libc::EPERM),
            landlock_mode: Err("bad profile".into()),
            seccomp: Trial::Failed {
                step: Step::Build,
                errno: 0,
            },
            close_range: Err(libc::EPERM),
            mount_setattr: Err(libc::ENOSYS),
            cgroup: avail(Layout::V2, false, "not delegated", None),
            ..good()
        };
        let r = assess(&bad);
        let not_ok: Vec<&str> = r
            .checks
            .iter()
            .filter(|c| c.status != Status::Ok)
            .map(|c| c.name)
            .collect();
        // no_new_privs came before the filter build, so capabilities hold.
        let all_but_caps: Vec<&str> = r
            .checks
            .iter()
            .map(|c| c.name)
            .filter(|n| *n != "capabilities")
            .collect();
        assert_eq!(not_ok, all_but_caps);
        for c in r.checks.iter().filter(|c| c.status != Status::Ok) {
            assert!(c.fix.as_deref().is_some_and(|f| !f.is_empty()), "{c:#?}");
            assert!(!c.meaning.is_empty(), "{c:#?}");
        }
        assert!(!r.ready);
        assert!(get(&r, "seccomp").detail.contains("s390x"));
    }

    #[test]
    fn json_has_stable_field_names() {
        let r = assess(&good());
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in [
            "moat_version",
            "kernel",
            "uid",
            "root",
            "sysctls",
            "checks",
            "enforce",
            "cgroup",
            "ready",
            "summary",
        ] {
            assert!(v.get(key).is_some(), "no {key} in {v:#}");
        }
        assert_eq!(v["kernel"]["release"], "6.18.44-fc-v669");
        assert_eq!(v["kernel"]["arch"], "x86_64");
        assert_eq!(v["enforce"]["landlock_abi"], 7);
        assert_eq!(v["enforce"]["cgroup_layout"], "hybrid");
        assert_eq!(v["enforce"]["landlock_mode"], "best-effort");
        assert_eq!(v["sysctls"]["user.max_user_namespaces"], 96365);
        assert!(v["sysctls"]["kernel.unprivileged_userns_clone"].is_null());
        let landlock = &v["checks"][5];
        assert_eq!(landlock["name"], "landlock");
        assert_eq!(landlock["status"], "ok");
        assert!(landlock["fix"].is_null());
        for field in ["detail", "meaning"] {
            assert!(landlock[field].is_string(), "{landlock:#}");
        }
        let limited = serde_json::to_value(assess(&Probes {
            landlock: Ok(4),
            ..good()
        }))
        .unwrap();
        assert_eq!(limited["checks"][5]["status"], "limited");
        assert!(limited["checks"][5]["fix"].is_string());
    }

    #[test]
    fn table_lists_every_check() {
        let r = assess(&good());
        let text = render(&r, None);
        for c in &r.checks {
            assert!(
                text.lines()
                    .any(|l| l.starts_with("ok") && l.contains(c.name)),
                "{} missing from\n{text}",
                c.name
            );
        }
        assert!(text.contains(&r.summary), "{text}");
        assert!(text.contains("moat can run here."), "{text}");
        assert!(!text.contains("fix:"), "{text}");
    }

    #[test]
    fn table_wraps_to_the_terminal() {
        let r = assess(&Probes {
            knobs: Knobs {
                apparmor_restrict: Some(1),
                ..Default::default()
            },
            userns: Trial::Failed {
                step: Step::UserNs,
                errno: libc::EACCES,
            },
            landlock: Ok(2),
            ..rootless()
        });
        let text = render(&r, Some(100));
        for l in text.lines() {
            // The AppArmor profile to write is kept as one line.
            if !l.contains("/etc/apparmor.d/moat:") && !l.contains("profile moat ") {
                assert!(l.chars().count() <= 100, "too long: {l:?}\n{text}");
            }
        }
        assert!(text.contains("apparmor_parser"), "{text}");
        // Unwrapped, each check's detail is on its check's line.
        let flat = render(&r, None);
        let line = flat.lines().find(|l| l.contains(" landlock ")).unwrap();
        assert!(line.contains("not scoped"), "{flat}");
        // The fix keeps explain()'s advice without repeating its label.
        assert!(!text.contains("fix: Fix:"), "{text}");
    }

    #[test]
    fn kernel_versions_parse() {
        let k = |r: &str| {
            Kernel {
                release: r.into(),
                arch: "x86_64".into(),
            }
            .version()
        };
        assert_eq!(k("6.18.44-fc-v669"), Some((6, 18, 44)));
        assert_eq!(k("6.1.0-28-amd64"), Some((6, 1, 0)));
        assert_eq!(k("6.8.0-rc3"), Some((6, 8, 0)));
        assert_eq!(k("6.12"), Some((6, 12, 0)));
        assert_eq!(k("weird"), None);
    }
}
