//! Landlock rules as plain data, derived from the mount plan and the
//! profile's `[landlock]` table, and the decision whether a run may start on
//! a kernel that offers a given Landlock ABI. Nothing here touches the
//! kernel; `sandbox::landlock` applies what this module decides.
//!
//! Landlock is the second wall behind the mount namespace: every path the
//! plan makes visible gets a rule granting what the mount allows, and
//! everything else (the sandbox root itself, paths listed in
//! `[landlock] skip`) gets nothing. Two limits shape the rules:
//!
//! - A grant on a directory covers everything beneath it, and nothing can
//!   take it back lower down. Masks (`filesystem.mask`) and protected
//!   workspace paths (`filesystem.protect`) therefore stay mount-level
//!   restrictions: an empty read-only mount over them, which Landlock
//!   cannot express beneath a writable workspace or a readable `/etc`.
//! - Rules name the inode a path resolves to when init applies them, after
//!   the sandbox root is in place, so every path here is a sandbox path.

use crate::mount_plan::{normalize, Access as MountAccess, Plan, Step};
use crate::profile::{Enforcement, NetworkMode, Ports, Profile};
use std::path::{Path, PathBuf};

/// Access granted beneath a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read files, list directories, execute.
    ReadExec,
    /// Read files, list directories, write (and truncate) existing files:
    /// what `/proc` needs (`/proc/self/oom_score_adj`, `/proc/self/attr`),
    /// without creating anything or executing from it.
    ProcFiles,
    /// [`Access::ProcFiles`] plus ioctl on device files: `/dev`, where a
    /// terminal needs `TIOCSCTTY`, `TCSETS` and friends.
    Devices,
    /// Everything but creating device nodes (no mount in the sandbox
    /// allows using them, and no process there has `CAP_MKNOD`).
    Full,
}

