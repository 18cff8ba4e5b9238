//! Which environment variables reach the command.

mod common;

use common::*;
use std::collections::BTreeMap;

/// Parses `env` output into a map.
fn env_map(out: &Output) -> BTreeMap<String, String> {
    out.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

sandbox_test! {
    /// Credentials in the caller's environment stay outside; the allowlist
    /// passes; identity variables describe the sandbox; nothing else shows.
    fn only_allowlisted_variables_pass(r: &Runner) {
        let ws = r.workspace();
        let token = unique("ghp_MOATTEST");
        let aws = unique("AWSSECRET");
        let other = unique("OTHER");
        let lc = unique("lc-");
        let out = r
            .exec(&ws)
            .env("GITHUB_TOKEN", &token)
            .env("AWS_SECRET_ACCESS_KEY", &aws)
            .env("SSH_AUTH_SOCK", format!("/run/{other}"))
            .env("MOAT_TEST_UNLISTED", &other)
            .env("LD_PRELOAD", "/nonexistent/libmoattest.so")
            .env("TERM", "xterm-moat-test")
            .env("COLORTERM", "truecolor")
            .env("LANG", "C.UTF-8")
            .env("LANGUAGE", "en")
            .env("LC_ALL", "C.UTF-8")
            .env("LC_MOATTEST", &lc)
            .env("TZ", "UTC")
            .env("NO_COLOR", "1")
            .env("COLUMNS", "91")
            .env("LINES", "33")
            .cmd(["env"])
            .run();
        out.assert_ok();
        for secret in [&token, &aws, &other] {
            out.assert_no_leak(secret);
        }
        let env = env_map(&out);
        let expect = [
            ("PATH", CLEAN_PATH),
            ("TERM", "xterm-moat-test"),
            ("COLORTERM", "truecolor"),
            ("LANG", "C.UTF-8"),
            ("LANGUAGE", "en"),
            ("LC_ALL", "C.UTF-8"),
            ("LC_MOATTEST", lc.as_str()),
            ("TZ", "UTC"),
            ("NO_COLOR", "1"),
            ("COLUMNS", "91"),
            ("LINES", "33"),
            ("HOME", r.home.to_str().unwrap()),
            ("USER", r.user.as_str()),
            ("LOGNAME", r.user.as_str()),
            ("MOAT_SANDBOX", "1"),
        ];
        for (k, v) in expect {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}{out}");
        }
        // moat's own network variables: every proxy variable names the one
        // loopback proxy, every CA variable the sandbox's merged bundle.
        let proxy = env.get("HTTP_PROXY").cloned().unwrap_or_default();
        assert!(proxy.starts_with("http://127.0.0.1:"), "HTTP_PROXY={proxy}{out}");
        let moat_vars: Vec<&str> = moat::environment::PROXY_VARS
            .iter()
            .chain(moat::environment::CA_VARS)
            .copied()
            .chain(["NO_PROXY", "no_proxy", "NODE_USE_ENV_PROXY"])
            .collect();
        for k in moat::environment::PROXY_VARS {
            assert_eq!(env.get(*k), Some(&proxy), "{k}{out}");
        }
        for k in ["NO_PROXY", "no_proxy"] {
            assert_eq!(env.get(k).map(String::as_str), Some(moat::environment::NO_PROXY), "{k}{out}");
        }
        for k in moat::environment::CA_VARS {
            assert_eq!(
                env.get(*k).map(String::as_str),
                Some("/etc/ssl/certs/ca-certificates.crt"),
                "{k}{out}"
            );
        }
        // PWD is what a login shell would set; anything else came from
        // somewhere it should not have.
        for k in env.keys() {
            assert!(
                expect.iter().any(|(e, _)| e == k) || k == "PWD" || moat_vars.contains(&k.as_str()),
                "unexpected variable {k} in the sandbox{out}"
            );
        }
        if let Some(pwd) = env.get("PWD") {
            assert_eq!(pwd, ws.path_str(), "{out}");
        }
    }
}

