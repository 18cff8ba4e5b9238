//! Finding profiles by name or path, and following `extends`.

use super::builtin;
use super::error::{Doc, ProfileError};
use super::model::Profile;
use super::raw::{self, check_name, is_path_spec};
use super::Listing;
use std::borrow::Cow;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Where system-wide profiles live unless `MOAT_SYSTEM_PROFILE_DIR` says
/// otherwise.
pub(crate) const SYSTEM_DIR: &str = "/etc/moat/profiles";

/// The directories searched for a profile name, before the built-ins.
///
/// Built from the environment by [`Resolver::from_env`]; tests build it
/// directly because environment variables are shared by parallel tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolver {
    pub user_dir: Option<PathBuf>,
    pub system_dir: Option<PathBuf>,
}

/// The search order for names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    User,
    System,
    Builtin,
}

impl Level {
    /// Whether a search that starts after `after` (`None`: from the top)
    /// looks at this level.
    fn searched_after(self, after: Option<Level>) -> bool {
        after.map_or(true, |a| self > a)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    File(PathBuf),
    Builtin(&'static str),
}

impl Origin {
    fn label(&self) -> String {
        match self {
            Origin::File(path) => path.display().to_string(),
            Origin::Builtin(name) => builtin::label(name),
        }
    }

    /// Tells two spellings of the same file apart from two files, so that
    /// cycles through `./a.toml` and `../dir/a.toml` are still caught.
    fn identity(&self) -> String {
        match self {
            Origin::File(path) => std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
            Origin::Builtin(name) => builtin::label(name),
        }
    }
}

/// A profile's text and where it came from.
struct Found {
    origin: Origin,
    text: Cow<'static, str>,
}

impl Resolver {
    /// User profiles in `$XDG_CONFIG_HOME/moat/profiles` (`~/.config` when
    /// unset), system ones in `MOAT_SYSTEM_PROFILE_DIR` or `/etc/moat/profiles`.
    pub fn from_env() -> Self {
        let var = |key: &str| {
            std::env::var_os(key)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        // The XDG spec says relative values are to be ignored.
        let config = var("XDG_CONFIG_HOME")
            .filter(|p| p.is_absolute())
            .or_else(|| var("HOME").map(|home| home.join(".config")));
        Resolver {
            user_dir: config.map(|c| c.join("moat").join("profiles")),
            system_dir: Some(var("MOAT_SYSTEM_PROFILE_DIR").unwrap_or_else(|| SYSTEM_DIR.into())),
        }
    }

    pub fn load(&self, spec: &str) -> Result<Profile, ProfileError> {
        if is_path_spec(spec) {
            return self.load_file(Path::new(spec));
        }
        check_name(spec).map_err(|reason| ProfileError::InvalidName {
            spec: spec.to_string(),
            reason,
        })?;
        match self.find_name(spec, None)? {
            Some(found) => self.resolve(found, spec),
            None => Err(ProfileError::NotFound {
                spec: spec.to_string(),
                searched: self.searched(spec, None),
            }),
        }
    }

    pub fn load_file(&self, path: &Path) -> Result<Profile, ProfileError> {
        let name = path.display().to_string();
        match read(path)? {
            Some(text) => {
                let found = Found {
                    origin: Origin::File(path.to_path_buf()),
                    text: text.into(),
                };
                self.resolve(found, &name)
            }
            None => Err(ProfileError::NotFound {
                searched: vec![std::path::absolute(path)
                    .unwrap_or_else(|_| path.to_path_buf())
                    .display()
                    .to_string()],
                spec: name,
            }),
        }
    }

    /// Every profile in every source, by name and then in search order.
    pub fn list(&self) -> Vec<Listing> {
        let mut entries: Vec<(String, Level, Origin)> = Vec::new();
        for (level, dir) in self.dirs() {
            let Ok(dir) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in dir.flatten() {
                let file_name = entry.file_name();
                let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".toml")) else {
                    continue;
                };
                // A file `load` could never find by name is not a profile
                // of this directory.
                if check_name(name).is_ok() {
                    entries.push((name.to_string(), level, Origin::File(entry.path())));
                }
            }
        }
        for name in builtin::names() {
            entries.push((name.to_string(), Level::Builtin, Origin::Builtin(name)));
        }
        entries.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));

