//! Credential injection on requests going upstream. The sandbox holds
//! placeholders only; here, on a request to a granted host:
//!
//! - over TLS (intercepted), the grant's header gets the real token: the
//!   placeholder in it is replaced (also inside an HTTP Basic value), or
//!   the header is added when absent;
//! - over plain HTTP, nothing is added: a token never travels in clear;
//! - `Accept-Encoding: identity` is forced so the response can be checked
//!   for the token ([`super::redact`]).
//!
//! On every request, to any host, a header still carrying any grant's
//! placeholder is removed: placeholders go nowhere but to moat.

use super::record::Scheme;
use super::redact::Redactor;
use crate::grants::{self, Grant};
use base64::Engine as _;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use zeroize::Zeroizing;

/// The grants of a run.
pub(crate) struct Grants {
    list: Vec<Grant>,
}

/// What [`Grants::apply`] did to one request.
#[derive(Default)]
pub(crate) struct Applied {
    /// (grant name, action) for the request log.
    pub uses: Vec<(String, &'static str)>,
    /// Set when the destination is a granted host: its responses must be
    /// checked for the tokens.
    pub redactor: Option<Redactor>,
}

impl Applied {
    fn note(&mut self, grant: &str, action: &'static str) {
        if !self
            .uses
            .iter()
            .any(|(g, a)| g.as_str() == grant && *a == action)
        {
            self.uses.push((grant.to_string(), action));
        }
    }
}

/// The value with the placeholder swapped for the token, when `value`
/// carries the placeholder raw or inside `Basic base64(user:...)`.
fn substitute(value: &[u8], placeholder: &str, token: &str) -> Option<Zeroizing<Vec<u8>>> {
    let text = std::str::from_utf8(value).ok()?;
    if text.contains(placeholder) {
        return Some(Zeroizing::new(
            text.replace(placeholder, token).into_bytes(),
        ));
    }
    let (scheme, creds) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let decoded = Zeroizing::new(b64.decode(creds.trim()).ok()?);
    let decoded = std::str::from_utf8(&decoded).ok()?;
    if !decoded.contains(placeholder) {
        return None;
    }
    let swapped = Zeroizing::new(decoded.replace(placeholder, token));
    Some(Zeroizing::new(
        format!("{scheme} {}", b64.encode(swapped.as_bytes())).into_bytes(),
    ))
}

/// Whether `value` carries `placeholder`, raw or in a Basic value.
fn carries(value: &[u8], placeholder: &str) -> bool {
    substitute(value, placeholder, "").is_some()
}

impl Grants {
    pub fn new(list: Vec<Grant>) -> Grants {
        Grants { list }
    }

    /// `path_and_query` without the query parameters that carry the
    /// placeholder of a grant not covering `host:port`; `None` when
    /// nothing was removed. On a grant's own hosts its placeholder stays
    /// (it is not the token, and moat does not put tokens into URLs).
    pub fn strip_query(
        &self,
        host: &str,
        port: u16,
        path_and_query: &str,
    ) -> (Option<String>, Vec<(String, &'static str)>) {
        let mut uses = Vec::new();
        let Some((path, query)) = path_and_query.split_once('?') else {
            return (None, uses);
        };
        let foreign: Vec<&Grant> = self
            .list
            .iter()
            .filter(|g| !g.plan.covers(host, port))
            .collect();
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let owners: Vec<&str> = foreign
                .iter()
                .filter(|g| pair.contains(g.plan.placeholder.as_str()))
                .map(|g| g.plan.name.as_str())
                .collect();
            if owners.is_empty() {
                kept.push(pair);
            }
            for o in owners {
                if !uses.iter().any(|(g, _)| g == o) {
                    uses.push((o.to_string(), "strip"));
                }
            }
        }
        if uses.is_empty() {
            return (None, uses);
        }
        let out = if kept.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", kept.join("&"))
        };
        (Some(out), uses)
    }

