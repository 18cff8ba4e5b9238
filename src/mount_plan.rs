//! The sandbox's file system view as plain data: an ordered list of steps.
//!
//! [`build`] turns a profile plus the run's context into steps; it consults
//! the host only through [`HostFs`] (so unit tests can fake the host) and
//! decides everything that is policy: what is visible, where, read-only or
//! not, what is hidden. `sandbox::mounts` applies the steps and decides
//! nothing.

use crate::profile::{PathSpec, Profile, WorkspaceAccess};
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// One mount step. Destinations are absolute paths inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bind the host path `src` (canonical) at `dst`.
    Bind {
        src: PathBuf,
        dst: PathBuf,
        access: Access,
        kind: Kind,
        /// When set, `src` lies under this directory and must be reached
        /// from it without following any symlink: the workspace is writable
        /// by the sandbox, so a symlink there may have been planted.
        beneath: Option<PathBuf>,
    },
    /// Recreate a host symlink (e.g. `/bin -> usr/bin` on merged-/usr hosts).
    Symlink { target: PathBuf, at: PathBuf },
    /// A fresh empty writable tmpfs.
    Tmpfs { at: PathBuf, mode: u32 },
    /// Hide what is at `at` behind an empty read-only file or directory.
    Mask { at: PathBuf, kind: Kind },
}

impl Step {
    pub fn dst(&self) -> &Path {
        match self {
            Step::Bind { dst, .. } => dst,
            Step::Symlink { at, .. } | Step::Tmpfs { at, .. } | Step::Mask { at, .. } => at,
        }
    }
}

/// What the plan needs to know about the host.
pub trait HostFs {
    /// `None` when nothing is at `path` (not following a final symlink).
    fn lstat(&self, path: &Path) -> Option<HostEntry>;
    /// Resolves every symlink; `None` when the path does not resolve.
    fn canonicalize(&self, path: &Path) -> Option<PathBuf>;
    fn read_link(&self, path: &Path) -> Option<PathBuf>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEntry {
    Dir,
    File,
    Symlink,
    Other,
}

/// The real host.
pub struct RealHost;

impl HostFs for RealHost {
    fn lstat(&self, path: &Path) -> Option<HostEntry> {
        let md = std::fs::symlink_metadata(path).ok()?;
        let ft = md.file_type();
        Some(if ft.is_symlink() {
            HostEntry::Symlink
        } else if ft.is_dir() {
            HostEntry::Dir
        } else if ft.is_file() {
            HostEntry::File
        } else {
            HostEntry::Other
        })
    }
    fn canonicalize(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }
    fn read_link(&self, path: &Path) -> Option<PathBuf> {
        std::fs::read_link(path).ok()
    }
}

/// Facts about this run that the plan depends on.
#[derive(Debug, Clone)]
pub struct Context {
    /// The caller's home directory (becomes an empty tmpfs).
    pub home: PathBuf,
    /// Canonical workspace directory.
    pub workspace: PathBuf,
}

/// The plan, plus what the run should check afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Protected workspace paths that did not exist at start; if the command
    /// creates one, moat warns after the run (it cannot be mounted over).
    pub absent_protected: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{path}: listed in `filesystem.{list}` but it does not exist on this host (prefix it with `-` in the profile to make it optional)")]
    Missing { list: &'static str, path: String },
    #[error("{path}: `filesystem.{list}` may not name {why}")]
    Forbidden {
        list: &'static str,
        path: String,
        why: &'static str,
    },
    #[error("{path}: is a symlink inside the workspace; moat will not protect a path reached through a symlink, since the command could repoint it (replace the symlink or drop `{entry}` from `filesystem.protect`)")]
    ProtectSymlink { path: String, entry: String },
    #[error("{path}: is neither a file nor a directory, so it cannot be bound")]
    Unsupported { path: String },
}

// Order among steps at the same depth: the later rank is mounted on top, so
// the home tmpfs hides a profile bind of the home itself, the workspace shows
// through even when it is the home (with --force-workspace), and masks and
// protections always win.
const RANK_SYMLINK: u8 = 0;
const RANK_BIND: u8 = 1;
const RANK_TMPFS: u8 = 2;
const RANK_HOME: u8 = 3;
const RANK_WORKSPACE: u8 = 4;
const RANK_MASK: u8 = 5;
const RANK_PROTECT: u8 = 6;

/// Paths moat itself provides; a profile may not bind over them.
const RESERVED: &[&str] = &["/proc", "/dev"];

fn depth(p: &Path) -> usize {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// An absolute path with `.` and duplicate slashes dropped (profile
/// validation already refuses `..`).
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        if let Component::Normal(s) = c {
            out.push(s);
        }
    }
    out
}

