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
    /// Stored credentials (`moat grant add`) the proxy adds to requests
    /// to their hosts; the sandbox sees placeholders only.
    pub grants: Vec<String>,
    /// Variables whose values moat reads on the host at start (`[secrets]`),
    /// by name; the specs say where from, never the values.
    pub secrets: BTreeMap<String, crate::secrets::SecretSpec>,
    pub filesystem: Filesystem,
    pub landlock: Landlock,
    pub seccomp: Seccomp,
    pub limits: Limits,
    pub network: Network,
}

/// What the sandbox may reach through moat's proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// Only hosts matching `allow` (and not `deny`).
    #[default]
    Allowlist,
    /// Any host not matching `deny`.
    Open,
    /// No proxy at all: the sandbox has no network beyond its own `lo`.
    None,
}

impl NetworkMode {
    /// The spelling used in profiles (`mode = "allowlist"`).
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Allowlist => "allowlist",
            NetworkMode::Open => "open",
            NetworkMode::None => "none",
        }
    }

    pub fn from_name(name: &str) -> Option<NetworkMode> {
        [NetworkMode::Allowlist, NetworkMode::Open, NetworkMode::None]
            .into_iter()
            .find(|m| m.as_str() == name)
    }
}

/// `[network]`: egress through moat's proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub mode: NetworkMode,
    /// Host patterns: `api.github.com`, `*.githubusercontent.com` (any
    /// subdomain, not the apex), IP literals (`10.0.0.5`, `[::1]`),
    /// optionally with `:PORT` (`registry.npmjs.org:443`); without a port,
    /// 80 and 443 only. Stored in canonical spelling (lower case). Only an
    /// exact `host:PORT` entry lets a name reach a loopback, private or
    /// metadata address (see `crate::network_policy`).
    pub allow: Vec<String>,
    /// Same patterns; a match is refused whatever `allow` says.
    pub deny: Vec<String>,
    /// Port of the proxy on 127.0.0.1 inside the sandbox.
    pub proxy_port: u16,
    /// Extra CA certificates (PEM files) trusted for upstream TLS, beside the
    /// host's roots.
    pub upstream_ca: Vec<PathSpec>,
}

/// The proxy's port inside the sandbox unless a profile says otherwise:
/// away from the ports dev servers usually take.
pub const DEFAULT_PROXY_PORT: u16 = 3128;

impl Default for Network {
    fn default() -> Self {
        Network {
            mode: NetworkMode::Allowlist,
            allow: Vec::new(),
            deny: Vec::new(),
            proxy_port: DEFAULT_PROXY_PORT,
            upstream_ca: Vec::new(),
        }
    }
}

/// Whether a hardening layer must be fully enforced for the run to start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// Use what the kernel offers; report what was enforced.
    #[default]
    BestEffort,
    /// Refuse to start unless the kernel enforces all of it.
    Required,
}

/// TCP ports a Landlock rule allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ports {
    /// Not restricted by Landlock (TOML: `"any"`).
    Any,
    /// Only these ports (TOML: an array of port numbers; empty = none).
    Only(Vec<u16>),
}

/// `[landlock]`: the second wall behind the mount namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Landlock {
    pub mode: Enforcement,
    /// Ports the sandbox may connect to over TCP (ABI 4+). Default: none.
    pub connect_tcp: Ports,
    /// Ports the sandbox may bind over TCP (ABI 4+). Default: any, since the
    /// network namespace has only `lo` and a bound port is reachable only
    /// from inside.
    pub bind_tcp: Ports,
    /// Paths mounted into the sandbox that get no Landlock rule: visible but
    /// unusable. For checking that Landlock stands on its own.
    pub skip: Vec<PathSpec>,
}

impl Default for Landlock {
    fn default() -> Self {
        Landlock {
            mode: Enforcement::BestEffort,
            connect_tcp: Ports::Only(Vec::new()),
            bind_tcp: Ports::Any,
            skip: Vec::new(),
        }
    }
}

/// `[seccomp]`: changes to moat's built-in syscall denylist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Seccomp {
    /// Further syscalls to deny with EPERM (names, e.g. `"chroot"`).
    pub deny: Vec<String>,
    /// Syscalls or groups from the built-in list to allow back (e.g.
    /// `"ptrace"`), for tools that truly need them.
    pub allow: Vec<String>,
}

/// `[limits]`: cgroup limits and a wall-clock timeout. `None` = no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Memory in bytes (TOML: `"512M"`, `"2G"`, or a number of bytes).
    pub memory: Option<u64>,
    /// Maximum number of processes and threads.
    pub pids: Option<u64>,
    /// CPU in thousandths of a core (TOML: `cpu = 1.5` cores).
    pub cpu_millis: Option<u64>,
    /// Wall-clock limit in milliseconds (TOML: `"30s"`, `"10m"`, `"2h"`, or
    /// a number of seconds).
    pub timeout_ms: Option<u64>,
    /// Refuse to start when the limits cannot be enforced (e.g. rootless
    /// without a delegated cgroup), instead of warning and running without.
    pub required: bool,
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
            grants: Vec::new(),
            secrets: BTreeMap::new(),
            filesystem: Filesystem::default(),
            landlock: Landlock::default(),
            seccomp: Seccomp::default(),
            limits: Limits::default(),
            network: Network::default(),
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
