//! The tamper-evident audit log: every run's start, enforced layers,
//! network requests, limit hits and exit, chained by SHA-256 and signed
//! with Ed25519 checkpoints, in `$XDG_DATA_HOME/moat/audit/audit.jsonl`.
//!
//! - [`canonical`]: the byte encoding hashes are computed over.
//! - [`chain`]: entries, their hashes and lines.
//! - [`sign`]: the signing key and checkpoint signatures.
//! - [`writer`]: locked appends, checkpoint policy, `.head`.
//! - [`recorder`]: a run's events, periodic checkpoints, failing closed.
//! - [`verify`]: checking a log and saying where it breaks.
//! - [`bundle`]: a run's proof bundle and its offline check.
//! - [`command`]: `moat audit ...`.

pub mod bundle;
pub mod canonical;
pub mod chain;
pub mod command;
pub mod recorder;
pub mod sign;
pub mod verify;
pub mod writer;

pub use recorder::Recorder;

/// `$XDG_DATA_HOME/moat` of the calling user.
pub fn data_dir(home: &std::path::Path) -> std::path::PathBuf {
    crate::ca::data_dir(home)
}
