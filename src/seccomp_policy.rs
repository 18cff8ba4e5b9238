//! moat's seccomp policy as plain data: which syscalls are denied, under
//! which argument conditions, with which errno. Nothing here touches the
//! kernel; [`compile`] produces the BPF program that `sandbox::seccomp`
//! installs.
//!
//! # What the filter does
//!
//! It is a deny list: a syscall not named in [`GROUPS`] is allowed, so
//! ordinary programs (shells, compilers, interpreters, git) run unchanged.
//! A denied call fails with an errno instead of killing the caller, so a
//! tool probing for a feature gets an error it can handle:
//!
//! - `EPERM` for every entry, except
//! - `ENOSYS` for every `clone3`. Its flags live in a struct in memory,
//!   which seccomp cannot read, so namespace flags cannot be checked there.
//!   ENOSYS is what a kernel without clone3 answers, and glibc then falls
//!   back to clone(2), whose flags are a register and are checked (musl and
//!   Go never use clone3).
//!
//! Before any rule, the filter checks the calling convention:
//!
//! - A syscall made through another ABI than the native one (i386 `int
//!   0x80` on x86_64, 32-bit ARM on aarch64) kills the process (SIGSYS).
//!   Syscall numbers differ there, so none of the rules would apply;
//!   seccompiler emits this check, and an errno instead would leave a 32-bit
//!   program spinning on failed exits.
//! - On x86_64, a syscall number with the x32 bit (`0x40000000`) set
//!   returns ENOSYS. x32 calls report the x86_64 audit arch, so they pass
//!   the check above, but their numbers differ from the native ones: on a
//!   kernel built with `CONFIG_X86_X32_ABI` they would slip past every
//!   number-based rule. seccompiler compares numbers exactly and does not
//!   look at that bit, so moat adds the check. ENOSYS is what a kernel
//!   without x32 answers.
//!
//! Argument checks compare the low 32 bits only. Every argument checked is
//! an `int` or `unsigned int` in the kernel, or one whose upper half the
//! kernel ignores (clone's flags), so setting upper bits cannot dodge a
//! check, whereas a 64-bit compare would let `ioctl(fd, TIOCSTI | 1 << 32)`
//! through to a kernel that reads only the low half.
//!
//! # Profiles
//!
//! `[seccomp] allow = [...]` names groups, or syscalls of the built-in list,
//! to allow back; a group's name means the whole group (`allow =
//! ["ptrace"]` also allows process_vm_readv, as debuggers need). `deny =
//! [...]` names further syscalls to deny with EPERM outright (even one the
//! built-in list only checks by argument), or a group, to restore it after
//! a parent profile allowed it. `deny` wins over `allow`. Names are checked
//! against the syscall tables of every supported architecture, so a profile
//! naming `open` (absent on aarch64) is valid on both and simply has nothing
//! to deny there. Syscalls moat's init still needs after the filter is on
//! (execve, clone, wait4...) cannot be denied.
//!
//! # Left allowed on purpose
//!
//! `chroot` (needs CAP_SYS_CHROOT, which the command never has), `statmount`
//! and `listmount` (read-only, and they see only the sandbox's own mount
//! namespace, like /proc/self/mountinfo), `modify_ldt` (Wine and some JITs;
//! Docker allows it too), the NUMA calls (`mbind`, `get_mempolicy`: runtimes
//! probe them), `seccomp` and the Landlock calls (they only add
//! restrictions).

use crate::profile::Seccomp;
use crate::sandbox::seccomp::Program;
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// An architecture the policy covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architecture moat was built for, if the policy covers it.
    pub fn current() -> Option<Arch> {
        if cfg!(all(target_arch = "x86_64", target_pointer_width = "64")) {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The AUDIT_ARCH_* value the kernel puts in `seccomp_data.arch` for a
    /// native syscall.
    pub fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 => 0xc000_003e,
            Arch::Aarch64 => 0xc000_00b7,
        }
    }

    fn target(self) -> TargetArch {
        match self {
            Arch::X86_64 => TargetArch::x86_64,
            Arch::Aarch64 => TargetArch::aarch64,
        }
    }

    fn table(self) -> &'static str {
        match self {
            Arch::X86_64 => X86_64_SYSCALLS,
            Arch::Aarch64 => AARCH64_SYSCALLS,
        }
    }

    /// The syscall's number on this architecture; `None` if it has none
    /// here (`open` on aarch64, `iopl` anywhere but x86).
    pub fn syscall_number(self, name: &str) -> Option<u32> {
        // Parsed once per process: `compile` looks up every policy entry, and
        // scanning the text table each time was most of moat's start-up CPU.
        static X86_64: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
        static AARCH64: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
        let cell = match self {
            Arch::X86_64 => &X86_64,
            Arch::Aarch64 => &AARCH64,
        };
        cell.get_or_init(|| {
            self.table()
                .split_whitespace()
                .filter_map(|pair| {
                    let (n, nr) = pair.split_once('=')?;
                    Some((n, nr.parse().ok()?))
                })
                .collect()
        })
        .get(name)
        .copied()
    }
}

/// What a denied call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    Eperm,
    Enosys,
}

impl Errno {
    pub fn raw(self) -> u32 {
        match self {
            Errno::Eperm => libc::EPERM as u32,
            Errno::Enosys => libc::ENOSYS as u32,
        }
    }
}

/// A comparison on the low 32 bits of one syscall argument (see the module
/// docs for why 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// Argument index, 0 to 5.
    pub arg: u8,
    pub op: Op,
    pub value: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    /// `arg & mask == value`.
    MaskedEq(u32),
}

const fn eq(arg: u8, value: u32) -> Check {
    Check {
        arg,
        op: Op::Eq,
        value,
    }
}

const fn ne(arg: u8, value: u32) -> Check {
    Check {
        arg,
        op: Op::Ne,
        value,
    }
}

/// Every bit of `flags` is set in the argument.
const fn has(arg: u8, flags: u32) -> Check {
    Check {
        arg,
        op: Op::MaskedEq(flags),
        value: flags,
    }
}

/// When an entry denies its syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// When any of the rules holds; a rule holds when all its checks do.
    Any(&'static [&'static [Check]]),
}

/// One denied syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub syscall: &'static str,
    pub when: When,
    pub errno: Errno,
    /// The only architecture that has this syscall; `None`: all do.
    pub only_on: Option<Arch>,
}

impl Entry {
    /// Whether this architecture has the syscall.
    pub fn applies_to(&self, arch: Arch) -> bool {
        !matches!(self.only_on, Some(a) if a != arch)
    }
}

const fn always(syscall: &'static str) -> Entry {
    Entry {
        syscall,
        when: When::Always,
        errno: Errno::Eperm,
        only_on: None,
    }
}