    /// Rewrites `headers` of a request to `host:port` (`path` without the
    /// query) as described in the module comment.
    pub fn apply(
        &self,
        scheme: Scheme,
        host: &str,
        port: u16,
        path: &str,
        headers: &mut HeaderMap,
    ) -> Applied {
        let mut done = Applied::default();
        if self.list.is_empty() {
            return done;
        }
        let mut covering: Vec<&Grant> = self
            .list
            .iter()
            .filter(|g| g.plan.covers(host, port))
            .collect();
        // Two grants for one host and header (two accounts): the one whose
        // placeholder the request carries wins, else the first listed.
        let sent = |g: &Grant| {
            g.rule_for(host, port, path).is_some_and(|r| {
                headers
                    .get_all(&r.header)
                    .iter()
                    .any(|v| carries(v.as_bytes(), &g.plan.placeholder))
            })
        };
        covering.sort_by_key(|g| !sent(g));
        let mut injected: Vec<HeaderName> = Vec::new();
        for g in &covering {
            if scheme != Scheme::Https {
                done.note(&g.plan.name, "withheld");
                continue;
            }
            let Some(rule) = g.rule_for(host, port, path) else {
                continue;
            };
            if injected.contains(&rule.header) {
                continue;
            }
            let current = headers.get(&rule.header).map(|v| v.as_bytes().to_vec());
            let value = current
                .as_deref()
                .and_then(|v| substitute(v, &g.plan.placeholder, &g.token))
                .unwrap_or_else(|| {
                    Zeroizing::new(grants::render(&rule.template, &g.token).as_bytes().to_vec())
                });
            let Ok(mut hv) = HeaderValue::from_bytes(&value) else {
                continue;
            };
            hv.set_sensitive(true);
            headers.remove(&rule.header);
            headers.insert(rule.header.clone(), hv);
            injected.push(rule.header.clone());
            done.note(&g.plan.name, "inject");
        }
        // Whatever still carries a placeholder goes.
        let names: Vec<HeaderName> = headers.keys().cloned().collect();
        for name in names {
            if injected.contains(&name) {
                continue;
            }
            let owners: Vec<&str> = self
                .list
                .iter()
                .filter(|g| {
                    headers
                        .get_all(&name)
                        .iter()
                        .any(|v| carries(v.as_bytes(), &g.plan.placeholder))
                })
                .map(|g| g.plan.name.as_str())
                .collect();
            if !owners.is_empty() {
                headers.remove(&name);
                for o in owners {
                    done.note(o, "strip");
                }
            }
        }
        if !covering.is_empty() {
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            done.redactor = Redactor::new(
                covering
                    .iter()
                    .map(|g| (g.plan.name.clone(), g.secret_forms()))
                    .collect(),
            );
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::testing;

    fn grant(provider: &str, name: &str, hosts: &[&str], token: &str) -> Grant {
        testing::grant(&testing::meta(provider, name, hosts), token)
    }

    fn gs() -> (Grants, String, String) {
        let gh = grant("github", "gh", &[], "ghp_REAL");
        let oa = grant("openai", "oa", &[], "sk-REAL");
        let (p1, p2) = (gh.plan.placeholder.clone(), oa.plan.placeholder.clone());
        (Grants::new(vec![gh, oa]), p1, p2)
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn placeholder_is_replaced_over_tls() {
        let (g, p, _) = gs();
        let mut m = h(&[
            ("authorization", &format!("token {p}")),
            ("accept-encoding", "gzip"),
        ]);
        let a = g.apply(Scheme::Https, "api.github.com", 443, "/user", &mut m);
        assert_eq!(m["authorization"], "token ghp_REAL");
        assert!(m["authorization"].is_sensitive());
        assert_eq!(m["accept-encoding"], "identity");
        assert_eq!(a.uses, [("gh".to_string(), "inject")]);
        assert!(a.redactor.is_some());
    }

    #[test]
    fn header_is_added_when_absent_in_the_rules_form() {
        let (g, _, _) = gs();
        let mut m = h(&[]);
        g.apply(
            Scheme::Https,
            "github.com",
            443,
            "/o/r.git/info/refs",
            &mut m,
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(
            m["authorization"],
            format!("Basic {}", b64.encode("x-access-token:ghp_REAL")).as_str()
        );
        let mut m = h(&[]);
        g.apply(Scheme::Https, "api.openai.com", 443, "/v1/models", &mut m);
        assert_eq!(m["authorization"], "Bearer sk-REAL");
    }

    #[test]
    fn basic_with_placeholder_password_is_rewritten() {
        let (g, p, _) = gs();
        let b64 = base64::engine::general_purpose::STANDARD;
        let v = format!("Basic {}", b64.encode(format!("me:{p}")));
        let mut m = h(&[("authorization", &v)]);
        g.apply(
            Scheme::Https,
            "github.com",
            443,
            "/o/r.git/git-upload-pack",
            &mut m,
        );
        assert_eq!(
            m["authorization"],
            format!("Basic {}", b64.encode("me:ghp_REAL")).as_str()
        );
    }

    #[test]
    fn the_placeholder_sent_picks_between_two_grants_of_one_host() {
        let a = grant("github", "a", &[], "ghp_A");
        let b = grant("github", "b", &[], "ghp_B");
        let pb = b.plan.placeholder.clone();
        let g = Grants::new(vec![a, b]);
        let mut m = h(&[("authorization", &format!("Bearer {pb}"))]);
        let used = g.apply(Scheme::Https, "api.github.com", 443, "/user", &mut m);
        assert_eq!(m["authorization"], "Bearer ghp_B");
        assert_eq!(used.uses, [("b".to_string(), "inject")]);
        let mut m = h(&[]);
        g.apply(Scheme::Https, "api.github.com", 443, "/user", &mut m);
        assert_eq!(m["authorization"], "Bearer ghp_A");
    }

    #[test]
    fn placeholders_leave_query_strings_bound_elsewhere() {
        let (g, p1, _) = gs();
        let (q, uses) = g.strip_query("evil.example", 443, &format!("/x?a=1&t={p1}&b=2"));
        assert_eq!(q.as_deref(), Some("/x?a=1&b=2"));
        assert_eq!(uses, [("gh".to_string(), "strip")]);
        let (q, _) = g.strip_query("evil.example", 443, &format!("/x?t={p1}"));
        assert_eq!(q.as_deref(), Some("/x"));
        assert_eq!(g.strip_query("evil.example", 443, "/x?a=1").0, None);
        // On its own host the placeholder stays.
        assert_eq!(
            g.strip_query("api.github.com", 443, &format!("/x?t={p1}"))
                .0,
            None
        );
    }

    #[test]
    fn plain_http_gets_no_token_and_loses_placeholders() {
        let (g, p, _) = gs();
        let mut m = h(&[("authorization", &format!("Bearer {p}"))]);
        let a = g.apply(Scheme::Http, "api.github.com", 80, "/user", &mut m);
        assert!(!m.contains_key("authorization"));
        assert!(a.uses.contains(&("gh".to_string(), "withheld")));
        assert!(a.uses.contains(&("gh".to_string(), "strip")));
    }

    #[test]
    fn placeholders_to_other_hosts_are_stripped() {
        let (g, p1, p2) = gs();
        let mut m = h(&[
            ("authorization", &format!("Bearer {p1}")),
            ("x-key", &p2),
            ("x-fine", "keep"),
        ]);
        let a = g.apply(Scheme::Https, "evil.example", 443, "/", &mut m);
        assert!(!m.contains_key("authorization") && !m.contains_key("x-key"));
        assert_eq!(m["x-fine"], "keep");
        assert!(a.redactor.is_none());
        assert_eq!(a.uses.len(), 2);
        // Another grant's placeholder on a granted host goes too.
        let mut m = h(&[("x-key", &p2)]);
        g.apply(Scheme::Https, "api.github.com", 443, "/", &mut m);
        assert!(!m.contains_key("x-key"));
        assert_eq!(m["authorization"], "Bearer ghp_REAL");
    }
}