fn check_allowed(list: &'static str, path: &Path) -> Result<(), PlanError> {
    let why = if path == Path::new("/") {
        Some("`/` (that is the whole host)")
    } else if RESERVED.iter().any(|r| path.starts_with(r)) {
        Some("/proc or /dev (moat builds those itself)")
    } else {
        None
    };
    match why {
        Some(why) => Err(PlanError::Forbidden {
            list,
            path: path.display().to_string(),
            why,
        }),
        None => Ok(()),
    }
}

fn entry_kind(host: &dyn HostFs, path: &Path) -> Result<Kind, PlanError> {
    let resolved = host.canonicalize(path);
    match resolved.as_deref().and_then(|p| host.lstat(p)) {
        Some(HostEntry::Dir) => Ok(Kind::Dir),
        Some(HostEntry::File) | Some(HostEntry::Other) => Ok(Kind::File),
        _ => Err(PlanError::Unsupported {
            path: path.display().to_string(),
        }),
    }
}

/// Builds the ordered steps for `profile` in `ctx`.
pub fn build(profile: &Profile, ctx: &Context, host: &dyn HostFs) -> Result<Plan, PlanError> {
    let fs = &profile.filesystem;
    // (rank, step): at equal depth a higher rank is mounted later, on top.
    let mut steps: Vec<(u8, Step)> = Vec::new();

    // Binds of host paths named by the profile.
    let mut binds: Vec<(PathBuf, Access)> = Vec::new();
    for (list, specs, access) in [
        ("read_only", &fs.read_only, Access::ReadOnly),
        ("read_write", &fs.read_write, Access::ReadWrite),
    ] {
        for spec in specs {
            let path = normalize(&spec.expand(&ctx.home));
            check_allowed(list, &path)?;
            if host.lstat(&path).is_none() || host.canonicalize(&path).is_none() {
                if spec.optional {
                    continue;
                }
                return Err(PlanError::Missing {
                    list,
                    path: path.display().to_string(),
                });
            }
            binds.push((path, access));
        }
    }
    let bound: Vec<PathBuf> = binds.iter().map(|(p, _)| p.clone()).collect();
    for (path, access) in binds {
        let canonical = host.canonicalize(&path).expect("checked above");
        if host.lstat(&path) == Some(HostEntry::Symlink) {
            // A symlink whose target is visible anyway is kept as a symlink,
            // so the layout inside matches the host (merged /usr).
            if let Some(target) = host.read_link(&path) {
                if bound.iter().any(|b| canonical.starts_with(b) && *b != path) {
                    steps.push((RANK_SYMLINK, Step::Symlink { target, at: path }));
                    continue;
                }
            }
        }
        let kind = entry_kind(host, &canonical)?;
        steps.push((
            RANK_BIND,
            Step::Bind {
                src: canonical,
                dst: path,
                access,
                kind,
                beneath: None,
            },
        ));
    }

    // Private scratch space and the empty home.
    for spec in &fs.tmpfs {
        let path = normalize(&spec.expand(&ctx.home));
        check_allowed("tmpfs", &path)?;
        steps.push((
            RANK_TMPFS,
            Step::Tmpfs {
                at: path,
                mode: 0o1777,
            },
        ));
    }
    steps.push((
        RANK_HOME,
        Step::Tmpfs {
            at: normalize(&ctx.home),
            mode: 0o700,
        },
    ));

    // The workspace, at its own path.
    steps.push((
        RANK_WORKSPACE,
        Step::Bind {
            src: ctx.workspace.clone(),
            dst: ctx.workspace.clone(),
            access: match fs.workspace {
                WorkspaceAccess::ReadWrite => Access::ReadWrite,
                WorkspaceAccess::ReadOnly => Access::ReadOnly,
            },
            kind: Kind::Dir,
            beneath: None,
        },
    ));

    for spec in &fs.mask {
        let path = normalize(&spec.expand(&ctx.home));
        check_allowed("mask", &path)?;
        // Nothing there means nothing to hide.
        if host.lstat(&path).is_none() {
            continue;
        }
        let kind = entry_kind(host, &path).unwrap_or(Kind::File);
        steps.push((RANK_MASK, Step::Mask { at: path, kind }));
    }

    let absent_protected = if fs.workspace == WorkspaceAccess::ReadWrite {
        protect_steps(&fs.protect, ctx, host, &mut steps)?
    } else {
        Vec::new()
    };

    // Parents before children; at equal depth, the rank decides who is on top.
    steps.sort_by_key(|(rank, s)| (depth(s.dst()), *rank));
    Ok(Plan {
        steps: steps.into_iter().map(|(_, s)| s).collect(),
        absent_protected,
    })
}