const fn when(syscall: &'static str, rules: &'static [&'static [Check]]) -> Entry {
    Entry {
        syscall,
        when: When::Any(rules),
        errno: Errno::Eperm,
        only_on: None,
    }
}

const fn x86_only(syscall: &'static str) -> Entry {
    Entry {
        syscall,
        when: When::Always,
        errno: Errno::Eperm,
        only_on: Some(Arch::X86_64),
    }
}

/// Syscalls that are denied together and that a profile can allow back by
/// the group's name.
#[derive(Debug)]
pub struct Group {
    /// Spelled as profiles may spell it: lowercase, digits and `_`.
    pub name: &'static str,
    pub why: &'static str,
    pub entries: &'static [Entry],
}

// Namespace flags (linux/sched.h).
const CLONE_NEWTIME: u32 = 0x0000_0080;
const CLONE_NEWNS: u32 = 0x0002_0000;
const CLONE_NEWCGROUP: u32 = 0x0200_0000;
const CLONE_NEWUTS: u32 = 0x0400_0000;
const CLONE_NEWIPC: u32 = 0x0800_0000;
const CLONE_NEWUSER: u32 = 0x1000_0000;
const CLONE_NEWPID: u32 = 0x2000_0000;
const CLONE_NEWNET: u32 = 0x4000_0000;

/// clone(2) with any namespace flag; one rule per flag since a rule is a
/// conjunction. CLONE_NEWTIME is not among them: in clone(2) its bit is
/// part of the exit signal (CSIGNAL), and only clone3 and unshare take it.
const CLONE_NEW_NAMESPACE: &[&[Check]] = &[
    &[has(0, CLONE_NEWNS)],
    &[has(0, CLONE_NEWCGROUP)],
    &[has(0, CLONE_NEWUTS)],
    &[has(0, CLONE_NEWIPC)],
    &[has(0, CLONE_NEWUSER)],
    &[has(0, CLONE_NEWPID)],
    &[has(0, CLONE_NEWNET)],
];

const UNSHARE_NEW_NAMESPACE: &[&[Check]] = &[
    &[has(0, CLONE_NEWNS)],
    &[has(0, CLONE_NEWCGROUP)],
    &[has(0, CLONE_NEWUTS)],
    &[has(0, CLONE_NEWIPC)],
    &[has(0, CLONE_NEWUSER)],
    &[has(0, CLONE_NEWPID)],
    &[has(0, CLONE_NEWNET)],
    &[has(0, CLONE_NEWTIME)],
];

// Personalities (linux/personality.h).
const PER_LINUX: u32 = 0x0000;
const PER_LINUX32: u32 = 0x0008;
const UNAME26: u32 = 0x0002_0000;
/// personality(0xffffffff) only reports the current persona.
const PERSONALITY_QUERY: u32 = 0xffff_ffff;

/// Any persona but Linux's own (64- or 32-bit, optionally with UNAME26,
/// as Docker allows). ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC and the foreign
/// execution domains are denied.
const OTHER_PERSONALITY: &[&[Check]] = &[&[
    ne(0, PER_LINUX),
    ne(0, PER_LINUX32),
    ne(0, UNAME26),
    ne(0, UNAME26 | PER_LINUX32),
    ne(0, PERSONALITY_QUERY),
]];

// Terminal ioctls (asm-generic/ioctls.h; the same on x86_64 and aarch64).
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541c;

const TTY_INJECTION: &[&[Check]] = &[&[eq(1, TIOCSTI)], &[eq(1, TIOCLINUX)]];

// Socket arguments (linux/socket.h, linux/in.h, linux/netlink.h).
const AF_UNIX: u32 = 1;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const AF_NETLINK: u32 = 16;
const NETLINK_ROUTE: u32 = 0;
const IPPROTO_SMC: u32 = 256;
const IPPROTO_MPTCP: u32 = 262;
/// The type argument also carries SOCK_NONBLOCK and SOCK_CLOEXEC.
const SOCK_TYPE_MASK: u32 = 0xf;
const SOCK_PACKET: u32 = 10;

/// socket(2)/socketpair(2) calls that are denied.
const DENIED_SOCKETS: &[&[Check]] = &[
    // A family other than the four that local tools and the loopback
    // network need.
    &[
        ne(0, AF_UNIX),
        ne(0, AF_INET),
        ne(0, AF_INET6),
        ne(0, AF_NETLINK),
    ],
    // Netlink other than NETLINK_ROUTE (what `ip` and getaddrinfo's
    // AI_ADDRCONFIG use): audit, uevents, sock_diag, generic netlink...
    &[eq(0, AF_NETLINK), ne(2, NETLINK_ROUTE)],
    // Multipath TCP and SMC over inet sockets: whole protocol stacks behind
    // an ordinary-looking socket(AF_INET, SOCK_STREAM, ...).
    &[eq(2, IPPROTO_MPTCP)],
    &[eq(2, IPPROTO_SMC)],
    // The obsolete SOCK_PACKET type: a packet socket reachable through
    // AF_INET.
    &[Check {
        arg: 1,
        op: Op::MaskedEq(SOCK_TYPE_MASK),
        value: SOCK_PACKET,
    }],
];

/// The built-in policy. Each syscall appears in one group at most, so that
/// allowing a group back means exactly its list.
pub static GROUPS: &[Group] = &[
    Group {
        name: "ptrace",
        why: "Reading or steering another process, as debuggers do: the command could read \
              the memory of anything else in the sandbox, and ptrace has a long record of \
              kernel bugs. kcmp and pidfd_getfd need the same ptrace permission and go with it.",
        entries: &[
            always("ptrace"),
            always("process_vm_readv"),
            always("process_vm_writev"),
            always("kcmp"),
            always("pidfd_getfd"),
        ],
    },
    Group {
        name: "kernel_modules",
        why: "Loading or removing code in the host kernel.",
        entries: &[
            always("init_module"),
            always("finit_module"),
            always("delete_module"),
        ],
    },
    Group {
        name: "kexec",
        why: "Replacing the running kernel.",
        entries: &[always("kexec_load"), always("kexec_file_load")],
    },
    Group {
        name: "bpf",
        why: "eBPF programs and maps: a large and often exploited part of the kernel, open to \
              unprivileged users on some hosts.",
        entries: &[always("bpf")],
    },
    Group {
        name: "perf",
        why: "Performance counters and tracing: side channels and a record of kernel bugs.",
        entries: &[always("perf_event_open")],
    },
    Group {
        name: "userfaultfd",
        why: "Lets a process stall the kernel while it copies from user memory, the usual way \
              to widen a kernel race into an exploit.",
        entries: &[always("userfaultfd")],
    },
    Group {
        name: "keyring",
        why: "The kernel keyrings are not fully namespaced: keys the same user holds elsewhere \
              (Kerberos tickets, file system keys) could be looked up or planted.",
        entries: &[always("keyctl"), always("add_key"), always("request_key")],
    },
    Group {
        name: "mount",
        why: "Mounting, unmounting and changing the root, with the old and the new mount API: \
              the file system view moat built stays as built.",
        entries: &[
            always("mount"),
            always("umount2"),
            always("pivot_root"),
            always("fsopen"),
            always("fsconfig"),
            always("fsmount"),
            always("fspick"),
            always("move_mount"),
            always("open_tree"),
            always("open_tree_attr"),
            always("mount_setattr"),
        ],
    },
    Group {
        name: "namespaces",
        why: "New namespaces (clone and unshare with CLONE_NEW* flags) and joining others \
              (setns): a nested user namespace hands the command full capabilities over new \
              namespaces, the starting point of many kernel exploits. clone3 returns ENOSYS, \
              since its flags are out of seccomp's sight; libc then falls back to clone.",
        entries: &[
            when("clone", CLONE_NEW_NAMESPACE),
            Entry {
                syscall: "clone3",
                when: When::Always,
                errno: Errno::Enosys,
                only_on: None,
            },
            when("unshare", UNSHARE_NEW_NAMESPACE),
            always("setns"),
        ],
    },
    Group {
        name: "io_uring",
        why: "io_uring opens, reads and connects without the syscalls this filter sees, and \
              has been a rich source of kernel exploits. Programs that use it fall back to \
              ordinary syscalls when it fails.",
        entries: &[
            always("io_uring_setup"),
            always("io_uring_enter"),
            always("io_uring_register"),
        ],
    },
    Group {
        name: "clock",
        why: "Setting or steering the system clock, which is not namespaced. adjtimex and \
              clock_adjtime also answer read-only queries (ntp_gettime), which ordinary \
              tools do not make.",
        entries: &[
            always("settimeofday"),
            always("clock_settime"),
            always("clock_adjtime"),
            always("adjtimex"),
        ],
    },
    Group {
        name: "personality",
        why: "Execution domains other than Linux's default: ADDR_NO_RANDOMIZE turns off \
              address randomisation for what the command runs next, READ_IMPLIES_EXEC makes \
              data executable. PER_LINUX, PER_LINUX32, UNAME26 and queries stay allowed.",
        entries: &[when("personality", OTHER_PERSONALITY)],
    },
    Group {
        name: "tty_injection",
        why: "ioctl TIOCSTI (push input into a terminal) and TIOCLINUX (console control, \
              including pasting the selection): with a terminal in reach, the command could \
              type into the shell behind it.",
        entries: &[when("ioctl", TTY_INJECTION)],
    },
    Group {
        name: "socket_families",
        why: "Sockets other than AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK with NETLINK_ROUTE: \
              packet sockets, vsock (a way out of a VM to its host), Bluetooth, CAN, TIPC, \
              RDS, XDP and the rest are rarely needed and are where socket exploits live. \
              Also MPTCP and SMC on inet sockets (IPPROTO_MPTCP, IPPROTO_SMC), and the \
              obsolete SOCK_PACKET type.",
        entries: &[
            when("socket", DENIED_SOCKETS),
            when("socketpair", DENIED_SOCKETS),
        ],
    },
    Group {
        name: "host_admin",
        why: "Administering the host: process accounting, swap, reboot, the kernel log, disk \
              quotas, file-system-wide notification (fanotify) and, on x86, raw I/O ports.",
        entries: &[
            always("acct"),
            always("swapon"),
            always("swapoff"),
            always("reboot"),
            always("syslog"),
            always("quotactl"),
            always("quotactl_fd"),
            always("fanotify_init"),
            x86_only("iopl"),
            x86_only("ioperm"),
        ],
    },
    Group {
        name: "file_handles",
        why: "open_by_handle_at opens a file by its handle, bypassing the path and so the \
              mounts that hide the rest of a file system (the \"shocker\" container escape); \
              name_to_handle_at makes the handles.",
        entries: &[always("open_by_handle_at"), always("name_to_handle_at")],
    },
    Group {
        name: "obsolete",
        why: "Syscalls current kernels no longer implement or nothing uses any more: denied so \
              that an older host kernel that still has them does not expose them.",
        entries: &[
            x86_only("uselib"),
            x86_only("_sysctl"),
            always("nfsservctl"),
            always("lookup_dcookie"),
        ],
    },
];

/// The group of a profile's own `deny` entries in [`Denial::group`].
pub const PROFILE_GROUP: &str = "profile";

/// What init still calls once the filter is on (to start the command and
/// wait for it), plus what any exec'd program needs before its first line:
/// a profile denying one of these could never run anything.
const NEEDED_BY_INIT: &[&str] = &[
    "clone",
    "execve",
    "exit",
    "exit_group",
    "wait4",
    "kill",
    "rt_sigtimedwait",
    "rt_sigprocmask",
    "rt_sigaction",
    "read",
    "write",
    "close",
    "pipe2",
    "sendmsg",
    "openat",
    "dup2",
    "dup3",
    "setsid",
    "chdir",
    "ioctl",
    "mmap",
    "munmap",
    "brk",
];

/// One denial of the effective policy, before syscall numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The built-in group it comes from, or [`PROFILE_GROUP`].
    pub group: &'static str,
    pub syscall: String,
    pub when: When,
    pub errno: Errno,
    pub only_on: Option<Arch>,
}

pub fn group(name: &str) -> Option<&'static Group> {
    GROUPS.iter().find(|g| g.name == name)
}

fn group_list() -> String {
    GROUPS.iter().map(|g| g.name).collect::<Vec<_>>().join(", ")
}

fn in_builtin(syscall: &str) -> bool {
    GROUPS
        .iter()
        .any(|g| g.entries.iter().any(|e| e.syscall == syscall))
}

/// A syscall of any architecture the policy covers.
pub fn known_syscall(name: &str) -> bool {
    Arch::ALL.iter().any(|a| a.syscall_number(name).is_some())
}

