//! The workspace: the one host directory the command may change, minus the
//! files through which it could get code run on the host later.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A workspace with a real git repository and the other protected files,
/// set up on the host as the runner would have it.
fn protected_workspace(r: &Runner) -> Dir {
    let ws = r.workspace();
    r.host_sh(ws.path(), "git init -q . && git config core.editor true")
        .assert_ok();
    ws.write(
        ".git/hooks/post-checkout",
        "#!/bin/sh\necho original hook\n",
    );
    ws.write(".envrc", "export ORIGINAL=1\n");
    ws.write(".vscode/tasks.json", "{\"version\": \"2.0.0\"}\n");
    ws.write("README", "hello\n");
    ws.chown_all();
    ws
}

fn snapshot(ws: &Dir) -> Vec<(String, String)> {
    [
        ".git/config",
        ".git/hooks/post-checkout",
        ".envrc",
        ".vscode/tasks.json",
    ]
    .iter()
    .map(|p| (p.to_string(), ws.read(p)))
    .collect()
}

#[track_caller]
fn assert_untouched(ws: &Dir, before: &[(String, String)], out: &Output) {
    for (p, text) in before {
        let now = std::fs::read_to_string(ws.join(p)).unwrap_or_else(|e| format!("<{e}>"));
        assert_eq!(&now, text, "protected {p} changed on the host{out}");
    }
    for p in [".git/hooks/pre-commit", ".git/hooks/post-merge"] {
        assert!(
            !ws.join(p).exists(),
            "a hook was planted on the host: {p}{out}"
        );
    }
}

sandbox_test! {
    /// Writing to the protected paths fails with EROFS; the rest of the
    /// workspace stays writable.
    fn protected_paths_read_only(r: &Runner) {
        let ws = protected_workspace(r);
        let before = snapshot(&ws);
        let out = r.sh(
            &ws,
            r#"
            try() { if (eval "$1") 2>/tmp/err; then echo "ALLOWED: $1"; else echo "DENIED: $1: $(cat /tmp/err)"; fi; }
            try 'echo "[alias] x = !evil" >> .git/config'
            try 'echo evil > .git/hooks/pre-commit'
            try 'echo evil >> .git/hooks/post-checkout'
            try 'echo evil >> .envrc'
            try 'echo evil > .vscode/tasks.json'
            try 'git config core.fsmonitor evil'
            try 'rm -f .envrc'
            try 'mv .git/config .git/config.old'
            try 'rm -rf .git/hooks'
            echo changed > README && echo README-WRITTEN
            mkdir -p src/deep && echo code > src/deep/main.rs && echo NEW-WRITTEN
            echo x > .git/moat-note && echo GITDIR-WRITABLE
            echo DONE
            "#,
        );
        out.assert_ok()
            .assert_stdout_has("DONE")
            .assert_stdout_has("README-WRITTEN")
            .assert_stdout_has("NEW-WRITTEN")
            .assert_stdout_has("GITDIR-WRITABLE");
        assert!(!out.stdout.contains("ALLOWED"), "a protected path was changed{out}");
        for write in [".git/config", ".git/hooks/pre-commit", ".git/hooks/post-checkout", ".envrc", ".vscode/tasks.json"] {
            let line = out
                .stdout
                .lines()
                .find(|l| l.starts_with("DENIED: ") && l.contains(&format!("> {write}:")))
                .unwrap_or_else(|| panic!("no result for {write}{out}"));
            assert!(line.contains("Read-only file system"), "{write}: expected EROFS: {line}{out}");
        }
        assert_untouched(&ws, &before, &out);
        assert_eq!(ws.read("README"), "changed\n");
        assert_eq!(ws.read("src/deep/main.rs"), "code\n");
    }
}

sandbox_test! {
    /// An agent that cannot write .git/config may try to swap the directory
    /// that holds it: rename .git (or .vscode) away and create a new one.
    /// Whatever moat allows inside, the host must end up with the original
    /// protected files and no planted hook.
    fn protected_paths_survive_renaming_parent(r: &Runner) {
        let ws = protected_workspace(r);
        let before = snapshot(&ws);
        let out = r.sh(
            &ws,
            r#"
            mv .git .git-moved 2>/dev/null && echo MOVED-GIT
            mkdir -p .git/hooks 2>/dev/null
            printf '[core]\n\tfsmonitor = evil\n' > .git/config 2>/dev/null
            printf '#!/bin/sh\necho pwned\n' > .git/hooks/pre-commit 2>/dev/null
            mv .vscode .vscode-moved 2>/dev/null && echo MOVED-VSCODE
            mkdir -p .vscode 2>/dev/null && echo '{"evil": true}' > .vscode/tasks.json 2>/dev/null
            mv .git/hooks .git/hooks-moved 2>/dev/null && echo MOVED-HOOKS
            mkdir -p .git/hooks 2>/dev/null && echo evil > .git/hooks/post-merge 2>/dev/null
            echo DONE
            "#,
        );
        out.assert_ok().assert_stdout_has("DONE");
        assert_untouched(&ws, &before, &out);
    }
}

