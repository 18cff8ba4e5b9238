//! Profiles compiled into the binary, so moat works with no files installed.

/// Every `profiles/*.toml` of the source tree, by name. A test fails when a
/// file there is missing from this list.
const BUILTINS: &[(&str, &str)] = &[("default", include_str!("../../profiles/default.toml"))];

/// The built-in profile `name`, as (its static name, its text).
pub(crate) fn get(name: &str) -> Option<(&'static str, &'static str)> {
    BUILTINS.iter().find(|(n, _)| *n == name).copied()
}

pub(crate) fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(name, _)| *name).collect()
}

/// How a built-in is named in `Profile::sources` and error messages.
pub(crate) fn label(name: &str) -> String {
    format!("builtin:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::error::Doc;
    use crate::profile::raw;

    #[test]
    fn every_profiles_file_is_built_in() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().ok()?;
                name.strip_suffix(".toml").map(str::to_string)
            })
            .collect();
        on_disk.sort();
        let mut built_in: Vec<String> = names().iter().map(|n| n.to_string()).collect();
        built_in.sort();
        assert_eq!(
            on_disk, built_in,
            "update BUILTINS in src/profile/builtin.rs"
        );
        for &(name, text) in BUILTINS {
            let file = dir.join(format!("{name}.toml"));
            assert_eq!(std::fs::read_to_string(file).unwrap(), text);
        }
    }

    #[test]
    fn every_builtin_is_valid() {
        for &(name, text) in BUILTINS {
            let file = label(name);
            raw::parse(&Doc { file: &file, text }).unwrap();
            assert!(raw::check_name(name).is_ok());
        }
    }

    /// The default reaches what a coding agent needs through the proxy, and
    /// only that.
    #[test]
    fn default_network() {
        let (_, text) = get("default").unwrap();
        let n = raw::parse(&Doc {
            file: "default.toml",
            text,
        })
        .unwrap()
        .network;
        assert_eq!(n.mode, Some(crate::profile::NetworkMode::Allowlist));
        assert_eq!(n.proxy_port, Some(crate::profile::DEFAULT_PROXY_PORT));
        for host in [
            "api.anthropic.com",
            "api.openai.com",
            "github.com",
            "api.github.com",
            "codeload.github.com",
            "*.githubusercontent.com",
            "registry.npmjs.org",
            "pypi.org",
            "files.pythonhosted.org",
            "crates.io",
            "index.crates.io",
            "static.crates.io",
        ] {
            assert!(n.allow.iter().any(|a| a == host), "{host} not allowed");
        }
        assert_eq!(n.allow.len(), 12, "{:?}", n.allow);
        assert!(n.deny.is_empty() && n.upstream_ca.is_empty());
        // Ports are left to the 80/443 default.
        assert!(n.allow.iter().all(|a| !a.contains(':')), "{:?}", n.allow);
        let policy = crate::network_policy::Policy::new(&crate::profile::Network {
            mode: n.mode.unwrap(),
            allow: n.allow.clone(),
            ..Default::default()
        })
        .unwrap();
        assert!(policy
            .check_name("raw.githubusercontent.com", 443)
            .is_allow());
        assert!(!policy.check_name("example.com", 443).is_allow());
        assert!(!policy.check_name("github.com", 22).is_allow());
    }

    /// The default's commented-out limits are there to be uncommented; they
    /// must be valid when they are.
    #[test]
    fn default_limit_examples_are_valid() {
        let (_, text) = get("default").unwrap();
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if ["memory =", "cpu =", "timeout ="]
                        .iter()
                        .any(|k| rest.starts_with(k)) =>
                {
                    rest
                }
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let layer = raw::parse(&Doc {
            file: "default.toml",
            text: &uncommented,
        })
        .unwrap();
        let limits = layer.limits;
        assert!(limits.memory.is_some(), "no memory example in the default");
        assert!(limits.cpu_millis.is_some(), "no cpu example in the default");
        assert!(
            limits.timeout_ms.is_some(),
            "no timeout example in the default"
        );
        assert_eq!(limits.pids, Some(4096));
        assert_eq!(limits.required, Some(false));
    }
}
