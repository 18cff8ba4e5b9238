//! Profiles: finding them, `extends`, errors, and the `profile` commands;
//! and that what a profile says is what the sandbox does.

mod common;

use common::*;
use std::path::Path;

fn all_output(out: &Output) -> String {
    format!("{}{}", out.stdout, out.stderr)
}

/// `$XDG_CONFIG_HOME` with `moat/profiles/NAME.toml` for each entry.
fn user_profiles(r: &Runner, profiles: &[(&str, &str)]) -> Dir {
    let xdg = r.dir_in(&r.home, "xdg-");
    for (name, text) in profiles {
        xdg.write(format!("moat/profiles/{name}.toml"), text);
    }
    xdg
}

fn toml_str<'a>(v: &'a toml::Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn toml_list(v: &toml::Value, path: &[&str]) -> Vec<String> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return Vec::new(),
        }
    }
    cur.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

sandbox_test! {
    /// `profile show default` prints the built-in profile as TOML that is
    /// itself a valid profile.
    fn show_default(r: &Runner) {
        let ws = r.workspace();
        let out = r.moat().args(["profile", "show", "default"]).cwd(ws.path()).run();
        out.assert_ok();
        let v: toml::Value = toml::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("`profile show` printed no valid TOML: {e}{out}"));
        assert_eq!(toml_str(&v, &["hostname"]), Some("moat"), "{out}");
        assert_eq!(toml_str(&v, &["env", "MOAT_SANDBOX"]), Some("1"), "{out}");
        assert!(toml_list(&v, &["filesystem", "read_only"]).iter().any(|p| p == "/usr"), "{out}");
        assert!(toml_list(&v, &["filesystem", "protect"]).iter().any(|p| p == ".git/hooks"), "{out}");
        assert!(toml_list(&v, &["filesystem", "tmpfs"]).iter().any(|p| p == "/tmp"), "{out}");
        let file = ws.write("shown.toml", &out.stdout);
        r.moat().args(["profile", "check"]).arg(&file).cwd(ws.path()).run().assert_ok();
    }
}

sandbox_test! {
    /// `profile check`: 0 for a good file; 1 with FILE:LINE:COLUMN for
    /// unknown keys, wrong types and bad syntax.
    fn check_reports_file_line_column(r: &Runner) {
        let ws = r.workspace();
        let good = ws.write(
            "good.toml",
            "description = \"fine\"\nextends = \"default\"\nhostname = \"h\"\n[env]\nA = \"b\"\n[filesystem]\nworkspace = \"read-only\"\nread_only = [\"-/opt\"]\n",
        );
        r.moat().args(["profile", "check"]).arg(&good).cwd(ws.path()).run().assert_ok();

        let cases = [
            ("top.toml", "description = \"x\"\nhostname = \"h\"\nhostnme = \"typo\"\n", 3, 1),
            ("nested.toml", "extends = \"default\"\n[filesystem]\nworkspace = \"read-write\"\nread_onyl = [\"/usr\"]\n", 4, 1),
        ];
        for (name, text, line, col) in cases {
            let f = ws.write(name, text);
            let out = r.moat().args(["profile", "check"]).arg(&f).cwd(ws.path()).run();
            out.assert_code(1);
            let loc = format!("{}:{line}:{col}", f.display());
            assert!(all_output(&out).contains(&loc), "expected {loc}{out}");
        }
        for (name, text, line) in [
            ("type.toml", "description = \"x\"\nhostname = 5\n", 2),
            ("syntax.toml", "description = \"x\"\n\nhostname = \n", 3),
            ("enum.toml", "[filesystem]\nworkspace = \"rw\"\n", 2),
            ("list.toml", "[filesystem]\nread_only = \"/usr\"\n", 2),
            ("table.toml", "hostname = \"h\"\n\n[filesytem]\nread_only = []\n", 3),
        ] {
            let f = ws.write(name, text);
            let out = r.moat().args(["profile", "check"]).arg(&f).cwd(ws.path()).run();
            out.assert_code(1);
            let loc = format!("{}:{line}:", f.display());
            assert!(all_output(&out).contains(&loc), "expected {loc}{out}");
        }
        // Syscall names are checked against moat's tables, not just their
        // spelling: a name that is no syscall fails `check` as it would `exec`.
        let f = ws.write("seccomp.toml", "[seccomp]\ndeny = [\"not_a_syscall\"]\n");
        let out = r.moat().args(["profile", "check"]).arg(&f).cwd(ws.path()).run();
        out.assert_code(1);
        assert!(
            all_output(&out).contains("not_a_syscall"),
            "the unknown name is named{out}"
        );
        let f = ws.write(
            "seccomp-ok.toml",
            "[seccomp]\ndeny = [\"chroot\"]\nallow = [\"ptrace\"]\n",
        );
        r.moat().args(["profile", "check"]).arg(&f).cwd(ws.path()).run().assert_ok();
    }
}