impl Access {
    /// Whether `self` grants everything `other` does.
    pub fn covers(self, other: Access) -> bool {
        self == other
            || self == Access::Full
            || (self == Access::Devices && other == Access::ProcFiles)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub mode: Enforcement,
    /// Sandbox paths and what is allowed beneath each, one entry per path.
    pub paths: Vec<(PathBuf, Access)>,
    pub connect_tcp: Ports,
    pub bind_tcp: Ports,
    /// Confine abstract unix sockets and signals to the sandbox (ABI 6+).
    pub scope: bool,
    /// Paths the plan makes visible that `[landlock] skip` left without a
    /// rule (visible, but unusable).
    pub skipped: Vec<PathBuf>,
}

/// Paths moat builds itself (see `sandbox::mounts`), not in the plan.
const PROC: &str = "/proc";
const DEV: &str = "/dev";
const DEV_SHM: &str = "/dev/shm";

/// The rules for a run of `profile` with `plan`; `home` expands `~` in
/// `[landlock] skip`.
///
/// The sandbox root `/` gets no rule. It is a read-only tmpfs holding only
/// the mount points the plan made, so listing it would reveal little, but a
/// rule there would be inherited by every path in the sandbox, including
/// the ones `skip` leaves out: with no rule on `/`, anything not named here
/// is denied. The cost is that `ls /` fails inside.
pub fn rules(plan: &Plan, profile: &Profile, home: &Path) -> Rules {
    let skip: Vec<PathBuf> = profile
        .landlock
        .skip
        .iter()
        .map(|s| normalize(&s.expand(home)))
        .collect();

    let mut wanted: Vec<(PathBuf, Access)> = Vec::new();
    for step in &plan.steps {
        match step {
            Step::Bind { dst, access, .. } => wanted.push((
                dst.clone(),
                match access {
                    MountAccess::ReadOnly => Access::ReadExec,
                    MountAccess::ReadWrite => Access::Full,
                },
            )),
            // The workspace, `/tmp`, the home: private and writable.
            Step::Tmpfs { at, .. } => wanted.push((at.clone(), Access::Full)),
            // Landlock checks the path a symlink resolves to, which has its
            // own rule (or none).
            Step::Symlink { .. } => {}
            // An empty read-only file or directory: nothing to grant, and
            // nothing Landlock could take away beneath a granted parent.
            Step::Mask { .. } => {}
        }
    }
    wanted.push((PathBuf::from(PROC), Access::ProcFiles));
    wanted.push((PathBuf::from(DEV), Access::Devices));
    wanted.push((PathBuf::from(DEV_SHM), Access::Full));

    let mut paths: Vec<(PathBuf, Access)> = Vec::new();
    let mut skipped: Vec<PathBuf> = Vec::new();
    for (path, access) in wanted {
        if skip.iter().any(|s| path.starts_with(s)) {
            if !skipped.contains(&path) {
                skipped.push(path);
            }
            continue;
        }
        // The kernel unions rules on one inode. Keep one entry where one
        // grant covers the other, and both where neither does.
        if paths.iter().any(|(p, a)| *p == path && a.covers(access)) {
            continue;
        }
        paths.retain(|(p, a)| !(*p == path && access.covers(*a)));
        paths.push((path, access));
    }

    // The proxy is the sandbox's way out: connecting to it is allowed
    // whatever the profile lists. With `mode = "none"` there is no proxy.
    let mut connect_tcp = profile.landlock.connect_tcp.clone();
    if profile.network.mode != NetworkMode::None {
        if let Ports::Only(list) = &mut connect_tcp {
            if !list.contains(&profile.network.proxy_port) {
                list.push(profile.network.proxy_port);
            }
        }
    }

    Rules {
        mode: profile.landlock.mode,
        paths,
        connect_tcp,
        bind_tcp: profile.landlock.bind_tcp.clone(),
        scope: true,
        skipped,
    }
}

/// A piece of the policy and the Landlock ABI that first enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    /// Path rules for reading, writing, executing, creating, removing.
    Filesystem,
    /// Moving and linking files between directories (before ABI 2 the
    /// kernel denies it everywhere in a Landlock domain).
    Refer,
    /// Truncating files.
    Truncate,
    /// TCP bind and connect by port.
    Tcp,
    /// ioctl on device files.
    IoctlDev,
    /// Abstract unix sockets and signals confined to the sandbox.
    Scopes,
}

impl Feature {
    pub const ALL: [Feature; 6] = [
        Feature::Filesystem,
        Feature::Refer,
        Feature::Truncate,
        Feature::Tcp,
        Feature::IoctlDev,
        Feature::Scopes,
    ];

    pub fn abi(self) -> i32 {
        match self {
            Feature::Filesystem => 1,
            Feature::Refer => 2,
            Feature::Truncate => 3,
            Feature::Tcp => 4,
            Feature::IoctlDev => 5,
            Feature::Scopes => 6,
        }
    }

    /// The first Linux release with the ABI.
    pub fn linux(self) -> &'static str {
        match self {
            Feature::Filesystem => "5.13",
            Feature::Refer => "5.19",
            Feature::Truncate => "6.2",
            Feature::Tcp => "6.7",
            Feature::IoctlDev => "6.10",
            Feature::Scopes => "6.12",
        }
    }

    /// What the feature is, as the subject of "need(s) ABI N".
    pub fn name(self) -> &'static str {
        match self {
            Feature::Filesystem => "file system rules",
            Feature::Refer => "rules for moving files between directories",
            Feature::Truncate => "truncation rules",
            Feature::Tcp => "TCP rules",
            Feature::IoctlDev => "device ioctl rules",
            Feature::Scopes => "signal and abstract unix socket scoping",
        }
    }

    /// What happens without it, for best-effort runs.
    pub fn without(self) -> &'static str {
        match self {
            Feature::Filesystem => "paths are not restricted by Landlock",
            Feature::Refer => "moving or linking files between directories is denied everywhere",
            Feature::Truncate => "truncating files is not restricted",
            Feature::Tcp => "TCP bind and connect are not restricted",
            Feature::IoctlDev => "ioctl on device files is not restricted",
            Feature::Scopes => "abstract unix sockets and signals are not confined to the sandbox",
        }
    }
}

