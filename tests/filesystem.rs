//! What of the host file system the sandbox can see and change.
//!
//! Each test plants something on the host that a real agent must not get at
//! (keys, credentials, sockets, other users' files), shows that the caller
//! can reach it without moat, then shows that it cannot from inside.

mod common;

use common::*;
use std::path::Path;

fn home_str(r: &Runner) -> &str {
    r.home.to_str().unwrap()
}

sandbox_test! {
    /// The classic target: an SSH key. Not readable by path, not listable,
    /// not through a symlink planted in the workspace, not through another
    /// process's root in /proc.
    fn ssh_key_hidden(r: &Runner) {
        let ws = r.workspace();
        let secret_text = unique("SSH-SECRET-");
        let key = HostFile::create(
            r.home.join(".ssh").join(unique("id_moat_")),
            &secret_text,
            0o600,
            (r.uid, r.gid),
            false,
        );
        ws.symlink(&key.path, "key-link");
        ws.symlink(r.home.join(".ssh"), "ssh-dir-link");

        // Control: without moat the caller reads it, also via the link.
        r.host_sh(ws.path(), &format!("cat {} && cat key-link", key.path_str()))
            .assert_ok()
            .assert_stdout_has(&secret_text);

        let k = key.path_str();
        let out = r.sh(
            &ws,
            &format!(
                r#"
                for p in {k} key-link ssh-dir-link/* /proc/1/root{k} /proc/self/root{k} /proc/1/cwd/key-link; do
                    if cat "$p" 2>/dev/null; then echo "READ $p"; fi
                done
                ls -la ~/.ssh ssh-dir-link/ 2>/dev/null && echo LISTED
                test -e ~/.ssh && echo "EXISTS ~/.ssh"
                test -L key-link && echo LINK-PRESENT
                echo DONE
                "#
            ),
        );
        out.assert_ok()
            .assert_stdout_has("DONE")
            // The workspace itself is intact: the link is there, it just
            // leads nowhere.
            .assert_stdout_has("LINK-PRESENT")
            .assert_no_leak(&secret_text);
        for bad in ["READ ", "LISTED", "EXISTS"] {
            assert!(!out.stdout.contains(bad), "{bad}{out}");
        }
    }
}

sandbox_test! {
    /// $HOME inside is an empty tmpfs: credentials and tool state stay on
    /// the host, only git's configuration is bound (read-only).
    fn home_is_empty_but_for_git_config(r: &Runner) {
        let ws = r.workspace();
        let marker = unique("CRED-");
        let owner = (r.uid, r.gid);
        let planted = [
            HostFile::create(r.home.join(".aws").join(unique("credentials-")), &marker, 0o600, owner, false),
            HostFile::create(r.home.join(".gnupg").join(unique("key-")), &marker, 0o600, owner, false),
            HostFile::create(r.home.join(".config").join(unique("gh-")).join("hosts.yml"), &marker, 0o600, owner, false),
            HostFile::create(r.home.join(unique(".netrc-")), &marker, 0o600, owner, false),
        ];
        let git_marker = unique("GITCFG-");
        let git_cfg = r.home.join(".config/git/config");
        // Never replace a real git configuration of the machine; plant one
        // only where there is none.
        let _git_cfg_guard = (!git_cfg.exists()).then(|| {
            HostFile::create_moat_input(&git_cfg, &format!("# {git_marker}\n"), 0o644, owner)
        });
        let git_cfg_text = std::fs::read_to_string(&git_cfg).unwrap();

        for f in &planted {
            r.host_sh(ws.path(), &format!("cat {}", f.path_str())).assert_ok().assert_stdout_has(&marker);
        }

        let new_file = unique("moat-new-");
        let _leak = RemoveOnDrop(vec![r.home.join(&new_file)]);
        let script = r#"
            echo "HOME=$HOME"
            echo "ENTRIES=$(ls -A "$HOME" | tr '\n' ' ')"
            echo "CONFIG=$(ls -A "$HOME/.config" 2>/dev/null | tr '\n' ' ')"
            for d in .aws .gnupg .cargo .rustup .pyenv .bashrc .profile; do
                test -e "$HOME/$d" && echo "PRESENT $d"
            done
            echo "FSTYPE=$(stat -f -c %T "$HOME")"
            cat "$HOME/.config/git/config" && echo GITCFG-READ
            # Opening for append, writing nothing: a real write test that
            # changes nothing should the mount be writable after all.
            if (: >> "$HOME/.config/git/config") 2>/dev/null; then echo GITCFG-WRITABLE; fi
            touch "$HOME/$NEW" && echo HOME-WRITABLE
            echo DONE
            "#;
        let out = r
            .exec(&ws)
            .args(["-e", &format!("NEW={new_file}")])
            .cmd(["sh", "-c", script])
            .run();
        out.assert_ok()
            .assert_stdout_has("DONE")
            .assert_field("HOME", home_str(r))
            .assert_field("FSTYPE", "tmpfs")
            .assert_no_leak(&marker);
        assert!(!out.stdout.contains("PRESENT "), "host dotfiles visible in $HOME{out}");
        let ws_name = ws.path().file_name().unwrap().to_str().unwrap().to_string();
        for e in out.field("ENTRIES").unwrap().split_whitespace() {
            assert!(
                [".gitconfig", ".config", ws_name.as_str()].contains(&e),
                "unexpected {e:?} in the sandbox's $HOME{out}"
            );
        }
        for e in out.field("CONFIG").unwrap().split_whitespace() {
            assert_eq!(e, "git", "only ~/.config/git may be in ~/.config{out}");
        }
        out.assert_stdout_has("GITCFG-READ")
            .assert_stdout_has(git_cfg_text.trim())
            .assert_stdout_has("HOME-WRITABLE");
        assert!(!out.stdout.contains("GITCFG-WRITABLE"), "~/.config/git must be read-only{out}");
        assert_eq!(std::fs::read_to_string(&git_cfg).unwrap(), git_cfg_text);
        assert!(!r.home.join(&new_file).exists(), "the tmpfs $HOME wrote through to the host");
    }
}

sandbox_test! {
    /// ~/.gitconfig, when the caller has one, is readable and read-only.
    fn gitconfig_bound_read_only(r: &Runner) {
        let ws = r.workspace();
        let path = r.home.join(".gitconfig");
        let _guard = (!path.exists()).then(|| {
            HostFile::create_moat_input(&path, &format!("[user]\n\tname = {}\n", unique("moat-test-")), 0o644, (r.uid, r.gid))
        });
        let before = std::fs::read_to_string(&path).unwrap();
        let out = r.sh(
            &ws,
            // Probes that change nothing even if they succeed: this may be
            // the machine's real ~/.gitconfig.
            r#"cat ~/.gitconfig && echo READ
               if (: >> ~/.gitconfig) 2>/dev/null; then echo WRITABLE; fi
               echo DONE"#,
        );
        out.assert_ok().assert_stdout_has("DONE").assert_stdout_has("READ");
        assert!(out.stdout.contains(before.trim()), "~/.gitconfig content differs{out}");
        assert!(!out.stdout.contains("WRITABLE"), "~/.gitconfig writable{out}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    }
}

sandbox_test! {
    /// /root is the caller's empty home for root, and absent (or at least
    /// empty) for anyone else; root's files never show.
    fn root_home_hidden(r: &Runner) {
        let ws = r.workspace();
        let marker = unique("ROOT-SECRET-");
        let secret = HostFile::create(
            // Straight in /root: ~/.ssh is ssh_key_hidden's, and two tests
            // creating and removing one directory at once would race.
            Path::new("/root").join(unique("moat-secret-")),
            &marker,
            0o600,
            (0, 0),
            false,
        );
        let s = secret.path_str();
        let out = r.sh(
            &ws,
            &format!(
                r#"
                cat {s} 2>/dev/null && echo READ
                test -e {s} && echo EXISTS
                echo "ROOT=$(ls -A /root 2>/dev/null | tr '\n' ' ')"
                test -d /root && echo ROOT-IS-DIR
                echo DONE
                "#
            ),
        );
        out.assert_ok().assert_stdout_has("DONE").assert_no_leak(&marker);
        assert!(!out.stdout.contains("READ") && !out.stdout.contains("EXISTS"), "{out}");
        let entries: Vec<&str> = out.field("ROOT").unwrap().split_whitespace().collect();
        if r.is_root() {
            let ws_name = ws.path().file_name().unwrap().to_str().unwrap();
            for e in &entries {
                assert!([".gitconfig", ".config", ws_name].contains(e), "host's /root shows {e:?}{out}");
            }
        } else {
            assert!(entries.is_empty(), "/root lists host entries for a non-root caller{out}");
        }
    }
}

sandbox_test! {
    /// Host sockets under /run (docker, dbus, ssh-agent, ...) are not there.
    fn run_sockets_hidden(r: &Runner) {
        let ws = r.workspace();
        let dir = Path::new("/run").join(unique("moat-test-"));
        std::fs::create_dir(&dir).unwrap();
        struct Cleanup(std::path::PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _cleanup = Cleanup(dir.clone());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sock = dir.join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
        let d = dir.to_str().unwrap();
        let s = sock.to_str().unwrap();
        r.host_sh(ws.path(), &format!("test -S {s}")).assert_ok();

        let out = r.sh(
            &ws,
            &format!(
                r#"
                test -e {d} && echo "VISIBLE {d}"
                test -S {s} && echo "VISIBLE {s}"
                echo "RUN=$(ls -A /run 2>/dev/null | tr '\n' ' ')"
                python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1]); print("CONNECTED")
except OSError as e:
    print("CONNECT-FAILED", e.errno)
' {s}
                echo DONE
                "#
            ),
        );
        out.assert_ok().assert_stdout_has("DONE").assert_stdout_has("CONNECT-FAILED");
        assert!(!out.stdout.contains("VISIBLE") && !out.stdout.contains("CONNECTED"), "{out}");
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(!out.field("RUN").unwrap().contains(name), "{out}");
        for host_entry in ["dbus", "systemd", "user", "lock", "postgresql", "sshd"] {
            assert!(
                !out.field("RUN").unwrap().split_whitespace().any(|e| e == host_entry),
                "host's /run/{host_entry} visible{out}"
            );
        }
        assert!(listener.accept().is_err(), "the host socket saw a connection from the sandbox");
    }
}

sandbox_test! {
    /// Other users' homes do not show under /home.
    fn other_homes_hidden(r: &Runner) {
        let ws = r.workspace();
        let marker = unique("OTHER-USER-");
        let other_dir = Path::new("/home").join(unique("moat-other-"));
        let other = HostFile::create(other_dir.join("notes.txt"), &marker, 0o644, (0, 0), true);
        // Control: world-readable, so only the sandbox can be what stops it.
        r.host_sh(ws.path(), &format!("cat {}", other.path_str())).assert_ok().assert_stdout_has(&marker);

        let out = r.sh(
            &ws,
            &format!(
                r#"
                echo "HOMES=$(ls -A /home 2>/dev/null | tr '\n' ' ')"
                cat {} 2>/dev/null && echo READ
                echo DONE
                "#,
                other.path_str()
            ),
        );
        out.assert_ok().assert_stdout_has("DONE").assert_no_leak(&marker);
        assert!(!out.stdout.contains("READ"), "{out}");
        let own = r.home.strip_prefix("/home").ok().and_then(|p| p.to_str()).map(str::to_string);
        for e in out.field("HOMES").unwrap().split_whitespace() {
            assert_eq!(Some(e), own.as_deref(), "/home shows {e:?}, which is not the caller's home{out}");
        }
    }
}

sandbox_test! {
    /// /etc is there (programs need it) but its secrets are masked.
    fn etc_secrets_masked(r: &Runner) {
        let ws = r.workspace();
        let out = r.sh(
            &ws,
            r#"
            grep -q '^root:' /etc/passwd && echo PASSWD-OK
            for f in /etc/shadow /etc/gshadow /etc/shadow- /etc/gshadow- /etc/sudoers; do
                if [ -s "$f" ] && cat "$f" >/dev/null 2>&1; then echo "READABLE $f"; fi
            done
            cat /etc/shadow /etc/gshadow 2>/dev/null
            echo "SSH=$(ls -A /etc/ssh 2>/dev/null | tr '\n' ' ')"
            echo DONE
            "#,
        );
        out.assert_ok().assert_stdout_has("DONE").assert_stdout_has("PASSWD-OK");
        assert!(!out.stdout.contains("READABLE"), "{out}");
        // Only shadow and gshadow are printed; their entries start with
        // the user or group name, and the host has a root entry in both.
        assert!(
            !out.stdout.lines().any(|l| l.starts_with("root:")),
            "a shadow entry is readable{out}"
        );
        assert_eq!(out.field("SSH"), Some(""), "/etc/ssh must be masked{out}");
    }
}

sandbox_test! {
    /// A mask can be neither written nor used to smuggle in a setuid
    /// binary or a device: each is a read-only, nosuid, nodev mount.
    fn masks_are_read_only_nosuid_nodev(r: &Runner) {
        let ws = r.workspace();
        let out = r.sh(
            &ws,
            r#"
            for m in /etc/shadow /etc/ssh; do
                awk -v m="$m" '$5 == m { print "OPTS " m " " $6 }' /proc/self/mountinfo
            done
            (echo x > /etc/shadow) 2>/dev/null && echo WROTE-FILE
            touch /etc/ssh/x 2>/dev/null && echo WROTE-DIR
            echo DONE
            "#,
        );
        out.assert_ok().assert_stdout_has("DONE");
        assert!(!out.stdout.contains("WROTE"), "{out}");
        for m in ["/etc/shadow", "/etc/ssh"] {
            let line = out
                .stdout
                .lines()
                .find(|l| l.starts_with(&format!("OPTS {m} ")))
                .unwrap_or_else(|| panic!("no mount on {m}{out}"));
            let opts: Vec<&str> = line.rsplit(' ').next().unwrap().split(',').collect();
            for want in ["ro", "nosuid", "nodev"] {
                assert!(opts.contains(&want), "{m} lacks {want}: {line}{out}");
            }
        }
    }
}

sandbox_test! {
    /// What is hidden stays hidden when the command (root in its user
    /// namespace, in root's case) unmounts the masks and the empty $HOME,
    /// directly or in a mount namespace of its own.
    fn hidden_stays_hidden_after_unmount(r: &Runner) {
        let ws = r.workspace();
        let marker = unique("SSH-SECRET-");
        let key = HostFile::create(
            r.home.join(".ssh").join(unique("id_moat_umount_")),
            &marker,
            0o600,
            (r.uid, r.gid),
            false,
        );
        let attack = format!(
            r#"
            for p in /etc/shadow /etc/gshadow /etc/ssh "$HOME" /tmp /run /home /root; do
                umount "$p"; umount -l "$p"; mount -o remount,rw "$p"
            done
            cat /etc/shadow /etc/gshadow
            ls -A /etc/ssh | sed 's/^/SSH-ENTRY /'
            cat {key}
            "#,
            key = key.path_str()
        );
        ws.write("attack.sh", &attack);
        let out = r.sh(
            &ws,
            r#"
            sh ./attack.sh 2>/dev/null
            unshare -m sh ./attack.sh 2>/dev/null && echo VIA-UNSHARE-M
            unshare -Urm sh ./attack.sh 2>/dev/null && echo VIA-UNSHARE-URM
            echo DONE
            "#,
        );
        out.assert_ok().assert_stdout_has("DONE").assert_no_leak(&marker);
        assert!(
            !out.stdout.lines().any(|l| l.starts_with("root:")),
            "a shadow entry became readable{out}"
        );
        assert!(!out.stdout.contains("SSH-ENTRY"), "/etc/ssh became visible{out}");
    }
}

sandbox_test! {
    /// The system and the sandbox's root are read-only; nothing written
    /// there reaches the host.
    fn system_read_only(r: &Runner) {
        let ws = r.workspace();
        let name = unique("moat-probe-");
        let targets = ["/", "/usr", "/usr/bin", "/etc", "/bin", "/lib", "/var"];
        let _leak = RemoveOnDrop(targets.iter().map(|d| Path::new(d).join(&name)).collect());
        let script: String = targets
            .iter()
            .map(|d| {
                format!(
                    "if (echo x > {d}/{name}) 2>/tmp/err; then echo 'WROTE {d}'; else echo \"DENIED {d} $(cat /tmp/err)\"; fi\n"
                )
            })
            .collect::<String>()
            + "if (: >> /etc/passwd) 2>/dev/null; then echo PASSWD-WRITABLE; fi\necho DONE\n";
        let out = r.sh(&ws, &script);
        out.assert_ok().assert_stdout_has("DONE");
        assert!(!out.stdout.contains("WROTE") && !out.stdout.contains("PASSWD-WRITABLE"), "{out}");
        for d in targets {
            assert!(
                out.stdout.lines().any(|l| l.starts_with(&format!("DENIED {d} ")) && l.contains("Read-only file system")),
                "writing to {d} must fail with EROFS{out}"
            );
            assert!(!Path::new(d).join(&name).exists(), "{d}/{name} appeared on the host");
        }
        assert!(Path::new("/etc/passwd").exists());
    }
}

sandbox_test! {
    /// /tmp and /var/tmp are private and empty; /dev/shm too.
    fn tmp_is_private(r: &Runner) {
        let ws = r.workspace();
        let host_marker = HostFile::create(Path::new("/tmp").join(unique("moat-host-")), "host", 0o644, (0, 0), false);
        let name = unique("moat-inside-");
        let _leak = RemoveOnDrop(["/tmp", "/var/tmp", "/dev/shm"].iter().map(|d| Path::new(d).join(&name)).collect());
        let out = r.sh(
            &ws,
            &format!(
                r#"
                echo "TMP=$(ls -A /tmp | tr '\n' ' ')"
                echo "VARTMP=$(ls -A /var/tmp | tr '\n' ' ')"
                test -e {} && echo HOST-TMP-VISIBLE
                echo x > /tmp/{name} && echo x > /var/tmp/{name} && echo x > /dev/shm/{name} && echo WROTE
                echo "TMPFS=$(stat -f -c %T /tmp)"
                echo DONE
                "#,
                host_marker.path_str()
            ),
        );
        out.assert_ok().assert_stdout_has("DONE").assert_stdout_has("WROTE")
            .assert_field("TMP", "")
            .assert_field("VARTMP", "")
            .assert_field("TMPFS", "tmpfs");
        assert!(!out.stdout.contains("HOST-TMP-VISIBLE"), "{out}");
        for d in ["/tmp", "/var/tmp", "/dev/shm"] {
            assert!(!Path::new(d).join(&name).exists(), "{d}/{name} written through to the host");
        }
    }
}

sandbox_test! {
    /// /dev holds the few safe devices and nothing of the host's (disks,
    /// kmsg, kvm, ttys).
    fn dev_is_minimal(r: &Runner) {
        let ws = r.workspace();
        let out = r.sh(
            &ws,
            r#"
            echo "DEV=$(ls -A /dev | tr '\n' ' ')"
            head -c 16 /dev/zero | od -An -tx1 | tr -d ' \n'; echo
            head -c 8 /dev/urandom | wc -c
            echo hi > /dev/null && echo NULL-OK
            if (echo x > /dev/full) 2>/dev/null; then echo FULL-ACCEPTED; fi
            echo DONE
            "#,
        );
        out.assert_ok().assert_stdout_has("DONE").assert_stdout_has("NULL-OK")
            .assert_stdout_has("00000000000000000000000000000000");
        assert!(!out.stdout.contains("FULL-ACCEPTED"), "{out}");
        let entries: Vec<&str> = out.field("DEV").unwrap().split_whitespace().collect();
        let required = ["null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx"];
        let tolerated = ["fd", "stdin", "stdout", "stderr", "core"];
        for want in required {
            assert!(entries.contains(&want), "/dev/{want} missing{out}");
        }
        for e in &entries {
            assert!(
                required.contains(e) || tolerated.contains(e),
                "host device /dev/{e} visible in the sandbox{out}"
            );
        }
    }
}

sandbox_test! {
    /// A workspace under /tmp is still bound, on top of the private /tmp.
    fn workspace_under_tmp(r: &Runner) {
        let ws = r.tmp_workspace();
        ws.write("input.txt", "from-host\n");
        let out = r.sh(
            &ws,
            r#"cat input.txt; echo inside > output.txt; echo "PWD=$(pwd)"; echo "TMP=$(ls -A /tmp | tr '\n' ' ')"; echo DONE"#,
        );
        out.assert_ok().assert_stdout_has("DONE").assert_stdout_has("from-host")
            .assert_field("PWD", ws.path_str());
        assert_eq!(ws.read("output.txt"), "inside\n");
        let name = ws.path().file_name().unwrap().to_str().unwrap();
        for e in out.field("TMP").unwrap().split_whitespace() {
            assert_eq!(e, name, "host /tmp leaks into the sandbox{out}");
        }
    }
}
