//! Kernel-facing Landlock: turns [`crate::landlock_policy::Rules`] into a
//! ruleset with the `landlock` crate and restricts the calling process.
//!
//! Init calls [`apply`] after it has pivoted into the sandbox root, so the
//! paths in the rules are sandbox paths, and before it forks the command,
//! which inherits the domain. Init itself stays in the domain too: what it
//! still does afterwards (open `/dev/null`, fork, signal the command, talk
//! to the supervisor over an unnamed socket) is all allowed by the rules or
//! not governed by Landlock. Scoped signals do not get in its way either:
//! init and the command share one domain, and the supervisor outside is not
//! restricted at all.

use crate::landlock_policy::{self, Access, Kernel, Rules, Status};
use crate::profile::{Enforcement, Ports};
use landlock::{
    make_bitflags, Access as _, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort,
    PathBeneath, RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope, ABI,
};
use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use serde::{Deserialize, Serialize};

/// What Landlock enforced.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// Landlock ABI version the kernel offers (0 = none).
    pub abi: i32,
    /// "full", "partial" or "none".
    pub status: String,
    /// Human-readable notes on what was not enforced and why.
    pub notes: Vec<String>,
    /// Path rules handed to the kernel.
    #[serde(default)]
    pub path_rules: usize,
}

/// The newest ABI whose rights moat handles. Rights added later (such as
/// pathname unix socket connects in ABI 9) stay unhandled until moat's
/// rules account for them and are tested on a kernel that has them: an
/// unexpected restriction would break commands, not secure them.
const TARGET: ABI = ABI::V6;

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// Asks the kernel which Landlock ABI it offers.
pub fn probe() -> Kernel {
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call
    // only returns a number; it reads and writes no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r >= 1 {
        return Kernel::Abi(r as i32);
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::EOPNOTSUPP => Kernel::Disabled,
        _ => Kernel::Missing,
    }
}

fn fs_rights(access: Access) -> BitFlags<AccessFs> {
    let proc_files = make_bitflags!(AccessFs::{ReadFile | ReadDir | WriteFile | Truncate});
    match access {
        Access::ReadExec => make_bitflags!(AccessFs::{Execute | ReadFile | ReadDir}),
        Access::ProcFiles => proc_files,
        Access::Devices => proc_files | AccessFs::IoctlDev,
        Access::Full => {
            AccessFs::from_all(TARGET) & !make_bitflags!(AccessFs::{MakeChar | MakeBlock})
        }
    }
}

fn ports(p: &Ports) -> Option<&[u16]> {
    match p {
        Ports::Any => None,
        Ports::Only(list) => Some(list),
    }
}

