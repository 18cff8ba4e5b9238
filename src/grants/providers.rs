//! The provider table (src/grants/providers.toml, compiled in): plain data,
//! parsed and checked once.

use crate::network_policy::Pattern;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

const PROVIDERS_TOML: &str = include_str!("providers.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    #[serde(skip)]
    pub name: String,
    pub description: String,
    pub env: Vec<String>,
    pub placeholder: PlaceholderSpec,
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Charset {
    Alnum,
    Base64url,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceholderSpec {
    pub prefix: String,
    pub length: usize,
    pub charset: Charset,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub token_prefix: Option<String>,
    pub header: String,
    pub template: String,
}

/// Checks a value template: `{token}` or `{basic:USER}` exactly once, no
/// other braces.
pub fn check_template(t: &str) -> Result<(), String> {
    let uses = t.matches("{token}").count() + t.matches("{basic:").count();
    if uses != 1 {
        return Err(format!(
            "value template `{t}` must contain `{{token}}` (or `{{basic:USER}}`) exactly once"
        ));
    }
    let rest = t.replace("{token}", "");
    let rest = match rest.find("{basic:") {
        Some(i) => match rest[i..].find('}') {
            Some(j) => format!("{}{}", &rest[..i], &rest[i + j + 1..]),
            None => return Err(format!("value template `{t}`: `{{basic:` is not closed")),
        },
        None => rest,
    };
    if rest.contains('{') || rest.contains('}') {
        return Err(format!(
            "value template `{t}` has a brace other than `{{token}}` or `{{basic:USER}}`"
        ));
    }
    if !rest.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(format!(
            "value template `{}` has characters a header cannot carry",
            t.escape_debug()
        ));
    }
    Ok(())
}

pub fn check_header_name(h: &str) -> Result<(), String> {
    hyper::header::HeaderName::from_bytes(h.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("`{}` is not a valid header name", h.escape_debug()))
}

pub fn check_hosts(hosts: &[String]) -> Result<(), String> {
    for h in hosts {
        Pattern::parse(h).map_err(|e| format!("host pattern \"{}\": {e}", h.escape_debug()))?;
    }
    Ok(())
}

fn parse(text: &str) -> Result<BTreeMap<String, Provider>, String> {
    let mut map: BTreeMap<String, Provider> =
        toml::from_str(text).map_err(|e| format!("providers.toml: {e}"))?;
    for (name, p) in map.iter_mut() {
        p.name = name.clone();
        let bad = |e: String| format!("providers.toml: [{name}]: {e}");
        if p.placeholder.length < p.placeholder.prefix.len() + 12 {
            return Err(bad("placeholder length leaves no room".into()));
        }
        for r in &p.rules {
            check_hosts(&r.hosts).map_err(bad)?;
            check_header_name(&r.header).map_err(bad)?;
            check_template(&r.template).map_err(bad)?;
        }
    }
    Ok(map)
}

/// Every provider, by name.
pub fn all() -> &'static BTreeMap<String, Provider> {
    static P: OnceLock<BTreeMap<String, Provider>> = OnceLock::new();
    P.get_or_init(|| parse(PROVIDERS_TOML).expect("the built-in providers.toml is valid"))
}

pub fn get(name: &str) -> Result<&'static Provider, String> {
    all().get(name).ok_or_else(|| {
        format!(
            "unknown provider `{name}`; known: {} (`moat grant providers`)",
            all().keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_parses() {
        let p = all();
        for n in ["github", "anthropic", "openai", "header"] {
            assert!(p.contains_key(n), "{n}");
        }
        assert_eq!(p["github"].env, ["GH_TOKEN", "GITHUB_TOKEN"]);
        assert!(p["header"].rules.is_empty());
    }

    #[test]
    fn templates() {
        assert!(check_template("Bearer {token}").is_ok());
        assert!(check_template("Basic {basic:x-access-token}").is_ok());
        assert!(check_template("Bearer").is_err());
        assert!(check_template("{token}{token}").is_err());
        assert!(check_template("{tok} {token}").is_err());
    }
}
