//! cgroup limits: where moat can put a run's group on this machine, which
//! files carry each limit, and what the events files say afterwards. Plain
//! data and parsing, unit-tested without a kernel; the file system work is
//! in `sandbox::cgroup`.
//!
//! # Why not the `cgroups-rs` crate
//!
//! The issue named `cgroups-rs`; moat writes cgroupfs directly instead
//! (mkdir, a few files, rmdir), because:
//!
//! - cgroups-rs 0.5 decides v1 or v2 once for the whole machine. moat decides
//!   per controller, from where the kernel actually mounted it: on a hybrid
//!   host the limit controllers are v1 while `/sys/fs/cgroup/unified` is
//!   cgroup2 (holding few controllers or none), and a controller lives on
//!   exactly one of them. (The crate's choice happens to match on such a
//!   host; it has no answer for a mix.)
//! - It assumes the hierarchy's root is ours to create groups in. Rootless
//!   moat must instead find the subtree delegated to the caller (below), and
//!   tell the user why there is none; the crate has no notion of delegation.
//! - moat needs only a dozen files (listed in [`run_steps`] and [`probes`]).
//!   Keeping them as plain data here lets unit tests check the exact writes
//!   for v1, v2 and delegated v2 on a hybrid test machine, which could not
//!   exercise the crate's pure-v2 code at all.
//!
//! # Where a run's group goes
//!
//! For each controller moat needs (memory, pids, cpu), the hierarchy that
//! carries it is found in `/proc/self/mountinfo`: a v1 mount lists it in its
//! options, the cgroup2 mount lists it in `cgroup.controllers`. In that
//! hierarchy the run gets `BASE/moat/RUN`, where BASE is:
//!
//! - the hierarchy's root, when the caller may write it (root): e.g.
//!   `/sys/fs/cgroup/memory/moat/RUN` on v1, `/sys/fs/cgroup/moat/RUN` on v2
//!   (the root cgroup is exempt from v2's no-internal-process rule, so it can
//!   enable controllers for `moat/` while it holds processes);
//! - otherwise the *parent* of the caller's own group, when it is delegated
//!   to the caller. Not the caller's group itself: moat runs in it (usually
//!   with the user's shell beside it), and on v2 a group that holds
//!   processes cannot enable controllers for its children. The parent
//!   normally holds none of its own (moat checks before it enables
//!   anything there), so moat can enable controllers in it and add
//!   `moat/RUN` beside the caller's group. Moving init from the caller's
//!   group into `moat/RUN` needs write access to `cgroup.procs` of their
//!   common ancestor, which is that parent. For
//!   `systemd-run --user --scope moat exec ...` the caller's group is a
//!   scope in `user@UID.service/app.slice`, and both belong to the user,
//!   because user@.service has `Delegate=yes`.
//!
//! The supervisor moves init into the run's group before init starts
//! building the sandbox, so everything inside is limited from its first
//! instruction, and init then makes its cgroup namespace rooted there. The
//! supervisor itself stays where the caller started it. As root the run's
//! group is outside the caller's own group (like Docker's), so a limit on
//! the caller's group does not cover the sandbox; the profile's does.
//!
//! `memory` is the run's whole footprint: swap is capped at the same figure
//! (v1 `memory.memsw.limit_in_bytes`) or at zero (v2 `memory.swap.max`)
//! where the kernel accounts it, so a limited run cannot thrash the host's
//! swap instead of being stopped.

use crate::profile::Limits;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Pure cgroup v2: a cgroup2 mount and no v1 controller mounts.
    V2,
    /// v1 controller mounts only.
    V1,
    /// v1 controller mounts beside a cgroup2 mount (usually
    /// `/sys/fs/cgroup/unified`, holding few or no controllers). moat uses
    /// each controller where the kernel mounted it: here, the v1 ones.
    Hybrid,
    /// No cgroup file system found.
    None,
}

/// A controller moat sets limits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    /// The kernel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Version {
    V1,
    V2,
}

impl Version {
    fn label(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// Where one hierarchy's share of a run's group goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    pub version: Version,
    /// The directory that holds `moat/`.
    pub base: PathBuf,
    /// The controllers moat limits through this hierarchy.
    pub controllers: Vec<Controller>,
    /// Whether BASE is the hierarchy's root (moat runs as root) rather than
    /// a group delegated to the caller.
    pub at_root: bool,
}

/// Whether limits can be enforced for this caller, and if not why and how
/// to fix it. Used by `moat exec` and `moat doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Availability {
    pub layout: Layout,
    /// Every controller asked for has a place (see [`Availability::sites`]).
    pub limits_available: bool,
    /// One line: where the run's group goes, or why limits are unavailable.
    pub detail: String,
    /// How to make limits available, when they are not.
    pub fix: Option<String>,
    /// Where each available controller's group goes.
    pub sites: Vec<Site>,
    /// Controllers asked for that have no place, each with the reason.
    pub missing: Vec<(Controller, String)>,
}

impl Availability {
    pub fn has(&self, c: Controller) -> bool {
        self.sites.iter().any(|s| s.controllers.contains(&c))
    }
}

/// What the probe needs from the machine. The real one reads /proc and
/// cgroupfs; tests fake it.
pub trait CgroupHost {
    /// `/proc/self/mountinfo`.
    fn mountinfo(&self) -> String;
    /// `/proc/self/cgroup`.
    fn own_cgroup(&self) -> String;
    /// A file's contents, `None` if it cannot be read.
    fn read(&self, path: &Path) -> Option<String>;
    /// Whether the caller may write `path` (a file, or a directory to
    /// create entries in), by its effective ids.
    fn writable(&self, path: &Path) -> bool;
}

pub struct RealHost;

impl CgroupHost for RealHost {
    fn mountinfo(&self) -> String {
        std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
    }
    fn own_cgroup(&self) -> String {
        std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default()
    }
    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }
    fn writable(&self, path: &Path) -> bool {
        nix::unistd::faccessat(
            nix::fcntl::AT_FDCWD,
            path,
            nix::unistd::AccessFlags::W_OK,
            nix::fcntl::AtFlags::AT_EACCESS,
        )
        .is_ok()
    }
}