/// The built-in policy adjusted by the profile's `[seccomp]` table, the
/// same on every architecture. Errors name the entry at fault.
pub fn resolve(profile: &Seccomp) -> Result<Vec<Denial>, String> {
    for name in &profile.allow {
        if group(name).is_some() || in_builtin(name) {
            continue;
        }
        return Err(if known_syscall(name) {
            format!(
                "`allow` entry \"{name}\": moat's built-in list does not deny {name}, so there is \
                 nothing to allow back; `allow` takes a group ({}) or a syscall of one",
                group_list()
            )
        } else {
            format!(
                "`allow` entry \"{name}\" is neither a group nor a syscall moat knows; groups: {}",
                group_list()
            )
        });
    }
    for name in &profile.deny {
        if group(name).is_some() {
            continue;
        }
        if !known_syscall(name) {
            return Err(format!(
                "`deny` entry \"{name}\" is not a syscall moat knows (on x86_64 or aarch64) nor \
                 a group; groups: {}",
                group_list()
            ));
        }
        if NEEDED_BY_INIT.contains(&name.as_str()) {
            return Err(format!(
                "`deny` entry \"{name}\": moat cannot start the command without {name}, so it \
                 cannot be denied"
            ));
        }
    }

    let listed = |list: &[String], s: &str| list.iter().any(|x| x == s);
    let mut out = Vec::new();
    for g in GROUPS {
        for e in g.entries {
            let allowed = listed(&profile.allow, g.name) || listed(&profile.allow, e.syscall);
            let denied = listed(&profile.deny, g.name) || listed(&profile.deny, e.syscall);
            if !allowed || denied {
                out.push(Denial {
                    group: g.name,
                    syscall: e.syscall.to_string(),
                    when: e.when,
                    errno: e.errno,
                    only_on: e.only_on,
                });
            }
        }
    }
    for name in &profile.deny {
        // A group's name only restores the group, unless it is a syscall's
        // name too (`personality`): then the syscall is denied outright as
        // well, the stricter reading.
        if !known_syscall(name) {
            continue;
        }
        // Denied outright already (clone3's ENOSYS included): keep it as is.
        if out
            .iter()
            .any(|d| d.syscall == *name && d.when == When::Always)
        {
            continue;
        }
        // Named in `deny`: denied outright, not just under arguments.
        out.retain(|d| d.syscall != *name);
        out.push(Denial {
            group: PROFILE_GROUP,
            syscall: name.clone(),
            when: When::Always,
            errno: Errno::Eperm,
            only_on: None,
        });
    }
    Ok(out)
}

/// Compiles the built-in policy adjusted by the profile's `[seccomp]` table
/// for this machine's architecture. Errors name unknown syscalls or groups.
pub fn compile(profile: &Seccomp) -> Result<Program, String> {
    let arch = Arch::current().ok_or_else(|| {
        format!(
            "moat's syscall filter covers x86_64 and aarch64, not {}",
            std::env::consts::ARCH
        )
    })?;
    compile_for(arch, profile)
}

/// [`compile`] for a given architecture, so that both can be tested
/// anywhere.
pub fn compile_for(arch: Arch, profile: &Seccomp) -> Result<Program, String> {
    let denials = resolve(profile)?;
    // Per syscall number: `None` = denied whatever the arguments.
    let mut eperm: BTreeMap<u32, Option<Vec<SeccompRule>>> = BTreeMap::new();
    // Denied outright with another errno; checked before seccompiler's part.
    let mut early: Vec<(u32, Errno)> = Vec::new();
    for d in &denials {
        if matches!(d.only_on, Some(a) if a != arch) {
            continue;
        }
        let Some(nr) = arch.syscall_number(&d.syscall) else {
            if d.group == PROFILE_GROUP {
                // Named for another architecture: nothing to deny here.
                continue;
            }
            return Err(format!(
                "built-in seccomp entry {} has no syscall number on {}",
                d.syscall,
                arch.name()
            ));
        };
        match (d.errno, d.when) {
            (Errno::Eperm, When::Always) => {
                eperm.insert(nr, None);
            }
            (Errno::Eperm, When::Any(rules)) => {
                if let Some(list) = eperm.entry(nr).or_insert_with(|| Some(Vec::new())) {
                    for r in rules {
                        list.push(seccomp_rule(r)?);
                    }
                }
            }
            (errno, When::Always) => early.push((nr, errno)),
            (_, When::Any(_)) => {
                return Err(format!(
                    "built-in seccomp entry {}: argument conditions work with EPERM only",
                    d.syscall
                ))
            }
        }
    }
    for (nr, _) in &early {
        eperm.remove(nr);
    }
    let syscalls = eperm.len() + early.len();
    let mut rules_nrs: Vec<u32> = eperm.keys().copied().collect();
    rules_nrs.extend(early.iter().map(|(nr, _)| *nr));
    rules_nrs.sort_unstable();
    rules_nrs.dedup();
    let rules = eperm
        .into_iter()
        .map(|(nr, r)| (i64::from(nr), r.unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(Errno::Eperm.raw()),
        arch.target(),
    )
    .map_err(|e| format!("building the seccomp filter: {e}"))?;
    let body: BpfProgram = filter
        .try_into()
        .map_err(|e| format!("building the seccomp filter: {e}"))?;
    Ok(Program {
        filter: splice_early_checks(arch, body, &early, &rules_nrs)?,
        syscalls,
    })
}

/// A jump target in the dispatch, before offsets are known.
#[derive(Clone, Copy)]
enum Target {
    Next,
    At(usize),
    Allow,
    Continue,
}

/// A binary search over the numbers in `ruled` (sorted, without
/// duplicates): a syscall outside them jumps to a `RET ALLOW`, one among
/// them falls through to the rules that follow.
///
/// seccompiler's program compares the number with each ruled syscall in
/// turn, so every allowed syscall (nearly all of them) walks the whole
/// chain: at run time, and when the kernel installs the filter, because it
/// then runs the program for every syscall number to find those it can
/// always allow. For this filter that made installing it cost ~0.2 ms;
/// the search takes a handful of comparisons per number.
fn dispatch(ruled: &[u32]) -> Result<Vec<sock_filter>, String> {
    // Runs of consecutive numbers, as inclusive ranges.
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &n in ruled {
        match ranges.last_mut() {
            Some((_, hi)) if hi.checked_add(1) == Some(n) => *hi = n,
            _ => ranges.push((n, n)),
        }
    }
    let mut code: Vec<(u16, u32, Target, Target)> = Vec::new();
    fn emit(r: &[(u32, u32)], code: &mut Vec<(u16, u32, Target, Target)>) {
        match r {
            [] => code.push((BPF_JMP_JA, 0, Target::Allow, Target::Allow)),
            [(lo, hi)] => {
                code.push((BPF_JMP_JGE_K, *lo, Target::Next, Target::Allow));
                code.push((BPF_JMP_JGT_K, *hi, Target::Allow, Target::Continue));
            }
            _ => {
                let mid = r.len() / 2;
                let at = code.len();
                code.push((BPF_JMP_JGE_K, r[mid].0, Target::Next, Target::Next));
                emit(&r[..mid], code);
                let right = code.len();
                code[at].2 = Target::At(right);
                emit(&r[mid..], code);
            }
        }
    }
    emit(&ranges, &mut code);
    let allow = code.len();
    let cont = allow + 1;
    let offset = |from: usize, t: Target| -> Result<u8, String> {
        let to = match t {
            Target::Next => from + 1,
            Target::At(i) => i,
            Target::Allow => allow,
            Target::Continue => cont,
        };
        u8::try_from(to - from - 1)
            .map_err(|_| "the seccomp filter's dispatch is too large for BPF jumps".to_string())
    };
    let mut out = Vec::with_capacity(code.len() + 1);
    for (i, (op, k, t, f)) in code.into_iter().enumerate() {
        out.push(if op == BPF_JMP_JA {
            stmt(op, u32::from(offset(i, t)?))
        } else {
            jump(op, k, offset(i, t)?, offset(i, f)?)
        });
    }
    out.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    Ok(out)
}

fn seccomp_rule(checks: &[Check]) -> Result<SeccompRule, String> {
    let conditions = checks
        .iter()
        .map(|c| {
            let op = match c.op {
                Op::Eq => SeccompCmpOp::Eq,
                Op::Ne => SeccompCmpOp::Ne,
                Op::MaskedEq(mask) => SeccompCmpOp::MaskedEq(u64::from(mask)),
            };
            SeccompCondition::new(c.arg, SeccompCmpArgLen::Dword, op, u64::from(c.value))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("seccomp rule: {e}"))?;
    SeccompRule::new(conditions).map_err(|e| format!("seccomp rule: {e}"))
}

// Classic BPF as seccomp uses it (linux/filter.h, linux/seccomp.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_JMP_JGT_K: u16 = 0x25;
const BPF_JMP_JA: u16 = 0x05;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// Set in the number of every x32 syscall (asm/unistd.h).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const BPF_MAXINSNS: usize = 4096;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Puts moat's own checks (the x32 bit, the [`dispatch`] that lets every
/// syscall without a rule through at once, and the syscalls denied with
/// another errno than EPERM) between seccompiler's architecture check and
/// its rules. seccompiler's jumps are all relative and none crosses this
/// point, so inserting here leaves them intact. `ruled`: the numbers of
/// the early checks and of seccompiler's rules, sorted, no duplicates.
fn splice_early_checks(
    arch: Arch,
    body: BpfProgram,
    early: &[(u32, Errno)],
    ruled: &[u32],
) -> Result<BpfProgram, String> {
    let arch_check = [
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JMP_JEQ_K, arch.audit_arch(), 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
    ];
    if body.len() <= arch_check.len() || body[..arch_check.len()] != arch_check {
        return Err(
            "seccompiler's program does not start with the expected architecture check; \
             moat's own checks have no safe place in it"
                .into(),
        );
    }
    let mut out = arch_check.to_vec();
    out.push(stmt(BPF_LD_W_ABS, DATA_NR));
    if arch == Arch::X86_64 {
        out.push(jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1));
        out.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | Errno::Enosys.raw()));
    }
    out.extend(dispatch(ruled)?);
    for (nr, errno) in early {
        out.push(jump(BPF_JMP_JEQ_K, *nr, 0, 1));
        out.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | errno.raw()));
    }
    out.extend_from_slice(&body[arch_check.len()..]);
    if out.len() > BPF_MAXINSNS {
        return Err(format!(
            "the seccomp filter has {} instructions; the kernel takes {BPF_MAXINSNS} at most",
            out.len()
        ));
    }
    Ok(out)
}

