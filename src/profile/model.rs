//! The resolved profile: plain data the sandbox is built from.
//!
//! Everything here is the result of parsing a TOML file and applying its
//! `extends` chain; nothing in this module touches the kernel.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// The hostname of a profile that sets none anywhere in its chain.
pub const DEFAULT_HOSTNAME: &str = "moat";

/// A fully resolved profile (after `extends`), ready to build a sandbox from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// The name it was loaded by (`default`, `myprofile`) or the file path.
    pub name: String,
    /// Where each layer of the profile came from, most derived first
    /// (e.g. `["/home/u/.config/moat/profiles/x.toml", "builtin:default"]`).
    pub sources: Vec<String>,
    pub description: String,
    /// UTS hostname inside the sandbox.
    pub hostname: String,
    /// Host environment variables passed through by name, in addition to the
    /// built-in allowlist. A trailing `*` matches a prefix (`LC_*`).
    pub pass_env: Vec<String>,
    /// Variables set inside the sandbox (after the pass-through ones).
    pub env: BTreeMap<String, String>,
    pub filesystem: Filesystem,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filesystem {
    /// Host paths bound read-only at the same path inside.
    pub read_only: Vec<PathSpec>,
    /// Host paths bound read-write at the same path inside.
    pub read_write: Vec<PathSpec>,
    /// Paths hidden inside (an empty file or directory is mounted over them).
    pub mask: Vec<PathSpec>,
    /// Private, empty, writable directories (fresh tmpfs per run).
    pub tmpfs: Vec<PathSpec>,
    /// Workspace-relative paths that stay read-only inside even though the
    /// workspace is writable (`.git/hooks`, `.git/config`, `.envrc`).
    pub protect: Vec<String>,
    /// Whether the workspace itself is writable.
    pub workspace: WorkspaceAccess,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkspaceAccess {
    #[default]
    ReadWrite,
    ReadOnly,
}

impl WorkspaceAccess {
    /// The spelling used in profiles (`workspace = "read-write"`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceAccess::ReadWrite => "read-write",
            WorkspaceAccess::ReadOnly => "read-only",
        }
    }
}

/// What an empty profile file resolves to: the starting point every
/// `extends` chain is merged onto.
impl Default for Profile {
    fn default() -> Self {
        Profile {
            name: String::new(),
            sources: Vec::new(),
            description: String::new(),
            hostname: DEFAULT_HOSTNAME.to_string(),
            pass_env: Vec::new(),
            env: BTreeMap::new(),
            filesystem: Filesystem::default(),
        }
    }
}

/// A path as written in a profile. `~/` means the caller's home directory;
/// a leading `-` in the TOML string (systemd's convention) marks the entry
/// optional: skipped when the path does not exist on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathSpec {
    /// The path without the `-` marker, `~/` not yet expanded.
    pub path: String,
    pub optional: bool,
}

impl PathSpec {
    /// Expands `~` and `~/...` against `home`. Other paths are returned as is.
    pub fn expand(&self, home: &std::path::Path) -> std::path::PathBuf {
        if self.path == "~" {
            home.to_path_buf()
        } else if let Some(rest) = self.path.strip_prefix("~/") {
            home.join(rest)
        } else {
            std::path::PathBuf::from(&self.path)
        }
    }
}

/// The profile spelling: `-` in front when optional, so that messages show
/// the entry as the user wrote it.
impl fmt::Display for PathSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.optional {
            f.write_str("-")?;
        }
        f.write_str(&self.path)
    }
}
