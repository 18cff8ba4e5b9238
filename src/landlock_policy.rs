//! Landlock rules as plain data, derived from the mount plan and the
//! profile's `[landlock]` table. Nothing here touches the kernel.

use crate::mount_plan::Plan;
use crate::profile::{Enforcement, Ports, Profile};
use std::path::PathBuf;

/// Access granted beneath a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read files, list directories, execute.
    ReadExec,
    /// Everything.
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub mode: Enforcement,
    pub paths: Vec<(PathBuf, Access)>,
    pub connect_tcp: Ports,
    pub bind_tcp: Ports,
    /// Confine abstract unix sockets and signals to the sandbox (ABI 6+).
    pub scope: bool,
}

pub fn rules(_plan: &Plan, _profile: &Profile, _home: &std::path::Path) -> Rules {
    Rules {
        mode: _profile.landlock.mode,
        paths: Vec::new(),
        connect_tcp: _profile.landlock.connect_tcp.clone(),
        bind_tcp: _profile.landlock.bind_tcp.clone(),
        scope: true,
    }
}
