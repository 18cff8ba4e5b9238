//! Credential grants: a stored credential ([`crate::credentials`]) made
//! usable by a run. The sandbox gets a placeholder of the token's shape;
//! the proxy puts the real token into the provider's header on TLS
//! requests to the grant's hosts ([`crate::proxy`]'s `inject`), and takes
//! it out of responses (`redact`).
//!
//! Everything here is plain data: what a grant covers, its placeholder,
//! how a header value is formed. [`providers`] is the provider table.

pub mod command;
pub mod providers;

use crate::credentials::Meta;
use crate::network_policy::Pattern;
use base64::Engine as _;
use providers::{Charset, Provider};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// One header rule of a grant, compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    pub hosts: Vec<String>,
    patterns: Vec<Pattern>,
    pub paths: Vec<String>,
    pub token_prefix: Option<String>,
    pub header: hyper::header::HeaderName,
    pub template: String,
}

/// A grant for a run, without its token: decided before the sandbox
/// exists.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub provider: String,
    pub placeholder: String,
    /// Variables set to the placeholder in the sandbox.
    pub env: Vec<String>,
    pub rules: Vec<Rule>,
}

/// A grant with its token, held by the proxy only.
pub struct Grant {
    pub plan: Plan,
    pub token: Zeroizing<String>,
}

/// A fake value of the provider's shape, distinct per grant name, that
/// says what it is: the prefix, `moat`, then digits derived from the name.
pub fn placeholder(p: &Provider, grant: &str) -> String {
    let mut out = format!("{}moat", p.placeholder.prefix);
    let mut counter = 0u32;
    while out.len() < p.placeholder.length {
        let mut h = Sha256::new();
        h.update(b"moat placeholder\0");
        h.update(p.name.as_bytes());
        h.update(b"\0");
        h.update(grant.as_bytes());
        h.update(counter.to_be_bytes());
        counter += 1;
        let d = h.finalize();
        // Hex is both alphanumeric and base64url.
        let chunk = match p.placeholder.charset {
            Charset::Alnum | Charset::Base64url => crate::credentials::crypto::hex(&d),
        };
        out.push_str(&chunk);
    }
    out.truncate(p.placeholder.length);
    out
}

fn compile(
    hosts: Vec<String>,
    spec: &providers::RuleSpec,
    header: &str,
    template: &str,
) -> Result<Rule, String> {
    providers::check_hosts(&hosts)?;
    providers::check_template(template)?;
    let header = hyper::header::HeaderName::from_bytes(header.as_bytes())
        .map_err(|_| format!("`{header}` is not a valid header name"))?;
    Ok(Rule {
        patterns: hosts
            .iter()
            .map(|h| Pattern::parse(h).expect("checked"))
            .collect(),
        hosts,
        paths: spec.paths.clone(),
        token_prefix: spec.token_prefix.clone(),
        header,
        template: template.to_string(),
    })
}

/// What a stored credential grants: its provider's rules, with the hosts
/// (and for `header`, header and template) the credential overrides.
pub fn plan(meta: &Meta) -> Result<Plan, String> {
    let p = providers::get(&meta.provider)?;
    let mut rules = Vec::new();
    if p.rules.is_empty() {
        let (Some(h), Some(t)) = (&meta.header, &meta.template) else {
            return Err(format!(
                "credential `{}` (provider `{}`) names no header and value template",
                meta.name, meta.provider
            ));
        };
        if meta.hosts.is_empty() {
            return Err(format!(
                "credential `{}` (provider `{}`) names no host",
                meta.name, meta.provider
            ));
        }
        let spec = providers::RuleSpec {
            hosts: meta.hosts.clone(),
            paths: vec![],
            token_prefix: None,
            header: h.clone(),
            template: t.clone(),
        };
        rules.push(compile(meta.hosts.clone(), &spec, h, t)?);
    } else {
        for r in &p.rules {
            let hosts = if meta.hosts.is_empty() {
                r.hosts.clone()
            } else {
                meta.hosts.clone()
            };
            rules.push(compile(hosts, r, &r.header, &r.template)?);
        }
    }
    Ok(Plan {
        name: meta.name.clone(),
        provider: meta.provider.clone(),
        placeholder: placeholder(p, &meta.name),
        env: if meta.env.is_empty() {
            p.env.clone()
        } else {
            meta.env.clone()
        },
        rules,
    })
}

impl Plan {
    /// Every host pattern of the grant, once each.
    pub fn hosts(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.rules {
            for h in &r.hosts {
                if !v.contains(h) {
                    v.push(h.clone());
                }
            }
        }
        v
    }

    /// Whether requests to `host:port` belong to this grant.
    pub fn covers(&self, host: &str, port: u16) -> bool {
        self.rules
            .iter()
            .any(|r| r.patterns.iter().any(|p| p.matches_host(host, port)))
    }
}

impl Grant {
    /// The first rule that applies to this request.
    pub fn rule_for(&self, host: &str, port: u16, path: &str) -> Option<&Rule> {
        self.plan.rules.iter().find(|r| {
            r.patterns.iter().any(|p| p.matches_host(host, port))
                && (r.paths.is_empty() || r.paths.iter().any(|s| path.ends_with(s.as_str())))
                && r.token_prefix
                    .as_ref()
                    .map_or(true, |pre| self.token.starts_with(pre.as_str()))
        })
    }