/// A mounted cgroup hierarchy, from one line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub version: Version,
    pub mountpoint: PathBuf,
    /// The group of the hierarchy mounted there (`/` unless the mount is of
    /// a subtree, as in containers).
    pub root: String,
    /// v1: the controllers from the mount options; v2: empty (they are in
    /// `cgroup.controllers`).
    pub controllers: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts in mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    // Options v1 hierarchies carry besides controller names.
    const NOT_CONTROLLERS: &[&str] = &[
        "rw",
        "ro",
        "noprefix",
        "clone_children",
        "xattr",
        "cpuset_v2_mode",
        "favordynmods",
    ];
    let mut mounts = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let version = match r[0] {
            "cgroup" => Version::V1,
            "cgroup2" => Version::V2,
            _ => continue,
        };
        let controllers = match version {
            Version::V2 => Vec::new(),
            Version::V1 => r[2]
                .split(',')
                .filter(|o| !o.contains('=') && !NOT_CONTROLLERS.contains(o) && !o.is_empty())
                .map(str::to_string)
                .collect(),
        };
        mounts.push(Mount {
            version,
            mountpoint: PathBuf::from(unescape(l[4])),
            root: unescape(l[3]),
            controllers,
        });
    }
    mounts
}

/// One line of `/proc/PID/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// v1: the hierarchy's controllers (and `name=` entries); v2: empty.
    pub controllers: Vec<String>,
    /// The group, relative to the hierarchy's root.
    pub path: String,
    pub version: Version,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let version = if id == "0" && ctrls.is_empty() {
                Version::V2
            } else {
                Version::V1
            };
            Some(Membership {
                controllers: ctrls
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
                version,
            })
        })
        .collect()
}

/// `key value` lines (memory.events, pids.events, memory.oom_control,
/// cpu.stat): the value of `key`.
pub fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// A single number (memory.peak, memory.max_usage_in_bytes).
pub fn single_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The directory of group `path` (relative to the hierarchy) when the
/// hierarchy's `root` is mounted at `mountpoint`; `None` when the group is
/// outside the mounted subtree.
fn group_dir(m: &Mount, path: &str) -> Option<PathBuf> {
    let root = m.root.trim_end_matches('/');
    let rest = if root.is_empty() {
        path
    } else if path == root {
        ""
    } else {
        let r = path.strip_prefix(root)?;
        if !r.starts_with('/') {
            return None;
        }
        r
    };
    let rest = rest.trim_start_matches('/');
    if rest.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if rest.is_empty() {
        m.mountpoint.clone()
    } else {
        m.mountpoint.join(rest)
    })
}