sandbox_test! {
    /// A bad profile stops `exec` before anything runs: 125, with the
    /// location.
    fn exec_with_bad_profile(r: &Runner) {
        let ws = r.workspace();
        let f = ws.write("bad.toml", "extends = \"default\"\nhostnme = \"typo\"\n");
        let out = r.exec(&ws).arg("--profile").arg(&f).cmd(["sh", "-c", "echo RAN"]).run();
        out.assert_moat_error().assert_stderr_has(&format!("{}:2:1", f.display()));
        assert!(!out.stdout.contains("RAN"), "{out}");

        let missing = unique("no-such-profile-");
        let out = r.exec(&ws).args(["--profile", &missing]).cmd(["sh", "-c", "echo RAN"]).run();
        out.assert_moat_error().assert_stderr_has(&missing);
        assert!(!out.stdout.contains("RAN"), "{out}");
    }
}

sandbox_test! {
    /// A user profile extending another user profile extending the
    /// built-in: scalars from the most derived, tables merged, lists
    /// appended; it runs, and `profile show` prints the merge.
    fn extends_chain_from_user_dir(r: &Runner) {
        let ws = r.workspace();
        let dir_a = r.dir_in(&r.home, "ext-a-");
        dir_a.write("f", "from-a\n");
        let dir_b = r.dir_in(&r.home, "ext-b-");
        dir_b.write("f", "from-b\n");
        let xdg = user_profiles(
            r,
            &[
                (
                    "parent",
                    &format!(
                        "extends = \"default\"\nhostname = \"parent-host\"\n[env]\nFROM_PARENT = \"p\"\nSHARED = \"parent\"\n[filesystem]\nread_only = [\"{}\"]\n",
                        dir_a.path_str()
                    ),
                ),
                (
                    "child",
                    &format!(
                        "extends = \"parent\"\nhostname = \"child-host\"\n[env]\nSHARED = \"child\"\n[filesystem]\nread_only = [\"{}\"]\n",
                        dir_b.path_str()
                    ),
                ),
            ],
        );
        let out = r
            .exec(&ws)
            .args(["--profile", "child"])
            .env("XDG_CONFIG_HOME", xdg.path())
            .cmd([
                "sh",
                "-c",
                &format!(
                    r#"echo "HOST=$(hostname)"; env; cat {a}/f {b}/f
                       if (echo x > {a}/new) 2>/dev/null; then echo WROTE-A; fi
                       [ -s /etc/shadow ] || echo SHADOW-MASKED
                       echo "MOAT_SANDBOX=$MOAT_SANDBOX""#,
                    a = dir_a.path_str(),
                    b = dir_b.path_str()
                ),
            ])
            .run();
        out.assert_ok()
            .assert_field("HOST", "child-host")
            .assert_field("FROM_PARENT", "p")
            .assert_field("SHARED", "child")
            .assert_field("MOAT_SANDBOX", "1")
            .assert_stdout_has("from-a")
            .assert_stdout_has("from-b")
            .assert_stdout_has("SHADOW-MASKED");
        assert!(!out.stdout.contains("WROTE-A"), "read_only from the parent is writable{out}");
        assert!(out.field("XDG_CONFIG_HOME").is_none(), "{out}");

        let shown = r
            .moat()
            .args(["profile", "show", "child"])
            .env("XDG_CONFIG_HOME", xdg.path())
            .run();
        shown.assert_ok();
        let v: toml::Value = toml::from_str(&shown.stdout).unwrap_or_else(|e| panic!("{e}{shown}"));
        assert_eq!(toml_str(&v, &["hostname"]), Some("child-host"), "{shown}");
        assert_eq!(toml_str(&v, &["env", "FROM_PARENT"]), Some("p"), "{shown}");
        assert_eq!(toml_str(&v, &["env", "SHARED"]), Some("child"), "{shown}");
        assert_eq!(toml_str(&v, &["env", "MOAT_SANDBOX"]), Some("1"), "{shown}");
        let ro = toml_list(&v, &["filesystem", "read_only"]);
        for want in ["/usr", dir_a.path_str(), dir_b.path_str()] {
            assert!(ro.iter().any(|p| p == want), "read_only lacks {want}{shown}");
        }
    }
}

