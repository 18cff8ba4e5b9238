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
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Builds the sandbox environment. Precedence, lowest first: allowlisted
/// host variables, moat's identity variables, the profile's `[env]`, `-e`.
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
        });
        assert_eq!(env["PATH"], FALLBACK_PATH);
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