/// Restricts the calling process (and its future children). With
/// `Enforcement::Required`, anything less than full enforcement is an error
/// and nothing is restricted.
pub fn apply(rules: &Rules) -> Result<Report, String> {
    let kernel = probe();
    let verdict = landlock_policy::decide(rules, kernel)?;
    let mut notes = verdict.notes;
    for p in &rules.skipped {
        notes.push(format!("{}: no rule (landlock.skip)", p.display()));
    }
    if verdict.status == Status::None {
        return Ok(Report {
            abi: kernel.abi(),
            status: Status::None.as_str().into(),
            notes,
            path_rules: 0,
        });
    }

    let level = match rules.mode {
        // decide() has already refused a kernel that lacks a feature; the
        // crate's own check is the second opinion.
        Enforcement::Required => CompatLevel::HardRequirement,
        Enforcement::BestEffort => CompatLevel::BestEffort,
    };
    let fail = |e: RulesetError| format!("Landlock: {e}");
    let mut ruleset = landlock::Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(TARGET))
        .map_err(fail)?;
    let connect = ports(&rules.connect_tcp);
    let bind = ports(&rules.bind_tcp);
    let mut net = BitFlags::<AccessNet>::EMPTY;
    if connect.is_some() {
        net |= AccessNet::ConnectTcp;
    }
    if bind.is_some() {
        net |= AccessNet::BindTcp;
    }
    if !net.is_empty() {
        ruleset = ruleset.handle_access(net).map_err(fail)?;
    }
    if rules.scope {
        ruleset = ruleset.scope(Scope::from_all(TARGET)).map_err(fail)?;
    }
    let mut created = ruleset.create().map_err(fail)?;

    let mut path_rules = 0;
    for (path, access) in &rules.paths {
        // No symlink following: every path here is a mount point moat made.
        let fd = match open(
            path.as_path(),
            OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                // Fails closed: without the rule the path is denied.
                notes.push(format!("{}: no rule ({})", path.display(), e.desc()));
                continue;
            }
        };
        let kind = fstat(&fd)
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)
            .map_err(|e| format!("Landlock: {}: {}", path.display(), e.desc()))?;
        if kind == SFlag::S_IFLNK {
            notes.push(format!("{}: no rule (a symlink)", path.display()));
            continue;
        }
        let mut allowed = fs_rights(*access);
        if kind != SFlag::S_IFDIR {
            // Directory rights on a file make the kernel refuse the rule.
            allowed &= AccessFs::from_file(TARGET);
        }
        created = created
            .add_rule(PathBeneath::new(fd, allowed))
            .map_err(|e| format!("Landlock: rule for {}: {e}", path.display()))?;
        path_rules += 1;
    }
    for (list, right) in [(connect, AccessNet::ConnectTcp), (bind, AccessNet::BindTcp)] {
        for port in list.unwrap_or_default() {
            created = created
                .add_rule(NetPort::new(*port, right))
                .map_err(|e| format!("Landlock: rule for TCP port {port}: {e}"))?;
        }
    }

    let restricted = created.restrict_self().map_err(fail)?;
    let crate_status = match restricted.ruleset {
        RulesetStatus::FullyEnforced => Status::Full,
        RulesetStatus::PartiallyEnforced => Status::Partial,
        RulesetStatus::NotEnforced => Status::None,
    };
    // Report the weaker of the two views: moat's table of ABIs and what the
    // crate saw while building.
    let status = match (verdict.status, crate_status) {
        (Status::Full, Status::Full) => Status::Full,
        (_, Status::None) => Status::None,
        _ => Status::Partial,
    };
    if status != verdict.status {
        notes.push(format!(
            "the landlock crate reports {} enforcement on ABI {}",
            crate_status.as_str(),
            kernel.abi()
        ));
    }
    if !restricted.no_new_privs {
        notes.push("no_new_privs was not set".into());
    }
    if rules.mode == Enforcement::Required && (status != Status::Full || !restricted.no_new_privs) {
        return Err(format!(
            "Landlock is required by the profile but was enforced only partly: {}",
            notes.join("; ")
        ));
    }
    Ok(Report {
        abi: kernel.abi(),
        status: status.as_str().into(),
        notes,
        path_rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_nest_and_full_excludes_device_nodes() {
        let full = fs_rights(Access::Full);
        for a in [Access::ReadExec, Access::ProcFiles, Access::Devices] {
            assert!(full.contains(fs_rights(a)), "{a:?}");
        }
        assert!(fs_rights(Access::Devices).contains(fs_rights(Access::ProcFiles)));
        assert!(!fs_rights(Access::ProcFiles).contains(AccessFs::Execute));
        assert!(!fs_rights(Access::ReadExec).contains(AccessFs::WriteFile));
        assert!(!full.contains(AccessFs::MakeChar));
        assert!(!full.contains(AccessFs::MakeBlock));
        assert!(full.contains(AccessFs::Refer));
        assert!(full.contains(AccessFs::IoctlDev));
        // The policy's notion of one grant covering another is the
        // inclusion of the kernel rights.
        let all = [
            Access::ReadExec,
            Access::ProcFiles,
            Access::Devices,
            Access::Full,
        ];
        for a in all {
            for b in all {
                assert_eq!(
                    a.covers(b),
                    fs_rights(a).contains(fs_rights(b)),
                    "{a:?} covers {b:?}"
                );
            }
        }
        // Every right moat grants is one it handles.
        let handled = AccessFs::from_all(TARGET);
        for a in [
            Access::ReadExec,
            Access::ProcFiles,
            Access::Devices,
            Access::Full,
        ] {
            assert!(handled.contains(fs_rights(a)), "{a:?}");
        }
    }

    #[test]
    fn target_abi_matches_the_policy_features() {
        let newest = landlock_policy::Feature::ALL
            .iter()
            .map(|f| f.abi())
            .max()
            .unwrap();
        assert_eq!(newest, TARGET as i32);
    }

    #[test]
    fn probe_matches_the_kernel() {
        // The test machine has Landlock; a kernel without it must say why.
        match probe() {
            Kernel::Abi(n) => assert!(n >= 1),
            other => panic!("this machine should offer Landlock: {}", other.describe()),
        }
    }
}
