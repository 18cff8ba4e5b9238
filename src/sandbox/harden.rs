//! Applies the hardening layers in the sandbox's init, after the file system
//! view is built and before the command is forked, so the command inherits
//! every layer from its first instruction: Landlock, then capabilities, then
//! seccomp (last, so nothing moat itself still needs is filtered).

use super::Spec;
use serde::Serialize;

/// What the kernel actually enforced, for `--verbose` and the run record.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Report {
    pub landlock: super::landlock::Report,
    pub capabilities: super::caps::Report,
    pub seccomp: super::seccomp::Report,
}

pub fn apply(spec: &Spec) -> Result<Report, String> {
    let landlock = super::landlock::apply(&spec.landlock)?;
    let capabilities = super::caps::drop_all()?;
    let seccomp = super::seccomp::apply(&spec.seccomp)?;
    Ok(Report {
        landlock,
        capabilities,
        seccomp,
    })
}
