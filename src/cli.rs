//! Command-line interface definitions (clap).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "moat",
    version,
    about = "Run AI agents in a Linux sandbox: own namespaces, only the files a profile grants, no network of their own"
)]
pub struct Cli {
    /// Say what moat sets up and what the kernel enforced.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a sandbox built from a profile.
    Exec(ExecArgs),
    /// List, show and check profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Report what this kernel offers and what moat will enforce.
    Doctor(DoctorArgs),
    /// List recorded runs: id, exit status, profile, what Landlock enforced.
    Runs,
    /// Show a run's request log: every request the sandbox made through
    /// moat's proxy, allowed or refused.
    Log(LogArgs),
    /// moat's egress proxy on its own (for benchmarks and debugging).
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Credential grants: tokens stored encrypted on the host that the
    /// proxy adds to a sandbox's requests; the sandbox never sees them.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// The tamper-evident audit log: verify, export proof bundles, show.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Store a credential. The token is read from a prompt without echo,
    /// from standard input when it is not a terminal, or from the variable
    /// named by --from-env; never from the command line.
    Add(GrantAddArgs),
    /// List stored credentials: name, provider, hosts, when added, and a
    /// short fingerprint (never the token).
    List,
    /// Remove a stored credential.
    Rm {
        /// The credential's name.
        name: String,
    },
    /// List the providers and the hosts and headers each one covers.
    Providers,
    /// Decrypt a credential to check the store and its key (prints OK,
    /// never the token).
    Check {
        /// The credential's name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct GrantAddArgs {
    /// Provider: github, anthropic, openai or header (`moat grant providers`).
    pub provider: String,
    /// Name profiles and --grant use (default: the provider's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Read the token from this environment variable of moat's own.
    #[arg(long, value_name = "VAR")]
    pub from_env: Option<String>,
    /// Host pattern the grant covers, replacing the provider's hosts
    /// (repeatable; `header` needs at least one).
    #[arg(long = "host", value_name = "PATTERN")]
    pub hosts: Vec<String>,
    /// `header` provider: the header to set, e.g. X-Api-Key.
    #[arg(long, value_name = "NAME")]
    pub header: Option<String>,
    /// `header` provider: the header's value, with {token} where the token
    /// goes (or {basic:USER} for HTTP Basic), e.g. 'Bearer {token}'.
    #[arg(long, value_name = "TEMPLATE")]
    pub value_template: Option<String>,
    /// Variable set to the placeholder in the sandbox, replacing the
    /// provider's (repeatable).
    #[arg(long = "env", value_name = "VAR")]
    pub env: Vec<String>,
    /// Replace a credential of the same name.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every hash, link and signature of the audit log (or of a
    /// proof bundle). Exit 0 intact, 1 tampered, 2 incomplete tail only
    /// (a torn last line or entries not yet signed), 125 error.
    Verify {
        /// The log or a bundle (default: this user's audit log).
        path: Option<PathBuf>,
        /// The public key to trust (64 hex digits, from `moat audit key`);
        /// default: this user's own key.
        #[arg(long, value_name = "PUBKEY")]
        key: Option<String>,
    },
    /// Write a self-contained proof bundle of one run.
    Export {
        /// Run id, a unique prefix of one, or `latest`.
        run: String,
        /// Where to write the bundle.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Show one run's audit entries.
    Show {
        /// Run id, a unique prefix of one, or `latest`.
        run: String,
        /// Print the raw JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Print the public key that checks this user's audit log (Ed25519,
    /// 64 hex digits), making the key pair on first use.
    Key,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Run id, a unique prefix of one, or `latest` (the newest run that
    /// has a request log).
    pub run: String,
    /// Print the raw JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Run the proxy on a host address with a profile's network policy
    /// until SIGINT or SIGTERM.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:3128 (port 0: any free port).
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// Profile whose [network] table is the policy.
        #[arg(short, long, default_value = "default", value_name = "NAME|PATH")]
        profile: String,
        /// Request log file (default: a new run's log in the runs directory,
        /// readable with `moat log latest`).
        #[arg(long, value_name = "PATH")]
        log: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print machine-readable JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Profile name (built-in, user or system) or path to a TOML file.
    #[arg(short, long, default_value = "default")]
    pub profile: String,

    /// Directory the command works in, read-write inside (default: the
    /// current directory).
    #[arg(short, long)]
    pub workspace: Option<PathBuf>,

    /// Set an environment variable inside the sandbox (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Give the run a stored credential (repeatable): the proxy adds it to
    /// requests to the credential's hosts; the sandbox sees a placeholder.
    #[arg(long = "grant", value_name = "NAME")]
    pub grants: Vec<String>,

    /// Allow a workspace that is `/`, your home directory or one of its
    /// parents (this exposes everything under it to the command).
    #[arg(long)]
    pub force_workspace: bool,

    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// List the profiles moat can find (built-in, system, user).
    List,
    /// Print a profile fully resolved (after `extends`) as TOML.
    Show {
        /// Profile name or path.
        name: String,
    },
    /// Check a profile file for errors without running anything.
    Check {
        /// Path to a profile TOML file.
        file: PathBuf,
    },
}