sandbox_test! {
    /// Root in the sandbox's user namespace holds CAP_SYS_ADMIN there, and
    /// could try to take the read-only mounts away: unmount them, remount
    /// them writable, or do so in a new mount namespace of its own (with or
    /// without a nested user namespace). None of it may reach the host.
    fn protected_paths_survive_unmount(r: &Runner) {
        let ws = protected_workspace(r);
        let before = snapshot(&ws);
        let attack = r#"
            for p in .git/config .git/hooks .git .envrc .vscode/tasks.json .vscode; do
                umount "$p"; umount -l "$p"; mount -o remount,bind,rw "$p"
            done
            printf '[core]\n\tfsmonitor = evil\n' >> .git/config
            echo evil > .git/hooks/pre-commit
            echo evil >> .envrc
            echo '{"evil": 1}' > .vscode/tasks.json
        "#;
        ws.write("attack.sh", attack);
        let out = r.sh(
            &ws,
            r#"
            sh ./attack.sh 2>/dev/null
            unshare -m sh ./attack.sh 2>/dev/null && echo VIA-UNSHARE-M
            unshare -Urm sh ./attack.sh 2>/dev/null && echo VIA-UNSHARE-URM
            echo DONE
            "#,
        );
        out.assert_ok().assert_stdout_has("DONE");
        assert_untouched(&ws, &before, &out);
    }
}

sandbox_test! {
    /// git works normally in a repository whose config and hooks are
    /// protected: commits land on the host.
    fn git_commit_works(r: &Runner) {
        let ws = protected_workspace(r);
        let out = r.sh(
            &ws,
            r#"
            echo work > file.txt
            git add -A &&
            git -c user.name=agent -c user.email=agent@example.invalid commit -qm 'agent commit' &&
            echo COMMITTED
            echo "COUNT=$(git rev-list --count HEAD)"
            "#,
        );
        out.assert_ok().assert_stdout_has("COMMITTED").assert_field("COUNT", "1");
        r.host_sh(ws.path(), "git log --format=%s")
            .assert_ok()
            .assert_stdout_has("agent commit");
    }
}

sandbox_test! {
    /// A symlink in the workspace that points out of it cannot be used to
    /// change the host file it names.
    fn symlinks_out_of_workspace_write_nothing(r: &Runner) {
        let ws = r.workspace();
        let outside = r.dir_in(&r.home, "outside-");
        let target = outside.write("victim.txt", "original\n");
        ws.symlink(&target, "file-link");
        ws.symlink(outside.path(), "dir-link");
        // Control: on the host, as the caller, both links lead somewhere
        // writable.
        r.host_sh(ws.path(), "test -w file-link && test -w dir-link/").assert_ok();
        let out = r.sh(
            &ws,
            r#"
            echo evil > file-link 2>/dev/null
            echo evil >> file-link 2>/dev/null
            echo evil > dir-link/planted 2>/dev/null
            rm -f dir-link/victim.txt 2>/dev/null
            echo DONE
            "#,
        );
        out.assert_ok().assert_stdout_has("DONE");
        assert_eq!(outside.read("victim.txt"), "original\n", "{out}");
        assert!(!outside.join("planted").exists(), "{out}");
    }
}

