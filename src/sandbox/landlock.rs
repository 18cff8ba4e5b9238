//! Kernel-facing Landlock: turns [`crate::landlock_policy::Rules`] into a
//! ruleset with the `landlock` crate and restricts the calling process.

use crate::landlock_policy::Rules;
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
}

/// Restricts the calling process (and its future children). With
/// `Enforcement::Required`, anything less than full enforcement is an error.
pub fn apply(_rules: &Rules) -> Result<Report, String> {
    Ok(Report {
        abi: 0,
        status: "none".into(),
        notes: vec!["not implemented yet".into()],
    })
}
