//! One validated profile file before `extends` is applied, and the rule for
//! merging a file over its parent.

use super::model::{PathSpec, Profile, WorkspaceAccess};
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
    pub filesystem: FilesystemLayer,
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

impl Layer {
    /// Merges this layer over `profile`, which holds everything its parents
    /// said. Scalars: this layer's value when set. Lists: the parents'
    /// entries, then this layer's, without repeats. `[env]`: union, this
    /// layer winning.
    ///
    /// Merging only ever adds: a derived profile cannot remove a parent's
    /// entries, so a profile reads as "the parent, and also ...".
    pub fn apply_to(self, profile: &mut Profile) {
        if let Some(description) = self.description {
            profile.description = description;
        }
        if let Some(hostname) = self.hostname {
            profile.hostname = hostname;
        }
        append_unique(&mut profile.pass_env, self.pass_env);
        profile.env.extend(self.env);

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
