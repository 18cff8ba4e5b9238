//! Why user namespaces might be unavailable, and what to do about it.
//!
//! Rootless moat stands on unprivileged user namespaces. Distributions turn
//! them off in several ways; each has its own fix, and users deserve the one
//! that applies to them rather than a bare EPERM.

use std::path::Path;

/// Sysctls that gate unprivileged user namespaces, read as plain data so the
/// diagnosis is testable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Knobs {
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10+).
    pub apparmor_restrict: Option<u64>,
    /// `kernel.unprivileged_userns_clone` (Debian's older patch).
    pub unprivileged_clone: Option<u64>,
    /// `user.max_user_namespaces` for this namespace.
    pub max_user_namespaces: Option<u64>,
}

impl Knobs {
    pub fn read() -> Knobs {
        let read = |p: &str| -> Option<u64> {
            std::fs::read_to_string(Path::new(p))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        Knobs {
            apparmor_restrict: read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
            unprivileged_clone: read("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: read("/proc/sys/user/max_user_namespaces"),
        }
    }
}

/// Explains a failure to create or map a user namespace. `errno` is what the
/// kernel returned; `is_root` whether the caller is uid 0.
pub fn explain(errno: i32, knobs: &Knobs, is_root: bool) -> String {
    let mut msg = format!(
        "cannot create a user namespace ({}); moat needs one to build the sandbox.",
        std::io::Error::from_raw_os_error(errno)
    );
    if knobs.max_user_namespaces == Some(0) {
        msg.push_str(
            "\n  user.max_user_namespaces is 0 here, which turns user namespaces off.\
             \n  Fix: sudo sysctl -w user.max_user_namespaces=15000\
             \n  (and put `user.max_user_namespaces=15000` in /etc/sysctl.d/99-moat.conf to keep it).",
        );
    } else if knobs.unprivileged_clone == Some(0) && !is_root {
        msg.push_str(
            "\n  kernel.unprivileged_userns_clone is 0: this kernel lets only root create user namespaces.\
             \n  Fix: sudo sysctl -w kernel.unprivileged_userns_clone=1\
             \n  (and add it to /etc/sysctl.d/99-moat.conf to keep it).",
        );
    } else if knobs.apparmor_restrict == Some(1) && !is_root {
        msg.push_str(
            "\n  AppArmor restricts unprivileged user namespaces here \
             (kernel.apparmor_restrict_unprivileged_userns=1, the Ubuntu 23.10+ default).\
             \n  Fix, for moat only: an AppArmor profile that allows `userns` for the moat binary, e.g.\
             \n    /etc/apparmor.d/moat:  abi <abi/4.0>, include <tunables/global>\
             \n                           profile moat /usr/local/bin/moat flags=(unconfined) { userns, }\
             \n    then: sudo apparmor_parser -r /etc/apparmor.d/moat\
             \n  Or, for the whole machine: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
        );
    } else if errno == libc::ENOSPC {
        msg.push_str(
            "\n  The limit on user namespaces is reached (user.max_user_namespaces, or the nesting depth of 32).",
        );
    } else if errno == libc::EPERM || errno == libc::EACCES {
        msg.push_str(
            "\n  The kernel refused it. Common causes: running inside a container that forbids nested \
             user namespaces (Docker's default seccomp profile does), or a security module policy. \
             Run moat on the host, or allow user namespaces for it.",
        );
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_apparmor_fix() {
        let k = Knobs {
            apparmor_restrict: Some(1),
            ..Default::default()
        };
        let m = explain(libc::EACCES, &k, false);
        assert!(m.contains("apparmor_restrict_unprivileged_userns"), "{m}");
        assert!(m.contains("apparmor_parser"), "{m}");
    }

    #[test]
    fn names_the_sysctl_for_zero_limit() {
        let k = Knobs {
            max_user_namespaces: Some(0),
            ..Default::default()
        };
        let m = explain(libc::ENOSPC, &k, true);
        assert!(m.contains("user.max_user_namespaces"), "{m}");
    }

    #[test]
    fn debian_knob() {
        let k = Knobs {
            unprivileged_clone: Some(0),
            ..Default::default()
        };
        assert!(explain(libc::EPERM, &k, false).contains("unprivileged_userns_clone=1"));
        // Root is not affected by that knob; do not blame it.
        assert!(!explain(libc::EPERM, &k, true).contains("unprivileged_userns_clone=1"));
    }
}