// Syscall numbers, `name=number`, from the kernel's tables
// (arch/x86/entry/syscalls/syscall_64.tbl, 64-bit and common entries; the
// asm-generic table for aarch64), up to Linux 6.18. Both are compiled on
// every architecture so that profile names can be checked portably; a unit
// test compares the entries moat relies on with libc's SYS_* constants.
const X86_64_SYSCALLS: &str = "
    read=0 write=1 open=2 close=3 stat=4 fstat=5 lstat=6 poll=7 lseek=8 mmap=9 mprotect=10
    munmap=11 brk=12 rt_sigaction=13 rt_sigprocmask=14 rt_sigreturn=15 ioctl=16 pread64=17
    pwrite64=18 readv=19 writev=20 access=21 pipe=22 select=23 sched_yield=24 mremap=25
    msync=26 mincore=27 madvise=28 shmget=29 shmat=30 shmctl=31 dup=32 dup2=33 pause=34
    nanosleep=35 getitimer=36 alarm=37 setitimer=38 getpid=39 sendfile=40 socket=41 connect=42
    accept=43 sendto=44 recvfrom=45 sendmsg=46 recvmsg=47 shutdown=48 bind=49 listen=50
    getsockname=51 getpeername=52 socketpair=53 setsockopt=54 getsockopt=55 clone=56 fork=57
    vfork=58 execve=59 exit=60 wait4=61 kill=62 uname=63 semget=64 semop=65 semctl=66 shmdt=67
    msgget=68 msgsnd=69 msgrcv=70 msgctl=71 fcntl=72 flock=73 fsync=74 fdatasync=75 truncate=76
    ftruncate=77 getdents=78 getcwd=79 chdir=80 fchdir=81 rename=82 mkdir=83 rmdir=84 creat=85
    link=86 unlink=87 symlink=88 readlink=89 chmod=90 fchmod=91 chown=92 fchown=93 lchown=94
    umask=95 gettimeofday=96 getrlimit=97 getrusage=98 sysinfo=99 times=100 ptrace=101
    getuid=102 syslog=103 getgid=104 setuid=105 setgid=106 geteuid=107 getegid=108 setpgid=109
    getppid=110 getpgrp=111 setsid=112 setreuid=113 setregid=114 getgroups=115 setgroups=116
    setresuid=117 getresuid=118 setresgid=119 getresgid=120 getpgid=121 setfsuid=122
    setfsgid=123 getsid=124 capget=125 capset=126 rt_sigpending=127 rt_sigtimedwait=128
    rt_sigqueueinfo=129 rt_sigsuspend=130 sigaltstack=131 utime=132 mknod=133 uselib=134
    personality=135 ustat=136 statfs=137 fstatfs=138 sysfs=139 getpriority=140 setpriority=141
    sched_setparam=142 sched_getparam=143 sched_setscheduler=144 sched_getscheduler=145
    sched_get_priority_max=146 sched_get_priority_min=147 sched_rr_get_interval=148 mlock=149
    munlock=150 mlockall=151 munlockall=152 vhangup=153 modify_ldt=154 pivot_root=155
    _sysctl=156 prctl=157 arch_prctl=158 adjtimex=159 setrlimit=160 chroot=161 sync=162
    acct=163 settimeofday=164 mount=165 umount2=166 swapon=167 swapoff=168 reboot=169
    sethostname=170 setdomainname=171 iopl=172 ioperm=173 create_module=174 init_module=175
    delete_module=176 get_kernel_syms=177 query_module=178 quotactl=179 nfsservctl=180
    getpmsg=181 putpmsg=182 afs_syscall=183 tuxcall=184 security=185 gettid=186 readahead=187
    setxattr=188 lsetxattr=189 fsetxattr=190 getxattr=191 lgetxattr=192 fgetxattr=193
    listxattr=194 llistxattr=195 flistxattr=196 removexattr=197 lremovexattr=198
    fremovexattr=199 tkill=200 time=201 futex=202 sched_setaffinity=203 sched_getaffinity=204
    set_thread_area=205 io_setup=206 io_destroy=207 io_getevents=208 io_submit=209
    io_cancel=210 get_thread_area=211 lookup_dcookie=212 epoll_create=213 epoll_ctl_old=214
    epoll_wait_old=215 remap_file_pages=216 getdents64=217 set_tid_address=218
    restart_syscall=219 semtimedop=220 fadvise64=221 timer_create=222 timer_settime=223
    timer_gettime=224 timer_getoverrun=225 timer_delete=226 clock_settime=227 clock_gettime=228
    clock_getres=229 clock_nanosleep=230 exit_group=231 epoll_wait=232 epoll_ctl=233 tgkill=234
    utimes=235 vserver=236 mbind=237 set_mempolicy=238 get_mempolicy=239 mq_open=240
    mq_unlink=241 mq_timedsend=242 mq_timedreceive=243 mq_notify=244 mq_getsetattr=245
    kexec_load=246 waitid=247 add_key=248 request_key=249 keyctl=250 ioprio_set=251
    ioprio_get=252 inotify_init=253 inotify_add_watch=254 inotify_rm_watch=255
    migrate_pages=256 openat=257 mkdirat=258 mknodat=259 fchownat=260 futimesat=261
    newfstatat=262 unlinkat=263 renameat=264 linkat=265 symlinkat=266 readlinkat=267
    fchmodat=268 faccessat=269 pselect6=270 ppoll=271 unshare=272 set_robust_list=273
    get_robust_list=274 splice=275 tee=276 sync_file_range=277 vmsplice=278 move_pages=279
    utimensat=280 epoll_pwait=281 signalfd=282 timerfd_create=283 eventfd=284 fallocate=285
    timerfd_settime=286 timerfd_gettime=287 accept4=288 signalfd4=289 eventfd2=290
    epoll_create1=291 dup3=292 pipe2=293 inotify_init1=294 preadv=295 pwritev=296
    rt_tgsigqueueinfo=297 perf_event_open=298 recvmmsg=299 fanotify_init=300 fanotify_mark=301
    prlimit64=302 name_to_handle_at=303 open_by_handle_at=304 clock_adjtime=305 syncfs=306
    sendmmsg=307 setns=308 getcpu=309 process_vm_readv=310 process_vm_writev=311 kcmp=312
    finit_module=313 sched_setattr=314 sched_getattr=315 renameat2=316 seccomp=317
    getrandom=318 memfd_create=319 kexec_file_load=320 bpf=321 execveat=322 userfaultfd=323
    membarrier=324 mlock2=325 copy_file_range=326 preadv2=327 pwritev2=328 pkey_mprotect=329
    pkey_alloc=330 pkey_free=331 statx=332 io_pgetevents=333 rseq=334 uretprobe=335
    pidfd_send_signal=424 io_uring_setup=425 io_uring_enter=426 io_uring_register=427
    open_tree=428 move_mount=429 fsopen=430 fsconfig=431 fsmount=432 fspick=433 pidfd_open=434
    clone3=435 close_range=436 openat2=437 pidfd_getfd=438 faccessat2=439 process_madvise=440
    epoll_pwait2=441 mount_setattr=442 quotactl_fd=443 landlock_create_ruleset=444
    landlock_add_rule=445 landlock_restrict_self=446 memfd_secret=447 process_mrelease=448
    futex_waitv=449 set_mempolicy_home_node=450 cachestat=451 fchmodat2=452
    map_shadow_stack=453 futex_wake=454 futex_wait=455 futex_requeue=456 statmount=457
    listmount=458 lsm_get_self_attr=459 lsm_set_self_attr=460 lsm_list_modules=461 mseal=462
    setxattrat=463 getxattrat=464 listxattrat=465 removexattrat=466 open_tree_attr=467
    file_getattr=468 file_setattr=469";