    /// Every form the token travels in, for redaction: the token, its
    /// base64, and each rule's rendered value (Basic forms).
    pub fn secret_forms(&self) -> Vec<Zeroizing<Vec<u8>>> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut v: Vec<Zeroizing<Vec<u8>>> = vec![
            Zeroizing::new(self.token.as_bytes().to_vec()),
            Zeroizing::new(b64.encode(self.token.as_bytes()).into_bytes()),
        ];
        for r in &self.plan.rules {
            if let Some(user) = basic_user(&r.template) {
                let pair = Zeroizing::new(format!("{user}:{}", &*self.token));
                v.push(Zeroizing::new(b64.encode(pair.as_bytes()).into_bytes()));
            }
        }
        v.retain(|f| !f.is_empty());
        v.sort_by(|a, b| a[..].cmp(&b[..]));
        v.dedup_by(|a, b| a[..] == b[..]);
        v
    }
}

fn basic_user(template: &str) -> Option<&str> {
    let i = template.find("{basic:")?;
    let rest = &template[i + "{basic:".len()..];
    Some(&rest[..rest.find('}')?])
}

/// The header value `template` gives for `token`.
pub fn render(template: &str, token: &str) -> Zeroizing<String> {
    if let Some(user) = basic_user(template) {
        let pair = Zeroizing::new(format!("{user}:{token}"));
        let enc = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()));
        let whole = format!("{{basic:{user}}}");
        return Zeroizing::new(template.replace(&whole, &enc));
    }
    Zeroizing::new(template.replace("{token}", token))
}

/// Grants made from a provider and a token, for unit tests here and in the
/// proxy.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn meta(provider: &str, name: &str, hosts: &[&str]) -> Meta {
        Meta {
            name: name.into(),
            provider: provider.into(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            header: None,
            template: None,
            env: vec![],
            added_ms: 0,
            fingerprint: String::new(),
        }
    }

    pub fn grant(m: &Meta, token: &str) -> Grant {
        Grant {
            plan: plan(m).unwrap(),
            token: Zeroizing::new(token.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{grant, meta};
    use super::*;

    #[test]
    fn placeholders_have_the_shape_and_differ() {
        let gh = providers::get("github").unwrap();
        let a = placeholder(gh, "a");
        let b = placeholder(gh, "b");
        assert_eq!(a.len(), 40);
        assert!(a.starts_with("ghp_moat"));
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'));
        assert_ne!(a, b);
        let an = placeholder(providers::get("anthropic").unwrap(), "a");
        assert!(an.starts_with("sk-ant-api03-moat") && an.len() == 108);
        let oa = placeholder(providers::get("openai").unwrap(), "a");
        assert!(oa.starts_with("sk-proj-moat"));
    }

    #[test]
    fn github_rules_pick_the_form_by_host_and_path() {
        let g = grant(&meta("github", "gh", &[]), "ghp_real");
        let git = g.rule_for("github.com", 443, "/o/r.git/info/refs").unwrap();
        assert_eq!(git.header, "authorization");
        assert_eq!(
            &*render(&git.template, "ghp_real"),
            &format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("x-access-token:ghp_real")
            )
        );
        let api = g.rule_for("api.github.com", 443, "/user").unwrap();
        assert_eq!(&*render(&api.template, "ghp_real"), "Bearer ghp_real");
        assert!(g.rule_for("github.com", 443, "/settings").is_none());
        assert!(g.rule_for("evil.com", 443, "/info/refs").is_none());
        assert!(g.plan.covers("github.com", 443) && !g.plan.covers("gist.github.com", 443));

        // --host replaces every rule's hosts; the path still picks the form.
        let t = grant(
            &meta("github", "t", &["allowed.moat.test:8443"]),
            "ghp_real",
        );
        assert!(t
            .rule_for("allowed.moat.test", 8443, "/r.git/git-upload-pack")
            .is_some());
        assert_eq!(t.plan.hosts(), ["allowed.moat.test:8443"]);
        assert!(!t.plan.covers("github.com", 443));
    }

    #[test]
    fn anthropic_oauth_tokens_use_bearer() {
        let api = grant(&meta("anthropic", "a", &[]), "sk-ant-api03-xyz");
        assert_eq!(
            api.rule_for("api.anthropic.com", 443, "/v1/messages")
                .unwrap()
                .header,
            "x-api-key"
        );
        let oat = grant(&meta("anthropic", "a", &[]), "sk-ant-oat01-xyz");
        let r = oat
            .rule_for("api.anthropic.com", 443, "/v1/messages")
            .unwrap();
        assert_eq!(r.header, "authorization");
        assert_eq!(
            &*render(&r.template, "sk-ant-oat01-xyz"),
            "Bearer sk-ant-oat01-xyz"
        );
    }

    #[test]
    fn header_provider_needs_its_parts() {
        let mut m = meta("header", "h", &["*.example.com"]);
        assert!(plan(&m).is_err());
        m.header = Some("X-Api-Token".into());
        m.template = Some("Token {token}".into());
        let g = grant(&m, "s3cret");
        let r = g.rule_for("a.example.com", 443, "/").unwrap();
        assert_eq!(r.header, "x-api-token");
        assert!(g.plan.env.is_empty());
        assert!(plan(&meta("nope", "x", &[]))
            .unwrap_err()
            .contains("unknown provider"));
    }

    #[test]
    fn secret_forms_cover_basic() {
        let g = grant(&meta("github", "gh", &[]), "ghp_real");
        let forms = g.secret_forms();
        let b64 = base64::engine::general_purpose::STANDARD;
        for want in [
            "ghp_real".to_string(),
            b64.encode("ghp_real"),
            b64.encode("x-access-token:ghp_real"),
        ] {
            assert!(forms.iter().any(|f| f[..] == *want.as_bytes()), "{want}");
        }
    }
}
