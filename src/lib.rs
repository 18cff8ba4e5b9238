//! moat: a Linux-native sandbox supervisor for AI agents.
//!
//! The crate is split so that policy (what is allowed) is plain data that
//! unit tests can check without a kernel, and the kernel-facing code that
//! applies it stays thin:
//!
//! - [`profile`]: TOML profiles, `extends`, validation.
//! - [`environment`]: which variables reach the sandbox.
//! - [`mount_plan`]: the file system view as a list of mount steps.
//! - [`workspace`]: choosing and vetting the workspace directory.
//! - [`sandbox`]: namespaces, mounts, init, pty and signal relay.
//! - [`userns`]: diagnosing why user namespaces are unavailable.
//! - [`credentials`]: the encrypted credential store and its key.
//! - [`grants`]: credential grants (providers, placeholders) and
//!   `moat grant`.
//! - [`secrets`]: a profile's `[secrets]`, resolved on the host.
//! - [`keyring`]: the desktop keyring (Secret Service), on a joined thread.

pub mod audit;
pub mod ca;
pub mod cgroup;
pub mod cli;
pub mod credentials;
pub mod doctor;
pub mod environment;
pub mod exec;
pub mod grants;
pub mod keyring;
pub mod landlock_policy;
pub mod mount_plan;
pub mod network_policy;
pub mod profile;
pub mod proxy;
pub mod runs;
pub mod sandbox;
pub mod seccomp_policy;
pub mod secrets;
pub mod userns;
pub mod workspace;
