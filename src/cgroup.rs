//! cgroup limits: where moat can put a run's group on this machine, and
//! which files carry each limit. Plain data and parsing; the file system
//! work is in `sandbox::cgroup`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Pure cgroup v2 (unified hierarchy with controllers).
    V2,
    /// v1 controllers, possibly beside an empty cgroup2 mount (hybrid).
    V1,
    /// Both: v1 controllers and a cgroup2 mount at /sys/fs/cgroup/unified.
    Hybrid,
    /// No cgroup file system found.
    None,
}

/// Whether limits can be enforced for this caller, and if not why and how
/// to fix it. Used by `moat exec` and `moat doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Availability {
    pub layout: Layout,
    pub limits_available: bool,
    /// One line: where the run's group goes, or why limits are unavailable.
    pub detail: String,
    /// How to make limits available, when they are not.
    pub fix: Option<String>,
}

pub fn probe() -> Availability {
    Availability {
        layout: Layout::None,
        limits_available: false,
        detail: "not implemented yet".into(),
        fix: None,
    }
}