/// Read-only binds for protected workspace paths. Each directory between the
/// workspace root and a protected path is pinned (bound onto itself), because
/// a directory holding a mount point cannot be renamed: without the pin, the
/// command could `mv .git .git.old`, build a new `.git` with writable hooks,
/// and the host would run them later.
fn protect_steps(
    protect: &[String],
    ctx: &Context,
    host: &dyn HostFs,
    steps: &mut Vec<(u8, Step)>,
) -> Result<Vec<PathBuf>, PlanError> {
    let mut entries: Vec<String> = protect.to_vec();
    // In a git worktree `.git` is a file naming the real git directory;
    // rewriting it would point host git at a config the command wrote.
    if host.lstat(&ctx.workspace.join(".git")) == Some(HostEntry::File) {
        entries.push(".git".to_string());
    }
    let mut pinned = BTreeSet::new();
    let mut absent = Vec::new();
    'entries: for entry in &entries {
        let rel = Path::new(entry);
        let mut cur = ctx.workspace.clone();
        let mut ancestors = Vec::new();
        let comps: Vec<_> = rel.components().collect();
        for (i, c) in comps.iter().enumerate() {
            cur.push(c.as_os_str());
            match host.lstat(&cur) {
                None => {
                    absent.push(ctx.workspace.join(rel));
                    continue 'entries;
                }
                Some(HostEntry::Symlink) => {
                    return Err(PlanError::ProtectSymlink {
                        path: cur.display().to_string(),
                        entry: entry.clone(),
                    })
                }
                Some(HostEntry::Dir) if i + 1 < comps.len() => ancestors.push(cur.clone()),
                Some(_) if i + 1 < comps.len() => {
                    // A file where a directory should be: nothing below it.
                    absent.push(ctx.workspace.join(rel));
                    continue 'entries;
                }
                Some(_) => {}
            }
        }
        for dir in ancestors {
            if pinned.insert(dir.clone()) {
                steps.push((
                    RANK_PROTECT,
                    Step::Bind {
                        src: dir.clone(),
                        dst: dir,
                        access: Access::ReadWrite,
                        kind: Kind::Dir,
                        beneath: Some(ctx.workspace.clone()),
                    },
                ));
            }
        }
        let kind = match host.lstat(&cur) {
            Some(HostEntry::Dir) => Kind::Dir,
            _ => Kind::File,
        };
        steps.push((
            RANK_PROTECT,
            Step::Bind {
                src: cur.clone(),
                dst: cur,
                access: Access::ReadOnly,
                kind,
                beneath: Some(ctx.workspace.clone()),
            },
        ));
    }
    Ok(absent)
}