        let mut out: Vec<Listing> = Vec::new();
        for (name, _, origin) in entries {
            let shadowed_by = out
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.source.clone());
            let description = match self.read_origin(&origin) {
                Ok(found) => self.resolve(found, &name).map(|p| p.description),
                Err(e) => Err(e),
            }
            .unwrap_or_else(|e| format!("error: {e}"));
            out.push(Listing {
                name,
                source: origin.label(),
                description,
                shadowed_by,
            });
        }
        out
    }

    fn dirs(&self) -> impl Iterator<Item = (Level, &Path)> {
        [
            (Level::User, self.user_dir.as_deref()),
            (Level::System, self.system_dir.as_deref()),
        ]
        .into_iter()
        .filter_map(|(level, dir)| Some((level, dir?)))
    }

    /// Looks `name` up in the sources after `after` (all when `None`).
    fn find_name(&self, name: &str, after: Option<Level>) -> Result<Option<Found>, ProfileError> {
        for (level, dir) in self.dirs() {
            if !level.searched_after(after) {
                continue;
            }
            let path = dir.join(format!("{name}.toml"));
            if let Some(text) = read(&path)? {
                return Ok(Some(Found {
                    origin: Origin::File(path),
                    text: text.into(),
                }));
            }
        }
        if !Level::Builtin.searched_after(after) {
            return Ok(None);
        }
        Ok(builtin::get(name).map(|(name, text)| Found {
            origin: Origin::Builtin(name),
            text: text.into(),
        }))
    }

    /// What [`Self::find_name`] looks at, for "not found" messages.
    fn searched(&self, name: &str, after: Option<Level>) -> Vec<String> {
        let mut out: Vec<String> = self
            .dirs()
            .filter(|(level, _)| level.searched_after(after))
            .map(|(_, dir)| dir.join(format!("{name}.toml")).display().to_string())
            .collect();
        if Level::Builtin.searched_after(after) {
            out.push(format!(
                "the built-in profiles ({})",
                builtin::names().join(", ")
            ));
        }
        out
    }

    fn read_origin(&self, origin: &Origin) -> Result<Found, ProfileError> {
        let text = match origin {
            Origin::Builtin(name) => Cow::Borrowed(builtin::get(name).map_or("", |(_, text)| text)),
            Origin::File(path) => match read(path)? {
                Some(text) => Cow::Owned(text),
                None => {
                    return Err(ProfileError::File {
                        file: path.display().to_string(),
                        message: "the file disappeared while being read".to_string(),
                    })
                }
            },
        };
        Ok(Found {
            origin: origin.clone(),
            text,
        })
    }

    /// Follows the `extends` chain from `first` and merges it, root first.
    fn resolve(&self, first: Found, name: &str) -> Result<Profile, ProfileError> {
        let mut layers = Vec::new();
        let mut sources = Vec::new();
        let mut seen = Vec::new();
        let mut next = Some(first);
        while let Some(found) = next.take() {
            let label = found.origin.label();
            seen.push(found.origin.identity());
            sources.push(label.clone());
            let doc = Doc {
                file: &label,
                text: &found.text,
            };
            let layer = raw::parse(&doc)?;
            if let Some(extends) = &layer.extends {
                let parent = self.find_extends(&found.origin, extends, &doc)?;
                if seen.contains(&parent.origin.identity()) {
                    let mut chain = sources.clone();
                    chain.push(parent.origin.label());
                    return Err(doc.at(
                        extends.span(),
                        format!(
                            "`extends` forms a cycle: {}; remove `extends` from one of these",
                            chain.join(" -> ")
                        ),
                    ));
                }
                next = Some(parent);
            }
            layers.push(layer);
        }
        let mut profile = Profile {
            name: name.to_string(),
            sources: sources.clone(),
            ..Profile::default()
        };
        // Which file last set each [env] and [secrets] name, for the clash
        // error below.
        let mut env_from = std::collections::BTreeMap::new();
        let mut secret_from = std::collections::BTreeMap::new();
        for (layer, source) in layers.into_iter().rev().zip(sources.iter().rev()) {
            for k in layer.env.keys() {
                env_from.insert(k.clone(), source.clone());
            }
            for k in layer.secrets.keys() {
                secret_from.insert(k.clone(), source.clone());
            }
            layer.apply_to(&mut profile);
        }
        // One name, two values: which one the sandbox should get is not
        // something to guess, and a plain [env] value silently replacing a
        // secret (or the reverse) across `extends` would surprise both.
        if let Some(name) = profile
            .secrets
            .keys()
            .find(|k| profile.env.contains_key(*k))
        {
            return Err(ProfileError::File {
                file: secret_from[name].clone(),
                message: format!(
                    "`{name}` is a secret here and also set in [env] (in {}); a variable \
                     comes from one of them only: remove one",
                    env_from[name]
                ),
            });
        }
        Ok(profile)
    }

    fn find_extends(
        &self,
        origin: &Origin,
        extends: &Spanned<String>,
        doc: &Doc<'_>,
    ) -> Result<Found, ProfileError> {
        let spec = extends.get_ref().as_str();
        let at = |message: String| doc.at(extends.span(), message);
        if is_path_spec(spec) {
            let Origin::File(path) = origin else {
                return Err(at(format!(
                    "a built-in profile can only extend profiles by name, not `{spec}`"
                )));
            };
            let target: PathBuf = path
                .parent()
                .unwrap_or(Path::new(""))
                .join(spec)
                .components()
                .collect();
            return match read(&target)? {
                Some(text) => Ok(Found {
                    origin: Origin::File(target),
                    text: text.into(),
                }),
                None => Err(at(format!(
                    "`extends`: no profile file at `{}` (a relative path is taken from the \
                     directory of the file that contains it)",
                    target.display()
                ))),
            };
        }

        // A profile extending its own name customises the one it hides
        // (user `default.toml` with `extends = "default"`): continue the
        // search after the source it was found in instead of finding itself.
        let after = self.level_of(origin, spec);
        if let Some(found) = self.find_name(spec, after)? {
            return Ok(found);
        }
        let searched = self.searched(spec, after);
        Err(at(if searched.is_empty() {
            format!(
                "`extends`: this profile extends its own name `{spec}`, but no source after \
                 it has a profile of that name"
            )
        } else if after.is_some() {
            format!(
                "`extends`: profile `{spec}` not found after this file in the search order; \
                 looked in: {}",
                searched.join(", ")
            )
        } else {
            format!(
                "`extends`: profile `{spec}` not found; looked in: {}",
                searched.join(", ")
            )
        }))
    }

    /// The source in which a lookup of `name` would find `origin`, if any.
    fn level_of(&self, origin: &Origin, name: &str) -> Option<Level> {
        match origin {
            Origin::Builtin(own) => (*own == name).then_some(Level::Builtin),
            Origin::File(path) => self
                .dirs()
                .find(|(_, dir)| same_file(&dir.join(format!("{name}.toml")), path))
                .map(|(level, _)| level),
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// The file's text, or `None` when there is no such file. Any other failure
/// is an error: an unreadable profile must not silently fall through to a
/// less specific one.
fn read(path: &Path) -> Result<Option<String>, ProfileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProfileError::File {
            file: path.display().to_string(),
            message: if e.kind() == io::ErrorKind::InvalidData {
                "not valid UTF-8 text".to_string()
            } else {
                format!("cannot read profile: {e}")
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::model::{Enforcement, Limits, PathSpec, Ports, WorkspaceAccess};
    use std::fs;
    use tempfile::TempDir;

    struct Setup {
        _tmp: TempDir,
        root: PathBuf,
        resolver: Resolver,
    }

    impl Setup {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().to_path_buf();
            let resolver = Resolver {
                user_dir: Some(root.join("user")),
                system_dir: Some(root.join("system")),
            };
            fs::create_dir_all(root.join("user")).unwrap();
            fs::create_dir_all(root.join("system")).unwrap();
            Setup {
                _tmp: tmp,
                root,
                resolver,
            }
        }

        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.root.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
            path
        }

        fn path(&self, rel: &str) -> String {
            self.root.join(rel).display().to_string()
        }
    }

    fn optional(path: &str) -> PathSpec {
        PathSpec {
            path: path.into(),
            optional: true,
        }
    }

    #[test]
    fn builtin_default() {
        let s = Setup::new();
        let p = s.resolver.load("default").unwrap();
        assert_eq!(p.name, "default");
        assert_eq!(p.sources, ["builtin:default"]);
        assert_eq!(p.hostname, "moat");
        assert!(p.description.contains("coding agent"));
        assert_eq!(p.env["MOAT_SANDBOX"], "1");
        assert_eq!(p.filesystem.workspace, WorkspaceAccess::ReadWrite);
        assert_eq!(p.filesystem.read_only[0].to_string(), "/usr");
        assert!(p.filesystem.read_only.contains(&optional("~/.gitconfig")));
        assert!(p.filesystem.mask.contains(&optional("/etc/shadow")));
        assert_eq!(p.filesystem.tmpfs[0].to_string(), "/tmp");
        assert!(p.filesystem.protect.contains(&".git/hooks".to_string()));
        assert_eq!(p.landlock.mode, Enforcement::BestEffort);
        assert_eq!(p.landlock.connect_tcp, Ports::Only(vec![]));
        assert_eq!(p.landlock.bind_tcp, Ports::Any);
        assert!(p.landlock.skip.is_empty());
        assert!(p.seccomp.deny.is_empty() && p.seccomp.allow.is_empty());
        assert_eq!(
            p.limits,
            Limits {
                pids: Some(4096),
                ..Limits::default()
            }
        );
    }

    #[test]
    fn limits_and_ports_through_extends() {
        let s = Setup::new();
        s.write(
            "user/base.toml",
            "extends = \"default\"\n[landlock]\nconnect_tcp = [443, 8080]\n\
             [seccomp]\ndeny = [\"chroot\"]\n[limits]\nmemory = \"2G\"\ntimeout = \"1h\"\n",
        );
        let path = s.write(
            "leaf.toml",
            "extends = \"base\"\n[landlock]\nconnect_tcp = [443]\nmode = \"required\"\n\
             [seccomp]\ndeny = [\"acct\", \"chroot\"]\n[limits]\npids = 64\ntimeout = 90\n",
        );
        let p = s.resolver.load_file(&path).unwrap();
        assert_eq!(p.landlock.mode, Enforcement::Required);
        assert_eq!(p.landlock.connect_tcp, Ports::Only(vec![443]));
        assert_eq!(p.seccomp.deny, ["chroot", "acct"]);
        assert_eq!(
            p.limits,
            Limits {
                memory: Some(2 << 30),
                pids: Some(64),
                cpu_millis: None,
                timeout_ms: Some(90_000),
                required: false,
            }
        );

        let bad = s.write("bad.toml", "extends = \"base\"\n\n[limits]\n  pids = 3\n");
        let e = s.resolver.load_file(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}:4:10: `pids` in [limits] is 3, but a shell needs more than that",
                bad.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn empty_file_inherits_nothing() {
        let s = Setup::new();
        let path = s.write("empty.toml", "");
        let p = s.resolver.load_file(&path).unwrap();
        assert_eq!(
            p,
            Profile {
                name: path.display().to_string(),
                sources: vec![path.display().to_string()],
                ..Profile::default()
            }
        );
        assert_eq!(p.hostname, "moat");
    }

    #[test]
    fn search_order_user_system_builtin() {
        let s = Setup::new();
        s.write("system/a.toml", "hostname = \"system\"");
        s.write("user/a.toml", "hostname = \"user\"");
        s.write("system/b.toml", "hostname = \"system\"");
        assert_eq!(s.resolver.load("a").unwrap().hostname, "user");
        assert_eq!(
            s.resolver.load("b").unwrap().sources,
            [s.path("system/b.toml")]
        );

        let e = s.resolver.load("nope").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "profile `nope` not found; looked in: {}, {}, the built-in profiles (default)",
                s.path("user/nope.toml"),
                s.path("system/nope.toml")
            )
        );
        // A spec with `/` is a path relative to the cwd, never a name; use
        // one that cannot exist wherever the tests run.
        let e = s
            .resolver
            .load("../moat-no-such-profile-3f9c")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("profile `../moat-no-such-profile-3f9c` not found; looked in: /"),
            "{e}"
        );
        let e = s.resolver.load(".x").unwrap_err().to_string();
        assert!(e.starts_with("`.x` is not a valid profile name"), "{e}");
    }

    #[test]
    fn missing_directories_are_fine() {
        let resolver = Resolver {
            user_dir: None,
            system_dir: Some("/nonexistent/moat-test".into()),
        };
        assert_eq!(
            resolver.load("default").unwrap().sources,
            ["builtin:default"]
        );
        let names: Vec<String> = resolver.list().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["default"]);
    }

    #[test]
    fn extends_by_name() {
        let s = Setup::new();
        let path = s.write(
            "proj/agent.toml",
            "extends = \"default\"\nhostname = \"agent\"\n[filesystem]\nread_write = [\"~/.cache\"]\n",
        );
        let p = s.resolver.load_file(&path).unwrap();
        assert_eq!(
            p.sources,
            [path.display().to_string(), "builtin:default".to_string()]
        );
        assert_eq!(p.hostname, "agent");
        assert!(p.description.contains("coding agent"));
        assert_eq!(p.filesystem.read_write[0].path, "~/.cache");
        assert_eq!(p.filesystem.read_only[0].path, "/usr");
    }

    #[test]
    fn secrets_merge_and_clash_with_env_across_extends() {
        let s = Setup::new();
        s.write(
            "proj/base.toml",
            "[secrets]\nA = \"env:X\"\nB = \"env:Y\"\n",
        );
        let path = s.write(
            "proj/child.toml",
            "extends = \"./base.toml\"\n[secrets]\nB = \"-file:/b\"\n",
        );
        let p = s.resolver.load_file(&path).unwrap();
        assert_eq!(p.secrets["A"].to_string(), "env:X");
        assert_eq!(p.secrets["B"].to_string(), "-file:/b");
        let clash = s.write(
            "proj/clash.toml",
            "extends = \"./base.toml\"\n[env]\nA = \"plain\"\n",
        );
        let e = s.resolver.load_file(&clash).unwrap_err().to_string();
        assert!(e.contains("`A`") && e.contains("[env]"), "{e}");
        assert!(e.contains("base.toml") && e.contains("clash.toml"), "{e}");
    }

    #[test]
    fn extends_by_relative_path() {
        let s = Setup::new();
        s.write("proj/base/common.toml", "pass_env = [\"COMMON\"]");
        s.write(
            "proj/base/mid.toml",
            "extends = \"common.toml\"\npass_env = [\"MID\"]",
        );
        let path = s.write(
            "proj/sub/leaf.toml",
            "extends = \"../base/mid.toml\"\npass_env = [\"LEAF\"]",
        );
        let p = s.resolver.load_file(&path).unwrap();
        assert_eq!(p.pass_env, ["COMMON", "MID", "LEAF"]);
        assert_eq!(
            p.sources,
            [
                path.display().to_string(),
                s.path("proj/sub/../base/mid.toml"),
                s.path("proj/sub/../base/common.toml"),
            ]
        );

        let path = s.write("proj/bad.toml", "\n\nextends = \"./missing.toml\"");
        let e = s.resolver.load_file(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}:3:11: `extends`: no profile file at `{}`",
                path.display(),
                s.path("proj/missing.toml")
            )),
            "{e}"
        );
    }

    #[test]
    fn extends_unknown_name_points_at_the_line() {
        let s = Setup::new();
        let path = s.write("x.toml", "hostname = \"x\"\nextends = \"nosuch\"\n");
        let e = s.resolver.load_file(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}:2:11: `extends`: profile `nosuch` not found; looked in: {}",
                path.display(),
                s.path("user/nosuch.toml")
            )),
            "{e}"
        );
    }

    #[test]
    fn self_name_extends_continues_down_the_search_order() {
        let s = Setup::new();
        s.write(
            "user/default.toml",
            "extends = \"default\"\nhostname = \"mine\"\n[env]\nWHO = \"user\"",
        );
        s.write(
            "system/default.toml",
            "extends = \"default\"\npass_env = [\"SITE\"]\n[env]\nWHO = \"system\"\nSITE = \"1\"",
        );
        let p = s.resolver.load("default").unwrap();
        assert_eq!(
            p.sources,
            [
                s.path("user/default.toml"),
                s.path("system/default.toml"),
                "builtin:default".to_string()
            ]
        );
        assert_eq!(p.hostname, "mine");
        assert_eq!(p.pass_env, ["SITE"]);
        assert_eq!(p.env["WHO"], "user");
        assert_eq!(p.env["SITE"], "1");
        assert_eq!(p.env["MOAT_SANDBOX"], "1");
        assert_eq!(p.filesystem.read_only[0].path, "/usr");

        // The same file loaded by path knows where it sits.
        let p = s.resolver.load(&s.path("system/default.toml")).unwrap();
        assert_eq!(p.sources[1], "builtin:default");
    }

    #[test]
    fn self_name_without_a_lower_source_is_an_error() {
        let s = Setup::new();
        let path = s.write("user/solo.toml", "extends = \"solo\"");
        let e = s.resolver.load("solo").unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}:1:11: `extends`: profile `solo` not found after this file",
                path.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn cycles_are_reported_with_the_chain() {
        let s = Setup::new();
        s.write("user/a.toml", "extends = \"b\"");
        s.write("user/b.toml", "description = \"b\"\nextends = \"./c.toml\"");
        s.write("user/c.toml", "extends = \"a\"");
        let e = s.resolver.load("a").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{c}:1:11: `extends` forms a cycle: {a} -> {b} -> {c} -> {a}; remove `extends` \
                 from one of these",
                a = s.path("user/a.toml"),
                b = s.path("user/b.toml"),
                c = s.path("user/c.toml"),
            )
        );

        let path = s.write("self.toml", "extends = \"self.toml\"");
        let e = s.resolver.load_file(&path).unwrap_err().to_string();
        assert!(e.contains("`extends` forms a cycle"), "{e}");
    }

    #[test]
    fn errors_in_parents_name_the_parent_file() {
        let s = Setup::new();
        let parent = s.write("user/broken.toml", "[filesystem]\nread_only = [\"usr\"]");
        let child = s.write("child.toml", "extends = \"broken\"");
        let e = s.resolver.load_file(&child).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:2:14: path `usr`", parent.display())),
            "{e}"
        );
    }

    #[test]
    fn unreadable_profile_is_an_error_not_a_fallthrough() {
        let s = Setup::new();
        fs::create_dir_all(s.root.join("user/default.toml")).unwrap();
        let e = s.resolver.load("default").unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}: cannot read profile",
                s.path("user/default.toml")
            )),
            "{e}"
        );
        s.write("user/bin.toml", "");
        fs::write(s.root.join("user/bin.toml"), b"\xff\xfe").unwrap();
        let e = s.resolver.load("bin").unwrap_err().to_string();
        assert!(e.ends_with(": not valid UTF-8 text"), "{e}");
    }

    #[test]
    fn listing_marks_shadowed_and_broken_profiles() {
        let s = Setup::new();
        s.write(
            "user/default.toml",
            "extends = \"default\"\ndescription = \"mine\"",
        );
        s.write("system/default.toml", "");
        s.write("system/team.toml", "extends = \"default\"");
        s.write("user/broken.toml", "hostnme = \"x\"");
        s.write("user/notes.txt", "");
        s.write("user/.hidden.toml", "");
        let list = s.resolver.list();
        let rows: Vec<(&str, &str, Option<&str>)> = list
            .iter()
            .map(|l| (l.name.as_str(), l.source.as_str(), l.shadowed_by.as_deref()))
            .collect();
        let user_default = s.path("user/default.toml");
        assert_eq!(
            rows,
            [
                ("broken", s.path("user/broken.toml").as_str(), None),
                ("default", user_default.as_str(), None),
                (
                    "default",
                    s.path("system/default.toml").as_str(),
                    Some(user_default.as_str())
                ),
                ("default", "builtin:default", Some(user_default.as_str())),
                ("team", s.path("system/team.toml").as_str(), None),
            ]
        );
        assert!(
            list[0].description.starts_with("error: "),
            "{}",
            list[0].description
        );
        assert!(list[0].description.contains("unknown key `hostnme`"));
        assert_eq!(list[1].description, "mine");
        assert_eq!(list[2].description, "");
        assert!(list[3].description.contains("coding agent"));
        // `team` extends the user's default, which customises the built-in.
        assert_eq!(list[4].description, "mine");
    }
}