/// The features `rules` asks the kernel for.
pub fn wanted(rules: &Rules) -> Vec<Feature> {
    let tcp =
        matches!(rules.connect_tcp, Ports::Only(_)) || matches!(rules.bind_tcp, Ports::Only(_));
    Feature::ALL
        .into_iter()
        .filter(|f| match f {
            Feature::Tcp => tcp,
            Feature::Scopes => rules.scope,
            _ => true,
        })
        .collect()
}

/// Landlock as the running kernel offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Available, with this ABI version (1 or more).
    Abi(i32),
    /// Built in but not enabled at boot (`EOPNOTSUPP`): `lsm=` lacks
    /// `landlock`.
    Disabled,
    /// Not built into the kernel (`ENOSYS`), or older than Linux 5.13.
    Missing,
}

impl Kernel {
    pub fn abi(self) -> i32 {
        match self {
            Kernel::Abi(n) => n,
            _ => 0,
        }
    }

    /// One line for `moat doctor` and messages.
    pub fn describe(self) -> String {
        match self {
            Kernel::Abi(n) => {
                let has: Vec<&str> = Feature::ALL
                    .into_iter()
                    .filter(|f| f.abi() <= n)
                    .map(Feature::name)
                    .collect();
                format!("Landlock ABI {n} ({})", has.join(", "))
            }
            Kernel::Disabled => "Landlock is built into this kernel but not enabled at boot \
                                 (add `landlock` to the kernel's `lsm=` parameter)"
                .to_string(),
            Kernel::Missing => {
                "this kernel does not offer Landlock (not built in, or older than Linux 5.13)"
                    .to_string()
            }
        }
    }
}

/// How much of the policy the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Full,
    Partial,
    None,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Full => "full",
            Status::Partial => "partial",
            Status::None => "none",
        }
    }
}

/// What a run will get, when it may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    /// What is not enforced, and why, one line each.
    pub notes: Vec<String>,
}