/// Read-only binds of the host file `src` over each of `targets` that the
/// sandbox would otherwise show as the host's own regular file: the target
/// lies under a directory the plan binds, nothing the plan puts deeper
/// (a mask, a tmpfs, a symlink) covers it, and no component of it is a
/// symlink on the host (the sandbox side is walked without following
/// symlinks). A target that is masked stays masked. Returns the targets
/// bound, in the order given.
///
/// Used for the CA bundle: the sandbox's copy of the system roots becomes
/// the host's roots plus moat's CA, wherever the host keeps them.
pub fn overlay_file(
    plan: &mut Plan,
    src: &Path,
    targets: &[&str],
    host: &dyn HostFs,
) -> Vec<PathBuf> {
    let mut bound = Vec::new();
    for t in targets {
        let target = normalize(Path::new(t));
        if host.lstat(&target) != Some(HostEntry::File)
            || host.canonicalize(&target).as_deref() != Some(target.as_path())
            || bound.contains(&target)
        {
            continue;
        }
        // What the sandbox shows there is decided by the deepest step at or
        // above it; at equal depth, the later one is on top.
        let covering = plan
            .steps
            .iter()
            .filter(|s| target.starts_with(s.dst()))
            .max_by_key(|s| depth(s.dst()));
        let visible = matches!(
            covering,
            Some(Step::Bind { src: from, dst, .. })
                if target.strip_prefix(dst).is_ok_and(|rel| from.join(rel) == target)
        );
        if !visible {
            continue;
        }
        // On top of everything at its depth and below it, under nothing:
        // the order `build` sorts by stays intact.
        let d = depth(&target);
        let at = plan
            .steps
            .iter()
            .position(|s| depth(s.dst()) > d)
            .unwrap_or(plan.steps.len());
        plan.steps.insert(
            at,
            Step::Bind {
                src: src.to_path_buf(),
                dst: target.clone(),
                access: Access::ReadOnly,
                kind: Kind::File,
                beneath: None,
            },
        );
        bound.push(target);
    }
    bound
}

