//! Which environment variables the sandboxed command gets.
//!
//! The caller's shell is full of credentials (`GITHUB_TOKEN`,
//! `AWS_SECRET_ACCESS_KEY`, `SSH_AUTH_SOCK`), so nothing flows in by default.
//! Only a short allowlist of variables that shape how programs display and
//! find things passes through; the profile and `-e` add the rest.

use std::collections::BTreeMap;

/// Host variables that pass into every sandbox. A trailing `*` matches a
/// prefix. These carry display and locale preferences, never credentials.
pub const BASE_PASS: &[&str] = &[
    "PATH",
    "TERM",
    "COLORTERM",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "NO_COLOR",
    "COLUMNS",
    "LINES",
];

/// Used when the caller has no PATH at all, so the command can still be found.
pub const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// Variables that point clients at moat's proxy. Upper and lower case:
/// curl reads only `http_proxy` in lower case, Go and Python read both.
pub const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// Destinations clients reach directly: the sandbox's own loopback, and
/// nothing else (a wider list would be a way around the proxy's policy).
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// Variables naming the CA bundle, for the clients that do not read the
/// system bundle or that replace it with their own.
pub const CA_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "AWS_CA_BUNDLE",
    "PIP_CERT",
];

/// How the sandbox reaches the network: through moat's proxy on
/// 127.0.0.1:`port`, trusting the bundle at `ca_bundle` (a sandbox path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEnv {
    pub port: u16,
    /// `None` when no bundle path is visible inside (no CA variables then).
    pub ca_bundle: Option<String>,
}

/// What the sandbox's own identity looks like from inside.
#[derive(Debug, Clone)]
pub struct Identity {
    pub home: String,
    pub user: String,
}

/// Inputs to [`build`], all plain data so the rules are testable.
#[derive(Debug, Clone)]
pub struct EnvRequest<'a> {
    /// The caller's environment.
    pub host: &'a [(String, String)],
    /// The profile's extra pass-through names (`pass_env`).
    pub pass: &'a [String],
    /// The profile's `[env]` table.
    pub profile_env: &'a BTreeMap<String, String>,
    /// `-e KEY=VALUE` from the command line, in order; later wins.
    pub cli_env: &'a [(String, String)],
    pub identity: &'a Identity,
    /// Working directory inside the sandbox.
    pub cwd: &'a str,
    /// The proxy, when the profile gives the sandbox a network.
    pub proxy: Option<ProxyEnv>,
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Builds the sandbox environment. Precedence, lowest first: allowlisted
/// host variables, moat's identity variables, the profile's `[env]`, `-e`,
/// then the proxy's variables: the proxy is the only way out of the
/// sandbox, so no setting may point clients elsewhere or make them
/// distrust moat's CA.
pub fn build(req: &EnvRequest) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (k, v) in req.host {
        let allowed = BASE_PASS
            .iter()
            .copied()
            .chain(req.pass.iter().map(String::as_str))
            .any(|p| matches(p, k));
        if allowed {
            env.insert(k.clone(), v.clone());
        }
    }
    env.entry("PATH".to_string())
        .or_insert_with(|| FALLBACK_PATH.to_string());
    env.insert("HOME".into(), req.identity.home.clone());
    env.insert("USER".into(), req.identity.user.clone());
    env.insert("LOGNAME".into(), req.identity.user.clone());
    env.insert("PWD".into(), req.cwd.to_string());
    for (k, v) in req.profile_env {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in req.cli_env {
        env.insert(k.clone(), v.clone());
    }
    if let Some(p) = &req.proxy {
        let url = format!("http://127.0.0.1:{}", p.port);
        for k in PROXY_VARS {
            env.insert(k.to_string(), url.clone());
        }
        env.insert("NO_PROXY".into(), NO_PROXY.into());
        env.insert("no_proxy".into(), NO_PROXY.into());
        // Node 24+ honours the proxy variables only when asked to.
        env.insert("NODE_USE_ENV_PROXY".into(), "1".into());
        if let Some(bundle) = &p.ca_bundle {
            for k in CA_VARS {
                env.insert(k.to_string(), bundle.clone());
            }
        }
    }
    env
}