sandbox_test! {
    /// /proc/*/environ holds the initial environment of each process; the
    /// caller's secrets must not be there either (not in the command's, and
    /// not in init's, which moat started).
    fn secrets_absent_from_proc_environ(r: &Runner) {
        let ws = r.workspace();
        let token = unique("ghp_MOATTEST");
        let aws = unique("AWSSECRET");
        let out = r
            .exec(&ws)
            .env("GITHUB_TOKEN", &token)
            .env("AWS_SECRET_ACCESS_KEY", &aws)
            .cmd([
                "sh",
                "-c",
                r#"for f in /proc/[0-9]*/environ; do
                       echo "== $f"; cat "$f" 2>/dev/null | tr '\0' '\n'
                   done
                   cat /proc/self/environ | tr '\0' '\n' | grep -c MOAT_SANDBOX=1 | sed 's/^/SELF=/'
                   echo DONE"#,
            ])
            .run();
        out.assert_ok()
            .assert_stdout_has("DONE")
            .assert_stdout_has("== /proc/1/environ")
            .assert_field("SELF", "1")
            .assert_no_leak(&token)
            .assert_no_leak(&aws);
    }
}

sandbox_test! {
    /// The profile's [env] adds variables, -e adds more and wins over both
    /// the profile and the pass-through ones.
    fn profile_env_and_cli_env(r: &Runner) {
        let ws = r.workspace();
        let profile = write_profile(
            &ws,
            "envtest.toml",
            r#"extends = "default"
[env]
FROM_PROFILE = "profile-value"
OVERRIDDEN = "profile"
"#,
        );
        let out = r
            .exec(&ws)
            .arg("--profile")
            .arg(&profile)
            .args(["-e", "OVERRIDDEN=cli", "-e", "FROM_CLI=a=b c", "-e", "TERM=dumb", "-e", "EMPTY="])
            .env("TERM", "xterm")
            .cmd(["env"])
            .run();
        out.assert_ok()
            .assert_field("FROM_PROFILE", "profile-value")
            .assert_field("OVERRIDDEN", "cli")
            .assert_field("FROM_CLI", "a=b c")
            .assert_field("TERM", "dumb")
            .assert_field("EMPTY", "")
            .assert_field("MOAT_SANDBOX", "1");
    }
}

sandbox_test! {
    /// -e works with the default profile too, and can override MOAT_SANDBOX.
    fn cli_env_with_default_profile(r: &Runner) {
        let ws = r.workspace();
        let out = r
            .exec(&ws)
            .args(["-e", "MOAT_SANDBOX=custom", "-e", "ONLY_CLI=yes"])
            .cmd(["env"])
            .run();
        out.assert_ok()
            .assert_field("MOAT_SANDBOX", "custom")
            .assert_field("ONLY_CLI", "yes");
    }
}

sandbox_test! {
    /// A profile's pass_env lets named host variables through, and only
    /// those.
    fn profile_pass_env(r: &Runner) {
        let ws = r.workspace();
        let profile = write_profile(
            &ws,
            "pass.toml",
            "extends = \"default\"\npass_env = [\"MOAT_PASS_ME\"]\n",
        );
        let kept = unique("kept-");
        let dropped = unique("dropped-");
        let out = r
            .exec(&ws)
            .arg("--profile")
            .arg(&profile)
            .env("MOAT_PASS_ME", &kept)
            .env("MOAT_PASS_ME_NOT", &dropped)
            .cmd(["env"])
            .run();
        out.assert_ok()
            .assert_field("MOAT_PASS_ME", &kept)
            .assert_no_leak(&dropped);
    }
}

sandbox_test! {
    /// A malformed -e is moat's error, not the command's.
    fn bad_cli_env_is_refused(r: &Runner) {
        let ws = r.workspace();
        for bad in ["NOEQUALS", "1BAD=x", "=x"] {
            let out = r.exec(&ws).args(["-e", bad]).cmd(["sh", "-c", "echo RAN"]).run();
            out.assert_moat_error();
            assert!(!out.stdout.contains("RAN"), "{out}");
        }
    }
}