/// Paths of a profile entry list, expanded, for messages and tests.
pub fn expand_all(specs: &[PathSpec], home: &Path) -> Vec<PathBuf> {
    specs.iter().map(|s| s.expand(home)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Filesystem;
    use std::collections::BTreeMap;

    /// A fake host: path -> entry, symlinks with their (absolute) targets.
    #[derive(Default)]
    struct FakeHost {
        entries: BTreeMap<PathBuf, HostEntry>,
        links: BTreeMap<PathBuf, PathBuf>,
    }

    impl FakeHost {
        fn dir(mut self, p: &str) -> Self {
            self.entries.insert(p.into(), HostEntry::Dir);
            self
        }
        fn file(mut self, p: &str) -> Self {
            self.entries.insert(p.into(), HostEntry::File);
            self
        }
        fn link(mut self, p: &str, target: &str) -> Self {
            self.entries.insert(p.into(), HostEntry::Symlink);
            self.links.insert(p.into(), target.into());
            self
        }
    }

    impl HostFs for FakeHost {
        fn lstat(&self, path: &Path) -> Option<HostEntry> {
            self.entries.get(path).copied()
        }
        fn canonicalize(&self, path: &Path) -> Option<PathBuf> {
            let mut out = PathBuf::from("/");
            for c in path.components() {
                if let Component::Normal(s) = c {
                    out.push(s);
                    let mut hops = 0;
                    while let Some(t) = self.links.get(&out) {
                        hops += 1;
                        if hops > 8 {
                            return None;
                        }
                        out = if t.is_absolute() {
                            t.clone()
                        } else {
                            out.parent().unwrap().join(t)
                        };
                    }
                    self.entries.get(&out)?;
                }
            }
            Some(out)
        }
        fn read_link(&self, path: &Path) -> Option<PathBuf> {
            self.links.get(path).cloned()
        }
    }

    fn spec(s: &str) -> PathSpec {
        match s.strip_prefix('-') {
            Some(p) => PathSpec {
                path: p.into(),
                optional: true,
            },
            None => PathSpec {
                path: s.into(),
                optional: false,
            },
        }
    }

    fn profile(ro: &[&str], mask: &[&str], protect: &[&str]) -> Profile {
        Profile {
            name: "t".into(),
            sources: vec![],
            description: String::new(),
            hostname: "moat".into(),
            pass_env: vec![],
            env: BTreeMap::new(),
            filesystem: Filesystem {
                read_only: ro.iter().map(|s| spec(s)).collect(),
                read_write: vec![],
                mask: mask.iter().map(|s| spec(s)).collect(),
                tmpfs: vec![spec("/tmp")],
                protect: protect.iter().map(|s| s.to_string()).collect(),
                workspace: WorkspaceAccess::ReadWrite,
            },
            ..Profile::default()
        }
    }

    fn ctx() -> Context {
        Context {
            home: "/home/alice".into(),
            workspace: "/home/alice/proj".into(),
        }
    }

    fn host() -> FakeHost {
        FakeHost::default()
            .dir("/usr")
            .dir("/usr/bin")
            .link("/bin", "usr/bin")
            .dir("/etc")
            .file("/etc/shadow")
            .dir("/etc/ssh")
            .dir("/home")
            .dir("/home/alice")
            .file("/home/alice/.gitconfig")
            .dir("/home/alice/proj")
            .dir("/home/alice/proj/.git")
            .dir("/home/alice/proj/.git/hooks")
            .file("/home/alice/proj/.git/config")
    }

    #[test]
    fn merged_usr_symlink_is_kept_as_symlink() {
        let plan = build(&profile(&["/usr", "/bin"], &[], &[]), &ctx(), &host()).unwrap();
        assert!(plan.steps.contains(&Step::Symlink {
            target: "usr/bin".into(),
            at: "/bin".into()
        }));
    }

    #[test]
    fn symlink_to_invisible_target_binds_the_target() {
        let h = host().dir("/data").link("/home/alice/.gitconfig2", "/data");
        let plan = build(&profile(&["~/.gitconfig2"], &[], &[]), &ctx(), &h).unwrap();
        assert!(plan.steps.iter().any(|s| matches!(s,
            Step::Bind { src, dst, access: Access::ReadOnly, .. }
                if src == Path::new("/data") && dst == Path::new("/home/alice/.gitconfig2"))));
    }

    #[test]
    fn missing_required_is_an_error_and_optional_is_skipped() {
        let err = build(&profile(&["/nope"], &[], &[]), &ctx(), &host()).unwrap_err();
        assert!(matches!(err, PlanError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("/nope"));
        let plan = build(&profile(&["-/nope"], &[], &[]), &ctx(), &host()).unwrap();
        assert!(!plan.steps.iter().any(|s| s.dst() == Path::new("/nope")));
    }

    #[test]
    fn root_proc_and_dev_are_refused() {
        for p in ["/", "/proc", "/dev/sda", "/proc/1/root"] {
            let h = host()
                .dir("/proc")
                .dir("/dev")
                .file("/dev/sda")
                .dir("/proc/1/root");
            let err = build(&profile(&[p], &[], &[]), &ctx(), &h).unwrap_err();
            assert!(matches!(err, PlanError::Forbidden { .. }), "{p}: {err}");
        }
    }

    #[test]
    fn home_is_tmpfs_below_its_binds_and_workspace() {
        let plan = build(
            &profile(&["/usr", "-~/.gitconfig"], &[], &[]),
            &ctx(),
            &host(),
        )
        .unwrap();
        let pos = |p: &str| {
            plan.steps
                .iter()
                .position(|s| s.dst() == Path::new(p))
                .unwrap_or_else(|| panic!("{p} not in plan"))
        };
        assert!(matches!(
            plan.steps[pos("/home/alice")],
            Step::Tmpfs { mode: 0o700, .. }
        ));
        assert!(pos("/home/alice") < pos("/home/alice/.gitconfig"));
        assert!(pos("/home/alice") < pos("/home/alice/proj"));
        assert!(matches!(
            plan.steps[pos("/home/alice/proj")],
            Step::Bind {
                access: Access::ReadWrite,
                ..
            }
        ));
    }

    #[test]
    fn masks_apply_over_binds_and_skip_absent() {
        let plan = build(
            &profile(&["/etc"], &["/etc/shadow", "/etc/ssh", "/etc/absent"], &[]),
            &ctx(),
            &host(),
        )
        .unwrap();
        let etc = plan
            .steps
            .iter()
            .position(|s| s.dst() == Path::new("/etc"))
            .unwrap();
        let shadow = plan
            .steps
            .iter()
            .position(|s| {
                *s == Step::Mask {
                    at: "/etc/shadow".into(),
                    kind: Kind::File,
                }
            })
            .unwrap();
        assert!(etc < shadow);
        assert!(plan.steps.contains(&Step::Mask {
            at: "/etc/ssh".into(),
            kind: Kind::Dir
        }));
        assert!(!plan
            .steps
            .iter()
            .any(|s| s.dst() == Path::new("/etc/absent")));
    }

    #[test]
    fn protected_paths_are_read_only_and_ancestors_pinned() {
        let plan = build(
            &profile(&[], &[], &[".git/hooks", ".git/config", ".envrc"]),
            &ctx(),
            &host(),
        )
        .unwrap();
        let ws = PathBuf::from("/home/alice/proj");
        let find = |p: &str| {
            plan.steps
                .iter()
                .find(|s| s.dst() == ws.join(p))
                .cloned()
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        assert!(matches!(
            find(".git/hooks"),
            Step::Bind {
                access: Access::ReadOnly,
                kind: Kind::Dir,
                beneath: Some(_),
                ..
            }
        ));
        assert!(matches!(
            find(".git/config"),
            Step::Bind {
                access: Access::ReadOnly,
                kind: Kind::File,
                ..
            }
        ));
        assert!(matches!(
            find(".git"),
            Step::Bind {
                access: Access::ReadWrite,
                ..
            }
        ));
        let pins = plan
            .steps
            .iter()
            .filter(|s| s.dst() == ws.join(".git"))
            .count();
        assert_eq!(pins, 1, "ancestor pinned once");
        assert_eq!(plan.absent_protected, vec![ws.join(".envrc")]);
        // Workspace first, then the pin, then what it protects.
        let pos = |p: &Path| plan.steps.iter().position(|s| s.dst() == p).unwrap();
        assert!(pos(&ws) < pos(&ws.join(".git")));
        assert!(pos(&ws.join(".git")) < pos(&ws.join(".git/hooks")));
    }

    #[test]
    fn protected_symlink_fails_closed() {
        let h = host().link("/home/alice/proj/.envrc", "/home/alice/.ssh/id_rsa");
        let err = build(&profile(&[], &[], &[".envrc"]), &ctx(), &h).unwrap_err();
        assert!(matches!(err, PlanError::ProtectSymlink { .. }), "{err}");
        let h = FakeHost::default()
            .dir("/home")
            .dir("/home/alice")
            .dir("/home/alice/proj")
            .link("/home/alice/proj/.git", "/home/alice/.ssh");
        let err = build(&profile(&[], &[], &[".git/hooks"]), &ctx(), &h).unwrap_err();
        assert!(matches!(err, PlanError::ProtectSymlink { .. }), "{err}");
    }

    #[test]
    fn worktree_git_file_is_protected() {
        let h = FakeHost::default()
            .dir("/home")
            .dir("/home/alice")
            .dir("/home/alice/proj")
            .file("/home/alice/proj/.git");
        let plan = build(&profile(&[], &[], &[".git/hooks"]), &ctx(), &h).unwrap();
        assert!(plan.steps.iter().any(|s| matches!(s,
            Step::Bind { dst, access: Access::ReadOnly, kind: Kind::File, .. }
                if dst == Path::new("/home/alice/proj/.git"))));
    }

    #[test]
    fn read_only_workspace_has_no_protect_steps() {
        let mut p = profile(&[], &[], &[".git/hooks"]);
        p.filesystem.workspace = WorkspaceAccess::ReadOnly;
        let plan = build(&p, &ctx(), &host()).unwrap();
        let ws = plan
            .steps
            .iter()
            .find(|s| s.dst() == Path::new("/home/alice/proj"))
            .unwrap();
        assert!(matches!(
            ws,
            Step::Bind {
                access: Access::ReadOnly,
                ..
            }
        ));
        assert_eq!(
            plan.steps
                .iter()
                .filter(|s| matches!(
                    s,
                    Step::Bind {
                        beneath: Some(_),
                        ..
                    }
                ))
                .count(),
            0
        );
    }

    const BUNDLES: &[&str] = &[
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ];

    fn ca_host() -> FakeHost {
        host()
            .dir("/etc/ssl")
            .dir("/etc/ssl/certs")
            .file("/etc/ssl/certs/ca-certificates.crt")
            .dir("/etc/ssl/private")
            .link("/etc/ssl/cert.pem", "certs/ca-certificates.crt")
            .dir("/run")
            .file("/run/bundle.pem")
    }

    fn depths_sorted(plan: &Plan) -> bool {
        plan.steps
            .windows(2)
            .all(|w| depth(w[0].dst()) <= depth(w[1].dst()))
    }

    #[test]
    fn bundle_binds_over_existing_visible_files_on_top() {
        let mut plan = build(
            &profile(&["/usr", "/etc"], &["/etc/ssl/private", "/etc/shadow"], &[]),
            &ctx(),
            &ca_host(),
        )
        .unwrap();
        let before = plan.steps.len();
        let bound = overlay_file(&mut plan, Path::new("/run/bundle.pem"), BUNDLES, &ca_host());
        // Absent (/etc/pki) and symlinked (cert.pem: its target is bound
        // anyway) paths get nothing.
        assert_eq!(bound, [PathBuf::from("/etc/ssl/certs/ca-certificates.crt")]);
        assert_eq!(plan.steps.len(), before + 1);
        let pos = |p: &str| {
            plan.steps
                .iter()
                .position(|s| s.dst() == Path::new(p))
                .unwrap()
        };
        let at = pos("/etc/ssl/certs/ca-certificates.crt");
        assert_eq!(
            plan.steps[at],
            Step::Bind {
                src: "/run/bundle.pem".into(),
                dst: "/etc/ssl/certs/ca-certificates.crt".into(),
                access: Access::ReadOnly,
                kind: Kind::File,
                beneath: None,
            }
        );
        assert!(pos("/etc") < at && pos("/etc/ssl/private") < at);
        assert!(depths_sorted(&plan));
        // Overlaid once only: the bundle is not the host's file any more.
        let mut again = plan.clone();
        assert!(overlay_file(&mut again, Path::new("/run/x.pem"), BUNDLES, &ca_host()).is_empty());
        assert_eq!(again, plan);
        // The same path named twice: one bind.
        let mut plan2 = build(&profile(&["/etc"], &[], &[]), &ctx(), &ca_host()).unwrap();
        let again = overlay_file(
            &mut plan2,
            Path::new("/run/bundle.pem"),
            &[
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc//ssl/certs/ca-certificates.crt",
            ],
            &ca_host(),
        );
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn bundle_respects_masks_and_invisible_paths() {
        let h = ca_host();
        // The profile hides the directory: the mask wins.
        let mut plan = build(&profile(&["/usr", "/etc"], &["/etc/ssl"], &[]), &ctx(), &h).unwrap();
        let steps = plan.steps.clone();
        assert!(overlay_file(&mut plan, Path::new("/run/bundle.pem"), BUNDLES, &h).is_empty());
        assert_eq!(plan.steps, steps);
        // Or the file itself.
        let mut plan = build(
            &profile(&["/etc"], &["/etc/ssl/certs/ca-certificates.crt"], &[]),
            &ctx(),
            &h,
        )
        .unwrap();
        assert!(overlay_file(&mut plan, Path::new("/run/bundle.pem"), BUNDLES, &h).is_empty());
        // /etc not visible at all: nothing to overlay.
        let mut plan = build(&profile(&["/usr"], &[], &[]), &ctx(), &h).unwrap();
        assert!(overlay_file(&mut plan, Path::new("/run/bundle.pem"), BUNDLES, &h).is_empty());
        // A tmpfs over the directory.
        let mut p = profile(&["/etc"], &[], &[]);
        p.filesystem.tmpfs.push(spec("/etc/ssl"));
        let mut plan = build(&p, &ctx(), &h).unwrap();
        assert!(overlay_file(&mut plan, Path::new("/run/bundle.pem"), BUNDLES, &h).is_empty());
    }

    #[test]
    fn bundle_path_through_a_symlinked_directory_is_skipped() {
        // /etc/ssl/certs -> /usr/share/certs: walking it inside would go
        // through a symlink.
        let h = host()
            .dir("/etc/ssl")
            .link("/etc/ssl/certs", "/usr/share/certs")
            // lstat follows the symlinked directory, as the real one does.
            .file("/etc/ssl/certs/ca-certificates.crt")
            .dir("/usr/share")
            .dir("/usr/share/certs")
            .file("/usr/share/certs/ca-certificates.crt")
            .file("/run/bundle.pem");
        let mut plan = build(&profile(&["/usr", "/etc"], &[], &[]), &ctx(), &h).unwrap();
        assert!(overlay_file(&mut plan, Path::new("/run/bundle.pem"), BUNDLES, &h).is_empty());
    }
}