sandbox_test! {
    /// `extends` may name a file by path.
    fn extends_by_path(r: &Runner) {
        let ws = r.workspace();
        let parent = ws.write(
            "base.toml",
            "extends = \"default\"\nhostname = \"by-path\"\n[env]\nBASE = \"yes\"\n",
        );
        let child = ws.write(
            "child.toml",
            format!("extends = \"{}\"\n[env]\nCHILD = \"yes\"\n", parent.display()),
        );
        let out = r
            .exec(&ws)
            .arg("--profile")
            .arg(&child)
            .cmd(["sh", "-c", "echo \"HOST=$(hostname)\"; env"])
            .run();
        out.assert_ok()
            .assert_field("HOST", "by-path")
            .assert_field("BASE", "yes")
            .assert_field("CHILD", "yes");
    }
}

sandbox_test! {
    /// An error in a profile up the chain names that file.
    fn error_in_parent_names_parent(r: &Runner) {
        let ws = r.workspace();
        let xdg = user_profiles(
            r,
            &[
                ("broken-parent", "extends = \"default\"\nhostnam = \"x\"\n"),
                ("fine-child", "extends = \"broken-parent\"\n"),
            ],
        );
        let out = r
            .exec(&ws)
            .args(["--profile", "fine-child"])
            .env("XDG_CONFIG_HOME", xdg.path())
            .cmd(["true"])
            .run();
        let parent = xdg.join("moat/profiles/broken-parent.toml");
        out.assert_moat_error()
            .assert_stderr_has(&format!("{}:2:1", parent.display()));
    }
}

sandbox_test! {
    /// A cycle of `extends` is an error, not a hang.
    fn extends_cycle(r: &Runner) {
        let ws = r.workspace();
        let xdg = user_profiles(
            r,
            &[
                ("loop-a", "extends = \"loop-b\"\n"),
                ("loop-b", "extends = \"loop-a\"\n"),
                ("loop-self", "extends = \"loop-self\"\n"),
            ],
        );
        for name in ["loop-a", "loop-self"] {
            let out = r
                .exec(&ws)
                .args(["--profile", name])
                .env("XDG_CONFIG_HOME", xdg.path())
                .cmd(["sh", "-c", "echo RAN"])
                .run();
            out.assert_moat_error();
            assert!(!out.stdout.contains("RAN"), "{out}");
            let f = xdg.join(format!("moat/profiles/{name}.toml"));
            r.moat().args(["profile", "check"]).arg(&f).env("XDG_CONFIG_HOME", xdg.path()).run().assert_code(1);
        }
    }
}

sandbox_test! {
    /// System profiles come from the system directory; a user profile of
    /// the same name wins; `profile list` shows all of them.
    fn system_and_user_profiles(r: &Runner) {
        let ws = r.workspace();
        let sys = r.dir_in(Path::new("/tmp"), "moat-sys-");
        sys.write("sysprof.toml", "extends = \"default\"\nhostname = \"sys-host\"\n");
        sys.write("shadowed.toml", "extends = \"default\"\nhostname = \"sys-shadowed\"\n");
        let xdg = user_profiles(
            r,
            &[
                ("shadowed", "extends = \"default\"\nhostname = \"user-shadowed\"\n"),
                ("mine", "extends = \"sysprof\"\n[env]\nMINE = \"1\"\n"),
            ],
        );
        let run = |profile: &str, script: &str| {
            r.exec(&ws)
                .args(["--profile", profile])
                .env("XDG_CONFIG_HOME", xdg.path())
                .env("MOAT_SYSTEM_PROFILE_DIR", sys.path())
                .cmd(["sh", "-c", script])
                .run()
        };
        run("sysprof", "echo \"HOST=$(hostname)\"").assert_ok().assert_field("HOST", "sys-host");
        run("shadowed", "echo \"HOST=$(hostname)\"").assert_ok().assert_field("HOST", "user-shadowed");
        // A user profile may extend a system one.
        run("mine", "echo \"HOST=$(hostname)\"; echo \"MINE=$MINE\"")
            .assert_ok()
            .assert_field("HOST", "sys-host")
            .assert_field("MINE", "1");

        let out = r
            .moat()
            .args(["profile", "list"])
            .env("XDG_CONFIG_HOME", xdg.path())
            .env("MOAT_SYSTEM_PROFILE_DIR", sys.path())
            .run();
        out.assert_ok();
        for name in ["default", "sysprof", "shadowed", "mine"] {
            assert!(
                out.stdout.split(|c: char| c.is_whitespace() || c == ':' || c == ',').any(|w| w == name),
                "`profile list` lacks {name}{out}"
            );
        }
    }
}