/// The v2 mount moat uses: `/sys/fs/cgroup` if cgroup2 is mounted there,
/// else the first cgroup2 mount.
fn v2_mount(mounts: &[Mount]) -> Option<&Mount> {
    let v2 = || mounts.iter().filter(|m| m.version == Version::V2);
    v2().find(|m| m.mountpoint == Path::new("/sys/fs/cgroup"))
        .or_else(|| v2().next())
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn join_names(cs: &[Controller]) -> String {
    let names: Vec<&str> = cs.iter().map(|c| c.name()).collect();
    match names.len() {
        0 => String::new(),
        1 => names[0].to_string(),
        n => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

/// Where `wanted` can go for this caller on `host`.
pub fn assess(host: &dyn CgroupHost, wanted: &[Controller]) -> Availability {
    let mounts = parse_mountinfo(&host.mountinfo());
    let own = parse_proc_cgroup(&host.own_cgroup());
    let v1_limit_mounts = mounts.iter().any(|m| {
        m.version == Version::V1
            && Controller::ALL
                .iter()
                .any(|c| m.controllers.iter().any(|x| x == c.name()))
    });
    let v2 = v2_mount(&mounts);
    let layout = match (v1_limit_mounts, v2.is_some()) {
        (true, true) => Layout::Hybrid,
        (true, false) => Layout::V1,
        (false, true) => Layout::V2,
        (false, false) => Layout::None,
    };
    let v2_controllers = v2
        .and_then(|m| host.read(&m.mountpoint.join("cgroup.controllers")))
        .map(|t| words(&t))
        .unwrap_or_default();

    let mut sites: Vec<Site> = Vec::new();
    let mut missing: Vec<(Controller, String)> = Vec::new();
    // The base is found once per hierarchy (by mountpoint); whether each
    // controller can be enabled there is asked per controller.
    let mut bases: Vec<(PathBuf, BaseResult)> = Vec::new();
    // Controllers refused because the caller's group is not delegated,
    // with that group: the usual case, summed up in one phrase.
    let mut undelegated: Vec<(Controller, String)> = Vec::new();

    for &c in wanted {
        let v1 = mounts
            .iter()
            .find(|m| m.version == Version::V1 && m.controllers.iter().any(|x| x == c.name()));
        let (mount, member) = match (v1, v2) {
            (Some(m), _) => (
                m,
                own.iter().find(|o| {
                    o.version == Version::V1 && o.controllers.iter().any(|x| x == c.name())
                }),
            ),
            (None, Some(m)) if v2_controllers.iter().any(|x| x == c.name()) => {
                (m, own.iter().find(|o| o.version == Version::V2))
            }
            _ => {
                missing.push((c, format!("the {} controller is not mounted", c.name())));
                continue;
            }
        };
        let base = match bases.iter().find(|(p, _)| p == &mount.mountpoint) {
            Some((_, r)) => r.clone(),
            None => {
                let r = find_base(host, mount, member, c);
                bases.push((mount.mountpoint.clone(), r.clone()));
                r
            }
        };
        let placed = match base {
            Ok((base, at_root)) => {
                check_controller(host, mount.version, &base, at_root, c).map(|()| (base, at_root))
            }
            Err(Refusal::NotDelegated { group, why }) => {
                undelegated.push((c, group.clone()));
                Err(format!(
                    "your cgroup {group} is not delegated to you ({why})"
                ))
            }
            Err(Refusal::Other(e)) => Err(e),
        };
        match placed {
            Ok((base, at_root)) => match sites.iter_mut().find(|s| s.base == base) {
                Some(site) => site.controllers.push(c),
                None => sites.push(Site {
                    version: mount.version,
                    base,
                    controllers: vec![c],
                    at_root,
                }),
            },
            Err(e) => missing.push((c, e)),
        }
    }

    let limits_available = missing.is_empty() && !wanted.is_empty();
    let detail = if wanted.is_empty() {
        "no limits asked for".to_string()
    } else if missing.is_empty() {
        let dirs: Vec<String> = sites
            .iter()
            .map(|s| format!("{}", s.base.join("moat").display()))
            .collect();
        format!(
            "{}: run groups go under {}",
            join_names(wanted),
            dirs.join(", ")
        )
    } else if undelegated.len() == missing.len() && distinct(&undelegated) > 1 {
        let mut groups: Vec<&str> = Vec::new();
        for (_, g) in &undelegated {
            if !groups.contains(&g.as_str()) {
                groups.push(g);
            }
        }
        format!(
            "cgroup {}: your cgroups {} are not delegated to you",
            if layout == Layout::V2 { "v2" } else { "v1" },
            match groups.len() {
                n if n > 1 => format!("{} and {}", groups[..n - 1].join(", "), groups[n - 1]),
                _ => groups.concat(),
            }
        )
    } else {
        // The reasons, each once, with the controllers they apply to.
        let mut reasons: Vec<(Vec<Controller>, String)> = Vec::new();
        for (c, r) in &missing {
            match reasons.iter_mut().find(|(_, x)| x == r) {
                Some((cs, _)) => cs.push(*c),
                None => reasons.push((vec![*c], r.clone())),
            }
        }
        reasons
            .iter()
            .map(|(cs, r)| {
                // These name their controller already.
                if r.starts_with("the ") || r.starts_with("your cgroup ") {
                    r.clone()
                } else {
                    format!("{}: {r}", join_names(cs))
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let fix = if missing.is_empty() || wanted.is_empty() {
        None
    } else if missing.iter().all(|(_, r)| r.contains("not mounted")) {
        Some(
            "mount the cgroup file system (cgroup2 at /sys/fs/cgroup, or the v1 controllers)"
                .into(),
        )
    } else if layout == Layout::V2 {
        Some(
            "run moat from a cgroup whose parent is delegated to you, e.g. `systemd-run --user --scope moat exec ...` in a systemd user session, or run it as root"
                .into(),
        )
    } else {
        Some(
            "run moat as root; cgroup v1 has no delegation to ordinary users (on a pure cgroup v2 host, `systemd-run --user --scope moat exec ...` works rootless)"
                .into(),
        )
    };
    Availability {
        layout,
        limits_available,
        detail,
        fix,
        sites,
        missing,
    }
}

/// How many different groups the list names.
fn distinct(groups: &[(Controller, String)]) -> usize {
    let mut seen: Vec<&str> = Vec::new();
    for (_, g) in groups {
        if !seen.contains(&g.as_str()) {
            seen.push(g);
        }
    }
    seen.len()
}

/// Why a hierarchy has no place for the run's group.
#[derive(Debug, Clone)]
enum Refusal {
    /// The caller's group (as `CONTROLLER:PATH`) is not the caller's to
    /// manage, and why.
    NotDelegated {
        group: String,
        why: String,
    },
    Other(String),
}

/// BASE and whether it is the hierarchy's root, or why there is none.
type BaseResult = Result<(PathBuf, bool), Refusal>;

/// Finds BASE in one hierarchy (see the module doc), and whether it is the
/// hierarchy's root. `c` only names the hierarchy in messages.
fn find_base(
    host: &dyn CgroupHost,
    m: &Mount,
    member: Option<&Membership>,
    c: Controller,
) -> BaseResult {
    let v = m.version;
    if host.writable(&m.mountpoint) && m.root == "/" {
        return Ok((m.mountpoint.clone(), true));
    }
    let member = member.ok_or_else(|| {
        Refusal::Other(format!(
            "this process is in no {} group of {}",
            v.label(),
            m.mountpoint.display()
        ))
    })?;
    let own = group_dir(m, &member.path).ok_or_else(|| {
        Refusal::Other(format!(
            "your cgroup {} lies outside the mounted {}",
            member.path,
            m.mountpoint.display()
        ))
    })?;
    // v1 groups are per controller; v2 has one for all.
    let shown = match v {
        Version::V1 => format!("{}:{}", c.name(), member.path),
        Version::V2 => member.path.clone(),
    };
    let not_delegated = |why: String| Refusal::NotDelegated {
        group: shown.clone(),
        why,
    };
    if own == m.mountpoint {
        return Err(not_delegated(format!(
            "it is the root of {}, which you may not write",
            m.mountpoint.display()
        )));
    }
    let parent = own.parent().unwrap_or(&m.mountpoint).to_path_buf();
    if !host.writable(&parent) || !host.writable(&parent.join("cgroup.procs")) {
        return Err(not_delegated(format!(
            "{} is not writable",
            parent.display()
        )));
    }
    Ok((parent, false))
}

/// v2: whether `c` can be enabled for BASE's children. (On v1 a
/// hierarchy's controllers apply to every group in it.)
fn check_controller(
    host: &dyn CgroupHost,
    v: Version,
    base: &Path,
    at_root: bool,
    c: Controller,
) -> Result<(), String> {
    if v == Version::V1 {
        return Ok(());
    }
    let available = host
        .read(&base.join("cgroup.controllers"))
        .map(|t| words(&t))
        .unwrap_or_default();
    if !available.iter().any(|x| x == c.name()) {
        return Err(format!(
            "the {} controller is not delegated to {}",
            c.name(),
            base.display()
        ));
    }
    let subtree = base.join("cgroup.subtree_control");
    let enabled = host.read(&subtree).map(|t| words(&t)).unwrap_or_default();
    if enabled.iter().any(|x| x == c.name()) {
        return Ok(());
    }
    if !host.writable(&subtree) {
        return Err(format!(
            "the {} controller is not enabled in {}, which you may not write",
            c.name(),
            subtree.display()
        ));
    }
    // The no-internal-process rule; the root group is exempt.
    let busy = host
        .read(&base.join("cgroup.procs"))
        .map(|t| !t.trim().is_empty())
        .unwrap_or(false);
    if busy && !at_root {
        return Err(format!(
            "{} holds processes, so it cannot enable the {} controller for its children",
            base.display(),
            c.name()
        ));
    }
    Ok(())
}

/// Where each controller moat uses can go: for `moat doctor`.
pub fn probe() -> Availability {
    probe_controllers(&Controller::ALL)
}

pub fn probe_controllers(wanted: &[Controller]) -> Availability {
    assess(&RealHost, wanted)
}

/// The controllers a profile's limits need.
pub fn wanted(limits: &Limits) -> Vec<Controller> {
    let mut w = Vec::new();
    if limits.memory.is_some() {
        w.push(Controller::Memory);
    }
    if limits.pids.is_some() {
        w.push(Controller::Pids);
    }
    if limits.cpu_millis.is_some() {
        w.push(Controller::Cpu);
    }
    w
}

/// What the supervisor enforces for one run, decided before any namespace
/// exists. A cgroup limit is `Some` only when it has a place in `sites`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub sites: Vec<Site>,
    pub memory: Option<u64>,
    pub pids: Option<u64>,
    pub cpu_millis: Option<u64>,
    /// Wall clock, enforced by the supervisor itself (no cgroup needed).
    pub timeout_ms: Option<u64>,
}

impl Plan {
    /// Whether the run needs a group at all.
    pub fn needs_group(&self) -> bool {
        !self.sites.is_empty()
    }
}

/// The plan, and a warning line to print when some limit is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub plan: Plan,
    pub warning: Option<String>,
}

/// Turns the profile's limits and what the machine offers into the run's
/// plan. Without a place for a limit: a warning (the run goes on without
/// it), or an error when the profile says `required = true`.
pub fn decide(limits: &Limits, avail: &Availability) -> Result<Decision, String> {
    let wanted = wanted(limits);
    let mut plan = Plan {
        timeout_ms: limits.timeout_ms,
        ..Plan::default()
    };
    if wanted.is_empty() {
        return Ok(Decision {
            plan,
            warning: None,
        });
    }
    let lost: Vec<Controller> = wanted.iter().copied().filter(|c| !avail.has(*c)).collect();
    let fix = avail
        .fix
        .as_deref()
        .map(|f| format!(" Fix: {f}."))
        .unwrap_or_default();
    let what = if lost.len() == wanted.len() {
        "cgroup limits are".to_string()
    } else if lost.len() == 1 {
        format!("the {} limit is", lost[0].name())
    } else {
        format!("the {} limits are", join_names(&lost))
    };
    if !lost.is_empty() && limits.required {
        return Err(format!(
            "the profile requires its limits (limits.required = true), but {what} not available to this user: {}.{fix}",
            avail.detail
        ));
    }
    let warning = (!lost.is_empty()).then(|| {
        format!(
            "{what} not available to this user ({}); running without {}.{fix}",
            avail.detail,
            if lost.len() == 1 && lost.len() < wanted.len() {
                "it"
            } else {
                "them"
            }
        )
    });
    plan.sites = avail
        .sites
        .iter()
        .filter_map(|s| {
            let cs: Vec<Controller> = s
                .controllers
                .iter()
                .copied()
                .filter(|c| wanted.contains(c))
                .collect();
            (!cs.is_empty()).then(|| Site {
                controllers: cs,
                ..s.clone()
            })
        })
        .collect();
    let has = |c: Controller| plan.sites.iter().any(|s| s.controllers.contains(&c));
    plan.memory = limits.memory.filter(|_| has(Controller::Memory));
    plan.pids = limits.pids.filter(|_| has(Controller::Pids));
    plan.cpu_millis = limits.cpu_millis.filter(|_| has(Controller::Cpu));
    Ok(Decision { plan, warning })
}

/// [`decide`] against this machine. Probes only when the profile sets a
/// cgroup limit.
pub fn resolve(limits: &Limits) -> Result<Decision, String> {
    let wanted = wanted(limits);
    let avail = if wanted.is_empty() {
        assess_nothing()
    } else {
        probe_controllers(&wanted)
    };
    decide(limits, &avail)
}

fn assess_nothing() -> Availability {
    Availability {
        layout: Layout::None,
        limits_available: false,
        detail: "no limits asked for".into(),
        fix: None,
        sites: Vec::new(),
        missing: Vec::new(),
    }
}

/// One file system operation in creating a run's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A directory that may already exist (moat's parent group).
    MkdirShared(PathBuf),
    /// The run's own group: must not exist yet.
    MkdirRun(PathBuf),
    /// v2: enable these controllers for the children of the group whose
    /// `cgroup.subtree_control` this is, unless already enabled.
    Enable(PathBuf, Vec<Controller>),
    /// Write `value` to the file; when `optional`, a missing file is fine
    /// (e.g. memory.memsw.* without swap accounting).
    Write {
        path: PathBuf,
        value: String,
        optional: bool,
    },
}

/// The CFS period moat uses: 100 ms, the kernel's default.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The CPU quota per period for `millis` thousandths of a core. The kernel
/// refuses quotas under 1 ms.
pub fn cpu_quota_us(millis: u64) -> u64 {
    (millis.saturating_mul(CPU_PERIOD_US) / 1000).max(1000)
}

/// The steps that create the run's groups (one per site), in order, and
/// the run directories (to attach init to, read and remove).
pub fn run_steps(plan: &Plan, run: &str) -> (Vec<Step>, Vec<PathBuf>) {
    let mut steps = Vec::new();
    let mut dirs = Vec::new();
    for site in &plan.sites {
        let parent = site.base.join("moat");
        let dir = parent.join(run);
        if site.version == Version::V2 {
            steps.push(Step::Enable(
                site.base.join("cgroup.subtree_control"),
                site.controllers.clone(),
            ));
        }
        steps.push(Step::MkdirShared(parent.clone()));
        if site.version == Version::V2 {
            steps.push(Step::Enable(
                parent.join("cgroup.subtree_control"),
                site.controllers.clone(),
            ));
        }
        steps.push(Step::MkdirRun(dir.clone()));
        let write = |file: &str, value: String, optional: bool| Step::Write {
            path: dir.join(file),
            value,
            optional,
        };
        for c in &site.controllers {
            match (c, site.version) {
                (Controller::Memory, v) => {
                    let Some(bytes) = plan.memory else { continue };
                    if v == Version::V1 {
                        // memsw (memory + swap) may not be below the memory
                        // limit, so it goes second; equal means no swap.
                        steps.push(write("memory.limit_in_bytes", bytes.to_string(), false));
                        steps.push(write(
                            "memory.memsw.limit_in_bytes",
                            bytes.to_string(),
                            true,
                        ));
                    } else {
                        steps.push(write("memory.max", bytes.to_string(), false));
                        // The limit is the run's whole footprint: no swap
                        // to spill into and thrash the host with.
                        steps.push(write("memory.swap.max", "0".into(), true));
                    }
                }
                (Controller::Pids, _) => {
                    let Some(n) = plan.pids else { continue };
                    steps.push(write("pids.max", n.to_string(), false));
                }
                (Controller::Cpu, v) => {
                    let Some(m) = plan.cpu_millis else { continue };
                    let quota = cpu_quota_us(m);
                    if v == Version::V1 {
                        steps.push(write("cpu.cfs_period_us", CPU_PERIOD_US.to_string(), false));
                        steps.push(write("cpu.cfs_quota_us", quota.to_string(), false));
                    } else {
                        steps.push(write("cpu.max", format!("{quota} {CPU_PERIOD_US}"), false));
                    }
                }
            }
        }
        dirs.push(dir);
    }
    (steps, dirs)
}

/// A counter read from the run's group after the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Processes the OOM killer killed in the group.
    OomKills,
    /// The group's peak memory use in bytes.
    MemoryPeak,
    /// Forks refused by the pids limit.
    PidsRefused,
}

/// The files each probe reads, for a plan's run directories (as returned
/// by [`run_steps`]).
pub fn probes(plan: &Plan, dirs: &[PathBuf]) -> Vec<(Probe, PathBuf)> {
    let mut out = Vec::new();
    for (site, dir) in plan.sites.iter().zip(dirs) {
        for c in &site.controllers {
            match (c, site.version) {
                (Controller::Memory, Version::V1) => {
                    out.push((Probe::OomKills, dir.join("memory.oom_control")));
                    out.push((Probe::MemoryPeak, dir.join("memory.max_usage_in_bytes")));
                }
                (Controller::Memory, Version::V2) => {
                    out.push((Probe::OomKills, dir.join("memory.events")));
                    out.push((Probe::MemoryPeak, dir.join("memory.peak")));
                }
                (Controller::Pids, _) => out.push((Probe::PidsRefused, dir.join("pids.events"))),
                (Controller::Cpu, _) => {}
            }
        }
    }
    out
}

/// Reads one probe's value from its file's text.
pub fn read_probe(p: Probe, text: &str) -> Option<u64> {
    match p {
        Probe::OomKills => flat_keyed(text, "oom_kill"),
        Probe::MemoryPeak => single_value(text),
        Probe::PidsRefused => flat_keyed(text, "max"),
    }
}

/// What the run's group saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Events {
    pub oom_kills: Option<u64>,
    pub memory_peak: Option<u64>,
    pub pids_refused: Option<u64>,
}

impl Events {
    pub fn set(&mut self, p: Probe, v: u64) {
        match p {
            Probe::OomKills => self.oom_kills = Some(v),
            Probe::MemoryPeak => self.memory_peak = Some(v),
            Probe::PidsRefused => self.pids_refused = Some(v),
        }
    }
}

/// `512 MiB`, `1.5 GiB`, `4096 bytes`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in UNITS {
        if n >= size {
            return if n % size == 0 {
                format!("{} {name}", n / size)
            } else {
                format!("{:.1} {name}", n as f64 / size as f64)
            };
        }
    }
    format!("{n} bytes")
}