const AARCH64_SYSCALLS: &str = "
    io_setup=0 io_destroy=1 io_submit=2 io_cancel=3 io_getevents=4 setxattr=5 lsetxattr=6
    fsetxattr=7 getxattr=8 lgetxattr=9 fgetxattr=10 listxattr=11 llistxattr=12 flistxattr=13
    removexattr=14 lremovexattr=15 fremovexattr=16 getcwd=17 lookup_dcookie=18 eventfd2=19
    epoll_create1=20 epoll_ctl=21 epoll_pwait=22 dup=23 dup3=24 fcntl=25 inotify_init1=26
    inotify_add_watch=27 inotify_rm_watch=28 ioctl=29 ioprio_set=30 ioprio_get=31 flock=32
    mknodat=33 mkdirat=34 unlinkat=35 symlinkat=36 linkat=37 renameat=38 umount2=39 mount=40
    pivot_root=41 nfsservctl=42 statfs=43 fstatfs=44 truncate=45 ftruncate=46 fallocate=47
    faccessat=48 chdir=49 fchdir=50 chroot=51 fchmod=52 fchmodat=53 fchownat=54 fchown=55
    openat=56 close=57 vhangup=58 pipe2=59 quotactl=60 getdents64=61 lseek=62 read=63 write=64
    readv=65 writev=66 pread64=67 pwrite64=68 preadv=69 pwritev=70 sendfile=71 pselect6=72
    ppoll=73 signalfd4=74 vmsplice=75 splice=76 tee=77 readlinkat=78 newfstatat=79 fstat=80
    sync=81 fsync=82 fdatasync=83 sync_file_range=84 timerfd_create=85 timerfd_settime=86
    timerfd_gettime=87 utimensat=88 acct=89 capget=90 capset=91 personality=92 exit=93
    exit_group=94 waitid=95 set_tid_address=96 unshare=97 futex=98 set_robust_list=99
    get_robust_list=100 nanosleep=101 getitimer=102 setitimer=103 kexec_load=104
    init_module=105 delete_module=106 timer_create=107 timer_gettime=108 timer_getoverrun=109
    timer_settime=110 timer_delete=111 clock_settime=112 clock_gettime=113 clock_getres=114
    clock_nanosleep=115 syslog=116 ptrace=117 sched_setparam=118 sched_setscheduler=119
    sched_getscheduler=120 sched_getparam=121 sched_setaffinity=122 sched_getaffinity=123
    sched_yield=124 sched_get_priority_max=125 sched_get_priority_min=126
    sched_rr_get_interval=127 restart_syscall=128 kill=129 tkill=130 tgkill=131 sigaltstack=132
    rt_sigsuspend=133 rt_sigaction=134 rt_sigprocmask=135 rt_sigpending=136 rt_sigtimedwait=137
    rt_sigqueueinfo=138 rt_sigreturn=139 setpriority=140 getpriority=141 reboot=142
    setregid=143 setgid=144 setreuid=145 setuid=146 setresuid=147 getresuid=148 setresgid=149
    getresgid=150 setfsuid=151 setfsgid=152 times=153 setpgid=154 getpgid=155 getsid=156
    setsid=157 getgroups=158 setgroups=159 uname=160 sethostname=161 setdomainname=162
    getrlimit=163 setrlimit=164 getrusage=165 umask=166 prctl=167 getcpu=168 gettimeofday=169
    settimeofday=170 adjtimex=171 getpid=172 getppid=173 getuid=174 geteuid=175 getgid=176
    getegid=177 gettid=178 sysinfo=179 mq_open=180 mq_unlink=181 mq_timedsend=182
    mq_timedreceive=183 mq_notify=184 mq_getsetattr=185 msgget=186 msgctl=187 msgrcv=188
    msgsnd=189 semget=190 semctl=191 semtimedop=192 semop=193 shmget=194 shmctl=195 shmat=196
    shmdt=197 socket=198 socketpair=199 bind=200 listen=201 accept=202 connect=203
    getsockname=204 getpeername=205 sendto=206 recvfrom=207 setsockopt=208 getsockopt=209
    shutdown=210 sendmsg=211 recvmsg=212 readahead=213 brk=214 munmap=215 mremap=216
    add_key=217 request_key=218 keyctl=219 clone=220 execve=221 mmap=222 fadvise64=223
    swapon=224 swapoff=225 mprotect=226 msync=227 mlock=228 munlock=229 mlockall=230
    munlockall=231 mincore=232 madvise=233 remap_file_pages=234 mbind=235 get_mempolicy=236
    set_mempolicy=237 migrate_pages=238 move_pages=239 rt_tgsigqueueinfo=240
    perf_event_open=241 accept4=242 recvmmsg=243 wait4=260 prlimit64=261 fanotify_init=262
    fanotify_mark=263 name_to_handle_at=264 open_by_handle_at=265 clock_adjtime=266 syncfs=267
    setns=268 sendmmsg=269 process_vm_readv=270 process_vm_writev=271 kcmp=272 finit_module=273
    sched_setattr=274 sched_getattr=275 renameat2=276 seccomp=277 getrandom=278
    memfd_create=279 bpf=280 execveat=281 userfaultfd=282 membarrier=283 mlock2=284
    copy_file_range=285 preadv2=286 pwritev2=287 pkey_mprotect=288 pkey_alloc=289 pkey_free=290
    statx=291 io_pgetevents=292 rseq=293 kexec_file_load=294 pidfd_send_signal=424
    io_uring_setup=425 io_uring_enter=426 io_uring_register=427 open_tree=428 move_mount=429
    fsopen=430 fsconfig=431 fsmount=432 fspick=433 pidfd_open=434 clone3=435 close_range=436
    openat2=437 pidfd_getfd=438 faccessat2=439 process_madvise=440 epoll_pwait2=441
    mount_setattr=442 quotactl_fd=443 landlock_create_ruleset=444 landlock_add_rule=445
    landlock_restrict_self=446 memfd_secret=447 process_mrelease=448 futex_waitv=449
    set_mempolicy_home_node=450 cachestat=451 fchmodat2=452 map_shadow_stack=453 futex_wake=454
    futex_wait=455 futex_requeue=456 statmount=457 listmount=458 lsm_get_self_attr=459
    lsm_set_self_attr=460 lsm_list_modules=461 mseal=462 setxattrat=463 getxattrat=464
    listxattrat=465 removexattrat=466 open_tree_attr=467 file_getattr=468 file_setattr=469";

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: u32 = SECCOMP_RET_ALLOW;
    const EPERM: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    const KILL: u32 = SECCOMP_RET_KILL_PROCESS;
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    const AUDIT_ARCH_ARM: u32 = 0x4000_0028;

    /// `struct seccomp_data` as the kernel hands it to the filter.
    struct Data {
        nr: u32,
        arch: u32,
        args: [u64; 6],
    }

    impl Data {
        /// The little-endian bytes a `BPF_LD|BPF_W|BPF_ABS` reads from.
        fn bytes(&self) -> [u8; 64] {
            let mut b = [0u8; 64];
            b[0..4].copy_from_slice(&self.nr.to_le_bytes());
            b[4..8].copy_from_slice(&self.arch.to_le_bytes());
            // instruction_pointer (8..16) stays 0: no rule reads it.
            for (i, a) in self.args.iter().enumerate() {
                b[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
            }
            b
        }
    }

    /// A classic BPF interpreter for the instructions seccomp filters use,
    /// strict about everything else: an unknown opcode, a jump out of the
    /// program or running off its end fails the test.
    fn run(prog: &[sock_filter], data: &Data) -> u32 {
        walk(prog, data).0
    }

    /// The verdict, and how many instructions it took.
    fn walk(prog: &[sock_filter], data: &Data) -> (u32, usize) {
        let bytes = data.bytes();
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            let ins = prog
                .get(pc)
                .unwrap_or_else(|| panic!("ran off the program at {pc}"));
            pc += 1;
            match ins.code {
                0x20 => {
                    let k = ins.k as usize;
                    assert!(k % 4 == 0 && k + 4 <= 64, "load at offset {k}");
                    acc = u32::from_le_bytes(bytes[k..k + 4].try_into().unwrap());
                }
                0x54 => acc &= ins.k,
                0x05 => pc += ins.k as usize,
                0x15 | 0x25 | 0x35 => {
                    let taken = match ins.code {
                        0x15 => acc == ins.k,
                        0x25 => acc > ins.k,
                        _ => acc >= ins.k,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                0x06 => return (ins.k, steps),
                other => panic!("opcode {other:#x} at {}", pc - 1),
            }
            assert!(pc < prog.len(), "jump past the end to {pc}");
        }
    }

    fn profile(allow: &[&str], deny: &[&str]) -> Seccomp {
        Seccomp {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn nr(arch: Arch, name: &str) -> u32 {
        arch.syscall_number(name)
            .unwrap_or_else(|| panic!("{name} on {}", arch.name()))
    }

    /// The verdict of `prog` for syscall `name` with `args`, native ABI.
    fn decide(arch: Arch, prog: &Program, name: &str, args: &[u64]) -> u32 {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        run(
            &prog.filter,
            &Data {
                nr: nr(arch, name),
                arch: arch.audit_arch(),
                args: a,
            },
        )
    }

    // libc::Ioctl is c_ulong with glibc and c_int with musl.
    #[allow(clippy::unnecessary_cast)]
    fn request(r: libc::Ioctl) -> u64 {
        r as u64
    }

    fn default_program(arch: Arch) -> Program {
        compile_for(arch, &Seccomp::default()).unwrap()
    }

    #[test]
    fn group_names_are_unique_and_profile_spellable() {
        let mut seen = Vec::new();
        for g in GROUPS {
            assert!(!seen.contains(&g.name), "group {} twice", g.name);
            seen.push(g.name);
            assert!(
                !g.name.is_empty()
                    && g.name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "group name {:?} cannot be written in a profile",
                g.name
            );
            assert!(!g.why.is_empty(), "group {} says not why", g.name);
            assert_ne!(g.name, PROFILE_GROUP);
        }
    }

    #[test]
    fn every_group_denies_something_on_every_arch() {
        for arch in Arch::ALL {
            for g in GROUPS {
                assert!(
                    g.entries
                        .iter()
                        .any(|e| e.applies_to(arch) && arch.syscall_number(e.syscall).is_some()),
                    "group {} is empty on {}",
                    g.name,
                    arch.name()
                );
            }
        }
    }

    #[test]
    fn every_entry_resolves_exactly_where_it_is_said_to_exist() {
        for g in GROUPS {
            for e in g.entries {
                for arch in Arch::ALL {
                    let exists = arch.syscall_number(e.syscall).is_some();
                    let expected = e.applies_to(arch);
                    assert_eq!(
                        exists,
                        expected,
                        "{}/{} on {}: the table says {}, the entry says {}",
                        g.name,
                        e.syscall,
                        arch.name(),
                        exists,
                        expected
                    );
                }
            }
        }
    }

    #[test]
    fn each_syscall_is_in_one_group_once() {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for g in GROUPS {
            for e in g.entries {
                if let Some((other, _)) = seen.iter().find(|(_, s)| *s == e.syscall) {
                    panic!("{} is in {} and {}", e.syscall, other, g.name);
                }
                seen.push((g.name, e.syscall));
            }
        }
    }

    #[test]
    fn a_group_named_like_a_syscall_holds_that_syscall() {
        for g in GROUPS {
            if known_syscall(g.name) {
                assert!(
                    g.entries.iter().any(|e| e.syscall == g.name),
                    "group {} shadows the syscall of that name",
                    g.name
                );
            }
        }
    }

    #[test]
    fn argument_conditions_are_sane() {
        for g in GROUPS {
            for e in g.entries {
                if let When::Any(rules) = e.when {
                    assert_eq!(e.errno, Errno::Eperm, "{}", e.syscall);
                    assert!(!rules.is_empty(), "{}", e.syscall);
                    for r in rules {
                        assert!(!r.is_empty(), "{}: empty rule", e.syscall);
                        assert!(r.iter().all(|c| c.arg <= 5), "{}", e.syscall);
                    }
                }
            }
        }
    }

    #[test]
    fn syscall_tables_are_well_formed() {
        for arch in Arch::ALL {
            let mut names = Vec::new();
            let mut numbers = Vec::new();
            for pair in arch.table().split_whitespace() {
                let (n, nr) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{pair} in {}", arch.name()));
                let nr: u32 = nr.parse().unwrap();
                assert!(nr < 1024 && !n.is_empty(), "{pair}");
                assert!(!names.contains(&n), "{n} twice on {}", arch.name());
                assert!(!numbers.contains(&nr), "{nr} twice on {}", arch.name());
                names.push(n);
                numbers.push(nr);
            }
            assert!(
                names.len() > 300,
                "{}: {} entries",
                arch.name(),
                names.len()
            );
        }
        // Spot checks against the kernel's tables.
        assert_eq!(Arch::X86_64.syscall_number("ptrace"), Some(101));
        assert_eq!(Arch::X86_64.syscall_number("clone3"), Some(435));
        assert_eq!(Arch::Aarch64.syscall_number("ptrace"), Some(117));
        assert_eq!(Arch::Aarch64.syscall_number("clone"), Some(220));
        assert_eq!(Arch::Aarch64.syscall_number("open"), None);
        assert_eq!(Arch::Aarch64.syscall_number("open_tree_attr"), Some(467));
        assert_eq!(Arch::X86_64.syscall_number("open_tree_attr"), Some(467));
    }

    /// libc's SYS_* constants for this architecture, for everything the
    /// policy and its guard name (open_tree_attr is too new for libc).
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_env = "gnu")
    ))]
    macro_rules! libc_numbers {
        ($($sys:ident),* $(,)?) => {
            vec![$((stringify!($sys).strip_prefix("SYS_").unwrap(), libc::$sys as i64)),*]
        };
    }

    #[cfg(target_arch = "x86_64")]
    fn libc_table() -> Vec<(&'static str, i64)> {
        libc_numbers![
            SYS_ptrace,
            SYS_process_vm_readv,
            SYS_process_vm_writev,
            SYS_kcmp,
            SYS_pidfd_getfd,
            SYS_init_module,
            SYS_finit_module,
            SYS_delete_module,
            SYS_kexec_load,
            SYS_kexec_file_load,
            SYS_bpf,
            SYS_perf_event_open,
            SYS_userfaultfd,
            SYS_keyctl,
            SYS_add_key,
            SYS_request_key,
            SYS_mount,
            SYS_umount2,
            SYS_pivot_root,
            SYS_fsopen,
            SYS_fsconfig,
            SYS_fsmount,
            SYS_fspick,
            SYS_move_mount,
            SYS_open_tree,
            SYS_mount_setattr,
            SYS_clone,
            SYS_clone3,
            SYS_unshare,
            SYS_setns,
            SYS_io_uring_setup,
            SYS_io_uring_enter,
            SYS_io_uring_register,
            SYS_settimeofday,
            SYS_clock_settime,
            SYS_clock_adjtime,
            SYS_adjtimex,
            SYS_personality,
            SYS_ioctl,
            SYS_socket,
            SYS_socketpair,
            SYS_acct,
            SYS_swapon,
            SYS_swapoff,
            SYS_reboot,
            SYS_syslog,
            SYS_quotactl,
            SYS_quotactl_fd,
            SYS_fanotify_init,
            SYS_iopl,
            SYS_ioperm,
            SYS_open_by_handle_at,
            SYS_name_to_handle_at,
            SYS_uselib,
            SYS__sysctl,
            SYS_nfsservctl,
            SYS_lookup_dcookie,
            SYS_execve,
            SYS_exit,
            SYS_exit_group,
            SYS_wait4,
            SYS_kill,
            SYS_rt_sigtimedwait,
            SYS_rt_sigprocmask,
            SYS_rt_sigaction,
            SYS_read,
            SYS_write,
            SYS_close,
            SYS_pipe2,
            SYS_sendmsg,
            SYS_openat,
            SYS_dup2,
            SYS_dup3,
            SYS_setsid,
            SYS_chdir,
            SYS_mmap,
            SYS_munmap,
            SYS_brk,
            SYS_uname,
            SYS_chroot,
            SYS_getpid,
            SYS_open,
        ]
    }

    // musl's libc bindings lack SYS_kexec_file_load on aarch64.
    #[cfg(all(target_arch = "aarch64", target_env = "gnu"))]
    fn libc_table() -> Vec<(&'static str, i64)> {
        libc_numbers![
            SYS_ptrace,
            SYS_process_vm_readv,
            SYS_process_vm_writev,
            SYS_kcmp,
            SYS_pidfd_getfd,
            SYS_init_module,
            SYS_finit_module,
            SYS_delete_module,
            SYS_kexec_load,
            SYS_kexec_file_load,
            SYS_bpf,
            SYS_perf_event_open,
            SYS_userfaultfd,
            SYS_keyctl,
            SYS_add_key,
            SYS_request_key,
            SYS_mount,
            SYS_umount2,
            SYS_pivot_root,
            SYS_fsopen,
            SYS_fsconfig,
            SYS_fsmount,
            SYS_fspick,
            SYS_move_mount,
            SYS_open_tree,
            SYS_mount_setattr,
            SYS_clone,
            SYS_clone3,
            SYS_unshare,
            SYS_setns,
            SYS_io_uring_setup,
            SYS_io_uring_enter,
            SYS_io_uring_register,
            SYS_settimeofday,
            SYS_clock_settime,
            SYS_clock_adjtime,
            SYS_adjtimex,
            SYS_personality,
            SYS_ioctl,
            SYS_socket,
            SYS_socketpair,
            SYS_acct,
            SYS_swapon,
            SYS_swapoff,
            SYS_reboot,
            SYS_syslog,
            SYS_quotactl,
            SYS_quotactl_fd,
            SYS_fanotify_init,
            SYS_open_by_handle_at,
            SYS_name_to_handle_at,
            SYS_nfsservctl,
            SYS_lookup_dcookie,
            SYS_execve,
            SYS_exit,
            SYS_exit_group,
            SYS_wait4,
            SYS_kill,
            SYS_rt_sigtimedwait,
            SYS_rt_sigprocmask,
            SYS_rt_sigaction,
            SYS_read,
            SYS_write,
            SYS_close,
            SYS_pipe2,
            SYS_sendmsg,
            SYS_openat,
            SYS_dup3,
            SYS_setsid,
            SYS_chdir,
            SYS_mmap,
            SYS_munmap,
            SYS_brk,
            SYS_uname,
            SYS_chroot,
            SYS_getpid,
        ]
    }

    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_env = "gnu")
    ))]
    #[test]
    fn numbers_agree_with_libc_on_this_arch() {
        let arch = Arch::current().unwrap();
        let libc_names: Vec<&str> = libc_table().iter().map(|(n, _)| *n).collect();
        for (name, number) in libc_table() {
            assert_eq!(
                arch.syscall_number(name).map(i64::from),
                Some(number),
                "{name} on {}",
                arch.name()
            );
        }
        // Everything the policy names on this arch was compared, except
        // what libc does not know yet.
        for g in GROUPS {
            for e in g.entries {
                if e.applies_to(arch) && e.syscall != "open_tree_attr" {
                    assert!(
                        libc_names.contains(&e.syscall),
                        "{} not cross-checked",
                        e.syscall
                    );
                }
            }
        }
        for name in NEEDED_BY_INIT {
            if arch.syscall_number(name).is_some() {
                assert!(libc_names.contains(name), "{name} not cross-checked");
            }
        }
    }

    #[test]
    fn argument_constants_agree_with_libc() {
        assert_eq!(TIOCSTI, libc::TIOCSTI as u32);
        assert_eq!(TIOCLINUX, libc::TIOCLINUX as u32);
        for (ours, theirs) in [
            (CLONE_NEWTIME, libc::CLONE_NEWTIME),
            (CLONE_NEWNS, libc::CLONE_NEWNS),
            (CLONE_NEWCGROUP, libc::CLONE_NEWCGROUP),
            (CLONE_NEWUTS, libc::CLONE_NEWUTS),
            (CLONE_NEWIPC, libc::CLONE_NEWIPC),
            (CLONE_NEWUSER, libc::CLONE_NEWUSER),
            (CLONE_NEWPID, libc::CLONE_NEWPID),
            (CLONE_NEWNET, libc::CLONE_NEWNET),
            (AF_UNIX, libc::AF_UNIX),
            (AF_INET, libc::AF_INET),
            (AF_INET6, libc::AF_INET6),
            (AF_NETLINK, libc::AF_NETLINK),
            (NETLINK_ROUTE, libc::NETLINK_ROUTE),
            (IPPROTO_MPTCP, libc::IPPROTO_MPTCP),
            (UNAME26, libc::UNAME26),
        ] {
            assert_eq!(ours, theirs as u32);
        }
    }

    #[test]
    fn init_needs_are_known_and_not_denied_outright() {
        for name in NEEDED_BY_INIT {
            assert!(known_syscall(name), "{name}");
        }
        for arch in Arch::ALL {
            let prog = default_program(arch);
            for name in NEEDED_BY_INIT {
                if arch.syscall_number(name).is_some() {
                    assert_eq!(
                        decide(arch, &prog, name, &[]),
                        ALLOW,
                        "{name} with zero arguments on {}",
                        arch.name()
                    );
                }
            }
            // What init does with them: fork (clone with SIGCHLD and the
            // tid flags), TIOCSCTTY on the pty, exit.
            let fork = u64::from(libc::SIGCHLD as u32)
                | (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64;
            assert_eq!(decide(arch, &prog, "clone", &[fork]), ALLOW);
            assert_eq!(
                decide(arch, &prog, "ioctl", &[3, request(libc::TIOCSCTTY), 0]),
                ALLOW
            );
        }
    }

    #[test]
    fn default_program_decides_representative_calls() {
        for arch in Arch::ALL {
            let p = default_program(arch);
            let d = |name: &str, args: &[u64]| decide(arch, &p, name, args);
            let a = arch.name();

            assert_eq!(d("getpid", &[]), ALLOW, "{a}");
            assert_eq!(d("openat", &[0, 0, 0]), ALLOW, "{a}");
            for name in [
                "ptrace",
                "bpf",
                "keyctl",
                "mount",
                "io_uring_setup",
                "setns",
            ] {
                assert_eq!(d(name, &[]), EPERM, "{name} on {a}");
            }

            // clone: fork-like and thread-like calls pass, namespaces do not.
            let sigchld = libc::SIGCHLD as u64;
            let thread = (libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM
                | libc::CLONE_SETTLS
                | libc::CLONE_PARENT_SETTID
                | libc::CLONE_CHILD_CLEARTID) as u64;
            assert_eq!(d("clone", &[sigchld]), ALLOW, "{a}");
            assert_eq!(d("clone", &[thread]), ALLOW, "{a}");
            assert_eq!(
                d(
                    "clone",
                    &[(libc::CLONE_VM | libc::CLONE_VFORK) as u64 | sigchld]
                ),
                ALLOW
            );
            for flag in [
                CLONE_NEWNS,
                CLONE_NEWCGROUP,
                CLONE_NEWUTS,
                CLONE_NEWIPC,
                CLONE_NEWUSER,
                CLONE_NEWPID,
                CLONE_NEWNET,
            ] {
                let f = u64::from(flag);
                assert_eq!(d("clone", &[f | sigchld]), EPERM, "clone {flag:#x} on {a}");
                assert_eq!(d("clone", &[f | thread]), EPERM, "{a}");
                // Upper bits do not hide a flag in the low half.
                assert_eq!(d("clone", &[f | sigchld | 1 << 40]), EPERM, "{a}");
                assert_eq!(d("unshare", &[f]), EPERM, "unshare {flag:#x} on {a}");
            }
            assert_eq!(d("unshare", &[u64::from(CLONE_NEWTIME)]), EPERM, "{a}");
            assert_eq!(d("unshare", &[libc::CLONE_FS as u64]), ALLOW, "{a}");
            assert_eq!(d("unshare", &[libc::CLONE_FILES as u64]), ALLOW, "{a}");
            assert_eq!(d("clone3", &[0, 88]), ENOSYS, "{a}");

            // socket families.
            let stream = libc::SOCK_STREAM as u64;
            let dgram = libc::SOCK_DGRAM as u64;
            let cloexec = libc::SOCK_CLOEXEC as u64 | libc::SOCK_NONBLOCK as u64;
            for fam in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
                let fam = fam as u64;
                assert_eq!(d("socket", &[fam, stream, 0]), ALLOW, "{fam} on {a}");
                assert_eq!(d("socket", &[fam, dgram | cloexec, 0]), ALLOW, "{a}");
                assert_eq!(d("socketpair", &[fam, stream, 0, 0]), ALLOW, "{a}");
            }
            assert_eq!(d("socket", &[2, stream, libc::IPPROTO_TCP as u64]), ALLOW);
            assert_eq!(d("socket", &[10, dgram, libc::IPPROTO_UDP as u64]), ALLOW);
            assert_eq!(d("socket", &[2, dgram, libc::IPPROTO_ICMP as u64]), ALLOW);
            let netlink = libc::AF_NETLINK as u64;
            let raw = libc::SOCK_RAW as u64;
            assert_eq!(d("socket", &[netlink, raw | cloexec, 0]), ALLOW, "{a}");
            for proto in [libc::NETLINK_SOCK_DIAG, libc::NETLINK_AUDIT, 15, 16] {
                assert_eq!(d("socket", &[netlink, raw, proto as u64]), EPERM, "{a}");
            }
            for fam in [
                libc::AF_PACKET,
                libc::AF_VSOCK,
                libc::AF_ALG,
                libc::AF_BLUETOOTH,
                libc::AF_CAN,
                libc::AF_TIPC,
                libc::AF_RDS,
                libc::AF_XDP,
                libc::AF_KEY,
                libc::AF_UNSPEC,
                43, // AF_SMC
            ] {
                let fam = fam as u64;
                assert_eq!(d("socket", &[fam, raw, 0]), EPERM, "family {fam} on {a}");
                assert_eq!(d("socket", &[fam, stream, 0]), EPERM, "family {fam} on {a}");
                assert_eq!(d("socketpair", &[fam, stream, 0, 0]), EPERM, "{a}");
            }
            // The kernel reads the family as an int: upper bits change
            // nothing, either way.
            assert_eq!(d("socket", &[17 | 1 << 32, raw, 0]), EPERM, "{a}");
            assert_eq!(d("socket", &[2 | 1 << 32, stream, 0]), ALLOW, "{a}");
            for fam in [libc::AF_INET, libc::AF_INET6] {
                let fam = fam as u64;
                assert_eq!(d("socket", &[fam, stream, 262]), EPERM, "MPTCP on {a}");
                assert_eq!(d("socket", &[fam, stream | cloexec, 262]), EPERM);
                assert_eq!(d("socket", &[fam, stream, 256]), EPERM, "SMC on {a}");
                assert_eq!(d("socket", &[fam, 10, 0x300]), EPERM, "SOCK_PACKET");
                assert_eq!(d("socket", &[fam, 10 | cloexec, 0x300]), EPERM);
            }

            // personality.
            for ok in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
                assert_eq!(d("personality", &[ok]), ALLOW, "personality {ok:#x} on {a}");
            }
            for bad in [
                libc::ADDR_NO_RANDOMIZE as u64,
                libc::READ_IMPLIES_EXEC as u64,
                0x0006,      // PER_BSD
                0x0400_0000, // PER_HPUX-ish domains
                libc::ADDR_NO_RANDOMIZE as u64 | 8,
            ] {
                assert_eq!(
                    d("personality", &[bad]),
                    EPERM,
                    "personality {bad:#x} on {a}"
                );
            }

            // ioctl: terminal injection only.
            let tiocsti = u64::from(TIOCSTI);
            assert_eq!(d("ioctl", &[0, tiocsti, 0]), EPERM, "{a}");
            assert_eq!(d("ioctl", &[0, tiocsti | 1 << 32, 0]), EPERM, "{a}");
            assert_eq!(d("ioctl", &[0, u64::from(TIOCLINUX), 0]), EPERM, "{a}");
            for ok in [
                libc::TCGETS,
                libc::TIOCGWINSZ,
                libc::TIOCSWINSZ,
                libc::FIONREAD,
            ] {
                assert_eq!(
                    d("ioctl", &[0, request(ok), 0]),
                    ALLOW,
                    "ioctl {ok:#x} on {a}"
                );
            }
        }
    }

    #[test]
    fn x32_and_foreign_abis_are_closed() {
        let p = default_program(Arch::X86_64);
        for name in ["ptrace", "getpid", "mount", "clone"] {
            let data = Data {
                nr: X32_SYSCALL_BIT | nr(Arch::X86_64, name),
                arch: Arch::X86_64.audit_arch(),
                args: [0; 6],
            };
            assert_eq!(run(&p.filter, &data), ENOSYS, "x32 {name}");
        }
        // nr -1 (a tracer skipping a call) answers as the kernel would.
        let data = Data {
            nr: u32::MAX,
            arch: Arch::X86_64.audit_arch(),
            args: [0; 6],
        };
        assert_eq!(run(&p.filter, &data), ENOSYS);
        for (arch, foreign) in [
            (Arch::X86_64, AUDIT_ARCH_I386),
            (Arch::Aarch64, AUDIT_ARCH_ARM),
        ] {
            let p = default_program(arch);
            // i386 ptrace is 26, getpid 20; whatever the number, the call dies.
            for nr in [20, 26, 0, 435] {
                let data = Data {
                    nr,
                    arch: foreign,
                    args: [0; 6],
                };
                assert_eq!(run(&p.filter, &data), KILL, "{} nr {nr}", arch.name());
            }
            let other = Data {
                nr: 39,
                arch: Arch::ALL
                    .into_iter()
                    .find(|a| *a != arch)
                    .unwrap()
                    .audit_arch(),
                args: [0; 6],
            };
            assert_eq!(run(&p.filter, &other), KILL);
        }
    }

    #[test]
    fn every_denial_and_nothing_else_is_denied() {
        for arch in Arch::ALL {
            let p = default_program(arch);
            let denials = resolve(&Seccomp::default()).unwrap();
            let mut with_rules = Vec::new();
            for d in &denials {
                let Some(n) = arch.syscall_number(&d.syscall) else {
                    continue;
                };
                with_rules.push(n);
                if d.when == When::Always {
                    let want = SECCOMP_RET_ERRNO | d.errno.raw();
                    assert_eq!(decide(arch, &p, &d.syscall, &[]), want, "{}", d.syscall);
                }
            }
            with_rules.sort_unstable();
            with_rules.dedup();
            assert_eq!(p.syscalls, with_rules.len(), "{}", arch.name());
            for pair in arch.table().split_whitespace() {
                let (name, n) = pair.split_once('=').unwrap();
                let n: u32 = n.parse().unwrap();
                if !with_rules.contains(&n) {
                    // Zero arguments, and also all-ones ones: no argument
                    // pattern turns an unlisted syscall into a denial.
                    assert_eq!(decide(arch, &p, name, &[]), ALLOW, "{name}");
                    assert_eq!(decide(arch, &p, name, &[u64::MAX; 6]), ALLOW, "{name}");
                }
            }
        }
    }

    #[test]
    fn program_layout_is_arch_check_then_early_checks() {
        for arch in Arch::ALL {
            let p = default_program(arch);
            assert!(
                p.filter.len() < BPF_MAXINSNS / 2,
                "{} instructions",
                p.filter.len()
            );
            assert_eq!(p.filter[0], stmt(BPF_LD_W_ABS, DATA_ARCH));
            assert_eq!(p.filter[1], jump(BPF_JMP_JEQ_K, arch.audit_arch(), 1, 0));
            assert_eq!(p.filter[2], stmt(BPF_RET_K, KILL));
            assert_eq!(p.filter[3], stmt(BPF_LD_W_ABS, DATA_NR));
        }
        // x32 applies to x86_64 only; then the dispatch; then the early
        // checks (clone3 is in both).
        let x = default_program(Arch::X86_64);
        assert_eq!(x.filter[4], jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1));
        assert_eq!(x.filter[6].code, BPF_JMP_JGE_K);
        let end = dispatch_end(&x.filter, 6);
        assert_eq!(x.filter[end + 1], jump(BPF_JMP_JEQ_K, 435, 0, 1));
        assert_eq!(x.filter[end + 2], stmt(BPF_RET_K, ENOSYS));
        let a = default_program(Arch::Aarch64);
        assert_eq!(a.filter[4].code, BPF_JMP_JGE_K);
        let end = dispatch_end(&a.filter, 4);
        assert_eq!(a.filter[end + 1], jump(BPF_JMP_JEQ_K, 435, 0, 1));
    }

    /// The index of the dispatch's `RET ALLOW`: its last instruction.
    fn dispatch_end(prog: &[sock_filter], start: usize) -> usize {
        start
            + prog[start..]
                .iter()
                .position(|i| *i == stmt(BPF_RET_K, ALLOW))
                .expect("the dispatch ends in RET ALLOW")
    }

    /// The dispatch changes no verdict: with it cut out again, the program
    /// decides every syscall number the same way, whatever the arguments;
    /// and no allowed syscall walks far.
    #[test]
    fn dispatch_only_shortens_the_way() {
        let args: [[u64; 6]; 4] = [
            [0; 6],
            [u64::MAX; 6],
            [0x7e02_0000, 0x5412, 16, 256, 1, 0],
            [2, 1, 262, 0x1000_0000, 0, 0],
        ];
        for arch in Arch::ALL {
            for prof in [
                Seccomp::default(),
                profile(&["ptrace"], &["chmod", "fchmod"]),
            ] {
                let p = compile_for(arch, &prof).unwrap();
                let start = if arch == Arch::X86_64 { 6 } else { 4 };
                let end = dispatch_end(&p.filter, start);
                let mut without = p.filter[..start].to_vec();
                without.extend_from_slice(&p.filter[end + 1..]);
                for nr in 0..1024u32 {
                    for a in &args {
                        let d = Data {
                            nr,
                            arch: arch.audit_arch(),
                            args: *a,
                        };
                        assert_eq!(
                            run(&p.filter, &d),
                            run(&without, &d),
                            "{} syscall {nr} args {a:x?}",
                            arch.name()
                        );
                    }
                }
                let read = Data {
                    nr: nr(arch, "read"),
                    arch: arch.audit_arch(),
                    args: [0; 6],
                };
                assert!(
                    steps(&p.filter, &read) < 24,
                    "read takes {}",
                    steps(&p.filter, &read)
                );
            }
        }
    }

    /// How many instructions a verdict takes.
    fn steps(prog: &[sock_filter], data: &Data) -> usize {
        walk(prog, data).1
    }

    #[test]
    fn allow_a_group_or_a_syscall_back() {
        for arch in Arch::ALL {
            let default = default_program(arch);
            let p = compile_for(arch, &profile(&["ptrace"], &[])).unwrap();
            for name in ["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"] {
                assert_eq!(decide(arch, &p, name, &[]), ALLOW, "{name}");
            }
            assert_eq!(decide(arch, &p, "bpf", &[]), EPERM);
            assert_eq!(p.syscalls, default.syscalls - 5);

            // One syscall of a group, not the rest of it.
            let p = compile_for(arch, &profile(&["process_vm_readv"], &[])).unwrap();
            assert_eq!(decide(arch, &p, "process_vm_readv", &[]), ALLOW);
            assert_eq!(decide(arch, &p, "ptrace", &[]), EPERM);

            let p = compile_for(arch, &profile(&["namespaces"], &[])).unwrap();
            let newuser = u64::from(CLONE_NEWUSER);
            assert_eq!(decide(arch, &p, "clone", &[newuser]), ALLOW);
            assert_eq!(decide(arch, &p, "unshare", &[newuser]), ALLOW);
            assert_eq!(decide(arch, &p, "clone3", &[]), ALLOW);
            assert_eq!(decide(arch, &p, "setns", &[]), ALLOW);

            let p = compile_for(arch, &profile(&["tty_injection"], &[])).unwrap();
            assert_eq!(decide(arch, &p, "ioctl", &[0, u64::from(TIOCSTI)]), ALLOW);

            // Everything allowed back: only the ABI checks remain.
            let names: Vec<&str> = GROUPS.iter().map(|g| g.name).collect();
            let p = compile_for(arch, &profile(&names, &[])).unwrap();
            assert_eq!(p.syscalls, 0);
            assert_eq!(decide(arch, &p, "ptrace", &[]), ALLOW);
            assert_eq!(decide(arch, &p, "socket", &[17, 3, 0]), ALLOW);
            let foreign = Data {
                nr: 26,
                arch: AUDIT_ARCH_I386,
                args: [0; 6],
            };
            assert_eq!(run(&p.filter, &foreign), KILL);
        }
    }

    #[test]
    fn deny_adds_syscalls_and_wins_over_allow() {
        for arch in Arch::ALL {
            let default = default_program(arch);
            let p = compile_for(arch, &profile(&[], &["chroot", "uname"])).unwrap();
            assert_eq!(decide(arch, &p, "chroot", &[]), EPERM);
            assert_eq!(decide(arch, &p, "uname", &[]), EPERM);
            assert_eq!(decide(arch, &default, "uname", &[]), ALLOW);
            assert_eq!(p.syscalls, default.syscalls + 2);

            // Named in deny: denied whatever the arguments.
            let p = compile_for(arch, &profile(&[], &["socket"])).unwrap();
            assert_eq!(decide(arch, &p, "socket", &[1, 1, 0]), EPERM);
            assert_eq!(decide(arch, &p, "socketpair", &[1, 1, 0]), ALLOW);

            // deny beats allow, for groups and for syscalls.
            let p = compile_for(arch, &profile(&["ptrace"], &["ptrace"])).unwrap();
            assert_eq!(decide(arch, &p, "ptrace", &[]), EPERM);
            let p = compile_for(arch, &profile(&["mount"], &["mount"])).unwrap();
            assert_eq!(decide(arch, &p, "fsopen", &[]), EPERM);

            // A group's name that is also a syscall's: the group is back
            // and the syscall denied outright.
            let p = compile_for(arch, &profile(&["personality"], &["personality"])).unwrap();
            assert_eq!(decide(arch, &p, "personality", &[0]), EPERM);
            let p = compile_for(arch, &profile(&["mount"], &["mount"])).unwrap();
            assert_eq!(decide(arch, &p, "mount", &[]), EPERM);
            assert_eq!(decide(arch, &p, "open_tree", &[]), EPERM);
            let p = compile_for(arch, &profile(&["io_uring"], &["io_uring"])).unwrap();
            assert_eq!(p, default);

            // clone3 keeps its ENOSYS when named again.
            let p = compile_for(arch, &profile(&[], &["clone3"])).unwrap();
            assert_eq!(decide(arch, &p, "clone3", &[]), ENOSYS);
            assert_eq!(p, default);

            // Repeated names change nothing.
            let p = compile_for(arch, &profile(&["bpf", "bpf"], &["uname", "uname"])).unwrap();
            assert_eq!(p.syscalls, default.syscalls);
        }
        // A syscall this architecture does not have is valid and a no-op.
        let a = compile_for(Arch::Aarch64, &profile(&[], &["open"])).unwrap();
        assert_eq!(a, default_program(Arch::Aarch64));
        let x = compile_for(Arch::X86_64, &profile(&[], &["open"])).unwrap();
        assert_eq!(x.syscalls, default_program(Arch::X86_64).syscalls + 1);
    }

    #[test]
    fn unknown_names_are_errors_that_list_the_groups() {
        let err = resolve(&profile(&["nosuchcall"], &[])).unwrap_err();
        assert!(err.contains("\"nosuchcall\""), "{err}");
        assert!(
            err.contains("socket_families") && err.contains("ptrace"),
            "{err}"
        );

        let err = resolve(&profile(&[], &["nosuchcall"])).unwrap_err();
        assert!(err.contains("`deny` entry \"nosuchcall\""), "{err}");
        assert!(err.contains("kernel_modules"), "{err}");

        // A real syscall that is not on the list: nothing to allow.
        let err = resolve(&profile(&["chroot"], &[])).unwrap_err();
        assert!(err.contains("does not deny chroot"), "{err}");

        let err = resolve(&profile(&[], &["execve"])).unwrap_err();
        assert!(
            err.contains("\"execve\"") && err.contains("cannot be denied"),
            "{err}"
        );
        let err = compile(&profile(&[], &["clone"])).unwrap_err();
        assert!(err.contains("\"clone\""), "{err}");
    }

    #[test]
    fn compile_for_this_machine() {
        let p = compile(&Seccomp::default()).unwrap();
        let arch = Arch::current().expect("tests run on x86_64 or aarch64");
        assert_eq!(p, default_program(arch));
        assert!(p.syscalls > 50, "{} syscalls", p.syscalls);
    }
}
