//! One validated profile file before `extends` is applied, and the rule for
//! merging a file over its parent.

use super::model::{Enforcement, NetworkMode, PathSpec, Ports, Profile, WorkspaceAccess};
use crate::secrets::SecretSpec;
use std::collections::BTreeMap;
use toml::Spanned;

/// What a single file says. `None` and empty lists mean "not set here".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Layer {
    /// Kept with its span: resolving it can fail (not found, cycle) and the
    /// error should point at this line.
    pub extends: Option<Spanned<String>>,
    pub description: Option<String>,
    pub hostname: Option<String>,
    pub pass_env: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub grants: Vec<String>,
    pub secrets: BTreeMap<String, SecretSpec>,
    pub filesystem: FilesystemLayer,
    pub landlock: LandlockLayer,
    pub seccomp: SeccompLayer,
    pub limits: LimitsLayer,
    pub network: NetworkLayer,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FilesystemLayer {
    pub workspace: Option<WorkspaceAccess>,
    pub read_only: Vec<PathSpec>,
    pub read_write: Vec<PathSpec>,
    pub mask: Vec<PathSpec>,
    pub tmpfs: Vec<PathSpec>,
    pub protect: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LandlockLayer {
    pub mode: Option<Enforcement>,
    pub connect_tcp: Option<Ports>,
    pub bind_tcp: Option<Ports>,
    pub skip: Vec<PathSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SeccompLayer {
    pub deny: Vec<String>,
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LimitsLayer {
    pub memory: Option<u64>,
    pub pids: Option<u64>,
    pub cpu_millis: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub required: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NetworkLayer {
    pub mode: Option<NetworkMode>,
    /// Patterns in their canonical spelling.
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub proxy_port: Option<u16>,
    pub upstream_ca: Vec<PathSpec>,
}

impl Layer {
    /// Merges this layer over `profile`, which holds everything its parents
    /// said. Scalars: this layer's value when set. Lists: the parents'
    /// entries, then this layer's, without repeats. `[env]` and `[secrets]`:
    /// union, this layer winning (a name in both is refused after the
    /// merge, by the loader).
    ///
    /// Lists only ever grow: a derived profile cannot remove a parent's
    /// entries, so a profile reads as "the parent, and also ...". That holds
    /// for `landlock.skip`, `seccomp.deny` and `seccomp.allow` too.
    ///
    /// Two kinds of value are scalars even though they limit something, and
    /// so are replaced whole, in either direction:
    /// - `landlock.connect_tcp` and `bind_tcp` (with `mode`): a port list
    ///   replaces the parent's instead of adding to it, so that a derived
    ///   profile can narrow the ports, not only widen them.
    /// - each `[limits]` field, `required` included: a derived profile can
    ///   loosen a limit as well as tighten it. It cannot remove one its
    ///   parent sets (there is no "unlimited" spelling), only raise it.
    ///
    /// `[network]`: `mode` and `proxy_port` are scalars; `allow`, `deny`
    /// and `upstream_ca` grow like the other lists. A derived profile that
    /// wants fewer hosts than its parent sets `mode = "none"`, or extends
    /// nothing and lists its own.
    pub fn apply_to(self, profile: &mut Profile) {
        if let Some(description) = self.description {
            profile.description = description;
        }
        if let Some(hostname) = self.hostname {
            profile.hostname = hostname;
        }
        append_unique(&mut profile.pass_env, self.pass_env);
        profile.env.extend(self.env);
        append_unique(&mut profile.grants, self.grants);
        profile.secrets.extend(self.secrets);

        let fs = &mut profile.filesystem;
        let layer = self.filesystem;
        if let Some(workspace) = layer.workspace {
            fs.workspace = workspace;
        }
        append_paths(&mut fs.read_only, layer.read_only);
        append_paths(&mut fs.read_write, layer.read_write);
        append_paths(&mut fs.mask, layer.mask);
        append_paths(&mut fs.tmpfs, layer.tmpfs);
        append_unique(&mut fs.protect, layer.protect);

        let landlock = &mut profile.landlock;
        let layer = self.landlock;
        if let Some(mode) = layer.mode {
            landlock.mode = mode;
        }
        if let Some(ports) = layer.connect_tcp {
            landlock.connect_tcp = ports;
        }
        if let Some(ports) = layer.bind_tcp {
            landlock.bind_tcp = ports;
        }
        append_paths(&mut landlock.skip, layer.skip);

        append_unique(&mut profile.seccomp.deny, self.seccomp.deny);
        append_unique(&mut profile.seccomp.allow, self.seccomp.allow);

        let limits = &mut profile.limits;
        let layer = self.limits;
        for (value, set) in [
            (&mut limits.memory, layer.memory),
            (&mut limits.pids, layer.pids),
            (&mut limits.cpu_millis, layer.cpu_millis),
            (&mut limits.timeout_ms, layer.timeout_ms),
        ] {
            if set.is_some() {
                *value = set;
            }
        }
        if let Some(required) = layer.required {
            limits.required = required;
        }

        let net = &mut profile.network;
        let layer = self.network;
        if let Some(mode) = layer.mode {
            net.mode = mode;
        }
        if let Some(port) = layer.proxy_port {
            net.proxy_port = port;
        }
        append_unique(&mut net.allow, layer.allow);
        append_unique(&mut net.deny, layer.deny);
        append_paths(&mut net.upstream_ca, layer.upstream_ca);
    }
}

fn append_unique(list: &mut Vec<String>, more: Vec<String>) {
    for item in more {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// A path listed again keeps its first position, but the later `-` marker
/// wins: a derived profile can make a parent's optional path required, or
/// tolerate the absence of one the parent requires.
fn append_paths(list: &mut Vec<PathSpec>, more: Vec<PathSpec>) {
    for spec in more {
        match list.iter_mut().find(|p| p.path == spec.path) {
            Some(existing) => existing.optional = spec.optional,
            None => list.push(spec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> PathSpec {
        PathSpec {
            path: s.trim_start_matches('-').to_string(),
            optional: s.starts_with('-'),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn parent() -> Layer {
        Layer {
            description: Some("parent".into()),
            hostname: Some("parent-host".into()),
            pass_env: strings(&["A", "B"]),
            env: [("X", "1"), ("Y", "1")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            filesystem: FilesystemLayer {
                workspace: Some(WorkspaceAccess::ReadOnly),
                read_only: vec![spec("/usr"), spec("-/opt"), spec("/etc")],
                tmpfs: vec![spec("/tmp")],
                protect: strings(&[".git/hooks", ".envrc"]),
                ..Default::default()
            },
            landlock: LandlockLayer {
                mode: Some(Enforcement::Required),
                connect_tcp: Some(Ports::Only(vec![443])),
                bind_tcp: Some(Ports::Only(vec![])),
                skip: vec![spec("-/srv")],
            },
            seccomp: SeccompLayer {
                deny: strings(&["chroot"]),
                allow: strings(&["ptrace"]),
            },
            limits: LimitsLayer {
                memory: Some(1 << 30),
                pids: Some(512),
                cpu_millis: Some(1500),
                timeout_ms: Some(1000),
                required: Some(true),
            },
            ..Default::default()
        }
    }

    #[test]
    fn child_over_parent() {
        let mut p = Profile::default();
        parent().apply_to(&mut p);
        Layer {
            hostname: Some("child-host".into()),
            pass_env: strings(&["C", "A"]),
            env: [("Y", "2"), ("Z", "2")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            filesystem: FilesystemLayer {
                read_only: vec![spec("/opt"), spec("/srv"), spec("-/etc")],
                read_write: vec![spec("~/cache")],
                protect: strings(&[".envrc", ".vscode"]),
                ..Default::default()
            },
            ..Default::default()
        }
        .apply_to(&mut p);

        // Scalars the child leaves unset come from the parent.
        assert_eq!(p.description, "parent");
        assert_eq!(p.filesystem.workspace, WorkspaceAccess::ReadOnly);
        assert_eq!(p.hostname, "child-host");
        assert_eq!(p.pass_env, ["A", "B", "C"]);
        assert_eq!(p.env["X"], "1");
        assert_eq!(p.env["Y"], "2");
        assert_eq!(p.env["Z"], "2");
        assert_eq!(
            p.filesystem.read_only,
            vec![spec("/usr"), spec("/opt"), spec("-/etc"), spec("/srv")]
        );
        assert_eq!(p.filesystem.read_write, vec![spec("~/cache")]);
        assert_eq!(p.filesystem.tmpfs, vec![spec("/tmp")]);
        assert_eq!(p.filesystem.protect, [".git/hooks", ".envrc", ".vscode"]);
    }

    #[test]
    fn landlock_seccomp_limits_over_parent() {
        let mut p = Profile::default();
        Layer {
            landlock: LandlockLayer {
                mode: Some(Enforcement::Required),
                connect_tcp: Some(Ports::Only(vec![80, 443])),
                bind_tcp: None,
                skip: vec![spec("/srv/a"), spec("-/srv/b")],
            },
            seccomp: SeccompLayer {
                deny: strings(&["chroot", "acct"]),
                allow: strings(&["ptrace"]),
            },
            limits: LimitsLayer {
                memory: Some(1 << 30),
                pids: Some(4096),
                cpu_millis: Some(2000),
                timeout_ms: None,
                required: Some(true),
            },
            ..Default::default()
        }
        .apply_to(&mut p);
        assert_eq!(p.landlock.bind_tcp, Ports::Any, "unset: the default");

        Layer {
            landlock: LandlockLayer {
                mode: None,
                // Replaces rather than adds: the child narrows the list.
                connect_tcp: Some(Ports::Only(vec![443])),
                bind_tcp: Some(Ports::Only(vec![8080])),
                skip: vec![spec("/srv/b"), spec("/srv/c")],
            },
            seccomp: SeccompLayer {
                deny: strings(&["acct", "swapon"]),
                allow: strings(&["ptrace", "mount"]),
            },
            limits: LimitsLayer {
                // Loosened and tightened alike.
                memory: Some(4 << 30),
                pids: Some(64),
                cpu_millis: None,
                timeout_ms: Some(60_000),
                required: Some(false),
            },
            ..Default::default()
        }
        .apply_to(&mut p);

        assert_eq!(p.landlock.mode, Enforcement::Required);
        assert_eq!(p.landlock.connect_tcp, Ports::Only(vec![443]));
        assert_eq!(p.landlock.bind_tcp, Ports::Only(vec![8080]));
        assert_eq!(
            p.landlock.skip,
            vec![spec("/srv/a"), spec("/srv/b"), spec("/srv/c")]
        );
        assert_eq!(p.seccomp.deny, ["chroot", "acct", "swapon"]);
        assert_eq!(p.seccomp.allow, ["ptrace", "mount"]);
        assert_eq!(p.limits.memory, Some(4 << 30));
        assert_eq!(p.limits.pids, Some(64));
        assert_eq!(p.limits.cpu_millis, Some(2000));
        assert_eq!(p.limits.timeout_ms, Some(60_000));
        assert!(!p.limits.required);

        // "any" replaces a list, and a list replaces "any".
        Layer {
            landlock: LandlockLayer {
                connect_tcp: Some(Ports::Any),
                bind_tcp: Some(Ports::Only(vec![])),
                mode: Some(Enforcement::BestEffort),
                ..Default::default()
            },
            ..Default::default()
        }
        .apply_to(&mut p);
        assert_eq!(p.landlock.connect_tcp, Ports::Any);
        assert_eq!(p.landlock.bind_tcp, Ports::Only(vec![]));
        assert_eq!(p.landlock.mode, Enforcement::BestEffort);
    }

    #[test]
    fn network_over_parent() {
        let mut p = Profile::default();
        Layer {
            network: NetworkLayer {
                mode: Some(NetworkMode::Open),
                allow: strings(&["a.com", "*.b.com"]),
                deny: strings(&["x.com"]),
                proxy_port: Some(8888),
                upstream_ca: vec![spec("/ca/a.pem"), spec("-/ca/b.pem")],
            },
            ..Default::default()
        }
        .apply_to(&mut p);
        assert_eq!(p.network.mode, NetworkMode::Open);
        assert_eq!(p.network.proxy_port, 8888);

        // Unset scalars keep the parent's; lists append without repeats.
        Layer {
            network: NetworkLayer {
                allow: strings(&["c.com:22", "a.com"]),
                deny: strings(&["y.com", "x.com"]),
                upstream_ca: vec![spec("/ca/b.pem"), spec("/ca/c.pem")],
                ..Default::default()
            },
            ..Default::default()
        }
        .apply_to(&mut p);
        assert_eq!(p.network.mode, NetworkMode::Open);
        assert_eq!(p.network.proxy_port, 8888);
        assert_eq!(p.network.allow, ["a.com", "*.b.com", "c.com:22"]);
        assert_eq!(p.network.deny, ["x.com", "y.com"]);
        assert_eq!(
            p.network.upstream_ca,
            vec![spec("/ca/a.pem"), spec("/ca/b.pem"), spec("/ca/c.pem")]
        );

        // Set scalars win, in either direction.
        Layer {
            network: NetworkLayer {
                mode: Some(NetworkMode::None),
                proxy_port: Some(3128),
                ..Default::default()
            },
            ..Default::default()
        }
        .apply_to(&mut p);
        assert_eq!(p.network.mode, NetworkMode::None);
        assert_eq!(p.network.proxy_port, 3128);
        assert_eq!(p.network.allow.len(), 3);
    }

    #[test]
    fn empty_layer_changes_nothing() {
        let mut base = Profile::default();
        parent().apply_to(&mut base);
        let mut p = base.clone();
        Layer::default().apply_to(&mut p);
        assert_eq!(p, base);
    }

    #[test]
    fn repeats_within_one_layer_collapse() {
        let mut p = Profile::default();
        Layer {
            pass_env: strings(&["A", "A"]),
            filesystem: FilesystemLayer {
                mask: vec![spec("-/x"), spec("/y"), spec("/x")],
                ..Default::default()
            },
            ..Default::default()
        }
        .apply_to(&mut p);
        assert_eq!(p.pass_env, ["A"]);
        assert_eq!(p.filesystem.mask, vec![spec("/x"), spec("/y")]);
    }
}