sandbox_test! {
    /// A path a profile requires but the host lacks stops moat with 125,
    /// naming it; the same path marked optional is skipped.
    fn missing_required_path(r: &Runner) {
        let ws = r.workspace();
        let missing = format!("/{}/dir", unique("moat-missing-"));
        for key in ["read_only", "read_write"] {
            let f = ws.write(
                format!("{key}.toml"),
                format!("extends = \"default\"\n[filesystem]\n{key} = [\"{missing}\"]\n"),
            );
            let out = r.exec(&ws).arg("--profile").arg(&f).cmd(["sh", "-c", "echo RAN"]).run();
            out.assert_moat_error().assert_stderr_has(&missing);
            assert!(!out.stdout.contains("RAN"), "{out}");

            let f = ws.write(
                format!("{key}-opt.toml"),
                format!("extends = \"default\"\n[filesystem]\n{key} = [\"-{missing}\"]\n"),
            );
            r.exec(&ws)
                .arg("--profile")
                .arg(&f)
                .cmd(["sh", "-c", &format!("test ! -e {missing} && echo SKIPPED")])
                .run()
                .assert_ok()
                .assert_stdout_has("SKIPPED");
        }
    }
}

sandbox_test! {
    /// Each filesystem list of a profile does what it says, `~/` means the
    /// caller's home, and the default's lists (extended) still apply.
    fn filesystem_lists_apply(r: &Runner) {
        let ws = r.workspace();
        ws.write("secret.cfg", "original\n");
        ws.write(".envrc", "original\n");
        let ro = r.dir_in(&r.home, "moat-ro-");
        ro.write("f", "ro-content\n");
        let rw = r.dir_in(&r.home, "moat-rw-");
        let ro_name = ro.path().file_name().unwrap().to_str().unwrap().to_string();
        let host_cache_probe = unique("moat-cache-");
        let _leak = RemoveOnDrop(vec![Path::new("/var/cache").join(&host_cache_probe)]);
        let profile = ws.write(
            "lists.toml",
            format!(
                r#"extends = "default"
[filesystem]
read_only = ["~/{ro_name}"]
read_write = ["{rw}"]
mask = ["/etc/debian_version"]
tmpfs = ["/var/cache"]
protect = ["secret.cfg"]
"#,
                rw = rw.path_str()
            ),
        );
        let out = r
            .exec(&ws)
            .arg("--profile")
            .arg(&profile)
            .cmd([
                "sh",
                "-c",
                &format!(
                    r#"
                    try() {{ if (eval "$1") 2>/dev/null; then echo "ALLOWED: $1"; else echo "DENIED: $1"; fi; }}
                    cat ~/{ro_name}/f
                    try 'echo x > ~/{ro_name}/g'
                    try 'echo rw-content > {rw}/written'
                    echo "MASKED=$(cat /etc/debian_version 2>/dev/null)"
                    echo "CACHE=$(ls -A /var/cache | tr '\n' ' ')"
                    try 'echo x > /var/cache/{host_cache_probe}'
                    try 'echo x >> secret.cfg'
                    try 'echo x >> .envrc'
                    try 'echo x > other.txt'
                    test -d /usr/bin && echo USR-PRESENT
                    [ -s /etc/shadow ] || echo SHADOW-MASKED
                    "#,
                    rw = rw.path_str()
                ),
            ])
            .run();
        out.assert_ok()
            .assert_stdout_has("ro-content")
            .assert_stdout_has(&format!("DENIED: echo x > ~/{ro_name}/g"))
            .assert_stdout_has(&format!("ALLOWED: echo rw-content > {}/written", rw.path_str()))
            .assert_field("MASKED", "")
            .assert_field("CACHE", "")
            .assert_stdout_has(&format!("ALLOWED: echo x > /var/cache/{host_cache_probe}"))
            .assert_stdout_has("DENIED: echo x >> secret.cfg")
            .assert_stdout_has("DENIED: echo x >> .envrc")
            .assert_stdout_has("ALLOWED: echo x > other.txt")
            .assert_stdout_has("USR-PRESENT")
            .assert_stdout_has("SHADOW-MASKED");
        assert_eq!(rw.read("written"), "rw-content\n");
        assert!(!ro.join("g").exists());
        assert!(!Path::new("/var/cache").join(&host_cache_probe).exists());
        assert_eq!(ws.read("secret.cfg"), "original\n");
        assert_eq!(ws.read(".envrc"), "original\n");
        assert!(!std::fs::read_to_string("/etc/debian_version").unwrap().is_empty());
    }
}

sandbox_test! {
    /// The hostname a profile names is the one inside.
    fn profile_hostname(r: &Runner) {
        let ws = r.workspace();
        let f = ws.write("h.toml", "extends = \"default\"\nhostname = \"agent-box\"\n");
        r.exec(&ws)
            .arg("--profile")
            .arg(&f)
            .cmd(["hostname"])
            .run()
            .assert_ok()
            .assert_stdout_has("agent-box");
    }
}
