//! Printing a resolved profile back as a profile file.
//!
//! Written by hand rather than through serde so the output reads like the
//! built-in profile: one entry per line, `-` markers, a header saying where
//! each part came from. Every value is set explicitly, so the output loads
//! to the same profile without needing its `extends` chain.

use super::model::{Enforcement, PathSpec, Ports, Profile};
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
    array(&mut out, "grants", p.grants.iter().map(|s| quote(s)));

    out.push_str("\n[env]\n");
    for (key, value) in &p.env {
        let _ = writeln!(out, "{} = {}", key_name(key), quote(value));
    }

    // The sources, never values: the spec is all the profile knows.
    out.push_str("\n[secrets]\n");
    for (key, spec) in &p.secrets {
        let _ = writeln!(out, "{} = {}", key_name(key), quote(&spec.to_string()));
    }

    let fs = &p.filesystem;
    out.push_str("\n[filesystem]\n");
    let _ = writeln!(out, "workspace = {}", quote(fs.workspace.as_str()));
    array(&mut out, "read_only", paths(&fs.read_only));
    array(&mut out, "read_write", paths(&fs.read_write));
    array(&mut out, "mask", paths(&fs.mask));
    array(&mut out, "tmpfs", paths(&fs.tmpfs));
    array(&mut out, "protect", fs.protect.iter().map(|s| quote(s)));

    let landlock = &p.landlock;
    out.push_str("\n[landlock]\n");
    let _ = writeln!(out, "mode = {}", quote(enforcement(landlock.mode)));
    let _ = writeln!(out, "connect_tcp = {}", ports(&landlock.connect_tcp));
    let _ = writeln!(out, "bind_tcp = {}", ports(&landlock.bind_tcp));
    array(&mut out, "skip", paths(&landlock.skip));

    out.push_str("\n[seccomp]\n");
    array(&mut out, "deny", p.seccomp.deny.iter().map(|s| quote(s)));
    array(&mut out, "allow", p.seccomp.allow.iter().map(|s| quote(s)));

    let limits = &p.limits;
    out.push_str("\n[limits]\n");
    limit(&mut out, "memory", limits.memory.map(memory));
    limit(&mut out, "pids", limits.pids.map(|n| n.to_string()));
    limit(&mut out, "cpu", limits.cpu_millis.map(cores));
    limit(&mut out, "timeout", limits.timeout_ms.map(duration));
    let _ = writeln!(out, "required = {}", limits.required);

    let net = &p.network;
    out.push_str("\n[network]\n");
    let _ = writeln!(out, "mode = {}", quote(net.mode.as_str()));
    array(&mut out, "allow", net.allow.iter().map(|s| quote(s)));
    array(&mut out, "deny", net.deny.iter().map(|s| quote(s)));
    let _ = writeln!(out, "proxy_port = {}", net.proxy_port);
    array(&mut out, "upstream_ca", paths(&net.upstream_ca));
    out
}

fn enforcement(mode: Enforcement) -> &'static str {
    match mode {
        Enforcement::BestEffort => "best-effort",
        Enforcement::Required => "required",
    }
}

fn ports(ports: &Ports) -> String {
    match ports {
        Ports::Any => quote("any"),
        Ports::Only(list) => {
            let list: Vec<String> = list.iter().map(u16::to_string).collect();
            format!("[{}]", list.join(", "))
        }
    }
}

/// An unset limit is shown, commented out, so the output lists every key.
fn limit(out: &mut String, key: &str, value: Option<String>) {
    let _ = match value {
        Some(value) => writeln!(out, "{key} = {value}"),
        None => writeln!(out, "# {key}: not set, no limit"),
    };
}

/// The largest unit that states the byte count exactly, so `"512M"` shows
/// as written; a count no unit divides is written as an integer.
fn memory(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return quote(&format!("{}{unit}", bytes >> shift));
        }
    }
    bytes.to_string()
}

/// Thousandths of a core as a float with every digit needed to read back.
fn cores(millis: u64) -> String {
    let fraction = format!("{:03}", millis % 1000);
    let fraction = fraction.trim_end_matches('0');
    let fraction = if fraction.is_empty() { "0" } else { fraction };
    format!("{}.{fraction}", millis / 1000)
}