/// `30s`, `10m`, `1h30m`, `1.5s`, `250ms`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms % 1000 != 0 {
        return format!("{}s", ms as f64 / 1000.0);
    }
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Exit status of a run the timeout ended, as timeout(1) uses.
pub const EXIT_TIMEOUT: i32 = 124;

/// The lines telling the user which limits ended or hindered the run.
/// `status` is the command's wait status when init reported it;
/// `killed_unreported` means init itself died by SIGKILL without
/// reporting (the OOM killer or the timeout took the whole sandbox).
pub fn ended_by(plan: &Plan, events: &Events, status: Option<i32>, timed_out: bool) -> Vec<String> {
    let mut lines = Vec::new();
    if timed_out {
        let t = plan.timeout_ms.map(format_duration_ms).unwrap_or_default();
        lines.push(format!(
            "the timeout ({t}) ended the run: moat killed the sandbox after {t} of wall-clock time (exit status {EXIT_TIMEOUT}, as with timeout(1))"
        ));
    }
    if let (Some(limit), Some(n)) = (plan.memory, events.oom_kills) {
        if n > 0 {
            let killed_cmd = match status {
                Some(s) => libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == libc::SIGKILL,
                None => !timed_out,
            };
            let what = if killed_cmd {
                "the command (SIGKILL, exit status 137)".to_string()
            } else if n == 1 {
                "a process in the sandbox".to_string()
            } else {
                format!("{n} processes in the sandbox")
            };
            lines.push(format!(
                "the memory limit ({}) was reached: the kernel killed {what}",
                format_bytes(limit)
            ));
        }
    }
    if let (Some(limit), Some(n)) = (plan.pids, events.pids_refused) {
        if n > 0 {
            lines.push(format!(
                "the pids limit ({limit}) refused {n} fork{}",
                if n == 1 { "" } else { "s" }
            ));
        }
    }
    lines
}

