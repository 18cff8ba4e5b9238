//! moat's per-user certificate authority for TLS interception, and the CA
//! bundle the sandbox sees (the host's roots plus moat's CA). The private
//! key lives only in `$XDG_DATA_HOME/moat/` (0600) and in the supervisor's
//! memory; it is never mounted into a sandbox.

use std::path::{Path, PathBuf};

/// The CA: certificate and key, PEM.
pub struct Ca {
    pub cert_pem: String,
    /// Secret: never logged, never written anywhere but the 0600 key file.
    pub key_pem: String,
    /// Where the certificate lives (for messages and the README).
    pub cert_path: PathBuf,
}

/// `$XDG_DATA_HOME/moat` (default `~/.local/share/moat`).
pub fn data_dir(home: &Path) -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(".local/share"))
        .join("moat")
}

/// Loads the CA, creating it on first use.
pub fn load_or_create(_data_dir: &Path) -> anyhow::Result<Ca> {
    anyhow::bail!("not implemented")
}