/// Milliseconds in units from days down, zero groups left out: `"1h30m"`.
fn duration(ms: u64) -> String {
    let mut rest = ms;
    let mut text = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= size {
            let _ = write!(text, "{}{unit}", rest / size);
            rest %= size;
        }
    }
    if text.is_empty() {
        text.push_str("0ms");
    }
    quote(&text)
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
    use crate::profile::model::{NetworkMode, WorkspaceAccess};
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
        p.landlock.skip = vec![PathSpec {
            path: "/srv/a b".into(),
            optional: true,
        }];
        p.seccomp.allow = vec!["ptrace".into()];
        let text = to_toml(&p);
        assert!(text.contains("# moat profile `odd\\nname`"), "{text}");
        assert!(text.contains("read_write = []\n"), "{text}");
        same_apart_from_origin(&reload(&text), &p);
    }

    #[test]
    fn network_round_trips() {
        let mut p = Profile::default();
        for mode in [NetworkMode::Open, NetworkMode::None, NetworkMode::Allowlist] {
            p.network.mode = mode;
            p.network.allow = vec![
                "api.github.com".into(),
                "*.githubusercontent.com".into(),
                "github.com:22".into(),
                "10.0.0.5:8080".into(),
                "[::1]:8000".into(),
            ];
            p.network.deny = vec!["*.tracker.example".into()];
            p.network.proxy_port = 65535;
            p.network.upstream_ca = vec![
                PathSpec {
                    path: "/etc/corp ca.pem".into(),
                    optional: false,
                },
                PathSpec {
                    path: "~/ca.pem".into(),
                    optional: true,
                },
            ];
            let text = to_toml(&p);
            for line in [
                format!("\n[network]\nmode = \"{}\"\nallow = [\n", mode.as_str()),
                "    \"[::1]:8000\",\n".to_string(),
                "deny = [\n    \"*.tracker.example\",\n]\n".to_string(),
                "proxy_port = 65535\n".to_string(),
                "    \"-~/ca.pem\",\n".to_string(),
            ] {
                assert!(text.contains(&line), "{line:?} not in\n{text}");
            }
            same_apart_from_origin(&reload(&text), &p);
        }
    }

    #[test]
    fn unset_limits_are_commented_out() {
        let p = Profile::default();
        let text = to_toml(&p);
        assert!(
            text.ends_with(
                "\n[landlock]\nmode = \"best-effort\"\nconnect_tcp = []\nbind_tcp = \"any\"\n\
                 skip = []\n\n[seccomp]\ndeny = []\nallow = []\n\n[limits]\n\
                 # memory: not set, no limit\n# pids: not set, no limit\n\
                 # cpu: not set, no limit\n# timeout: not set, no limit\nrequired = false\n\n\
                 [network]\nmode = \"allowlist\"\nallow = []\ndeny = []\nproxy_port = 3128\n\
                 upstream_ca = []\n"
            ),
            "{text}"
        );
        same_apart_from_origin(&reload(&text), &p);
    }

    #[test]
    fn landlock_seccomp_limits_round_trip() {
        let mut p = Profile::default();
        p.landlock.mode = Enforcement::Required;
        p.landlock.connect_tcp = Ports::Any;
        p.landlock.bind_tcp = Ports::Only(vec![8080, 1, 65535]);
        p.seccomp.deny = vec!["chroot".into(), "acct".into()];
        p.limits.required = true;
        // (memory, how it is written), (cpu millis, written),
        // (timeout ms, written): exact values, shown in the largest unit
        // that keeps them exact.
        let cases = [
            (
                (512u64 << 20, "\"512M\""),
                (1500, "1.5"),
                (1_800_000, "\"30m\""),
            ),
            (
                (3 << 29, "\"1536M\""),
                (2000, "2.0"),
                (5_400_000, "\"1h30m\""),
            ),
            ((2 << 40, "\"2T\""), (1, "0.001"), (500, "\"500ms\"")),
            (
                (4 << 30, "\"4G\""),
                (4_096_000, "4096.0"),
                (90_061_001, "\"1d1h1m1s1ms\""),
            ),
            ((5_000_001, "5000001"), (1235, "1.235"), (1, "\"1ms\"")),
            (
                (4_195_328, "\"4097K\""),
                (10, "0.01"),
                (86_400_000, "\"1d\""),
            ),
        ];
        for ((memory, m), (cpu, c), (timeout, t)) in cases {
            p.limits.memory = Some(memory);
            p.limits.cpu_millis = Some(cpu);
            p.limits.timeout_ms = Some(timeout);
            p.limits.pids = Some(memory % 100_000 + 8);
            let text = to_toml(&p);
            for line in [
                format!("memory = {m}\n"),
                format!("cpu = {c}\n"),
                format!("timeout = {t}\n"),
                "connect_tcp = \"any\"\nbind_tcp = [8080, 1, 65535]\n".to_string(),
                "mode = \"required\"\n".to_string(),
                "required = true\n".to_string(),
            ] {
                assert!(text.contains(&line), "{line:?} not in\n{text}");
            }
            same_apart_from_origin(&reload(&text), &p);
        }
    }
}
