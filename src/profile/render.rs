//! Printing a resolved profile back as a profile file.
//!
//! Written by hand rather than through serde so the output reads like the
//! built-in profile: one entry per line, `-` markers, a header saying where
//! each part came from. Every value is set explicitly, so the output loads
//! to the same profile without needing its `extends` chain.

use super::model::{PathSpec, Profile};
use std::fmt::Write;

pub(crate) fn to_toml(p: &Profile) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored.
    let _ = writeln!(out, "# moat profile `{}`, resolved.", comment(&p.name));
    if !p.sources.is_empty() {
        let _ = writeln!(out, "# Merged from, most derived first:");
        for source in &p.sources {
            let _ = writeln!(out, "#   {}", comment(source));
        }
    }
    out.push('\n');
    let _ = writeln!(out, "description = {}", quote(&p.description));
    let _ = writeln!(out, "hostname = {}", quote(&p.hostname));
    array(&mut out, "pass_env", p.pass_env.iter().map(|s| quote(s)));

    out.push_str("\n[env]\n");
    for (key, value) in &p.env {
        let _ = writeln!(out, "{} = {}", key_name(key), quote(value));
    }

    let fs = &p.filesystem;
    out.push_str("\n[filesystem]\n");
    let _ = writeln!(out, "workspace = {}", quote(fs.workspace.as_str()));
    array(&mut out, "read_only", paths(&fs.read_only));
    array(&mut out, "read_write", paths(&fs.read_write));
    array(&mut out, "mask", paths(&fs.mask));
    array(&mut out, "tmpfs", paths(&fs.tmpfs));
    array(&mut out, "protect", fs.protect.iter().map(|s| quote(s)));
    out
}

fn paths(specs: &[PathSpec]) -> impl Iterator<Item = String> + '_ {
    specs.iter().map(|s| quote(&s.to_string()))
}

fn array(out: &mut String, key: &str, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        let _ = writeln!(out, "{key} = []");
        return;
    }
    let _ = writeln!(out, "{key} = [");
    for item in items {
        let _ = writeln!(out, "    {item},");
    }
    out.push_str("]\n");
}

/// A TOML basic string. TOML forbids raw control characters in strings,
/// so those are escaped along with `"` and `\`.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn key_name(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        quote(key)
    }
}

/// A name or path in a `#` comment, where a newline would end the comment.
fn comment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::error::Doc;
    use crate::profile::model::WorkspaceAccess;
    use crate::profile::raw;

    fn reload(text: &str) -> Profile {
        let layer = raw::parse(&Doc {
            file: "out.toml",
            text,
        })
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(layer.extends, None);
        let mut p = Profile::default();
        layer.apply_to(&mut p);
        p
    }

    fn same_apart_from_origin(a: &Profile, b: &Profile) {
        let strip = |p: &Profile| Profile {
            name: String::new(),
            sources: Vec::new(),
            ..p.clone()
        };
        assert_eq!(strip(a), strip(b));
    }

    #[test]
    fn builtin_default_round_trips() {
        let resolver = crate::profile::load::Resolver {
            user_dir: None,
            system_dir: None,
        };
        let p = resolver.load("default").unwrap();
        let text = to_toml(&p);
        assert!(
            text.starts_with("# moat profile `default`, resolved.\n"),
            "{text}"
        );
        assert!(text.contains("#   builtin:default\n"), "{text}");
        assert!(text.contains("    \"-/etc/shadow\",\n"), "{text}");
        same_apart_from_origin(&reload(&text), &p);
    }

    #[test]
    fn awkward_values_round_trip() {
        let mut p = Profile {
            name: "odd\nname".into(),
            sources: vec!["/tmp/a\nb.toml".into()],
            description: "quotes \" backslash \\ tab\t newline\n bell\u{7} del\u{7f} é".into(),
            hostname: "h.example".into(),
            pass_env: vec!["A".into(), "LC_*".into()],
            ..Profile::default()
        };
        p.env.insert("EMPTY".into(), String::new());
        p.env.insert("X".into(), "a = \"b\" # not a comment".into());
        p.filesystem.workspace = WorkspaceAccess::ReadOnly;
        p.filesystem.read_only = vec![
            PathSpec {
                path: "/with space/and\"quote".into(),
                optional: true,
            },
            PathSpec {
                path: "~".into(),
                optional: false,
            },
        ];
        p.filesystem.protect = vec![".git/hooks".into()];
        let text = to_toml(&p);
        assert!(text.contains("# moat profile `odd\\nname`"), "{text}");
        assert!(text.contains("read_write = []\n"), "{text}");
        same_apart_from_origin(&reload(&text), &p);
    }
}