/// Whether a run with `rules` may start on `kernel`: best-effort always
/// may (and learns what it will lack); required may only when the kernel
/// enforces every feature the rules use. The error is the reason, for the
/// user.
pub fn decide(rules: &Rules, kernel: Kernel) -> Result<Verdict, String> {
    let abi = kernel.abi();
    let wanted = wanted(rules);
    let missing: Vec<Feature> = wanted.iter().copied().filter(|f| f.abi() > abi).collect();
    if rules.mode == Enforcement::Required && !missing.is_empty() {
        let offered = match kernel {
            Kernel::Abi(n) => format!("this kernel offers ABI {n}"),
            other => other.describe(),
        };
        let needs = match missing.last() {
            // Nothing at all: name the ABI that covers everything.
            Some(top) if abi <= 0 => format!(
                "the profile's rules need ABI {} (Linux {})",
                top.abi(),
                top.linux()
            ),
            _ => missing
                .iter()
                .map(|f| format!("{} need ABI {} (Linux {})", f.name(), f.abi(), f.linux()))
                .collect::<Vec<_>>()
                .join(", "),
        };
        return Err(format!(
            "Landlock is required by the profile but {offered}; {needs}"
        ));
    }
    if abi <= 0 {
        return Ok(Verdict {
            status: Status::None,
            notes: vec![format!(
                "{}; only the mount namespace restricts paths",
                kernel.describe()
            )],
        });
    }
    let notes: Vec<String> = missing
        .iter()
        .map(|f| {
            format!(
                "{} (needs ABI {}, Linux {})",
                f.without(),
                f.abi(),
                f.linux()
            )
        })
        .collect();
    Ok(Verdict {
        status: if missing.is_empty() {
            Status::Full
        } else {
            Status::Partial
        },
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount_plan::Kind;
    use crate::profile::PathSpec;

    fn bind(dst: &str, access: MountAccess) -> Step {
        Step::Bind {
            src: dst.into(),
            dst: dst.into(),
            access,
            kind: Kind::Dir,
            beneath: None,
        }
    }

    fn plan() -> Plan {
        Plan {
            steps: vec![
                bind("/usr", MountAccess::ReadOnly),
                Step::Symlink {
                    target: "usr/bin".into(),
                    at: "/bin".into(),
                },
                bind("/etc", MountAccess::ReadOnly),
                bind("/srv/data", MountAccess::ReadOnly),
                bind("/srv/cache", MountAccess::ReadWrite),
                Step::Tmpfs {
                    at: "/tmp".into(),
                    mode: 0o1777,
                },
                Step::Tmpfs {
                    at: "/home/alice".into(),
                    mode: 0o700,
                },
                bind("/home/alice/proj", MountAccess::ReadWrite),
                Step::Mask {
                    at: "/etc/shadow".into(),
                    kind: Kind::File,
                },
                bind("/home/alice/proj/.git", MountAccess::ReadWrite),
                bind("/home/alice/proj/.git/hooks", MountAccess::ReadOnly),
            ],
            absent_protected: vec![],
        }
    }

    fn profile(skip: &[&str]) -> Profile {
        let mut p = Profile::default();
        p.landlock.skip = skip
            .iter()
            .map(|s| PathSpec {
                path: s.to_string(),
                optional: false,
            })
            .collect();
        p
    }

    fn access_of(r: &Rules, p: &str) -> Option<Access> {
        r.paths
            .iter()
            .find(|(q, _)| q == Path::new(p))
            .map(|(_, a)| *a)
    }

    #[test]
    fn plan_steps_become_rules() {
        let r = rules(&plan(), &profile(&[]), Path::new("/home/alice"));
        assert_eq!(access_of(&r, "/usr"), Some(Access::ReadExec));
        assert_eq!(access_of(&r, "/etc"), Some(Access::ReadExec));
        assert_eq!(access_of(&r, "/srv/cache"), Some(Access::Full));
        assert_eq!(access_of(&r, "/tmp"), Some(Access::Full));
        assert_eq!(access_of(&r, "/home/alice"), Some(Access::Full));
        assert_eq!(access_of(&r, "/home/alice/proj"), Some(Access::Full));
        assert_eq!(access_of(&r, "/proc"), Some(Access::ProcFiles));
        assert_eq!(access_of(&r, "/dev"), Some(Access::Devices));
        assert_eq!(access_of(&r, "/dev/shm"), Some(Access::Full));
        // No rule for symlinks, masks, or the root.
        assert_eq!(access_of(&r, "/bin"), None);
        assert_eq!(access_of(&r, "/etc/shadow"), None);
        assert_eq!(access_of(&r, "/"), None);
        assert!(r.skipped.is_empty());
        assert!(r.scope);
        // Defaults: connect only to the proxy, bind anywhere.
        assert_eq!(r.connect_tcp, Ports::Only(vec![3128]));
        assert_eq!(r.bind_tcp, Ports::Any);
        assert_eq!(r.mode, Enforcement::BestEffort);
    }

    #[test]
    fn one_rule_per_path_with_the_union() {
        let mut p = plan();
        p.steps.push(bind("/srv/data", MountAccess::ReadWrite));
        let r = rules(&p, &profile(&[]), Path::new("/home/alice"));
        let n = r
            .paths
            .iter()
            .filter(|(q, _)| q == Path::new("/srv/data"))
            .count();
        assert_eq!(n, 1);
        assert_eq!(access_of(&r, "/srv/data"), Some(Access::Full));
        // A weaker grant after a stronger one changes nothing.
        p.steps.push(bind("/srv/data", MountAccess::ReadOnly));
        let r2 = rules(&p, &profile(&[]), Path::new("/home/alice"));
        assert_eq!(r2, r);
    }

    #[test]
    fn covers_is_inclusion_of_grants() {
        use Access::*;
        for a in [ReadExec, ProcFiles, Devices, Full] {
            assert!(a.covers(a));
            assert!(Full.covers(a));
        }
        assert!(Devices.covers(ProcFiles));
        assert!(!ProcFiles.covers(Devices));
        // Neither read-execute nor /proc's rights include the other.
        assert!(!ReadExec.covers(ProcFiles) && !ProcFiles.covers(ReadExec));
        assert!(!ReadExec.covers(Full));
    }

    #[test]
    fn skip_removes_the_path_and_everything_beneath() {
        let r = rules(
            &plan(),
            &profile(&["/srv/data", "~/proj", "/nonexistent"]),
            Path::new("/home/alice"),
        );
        assert_eq!(access_of(&r, "/srv/data"), None);
        assert_eq!(access_of(&r, "/home/alice/proj"), None);
        assert_eq!(access_of(&r, "/home/alice/proj/.git/hooks"), None);
        // Siblings and parents keep theirs.
        assert_eq!(access_of(&r, "/srv/cache"), Some(Access::Full));
        assert_eq!(access_of(&r, "/home/alice"), Some(Access::Full));
        assert_eq!(
            r.skipped,
            vec![
                PathBuf::from("/srv/data"),
                PathBuf::from("/home/alice/proj"),
                PathBuf::from("/home/alice/proj/.git"),
                PathBuf::from("/home/alice/proj/.git/hooks"),
            ]
        );
    }

    #[test]
    fn skip_is_by_component_not_by_prefix() {
        let r = rules(&plan(), &profile(&["/srv/dat"]), Path::new("/h"));
        assert_eq!(access_of(&r, "/srv/data"), Some(Access::ReadExec));
    }

    #[test]
    fn profile_ports_and_mode_carry_over() {
        let mut p = profile(&[]);
        p.landlock.connect_tcp = Ports::Only(vec![3128]);
        p.landlock.bind_tcp = Ports::Only(vec![8080]);
        p.landlock.mode = Enforcement::Required;
        let r = rules(&plan(), &p, Path::new("/home/alice"));
        assert_eq!(r.connect_tcp, Ports::Only(vec![3128]));
        assert_eq!(r.bind_tcp, Ports::Only(vec![8080]));
        assert_eq!(r.mode, Enforcement::Required);
    }

    #[test]
    fn proxy_port_is_allowed_unless_there_is_no_network() {
        let mut p = profile(&[]);
        p.network.proxy_port = 8899;
        p.landlock.connect_tcp = Ports::Only(vec![5432]);
        let r = rules(&plan(), &p, Path::new("/h"));
        assert_eq!(r.connect_tcp, Ports::Only(vec![5432, 8899]));
        // Listed already: once.
        p.landlock.connect_tcp = Ports::Only(vec![8899]);
        let r = rules(&plan(), &p, Path::new("/h"));
        assert_eq!(r.connect_tcp, Ports::Only(vec![8899]));
        // "any" stays any.
        p.landlock.connect_tcp = Ports::Any;
        let r = rules(&plan(), &p, Path::new("/h"));
        assert_eq!(r.connect_tcp, Ports::Any);
        // No network, no proxy, nothing added.
        p.network.mode = NetworkMode::None;
        p.landlock.connect_tcp = Ports::Only(vec![5432]);
        let r = rules(&plan(), &p, Path::new("/h"));
        assert_eq!(r.connect_tcp, Ports::Only(vec![5432]));
        for mode in [NetworkMode::Open, NetworkMode::Allowlist] {
            p.network.mode = mode;
            let r = rules(&plan(), &p, Path::new("/h"));
            assert_eq!(r.connect_tcp, Ports::Only(vec![5432, 8899]), "{mode:?}");
        }
    }

    fn default_rules(mode: Enforcement) -> Rules {
        let mut p = profile(&[]);
        p.landlock.mode = mode;
        rules(&plan(), &p, Path::new("/home/alice"))
    }

    #[test]
    fn tcp_is_wanted_only_when_a_list_restricts_it() {
        let mut r = default_rules(Enforcement::BestEffort);
        assert!(wanted(&r).contains(&Feature::Tcp));
        r.connect_tcp = Ports::Any;
        assert!(!wanted(&r).contains(&Feature::Tcp));
        r.bind_tcp = Ports::Only(vec![80]);
        assert!(wanted(&r).contains(&Feature::Tcp));
    }

    #[test]
    fn best_effort_runs_everywhere_and_says_what_is_missing() {
        let r = default_rules(Enforcement::BestEffort);
        for k in [Kernel::Abi(6), Kernel::Abi(7), Kernel::Abi(99)] {
            let v = decide(&r, k).unwrap();
            assert_eq!(v.status, Status::Full, "{k:?}");
            assert!(v.notes.is_empty(), "{k:?}: {:?}", v.notes);
        }
        let v = decide(&r, Kernel::Abi(3)).unwrap();
        assert_eq!(v.status, Status::Partial);
        let all = v.notes.join("\n");
        assert!(all.contains("TCP bind and connect are not restricted (needs ABI 4, Linux 6.7)"));
        assert!(all.contains("ioctl on device files"));
        assert!(all.contains("signals are not confined"));
        assert!(!all.contains("truncat"), "{all}");
        let v = decide(&r, Kernel::Abi(1)).unwrap();
        assert_eq!(v.status, Status::Partial);
        assert!(v.notes[0].contains("between directories is denied everywhere"));
        for k in [Kernel::Missing, Kernel::Disabled, Kernel::Abi(0)] {
            let v = decide(&r, k).unwrap();
            assert_eq!(v.status, Status::None, "{k:?}");
            assert!(v.notes[0].contains("only the mount namespace"), "{v:?}");
        }
        assert!(decide(&r, Kernel::Disabled).unwrap().notes[0].contains("lsm="));
    }

    #[test]
    fn required_refuses_unless_everything_is_enforced() {
        let r = default_rules(Enforcement::Required);
        assert_eq!(decide(&r, Kernel::Abi(6)).unwrap().status, Status::Full);
        assert_eq!(decide(&r, Kernel::Abi(7)).unwrap().status, Status::Full);

        let e = decide(&r, Kernel::Abi(3)).unwrap_err();
        assert!(
            e.starts_with(
                "Landlock is required by the profile but this kernel offers ABI 3; \
                 TCP rules need ABI 4 (Linux 6.7)"
            ),
            "{e}"
        );
        assert!(e.contains("signal and abstract unix socket scoping need ABI 6 (Linux 6.12)"));

        let e = decide(&r, Kernel::Abi(5)).unwrap_err();
        assert!(e.contains("offers ABI 5"), "{e}");
        assert!(!e.contains("TCP"), "{e}");

        let e = decide(&r, Kernel::Missing).unwrap_err();
        assert!(e.contains("does not offer Landlock"), "{e}");
        assert!(
            e.ends_with("; the profile's rules need ABI 6 (Linux 6.12)"),
            "{e}"
        );
        let e = decide(&r, Kernel::Disabled).unwrap_err();
        assert!(e.contains("not enabled at boot"), "{e}");
    }

    #[test]
    fn required_without_tcp_lists_needs_only_abi_6() {
        let mut r = default_rules(Enforcement::Required);
        r.connect_tcp = Ports::Any;
        r.bind_tcp = Ports::Any;
        let e = decide(&r, Kernel::Abi(4)).unwrap_err();
        assert!(!e.contains("TCP"), "{e}");
        assert!(e.contains("device ioctl rules need ABI 5"), "{e}");
        r.scope = false;
        assert_eq!(decide(&r, Kernel::Abi(5)).unwrap().status, Status::Full);
    }

    #[test]
    fn kernel_description_lists_what_it_offers() {
        let d = Kernel::Abi(4).describe();
        assert!(d.starts_with("Landlock ABI 4 (file system rules"), "{d}");
        assert!(d.contains("TCP rules"), "{d}");
        assert!(!d.contains("ioctl"), "{d}");
    }
}