/// A run group's name: the supervisor's pid first, so that a later run can
/// tell a group whose supervisor is gone (killed before it could clean up).
pub fn run_name(pid: u32, nonce: u64) -> String {
    format!("{pid}-{nonce:x}")
}

/// The supervisor pid in a run group's name, if it is one of moat's.
pub fn run_name_pid(name: &str) -> Option<u32> {
    let (pid, nonce) = name.split_once('-')?;
    if nonce.is_empty() || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// This machine: hybrid, v1 controllers each on its own hierarchy.
    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/6627
1:cpu:/
0::/
";
    const V2_MOUNTINFO: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const USER: &str = "/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope";

    #[derive(Default)]
    struct Fake {
        mountinfo: String,
        cgroup: String,
        files: BTreeMap<PathBuf, String>,
        writable: BTreeSet<PathBuf>,
        /// Root: may write everything.
        root: bool,
    }

    impl Fake {
        fn file(mut self, p: &str, text: &str) -> Self {
            self.files.insert(p.into(), text.into());
            self
        }
        fn w(mut self, p: &str) -> Self {
            self.writable.insert(p.into());
            self
        }
        fn root(mut self) -> Self {
            self.root = true;
            self
        }
    }

    impl CgroupHost for Fake {
        fn mountinfo(&self) -> String {
            self.mountinfo.clone()
        }
        fn own_cgroup(&self) -> String {
            self.cgroup.clone()
        }
        fn read(&self, path: &Path) -> Option<String> {
            self.files.get(path).cloned()
        }
        fn writable(&self, path: &Path) -> bool {
            self.root || self.writable.contains(path)
        }
    }

    fn hybrid() -> Fake {
        Fake {
            mountinfo: HYBRID_MOUNTINFO.into(),
            cgroup: HYBRID_CGROUP.into(),
            ..Fake::default()
        }
        .file("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n")
    }

    fn v2(cgroup: &str) -> Fake {
        Fake {
            mountinfo: V2_MOUNTINFO.into(),
            cgroup: format!("0::{cgroup}\n"),
            ..Fake::default()
        }
        .file(
            "/sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
    }

    fn limits(memory: bool, pids: bool, cpu: bool) -> Limits {
        Limits {
            memory: memory.then_some(512 << 20),
            pids: pids.then_some(64),
            cpu_millis: cpu.then_some(1500),
            timeout_ms: Some(30_000),
            required: false,
        }
    }

    #[test]
    fn mountinfo_finds_v1_controllers_and_the_v2_mount() {
        let m = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(m.len(), 6, "{m:?}");
        assert_eq!(m[0].controllers, ["cpu"]);
        assert_eq!(m[2].mountpoint, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(
            m[4].controllers,
            Vec::<String>::new(),
            "name= and xattr are not controllers"
        );
        assert_eq!(m[5].version, Version::V2);
        let co = parse_mountinfo(
            "1 2 0:3 /docker/ab /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n",
        );
        assert_eq!(co[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(co[0].root, "/docker/ab");
        let esc = parse_mountinfo("1 2 0:3 / /mnt/a\\040b rw - cgroup2 none rw\n");
        assert_eq!(esc[0].mountpoint, Path::new("/mnt/a b"));
    }

    #[test]
    fn proc_cgroup_lines() {
        let m = parse_proc_cgroup(HYBRID_CGROUP);
        assert_eq!(m.len(), 5);
        assert_eq!(m[2].controllers, ["memory"]);
        assert_eq!(m[2].path, "/process_api/6627");
        assert_eq!(m[4].version, Version::V2);
        assert_eq!(m[4].path, "/");
    }

    #[test]
    fn root_on_hybrid_uses_each_v1_hierarchy() {
        let host = hybrid().root();
        let a = assess(&host, &Controller::ALL);
        assert_eq!(a.layout, Layout::Hybrid);
        assert!(a.limits_available, "{a:?}");
        let bases: Vec<_> = a.sites.iter().map(|s| s.base.clone()).collect();
        assert_eq!(
            bases,
            [
                PathBuf::from("/sys/fs/cgroup/memory"),
                "/sys/fs/cgroup/pids".into(),
                "/sys/fs/cgroup/cpu".into()
            ]
        );
        assert!(a
            .sites
            .iter()
            .all(|s| s.version == Version::V1 && s.at_root));
        assert!(
            a.detail.contains("/sys/fs/cgroup/memory/moat"),
            "{}",
            a.detail
        );
    }

    #[test]
    fn rootless_on_hybrid_is_not_delegated() {
        let a = assess(&hybrid(), &[Controller::Pids, Controller::Memory]);
        assert!(!a.limits_available);
        assert!(a.sites.is_empty());
        assert_eq!(a.missing.len(), 2);
        assert!(
            a.detail.contains("memory:/process_api/6627"),
            "{}",
            a.detail
        );
        assert_eq!(
            a.detail,
            "cgroup v1: your cgroups pids:/ and memory:/process_api/6627 are not delegated to you"
        );
        // Each controller keeps its full reason (for `moat doctor`).
        assert_eq!(a.missing[1].0, Controller::Memory);
        assert!(
            a.missing[1]
                .1
                .contains("/sys/fs/cgroup/memory/process_api is not writable"),
            "{:?}",
            a.missing
        );
        assert!(a.fix.as_deref().unwrap().contains("as root"));
        // One group: the reason in full.
        let a = assess(&hybrid(), &[Controller::Pids]);
        assert_eq!(
            a.detail,
            "your cgroup pids:/ is not delegated to you (it is the root of /sys/fs/cgroup/pids, which you may not write)"
        );
    }

    #[test]
    fn v1_group_chowned_to_the_user_is_used() {
        let host = hybrid()
            .w("/sys/fs/cgroup/memory/process_api")
            .w("/sys/fs/cgroup/memory/process_api/cgroup.procs");
        let a = assess(&host, &[Controller::Memory]);
        assert!(a.limits_available, "{a:?}");
        assert_eq!(
            a.sites[0].base,
            Path::new("/sys/fs/cgroup/memory/process_api")
        );
        assert!(!a.sites[0].at_root);
    }

    #[test]
    fn pure_v2_as_root_uses_the_root() {
        let host = v2("/user.slice/user-0.slice/session-1.scope")
            .root()
            // The root group may hold processes and still enable controllers.
            .file("/sys/fs/cgroup/cgroup.procs", "1\n2\n")
            .file("/sys/fs/cgroup/cgroup.subtree_control", "memory\n");
        let a = assess(&host, &Controller::ALL);
        assert_eq!(a.layout, Layout::V2);
        assert!(a.limits_available, "{a:?}");
        assert_eq!(a.sites.len(), 1);
        assert_eq!(a.sites[0].base, Path::new("/sys/fs/cgroup"));
        assert_eq!(a.sites[0].controllers, Controller::ALL);
    }

    fn delegated_parent() -> String {
        format!("/sys/fs/cgroup{}", USER.rsplit_once('/').unwrap().0)
    }

    #[test]
    fn pure_v2_rootless_uses_the_delegated_parent() {
        let p = delegated_parent();
        let host = v2(USER)
            .w(&p)
            .w(&format!("{p}/cgroup.procs"))
            .w(&format!("{p}/cgroup.subtree_control"))
            .file(&format!("{p}/cgroup.controllers"), "cpu memory pids\n")
            .file(&format!("{p}/cgroup.subtree_control"), "memory pids\n")
            .file(&format!("{p}/cgroup.procs"), "");
        let a = assess(&host, &Controller::ALL);
        assert!(a.limits_available, "{a:?}");
        assert_eq!(a.sites[0].base, Path::new(&p));
        assert!(!a.sites[0].at_root);
    }

    #[test]
    fn pure_v2_rootless_reasons() {
        let p = delegated_parent();
        // Session scope: parent owned by root.
        let a = assess(&v2(USER), &Controller::ALL);
        assert!(!a.limits_available);
        // One group for all three controllers: said once.
        assert_eq!(
            a.detail,
            format!("your cgroup {USER} is not delegated to you ({p} is not writable)")
        );
        assert!(a
            .fix
            .as_deref()
            .unwrap()
            .contains("systemd-run --user --scope"));
        // Writable, but cpu not delegated to it.
        let base = v2(USER)
            .w(&p)
            .w(&format!("{p}/cgroup.procs"))
            .file(&format!("{p}/cgroup.controllers"), "memory pids\n")
            .file(&format!("{p}/cgroup.subtree_control"), "memory pids\n");
        let a = assess(&base, &[Controller::Memory, Controller::Cpu]);
        assert!(
            a.has(Controller::Memory) && !a.has(Controller::Cpu),
            "{a:?}"
        );
        assert!(
            a.detail.contains("the cpu controller is not delegated"),
            "{}",
            a.detail
        );
        // Controller available but not enabled, subtree_control read-only.
        let a = assess(&base, &[Controller::Cpu]);
        assert!(!a.limits_available);
        let host = base
            .file(&format!("{p}/cgroup.controllers"), "cpu memory pids\n")
            .w(&format!("{p}/cgroup.subtree_control"))
            .file(&format!("{p}/cgroup.procs"), "1234\n");
        let a = assess(&host, &[Controller::Cpu]);
        assert!(a.detail.contains("holds processes"), "{}", a.detail);
    }

    #[test]
    fn container_subtree_mount_maps_the_own_group() {
        let m = Mount {
            version: Version::V2,
            mountpoint: "/sys/fs/cgroup".into(),
            root: "/docker/ab".into(),
            controllers: vec![],
        };
        assert_eq!(
            group_dir(&m, "/docker/ab/x"),
            Some("/sys/fs/cgroup/x".into())
        );
        assert_eq!(group_dir(&m, "/docker/ab"), Some("/sys/fs/cgroup".into()));
        assert_eq!(group_dir(&m, "/docker/abc"), None);
        assert_eq!(group_dir(&m, "/other"), None);
    }

    #[test]
    fn no_cgroup_fs() {
        let a = assess(&Fake::default(), &[Controller::Pids]);
        assert_eq!(a.layout, Layout::None);
        assert!(a.detail.contains("not mounted"), "{}", a.detail);
    }

    fn avail_none() -> Availability {
        assess(&hybrid(), &Controller::ALL)
    }

    #[test]
    fn decide_warns_only_when_a_limit_is_set() {
        let d = decide(&limits(false, false, false), &avail_none()).unwrap();
        assert_eq!(d.warning, None);
        assert!(!d.plan.needs_group());
        assert_eq!(d.plan.timeout_ms, Some(30_000));
        let d = decide(&limits(false, true, false), &avail_none()).unwrap();
        let w = d.warning.unwrap();
        assert!(
            w.starts_with("cgroup limits are not available to this user (")
                && w.contains("); running without them. Fix: "),
            "{w}"
        );
        assert!(!w.contains('\n'));
        assert_eq!(d.plan.pids, None);
        assert_eq!(
            d.plan.timeout_ms,
            Some(30_000),
            "the timeout needs no cgroup"
        );
    }

    #[test]
    fn decide_refuses_when_required() {
        let mut l = limits(true, true, false);
        l.required = true;
        let e = decide(&l, &avail_none()).unwrap_err();
        assert!(e.contains("limits.required = true"), "{e}");
        assert!(e.contains("Fix: "), "{e}");
        // Required but nothing cgroup-backed asked for: fine.
        let mut l = limits(false, false, false);
        l.required = true;
        assert!(decide(&l, &avail_none()).is_ok());
    }

    #[test]
    fn decide_keeps_what_has_a_place() {
        let host = hybrid().w("/sys/fs/cgroup/memory").w("/sys/fs/cgroup/pids");
        let a = assess(&host, &Controller::ALL);
        let d = decide(&limits(true, true, true), &a).unwrap();
        assert_eq!(d.plan.memory, Some(512 << 20));
        assert_eq!(d.plan.pids, Some(64));
        assert_eq!(d.plan.cpu_millis, None);
        let w = d.warning.unwrap();
        assert!(w.starts_with("the cpu limit is not available"), "{w}");
        assert!(w.contains("running without it."), "{w}");
        // Sites only for what the profile asks.
        let d = decide(&limits(false, true, false), &a).unwrap();
        assert_eq!(d.plan.sites.len(), 1);
        assert_eq!(d.plan.sites[0].controllers, [Controller::Pids]);
        assert_eq!(d.warning, None);
    }

    fn root_plan(l: &Limits) -> Plan {
        let host = hybrid().root();
        decide(l, &assess(&host, &wanted(l))).unwrap().plan
    }

    fn write(p: &str, v: &str, optional: bool) -> Step {
        Step::Write {
            path: p.into(),
            value: v.into(),
            optional,
        }
    }

    #[test]
    fn v1_steps() {
        let plan = root_plan(&limits(true, true, true));
        let (steps, dirs) = run_steps(&plan, "42-ab");
        assert_eq!(
            steps,
            [
                Step::MkdirShared("/sys/fs/cgroup/memory/moat".into()),
                Step::MkdirRun("/sys/fs/cgroup/memory/moat/42-ab".into()),
                write(
                    "/sys/fs/cgroup/memory/moat/42-ab/memory.limit_in_bytes",
                    "536870912",
                    false
                ),
                write(
                    "/sys/fs/cgroup/memory/moat/42-ab/memory.memsw.limit_in_bytes",
                    "536870912",
                    true
                ),
                Step::MkdirShared("/sys/fs/cgroup/pids/moat".into()),
                Step::MkdirRun("/sys/fs/cgroup/pids/moat/42-ab".into()),
                write("/sys/fs/cgroup/pids/moat/42-ab/pids.max", "64", false),
                Step::MkdirShared("/sys/fs/cgroup/cpu/moat".into()),
                Step::MkdirRun("/sys/fs/cgroup/cpu/moat/42-ab".into()),
                write(
                    "/sys/fs/cgroup/cpu/moat/42-ab/cpu.cfs_period_us",
                    "100000",
                    false
                ),
                write(
                    "/sys/fs/cgroup/cpu/moat/42-ab/cpu.cfs_quota_us",
                    "150000",
                    false
                ),
            ]
        );
        assert_eq!(dirs.len(), 3);
        let probes = probes(&plan, &dirs);
        assert_eq!(
            probes,
            [
                (
                    Probe::OomKills,
                    "/sys/fs/cgroup/memory/moat/42-ab/memory.oom_control".into()
                ),
                (
                    Probe::MemoryPeak,
                    "/sys/fs/cgroup/memory/moat/42-ab/memory.max_usage_in_bytes".into()
                ),
                (
                    Probe::PidsRefused,
                    "/sys/fs/cgroup/pids/moat/42-ab/pids.events".into()
                ),
            ]
        );
    }

    #[test]
    fn v2_steps_enable_controllers_down_to_the_run() {
        let l = limits(true, true, true);
        let host = v2("/init.scope").root();
        let plan = decide(&l, &assess(&host, &wanted(&l))).unwrap().plan;
        let (steps, dirs) = run_steps(&plan, "7-1");
        let all = Controller::ALL.to_vec();
        assert_eq!(
            steps,
            [
                Step::Enable("/sys/fs/cgroup/cgroup.subtree_control".into(), all.clone()),
                Step::MkdirShared("/sys/fs/cgroup/moat".into()),
                Step::Enable("/sys/fs/cgroup/moat/cgroup.subtree_control".into(), all),
                Step::MkdirRun("/sys/fs/cgroup/moat/7-1".into()),
                write("/sys/fs/cgroup/moat/7-1/memory.max", "536870912", false),
                write("/sys/fs/cgroup/moat/7-1/memory.swap.max", "0", true),
                write("/sys/fs/cgroup/moat/7-1/pids.max", "64", false),
                write("/sys/fs/cgroup/moat/7-1/cpu.max", "150000 100000", false),
            ]
        );
        assert_eq!(dirs, [PathBuf::from("/sys/fs/cgroup/moat/7-1")]);
        let p: Vec<_> = probes(&plan, &dirs)
            .into_iter()
            .map(|(p, f)| (p, f.file_name().unwrap().to_owned()))
            .collect();
        assert_eq!(
            p,
            [
                (Probe::OomKills, "memory.events".into()),
                (Probe::MemoryPeak, "memory.peak".into()),
                (Probe::PidsRefused, "pids.events".into()),
            ]
        );
    }

    #[test]
    fn delegated_v2_steps_go_under_the_parent() {
        let p = delegated_parent();
        let host = v2(USER)
            .w(&p)
            .w(&format!("{p}/cgroup.procs"))
            .file(&format!("{p}/cgroup.controllers"), "memory pids\n")
            .file(&format!("{p}/cgroup.subtree_control"), "memory pids\n");
        let l = limits(false, true, false);
        let plan = decide(&l, &assess(&host, &wanted(&l))).unwrap().plan;
        let (steps, dirs) = run_steps(&plan, "9-f");
        assert_eq!(
            steps[0],
            Step::Enable(
                format!("{p}/cgroup.subtree_control").into(),
                vec![Controller::Pids]
            )
        );
        assert_eq!(steps[1], Step::MkdirShared(format!("{p}/moat").into()));
        assert_eq!(dirs, [PathBuf::from(format!("{p}/moat/9-f"))]);
    }

    #[test]
    fn cpu_quota_has_a_floor() {
        assert_eq!(cpu_quota_us(500), 50_000);
        assert_eq!(cpu_quota_us(2000), 200_000);
        assert_eq!(cpu_quota_us(1), 1000);
    }

    #[test]
    fn events_files() {
        let v1_oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(read_probe(Probe::OomKills, v1_oom), Some(2));
        let v2_mem = "low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(read_probe(Probe::OomKills, v2_mem), Some(1));
        assert_eq!(read_probe(Probe::PidsRefused, "max 123\n"), Some(123));
        assert_eq!(read_probe(Probe::MemoryPeak, "67108864\n"), Some(64 << 20));
        assert_eq!(read_probe(Probe::OomKills, "garbage"), None);
    }

    #[test]
    fn formats() {
        assert_eq!(format_bytes(512 << 20), "512 MiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(1000), "1000 bytes");
        assert_eq!(format_duration_ms(30_000), "30s");
        assert_eq!(format_duration_ms(600_000), "10m");
        assert_eq!(format_duration_ms(5_400_000), "1h30m");
        assert_eq!(format_duration_ms(1500), "1.5s");
        assert_eq!(format_duration_ms(250), "250ms");
    }

    #[test]
    fn ended_by_lines() {
        let plan = Plan {
            memory: Some(512 << 20),
            pids: Some(64),
            timeout_ms: Some(30_000),
            ..Plan::default()
        };
        let killed = libc::SIGKILL;
        let ev = Events {
            oom_kills: Some(1),
            memory_peak: Some(512 << 20),
            pids_refused: Some(0),
        };
        assert_eq!(
            ended_by(&plan, &ev, Some(killed), false),
            ["the memory limit (512 MiB) was reached: the kernel killed the command (SIGKILL, exit status 137)"]
        );
        // The command survived (a shell whose child was killed).
        let lines = ended_by(&plan, &ev, Some(137 << 8), false);
        assert_eq!(lines, ["the memory limit (512 MiB) was reached: the kernel killed a process in the sandbox"]);
        let lines = ended_by(
            &plan,
            &Events {
                pids_refused: Some(7),
                ..Events::default()
            },
            Some(0),
            false,
        );
        assert_eq!(lines, ["the pids limit (64) refused 7 forks"]);
        let lines = ended_by(&plan, &Events::default(), None, true);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("the timeout (30s) ended the run"),
            "{lines:?}"
        );
        assert!(lines[0].contains("124"), "{lines:?}");
        // A limit the plan does not hold says nothing.
        let none = Plan::default();
        assert!(ended_by(&none, &ev, Some(killed), false).is_empty());
    }

    #[test]
    fn run_names() {
        let n = run_name(4242, 0xbeef);
        assert_eq!(n, "4242-beef");
        assert_eq!(run_name_pid(&n), Some(4242));
        assert_eq!(run_name_pid("moat"), None);
        assert_eq!(run_name_pid("12-"), None);
        assert_eq!(run_name_pid("12-xyz"), None);
    }
}
