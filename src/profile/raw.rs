//! The TOML schema of one profile file, and its validation into a [`Layer`].
//!
//! Values whose errors are found only after deserializing are kept
//! [`Spanned`] so those errors can still point at a line and column. Adding a
//! table means adding a field to [`RawProfile`], a struct for the table, and
//! its check in [`RawProfile::validate`].

use super::error::{Doc, ProfileError};
use super::layer::{FilesystemLayer, Layer};
use super::model::{PathSpec, WorkspaceAccess};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

type Text = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfile {
    description: Option<Text>,
    extends: Option<Text>,
    hostname: Option<Text>,
    #[serde(default)]
    pass_env: Vec<Text>,
    #[serde(default)]
    env: BTreeMap<Text, Text>,
    #[serde(default)]
    filesystem: RawFilesystem,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesystem {
    workspace: Option<Text>,
    #[serde(default)]
    read_only: Vec<Text>,
    #[serde(default)]
    read_write: Vec<Text>,
    #[serde(default)]
    mask: Vec<Text>,
    #[serde(default)]
    tmpfs: Vec<Text>,
    #[serde(default)]
    protect: Vec<Text>,
}

/// Parses and validates one profile file (its own keys only; `extends` is
/// checked for syntax here and resolved by the caller).
pub(crate) fn parse(doc: &Doc<'_>) -> Result<Layer, ProfileError> {
    doc.deserialize::<RawProfile>()?.validate(doc)
}

impl RawProfile {
    fn validate(self, doc: &Doc<'_>) -> Result<Layer, ProfileError> {
        if let Some(extends) = &self.extends {
            check_extends(doc, extends)?;
        }
        let hostname = match self.hostname {
            Some(h) => Some(hostname(doc, &h)?),
            None => None,
        };
        let pass_env = self
            .pass_env
            .iter()
            .map(|p| pass_env_entry(doc, p))
            .collect::<Result<_, _>>()?;
        let mut env = BTreeMap::new();
        for (key, value) in self.env {
            check_env(doc, &key, &value)?;
            env.insert(key.into_inner(), value.into_inner());
        }
        Ok(Layer {
            extends: self.extends,
            description: self.description.map(Spanned::into_inner),
            hostname,
            pass_env,
            env,
            filesystem: self.filesystem.validate(doc)?,
        })
    }
}

impl RawFilesystem {
    fn validate(self, doc: &Doc<'_>) -> Result<FilesystemLayer, ProfileError> {
        let paths = |list: &'static str, items: &[Text]| -> Result<Vec<PathSpec>, ProfileError> {
            items.iter().map(|p| path_spec(doc, list, p)).collect()
        };
        Ok(FilesystemLayer {
            workspace: match &self.workspace {
                Some(w) => Some(workspace(doc, w)?),
                None => None,
            },
            read_only: paths("read_only", &self.read_only)?,
            read_write: paths("read_write", &self.read_write)?,
            mask: paths("mask", &self.mask)?,
            tmpfs: paths("tmpfs", &self.tmpfs)?,
            protect: self
                .protect
                .iter()
                .map(|p| protect_entry(doc, p))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A spec names a file when it looks like one; anything else is a name
/// looked up in the profile directories.
pub(crate) fn is_path_spec(spec: &str) -> bool {
    spec.contains('/') || spec.ends_with(".toml")
}

/// Names become file names (`NAME.toml`) in the search directories, so they
/// must not climb out of them or hide as dotfiles.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() || !ok_chars || name.starts_with('.') {
        return Err(
            "names use letters, digits, `_`, `.` and `-`, and do not start with `.`; \
                    to use a file, give a path containing `/` or ending in `.toml`"
                .to_string(),
        );
    }
    Ok(())
}

fn check_extends(doc: &Doc<'_>, extends: &Text) -> Result<(), ProfileError> {
    let spec = extends.get_ref();
    if spec.is_empty() {
        return Err(doc.at(
            extends.span(),
            "`extends` is empty; name a profile (`extends = \"default\"`) or a file \
             (`extends = \"./base.toml\"`), or remove the key to inherit nothing",
        ));
    }
    if spec.contains('\0') {
        return Err(doc.at(extends.span(), "`extends` contains a NUL character"));
    }
    if !is_path_spec(spec) {
        check_name(spec).map_err(|reason| {
            doc.at(
                extends.span(),
                format!("`extends`: `{spec}` is not a valid profile name: {reason}"),
            )
        })?;
    }
    Ok(())
}

fn hostname(doc: &Doc<'_>, h: &Text) -> Result<String, ProfileError> {
    let name = h.get_ref();
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if name.is_empty() || name.len() > 64 || !ok_chars || name.starts_with('-') {
        return Err(doc.at(
            h.span(),
            format!(
                "hostname `{}` is not valid: use 1 to 64 letters, digits, `-` and `.`, \
                 not starting with `-`",
                name.escape_debug()
            ),
        ));
    }
    Ok(name.clone())
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn pass_env_entry(doc: &Doc<'_>, entry: &Text) -> Result<String, ProfileError> {
    let s = entry.get_ref();
    if s == "*" {
        // An allowlist that allows everything would hand the agent every
        // token and key in the caller's environment.
        return Err(doc.at(
            entry.span(),
            "`pass_env` entry `*` would pass the whole host environment; list the variables \
             you need, or prefixes such as `LC_*`",
        ));
    }
    if !is_env_name(s.strip_suffix('*').unwrap_or(s)) {
        return Err(doc.at(
            entry.span(),
            format!(
                "`pass_env` entry `{}` is not a variable name: use letters, digits and `_`, \
                 not starting with a digit, optionally ending in `*` to match a prefix",
                s.escape_debug()
            ),
        ));
    }
    Ok(s.clone())
}

fn check_env(doc: &Doc<'_>, key: &Text, value: &Text) -> Result<(), ProfileError> {
    if !is_env_name(key.get_ref()) {
        return Err(doc.at(
            key.span(),
            format!(
                "[env] key `{}` is not a valid variable name: use letters, digits and `_`, \
                 not starting with a digit",
                key.get_ref().escape_debug()
            ),
        ));
    }
    if value.get_ref().contains('\0') {
        return Err(doc.at(
            value.span(),
            format!(
                "[env] value of `{}` contains a NUL character, which no program can receive",
                key.get_ref()
            ),
        ));
    }
    Ok(())
}

fn workspace(doc: &Doc<'_>, w: &Text) -> Result<WorkspaceAccess, ProfileError> {
    match w.get_ref().as_str() {
        "read-write" => Ok(WorkspaceAccess::ReadWrite),
        "read-only" => Ok(WorkspaceAccess::ReadOnly),
        other => Err(doc.at(
            w.span(),
            format!(
                "`workspace` in [filesystem] must be \"read-write\" or \"read-only\", not \"{}\"",
                other.escape_debug()
            ),
        )),
    }
}

fn path_spec(doc: &Doc<'_>, list: &str, entry: &Text) -> Result<PathSpec, ProfileError> {
    let err = |message: String| Err(doc.at(entry.span(), message));
    let written = entry.get_ref();
    let (optional, path) = match written.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, written.as_str()),
    };
    if path.is_empty() {
        return err(format!(
            "empty path in `filesystem.{list}`; write an absolute path or one starting with `~/`"
        ));
    }
    if path.contains('\0') {
        return err(format!(
            "path `{}` in `filesystem.{list}` contains a NUL character",
            path.escape_debug()
        ));
    }
    if !(path.starts_with('/') || path == "~" || path.starts_with("~/")) {
        return err(format!(
            "path `{}` in `filesystem.{list}` must be absolute or start with `~/` \
             (relative paths would depend on where moat is run)",
            path.escape_debug()
        ));
    }
    // Bind mounts are set up by path; a `..` would make the entry mean
    // something other than what it reads as once symlinks are involved.
    if path.split('/').any(|c| c == "..") {
        return err(format!(
            "path `{}` in `filesystem.{list}` contains a `..` component; write the path it \
             leads to instead",
            path.escape_debug()
        ));
    }
    Ok(PathSpec {
        path: normalize_path(path),
        optional,
    })
}

/// One spelling per path (`/usr//lib/./` is `/usr/lib`) so that merging can
/// drop duplicates by comparing strings.
fn normalize_path(path: &str) -> String {
    let (root, rest) = match path.strip_prefix('/') {
        Some(rest) => ("", rest),
        None => ("~", path.strip_prefix('~').unwrap_or(path)),
    };
    let parts: Vec<&str> = rest
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    match (root, parts.is_empty()) {
        ("", true) => "/".to_string(),
        (root, true) => root.to_string(),
        (root, false) => format!("{root}/{}", parts.join("/")),
    }
}

fn protect_entry(doc: &Doc<'_>, entry: &Text) -> Result<String, ProfileError> {
    let err = |message: String| Err(doc.at(entry.span(), message));
    let s = entry.get_ref();
    if s.is_empty() {
        return err(
            "empty entry in `filesystem.protect`; name a path inside the workspace, such as \
             `.git/hooks`"
                .to_string(),
        );
    }
    if s.contains('\0') {
        return err(format!(
            "`filesystem.protect` entry `{}` contains a NUL character",
            s.escape_debug()
        ));
    }
    if s.starts_with('/') {
        return err(format!(
            "`filesystem.protect` entry `{}` must be relative to the workspace (like \
             `.git/hooks`); to hide or bind host paths use `mask` or `read_only`",
            s.escape_debug()
        ));
    }
    if s.split('/').any(|c| c == "..") {
        return err(format!(
            "`filesystem.protect` entry `{}` contains a `..` component; it may only name \
             paths inside the workspace",
            s.escape_debug()
        ));
    }
    let parts: Vec<&str> = s
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() {
        return err(format!(
            "`filesystem.protect` entry `{}` names the whole workspace; set \
             `workspace = \"read-only\"` in [filesystem] instead",
            s.escape_debug()
        ));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(text: &str) -> Result<Layer, String> {
        parse(&Doc {
            file: "p.toml",
            text,
        })
        .map_err(|e| e.to_string())
    }

    fn error(text: &str) -> String {
        match layer(text) {
            Ok(l) => panic!("expected an error for {text:?}, got {l:?}"),
            Err(e) => e,
        }
    }

    fn assert_error(text: &str, position: &str, needle: &str) {
        let e = error(text);
        assert!(
            e.starts_with(&format!("p.toml:{position}: ")),
            "wrong position in {e:?}, expected {position}"
        );
        assert!(e.contains(needle), "{e:?} does not mention {needle:?}");
    }

    #[test]
    fn empty_file_sets_nothing() {
        let l = layer("").unwrap();
        assert_eq!(l.extends, None);
        assert_eq!(l.description, None);
        assert_eq!(l.hostname, None);
        assert_eq!(l.filesystem.workspace, None);
        assert!(l.pass_env.is_empty() && l.env.is_empty());
        assert!(l.filesystem.read_only.is_empty() && l.filesystem.protect.is_empty());
    }

    #[test]
    fn unknown_top_level_key() {
        let e = error("description = \"x\"\n  hostnme = \"box\"\n");
        assert!(
            e.starts_with("p.toml:2:3: unknown key `hostnme` at the top level; known keys: "),
            "{e}"
        );
        assert!(
            e.contains("`hostname`") && e.contains("`filesystem`"),
            "{e}"
        );
        assert!(e.ends_with("(did you mean `hostname`?)"), "{e}");
    }

    #[test]
    fn unknown_key_in_filesystem() {
        let e = error("[filesystem]\nread_only = []\nreadonly = [\"/usr\"]\n");
        assert!(
            e.starts_with("p.toml:3:1: unknown key `readonly` in [filesystem]; known keys: "),
            "{e}"
        );
        assert!(e.contains("`workspace`") && e.contains("`protect`"), "{e}");
        assert!(e.contains("did you mean `read_only`?"), "{e}");
        // Dotted keys and inline tables land in the same table.
        assert_error(
            "filesystem.tmpf = []\n",
            "1:12",
            "unknown key `tmpf` in [filesystem]",
        );
        assert_error(
            "filesystem = { mask = [], bogus = 1 }\n",
            "1:27",
            "unknown key `bogus` in [filesystem]",
        );
    }

    #[test]
    fn wrong_types() {
        assert_error(
            "hostname = 5\n",
            "1:12",
            "`hostname` must be a string; found integer `5`",
        );
        assert_error(
            "pass_env = \"HOME\"\n",
            "1:12",
            "`pass_env` must be an array; found string \"HOME\"",
        );
        assert_error(
            "[filesystem]\nread_only = [\"/usr\", 3]\n",
            "2:22",
            "`filesystem.read_only[1]` must be a string",
        );
        assert_error("filesystem = 1\n", "1:14", "`filesystem` must be a table");
        assert_error("[env]\nA = true\n", "2:5", "`env.A` must be a string");
    }

    #[test]
    fn toml_syntax_errors() {
        assert_error("hostname = \"moat\"\nhostname = \n", "2:12", "invalid TOML");
        assert_error("[filesystem\n", "1:12", "invalid TOML");
        assert_error(
            "hostname = \"a\"\nhostname = \"b\"\n",
            "2:1",
            "duplicate key `hostname`",
        );
    }

    #[test]
    fn hostname_rules() {
        for ok in ["moat", "a", "build-1.example", &"x".repeat(64)] {
            assert_eq!(
                layer(&format!("hostname = {ok:?}"))
                    .unwrap()
                    .hostname
                    .as_deref(),
                Some(ok)
            );
        }
        for bad in ["", "-x", "a_b", "a b", "ü", &"x".repeat(65)] {
            assert_error(&format!("hostname = {bad:?}"), "1:12", "is not valid");
        }
    }

    #[test]
    fn pass_env_rules() {
        let l = layer("pass_env = [\"HOME\", \"LC_*\", \"_x1\", \"A*\"]").unwrap();
        assert_eq!(l.pass_env, ["HOME", "LC_*", "_x1", "A*"]);
        for bad in ["", "1A", "A-B", "A*B", "**", "A**"] {
            assert_error(
                &format!("pass_env = [\"OK\", {bad:?}]"),
                "1:19",
                "is not a variable name",
            );
        }
        assert_error("pass_env = [\"*\"]", "1:13", "whole host environment");
    }

    #[test]
    fn env_rules() {
        let l = layer("[env]\nA = \"1\"\n_b = \"\"\n").unwrap();
        assert_eq!(l.env["A"], "1");
        assert_eq!(l.env["_b"], "");
        assert_error(
            "[env]\nA = \"1\"\n\"1X\" = \"2\"\n",
            "3:1",
            "[env] key `1X`",
        );
        assert_error("[env]\n\"A-B\" = \"2\"\n", "2:1", "[env] key `A-B`");
        assert_error("[env]\nA = \"a\\u0000b\"\n", "2:5", "NUL");
    }

    #[test]
    fn workspace_values() {
        let l = layer("[filesystem]\nworkspace = \"read-only\"").unwrap();
        assert_eq!(l.filesystem.workspace, Some(WorkspaceAccess::ReadOnly));
        assert_error(
            "[filesystem]\nworkspace = \"rw\"",
            "2:13",
            "must be \"read-write\" or \"read-only\", not \"rw\"",
        );
        assert_error("[filesystem]\nworkspace = true", "2:13", "must be a string");
    }

    #[test]
    fn path_rules() {
        let l = layer(
            "[filesystem]\nread_only = [\"/usr\", \"-/opt\", \"~\", \"-~/.gitconfig\", \
             \"/usr//lib/./\", \"~/\", \"/\"]",
        )
        .unwrap();
        let got: Vec<String> = l
            .filesystem
            .read_only
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            got,
            ["/usr", "-/opt", "~", "-~/.gitconfig", "/usr/lib", "~", "/"]
        );

        for (bad, needle) in [
            (
                "etc",
                "path `etc` in `filesystem.tmpfs` must be absolute or start with `~/`",
            ),
            ("-etc", "path `etc` in `filesystem.tmpfs` must be absolute"),
            ("~root/x", "must be absolute or start with `~/`"),
            ("--/x", "must be absolute"),
            ("", "empty path in `filesystem.tmpfs`"),
            ("-", "empty path"),
            ("/a/../etc", "`..` component"),
            ("~/..", "`..` component"),
        ] {
            assert_error(
                &format!("[filesystem]\ntmpfs = [\"/tmp\",\n  {bad:?}]"),
                "3:3",
                needle,
            );
        }
        assert_error("[filesystem]\ntmpfs = [\"/a\\u0000b\"]", "2:10", "NUL");
        // `..` inside a name is just a name.
        let l = layer("[filesystem]\nmask = [\"/a/..b\"]").unwrap();
        assert_eq!(l.filesystem.mask[0].path, "/a/..b");
    }

    #[test]
    fn protect_rules() {
        let l = layer("[filesystem]\nprotect = [\".git/hooks\", \"./.envrc\", \"a//b/\"]").unwrap();
        assert_eq!(l.filesystem.protect, [".git/hooks", ".envrc", "a/b"]);
        for (bad, needle) in [
            ("", "empty entry"),
            ("/etc", "must be relative to the workspace"),
            ("../x", "`..` component"),
            ("a/../../x", "`..` component"),
            (".", "names the whole workspace"),
            ("./", "names the whole workspace"),
        ] {
            assert_error(
                &format!("[filesystem]\nprotect = [{bad:?}]"),
                "2:12",
                needle,
            );
        }
    }

    #[test]
    fn extends_syntax() {
        assert!(layer("extends = \"default\"").is_ok());
        assert!(layer("extends = \"../x/base.toml\"").is_ok());
        assert!(layer("extends = \"base.toml\"").is_ok());
        assert_error("extends = \"\"", "1:11", "`extends` is empty");
        assert_error("extends = \".hidden\"", "1:11", "not a valid profile name");
        assert_error("extends = \"a b\"", "1:11", "not a valid profile name");
        assert_error("extends = 1", "1:11", "`extends` must be a string");
    }

    #[test]
    fn names() {
        for ok in ["default", "a.b", "x_y-z", "A1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "a b", "a/b", "ü", "a:b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(is_path_spec("./x") && is_path_spec("x.toml") && is_path_spec("/etc/x"));
        assert!(!is_path_spec("default") && !is_path_spec("x.tom"));
    }
}