/// Parses one `-e KEY=VALUE` argument.
pub fn parse_assignment(arg: &str) -> Result<(String, String), String> {
    let (k, v) = arg
        .split_once('=')
        .ok_or_else(|| format!("-e `{arg}`: expected KEY=VALUE"))?;
    if !is_valid_name(k) {
        return Err(format!(
            "-e `{k}`: a variable name is letters, digits and `_`, not starting with a digit"
        ));
    }
    if v.contains('\0') {
        return Err(format!("-e `{k}`: the value contains a NUL byte"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Variables moat itself sets in every sandbox (identity, search path) or in
/// every networked one (proxy, CA bundle). A profile's secret may not use
/// these names: it would be overwritten, or would point clients away from
/// the proxy or its CA.
pub fn is_moat_owned(name: &str) -> bool {
    ["PATH", "HOME", "USER", "LOGNAME", "PWD"].contains(&name)
        || PROXY_VARS.contains(&name)
        || CA_VARS.contains(&name)
        || ["NO_PROXY", "no_proxy", "NODE_USE_ENV_PROXY"].contains(&name)
}

pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<(String, String)> {
        [
            ("PATH", "/usr/bin:/bin"),
            ("TERM", "xterm"),
            ("LC_ALL", "C.UTF-8"),
            ("GITHUB_TOKEN", "ghp_secret"),
            ("AWS_SECRET_ACCESS_KEY", "aws_secret"),
            ("SSH_AUTH_SOCK", "/run/user/1000/ssh"),
            ("HOME", "/home/alice"),
            ("EDITOR", "vim"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    fn ident() -> Identity {
        Identity {
            home: "/home/alice".into(),
            user: "alice".into(),
        }
    }

    #[test]
    fn credentials_do_not_pass_and_allowlist_does() {
        let host = host();
        let id = ident();
        let env = build(&EnvRequest {
            host: &host,
            pass: &[],
            profile_env: &BTreeMap::new(),
            cli_env: &[],
            identity: &id,
            cwd: "/w",
            proxy: None,
        });
        assert_eq!(env.get("PATH").unwrap(), "/usr/bin:/bin");
        assert_eq!(env.get("LC_ALL").unwrap(), "C.UTF-8");
        assert!(!env.contains_key("GITHUB_TOKEN"));
        assert!(!env.contains_key("AWS_SECRET_ACCESS_KEY"));
        assert!(!env.contains_key("SSH_AUTH_SOCK"));
        assert!(!env.contains_key("EDITOR"));
        assert_eq!(env.get("USER").unwrap(), "alice");
        assert_eq!(env.get("PWD").unwrap(), "/w");
    }

    #[test]
    fn precedence_profile_then_cli() {
        let host = host();
        let id = ident();
        let mut prof = BTreeMap::new();
        prof.insert("A".to_string(), "profile".to_string());
        prof.insert("B".to_string(), "profile".to_string());
        prof.insert("HOME".to_string(), "/elsewhere".to_string());
        let cli = vec![("B".to_string(), "cli".to_string())];
        let env = build(&EnvRequest {
            host: &host,
            pass: &["EDITOR".to_string()],
            profile_env: &prof,
            cli_env: &cli,
            identity: &id,
            cwd: "/w",
            proxy: None,
        });
        assert_eq!(env["A"], "profile");
        assert_eq!(env["B"], "cli");
        assert_eq!(env["EDITOR"], "vim");
        assert_eq!(env["HOME"], "/elsewhere");
    }

    #[test]
    fn missing_path_gets_fallback() {
        let id = ident();
        let env = build(&EnvRequest {
            host: &[],
            pass: &[],
            profile_env: &BTreeMap::new(),
            cli_env: &[],
            identity: &id,
            cwd: "/",
            proxy: None,
        });
        assert_eq!(env["PATH"], FALLBACK_PATH);
    }

    fn proxied(
        host: &[(String, String)],
        prof: &BTreeMap<String, String>,
        cli: &[(String, String)],
        ca: Option<&str>,
    ) -> BTreeMap<String, String> {
        let id = ident();
        build(&EnvRequest {
            host,
            pass: &[
                "*PROXY".to_string(),
                "*proxy".to_string(),
                "SSL_*".to_string(),
            ],
            profile_env: prof,
            cli_env: cli,
            identity: &id,
            cwd: "/w",
            proxy: Some(ProxyEnv {
                port: 3128,
                ca_bundle: ca.map(str::to_string),
            }),
        })
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn proxy_variables_replace_every_other_source() {
        let host = pairs(&[
            ("HTTPS_PROXY", "http://host-proxy:8080"),
            ("no_proxy", "*"),
            ("SSL_CERT_FILE", "/host/bundle.pem"),
        ]);
        let mut prof = BTreeMap::new();
        prof.insert("HTTP_PROXY".to_string(), "http://profile:1".to_string());
        prof.insert("NO_PROXY".to_string(), "example.com".to_string());
        prof.insert("REQUESTS_CA_BUNDLE".to_string(), "/dev/null".to_string());
        let cli = pairs(&[
            ("https_proxy", "http://cli:2"),
            ("ALL_PROXY", "socks5://cli:3"),
            ("NODE_USE_ENV_PROXY", "0"),
            ("GIT_SSL_CAINFO", "/nope"),
            ("KEEP", "me"),
        ]);
        let env = proxied(
            &host,
            &prof,
            &cli,
            Some("/etc/ssl/certs/ca-certificates.crt"),
        );
        for k in PROXY_VARS {
            assert_eq!(env[*k], "http://127.0.0.1:3128", "{k}");
        }
        assert_eq!(env["NO_PROXY"], "localhost,127.0.0.1,::1");
        assert_eq!(env["no_proxy"], "localhost,127.0.0.1,::1");
        assert_eq!(env["NODE_USE_ENV_PROXY"], "1");
        for k in CA_VARS {
            assert_eq!(env[*k], "/etc/ssl/certs/ca-certificates.crt", "{k}");
        }
        assert_eq!(env["KEEP"], "me");
    }

    #[test]
    fn no_proxy_names_only_loopback() {
        for entry in NO_PROXY.split(',') {
            let loopback = entry == "localhost"
                || entry
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            assert!(loopback, "{entry}");
        }
    }

    #[test]
    fn proxy_port_and_missing_bundle() {
        let id = ident();
        let env = build(&EnvRequest {
            host: &[],
            pass: &[],
            profile_env: &BTreeMap::new(),
            cli_env: &pairs(&[("SSL_CERT_FILE", "/mine.pem")]),
            identity: &id,
            cwd: "/",
            proxy: Some(ProxyEnv {
                port: 8899,
                ca_bundle: None,
            }),
        });
        assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:8899");
        // Without a bundle moat has nothing to point at; what the caller
        // set stays.
        assert_eq!(env["SSL_CERT_FILE"], "/mine.pem");
        assert!(!env.contains_key("CURL_CA_BUNDLE"));
    }

    #[test]
    fn no_network_sets_no_proxy_variables() {
        let host = pairs(&[("HTTPS_PROXY", "http://host-proxy:8080")]);
        let id = ident();
        let env = build(&EnvRequest {
            host: &host,
            pass: &["HTTPS_PROXY".to_string()],
            profile_env: &BTreeMap::new(),
            cli_env: &[],
            identity: &id,
            cwd: "/",
            proxy: None,
        });
        // Passed as the profile asked: with no network it reaches nothing.
        assert_eq!(env["HTTPS_PROXY"], "http://host-proxy:8080");
        for k in [
            "HTTP_PROXY",
            "NO_PROXY",
            "NODE_USE_ENV_PROXY",
            "SSL_CERT_FILE",
        ] {
            assert!(!env.contains_key(k), "{k}");
        }
    }

    #[test]
    fn everything_moat_sets_is_moat_owned() {
        let id = ident();
        let env = build(&EnvRequest {
            host: &[],
            pass: &[],
            profile_env: &BTreeMap::new(),
            cli_env: &[],
            identity: &id,
            cwd: "/",
            proxy: Some(ProxyEnv {
                port: 1,
                ca_bundle: Some("/b".into()),
            }),
        });
        for k in env.keys() {
            assert!(is_moat_owned(k), "{k}");
        }
        assert!(!is_moat_owned("DATABASE_URL"));
    }

    #[test]
    fn assignments() {
        assert_eq!(
            parse_assignment("A=b=c").unwrap(),
            ("A".to_string(), "b=c".to_string())
        );
        assert_eq!(
            parse_assignment("A=").unwrap(),
            ("A".to_string(), String::new())
        );
        assert!(parse_assignment("A").is_err());
        assert!(parse_assignment("1A=x").is_err());
        assert!(parse_assignment("A-B=x").is_err());
        assert!(parse_assignment("=x").is_err());
    }
}