sandbox_test! {
    /// What the command writes lands on the host, owned by the caller.
    fn writes_persist_owned_by_caller(r: &Runner) {
        let ws = r.workspace();
        ws.write("from-host.txt", "host\n");
        let out = r.sh(
            &ws,
            r#"
            echo "UID=$(id -u)"
            echo "GID=$(id -g)"
            echo "OWNER=$(stat -c %u:%g from-host.txt)"
            echo data > out.txt
            mkdir -p dir/sub && echo nested > dir/sub/f
            ln -s out.txt link
            rm from-host.txt
            echo DONE
            "#,
        );
        let ids = format!("{}:{}", r.uid, r.gid);
        out.assert_ok()
            .assert_stdout_has("DONE")
            .assert_field("UID", &r.uid.to_string())
            .assert_field("GID", &r.gid.to_string())
            .assert_field("OWNER", &ids);
        assert_eq!(ws.read("out.txt"), "data\n");
        assert_eq!(ws.read("dir/sub/f"), "nested\n");
        assert!(!ws.join("from-host.txt").exists());
        for p in ["out.txt", "dir", "dir/sub", "dir/sub/f", "link"] {
            let m = std::fs::symlink_metadata(ws.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (r.uid, r.gid), "owner of {p} on the host{out}");
        }
    }
}

sandbox_test! {
    /// `workspace = "read-only"` in a profile: readable, not writable.
    fn read_only_workspace(r: &Runner) {
        let ws = r.workspace();
        ws.write("data.txt", "readable\n");
        let profile = ws.write(
            "ro.toml",
            "extends = \"default\"\n[filesystem]\nworkspace = \"read-only\"\n",
        );
        let out = r
            .exec(&ws)
            .arg("--profile")
            .arg(&profile)
            .cmd([
                "sh",
                "-c",
                "cat data.txt; if (echo x > new.txt) 2>/tmp/e; then echo WROTE; else cat /tmp/e; fi; echo DONE",
            ])
            .run();
        out.assert_ok()
            .assert_stdout_has("DONE")
            .assert_stdout_has("readable")
            .assert_stdout_has("Read-only file system");
        assert!(!out.stdout.contains("WROTE"), "{out}");
        assert!(!ws.join("new.txt").exists());
    }
}

sandbox_test! {
    /// Without --workspace the current directory is the workspace.
    fn workspace_defaults_to_cwd(r: &Runner) {
        let ws = r.workspace();
        let out = r
            .moat()
            .arg("exec")
            .cwd(ws.path())
            .cmd(["sh", "-c", "echo \"PWD=$(pwd)\"; echo here > made-here.txt"])
            .run();
        out.assert_ok().assert_field("PWD", ws.path_str());
        assert_eq!(ws.read("made-here.txt"), "here\n");
    }
}

sandbox_test! {
    /// Workspaces that would expose everything are refused unless forced.
    fn broad_workspace_refused(r: &Runner) {
        let cwd = r.workspace();
        let mut broad = vec![Path::new("/").to_path_buf(), r.home.clone()];
        if let Some(parent) = r.home.parent().filter(|p| *p != Path::new("/")) {
            broad.push(parent.to_path_buf());
        }
        for dir in &broad {
            let out = r
                .moat()
                .arg("exec")
                .arg("--workspace")
                .arg(dir)
                .cwd(cwd.path())
                .cmd(["sh", "-c", "echo RAN"])
                .run();
            out.assert_moat_error().assert_stderr_has("--force-workspace");
            assert!(!out.stdout.contains("RAN"), "{out}");
        }
        // Same when the broad directory is the current one.
        let out = r.moat().arg("exec").cwd(&r.home).cmd(["sh", "-c", "echo RAN"]).run();
        out.assert_moat_error().assert_stderr_has("--force-workspace");
        assert!(!out.stdout.contains("RAN"), "{out}");
    }
}

sandbox_test! {
    /// --force-workspace really does allow the home directory.
    fn force_workspace_allows_home(r: &Runner) {
        let probe = HostFile::create(r.home.join(unique("forced-")), "visible\n", 0o644, (r.uid, r.gid), false);
        let out = r
            .moat()
            .arg("exec")
            .arg("--force-workspace")
            .arg("--workspace")
            .arg(&r.home)
            .cwd(&r.home)
            .cmd(["cat", probe.path_str()])
            .run();
        out.assert_ok().assert_stdout_has("visible");
    }
}

sandbox_test! {
    /// A workspace that does not exist, or is a file, is moat's error.
    fn bad_workspace(r: &Runner) {
        let ws = r.workspace();
        let file = ws.write("plain-file", "x");
        for dir in [ws.join("does-not-exist"), file] {
            let out = r
                .moat()
                .arg("exec")
                .arg("--workspace")
                .arg(&dir)
                .cwd(ws.path())
                .cmd(["sh", "-c", "echo RAN"])
                .run();
            out.assert_moat_error();
            assert!(!out.stdout.contains("RAN"), "{out}");
        }
    }
}
