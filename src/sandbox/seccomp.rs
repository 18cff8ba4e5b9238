//! Kernel-facing seccomp: installs the BPF program compiled from
//! [`crate::seccomp_policy`] with seccompiler.
//!
//! Init calls [`apply`] last among the hardening layers, after Landlock and
//! after dropping capabilities, so that nothing moat itself still has to do
//! is filtered; the command inherits the filter across fork and exec and can
//! never remove it.

use serde::{Deserialize, Serialize};

/// The compiled filter, ready to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Classic BPF instructions for seccomp(2).
    pub filter: seccompiler::BpfProgram,
    /// How many syscalls the filter has a rule for (denied outright or
    /// under argument conditions), for the report.
    pub syscalls: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    pub installed: bool,
    /// Number of syscall rules in the filter.
    pub denied_syscalls: usize,
}

/// Installs `program` on the calling thread. seccompiler sets
/// no_new_privs first, which an unprivileged caller needs for seccomp(2)
/// and which the capability layer has set already anyway.
///
/// Init is single-threaded here, so the calling thread is the whole
/// process, and every process it forks afterwards inherits the filter.
pub fn apply(program: &Program) -> Result<Report, String> {
    if program.filter.is_empty() {
        // An empty program would be rejected by the kernel anyway; say what
        // actually went wrong.
        return Err("seccomp: no filter was compiled for this run".into());
    }
    seccompiler::apply_filter(&program.filter)
        .map_err(|e| format!("installing the seccomp filter: {e}"))?;
    Ok(Report {
        installed: true,
        denied_syscalls: program.syscalls,
    })
}
