//! Secrets: values a profile's `[secrets]` table resolves on the host and
//! sets in the sandbox, and the Secret Service access they (and the
//! credential store) share. The keyring tests run a private D-Bus session
//! bus and a real gnome-keyring as the calling user, and kill both after.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private session bus with an unlocked gnome-keyring on it, both
/// running as the runner. The bus has no service directories, so nothing
/// is ever auto-started behind the test's back; drop kills both daemons.
pub struct Keyring {
    dir: Dir,
    pub address: String,
    bus_pid: Option<i32>,
    keyring: Option<Child>,
}

const BUS_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=@BUS@</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#;

impl Keyring {
    /// Only the bus: a session with no Secret Service provider.
    pub fn bus_only(r: &Runner) -> Keyring {
        let dir = r.dir_in(Path::new("/tmp"), "moat-kr-");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let bus = dir.join("bus");
        let conf = dir.write(
            "bus.conf",
            BUS_CONFIG.replace("@BUS@", bus.to_str().unwrap()),
        );
        dir.mkdir("home");
        dir.mkdir("run");
        fs::set_permissions(dir.join("run"), fs::Permissions::from_mode(0o700)).unwrap();
        let mut c = r.command("dbus-daemon");
        c.arg(format!("--config-file={}", conf.display()))
            .arg("--fork")
            .arg("--print-pid=1")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        let out = c
            .output()
            .expect("dbus-daemon is missing: run scripts/test as root, it installs dbus-daemon");
        assert!(out.status.success(), "dbus-daemon failed: {out:?}");
        let pid: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("dbus-daemon printed its pid");
        Keyring {
            address: format!("unix:path={}", bus.display()),
            dir,
            bus_pid: Some(pid),
            keyring: None,
        }
    }

    /// The bus and an unlocked gnome-keyring serving secrets on it.
    pub fn start(r: &Runner) -> Keyring {
        let mut k = Keyring::bus_only(r);
        let mut c = k.command(r, "gnome-keyring-daemon");
        c.args(["--foreground", "--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect(
            "gnome-keyring-daemon is missing: run scripts/test as root, it installs gnome-keyring",
        );
        {
            use std::io::Write;
            // The login keyring's password; EOF ends it.
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"moat-test-keyring-password").unwrap();
        }
        k.keyring = Some(child);
        // Ready once the service answers a search.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = k
                .command(r, "secret-tool")
                .args(["search", "moat-probe", "none"])
                .stdin(Stdio::null())
                .output()
                .expect(
                    "secret-tool is missing: run scripts/test as root, it installs libsecret-tools",
                );
            if out.status.success() || out.status.code() == Some(1) && out.stderr.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gnome-keyring did not come up on the private bus: {out:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        k
    }

    /// `program` as the runner, on this bus, with the keyring's own home.
    pub fn command(&self, r: &Runner, program: &str) -> Command {
        let mut c = r.command(program);
        c.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("HOME", self.dir.join("home"))
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .current_dir(self.dir.path());
        c
    }

    /// Stores `secret` with `secret-tool` under the given attributes.
    pub fn store(&self, r: &Runner, label: &str, attrs: &[(&str, &str)], secret: &str) {
        let mut c = self.command(r, "secret-tool");
        c.arg("store").arg(format!("--label={label}"));
        for (k, v) in attrs {
            c.arg(k).arg(v);
        }
        c.stdin(Stdio::piped());
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(secret.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "secret-tool store failed: {out:?}");
    }

    /// Locks the login collection, as a screen lock would.
    pub fn lock(&self, r: &Runner) {
        let out = self
            .command(r, "dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.secrets",
                "/org/freedesktop/secrets",
                "org.freedesktop.Secret.Service.Lock",
                "array:objpath:/org/freedesktop/secrets/collection/login",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "locking the keyring failed: {out:?}");
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        if let Some(mut child) = self.keyring.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = self.bus_pid.take() {
            // SAFETY: kill has no memory-safety preconditions; the pid is the
            // dbus-daemon this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// The keyring module against a real gnome-keyring: it runs in a child
/// process of this test binary, because the library reads the bus address
/// from the process environment and the other tests run on threads of this
/// one.
#[test]
fn keyring_library_round_trip() {
    if std::env::var_os("MOAT_TEST_KEYRING_CHILD").is_some() {
        return keyring_library_child();
    }
    let r = Runner::root();
    let k = Keyring::start(&r);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["keyring_library_round_trip", "--exact", "--nocapture"])
        .env("MOAT_TEST_KEYRING_CHILD", "1")
        .env("DBUS_SESSION_BUS_ADDRESS", &k.address)
        .env("HOME", k.path().join("home"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "keyring child failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("child checks done"), "{stdout}");
    // Locked, and nobody to answer a prompt: Locked, not a hang.
    k.store(
        &r,
        "moat: locked",
        &[("moat-test", "library"), ("kind", "round-trip")],
        "locked value",
    );
    k.lock(&r);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["keyring_library_round_trip", "--exact", "--nocapture"])
        .env("MOAT_TEST_KEYRING_CHILD", "locked")
        .env("DBUS_SESSION_BUS_ADDRESS", &k.address)
        .env("HOME", k.path().join("home"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("locked checks done"),
        "locked keyring child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn threads() -> usize {
    fs::read_dir("/proc/self/task").unwrap().count()
}

fn keyring_library_child() {
    use moat::keyring::{self, KeyringError};
    let attrs = [("moat-test", "library"), ("kind", "round-trip")];
    if std::env::var("MOAT_TEST_KEYRING_CHILD").unwrap() == "locked" {
        let err = keyring::lookup(&attrs).unwrap_err();
        assert!(matches!(err, KeyringError::Locked(_)), "{err:?}");
        assert!(err.to_string().contains("locked"), "{err}");
        let err = keyring::store("moat: x", &attrs, b"y").unwrap_err();
        assert!(matches!(err, KeyringError::Locked(_)), "{err:?}");
        println!("locked checks done");
        return;
    }
    let before = threads();
    keyring::available().unwrap();
    assert_eq!(keyring::lookup(&attrs).unwrap(), None);
    keyring::store("moat: library test", &attrs, b"first value").unwrap();
    let got = keyring::lookup(&attrs)
        .unwrap()
        .expect("stored item is found");
    assert_eq!(&got[..], b"first value");
    // Same attributes: replaced, not added.
    keyring::store("moat: library test", &attrs, b"second value").unwrap();
    let got = keyring::lookup(&attrs)
        .unwrap()
        .expect("replaced item is found");
    assert_eq!(&got[..], b"second value");
    // A subset of the attributes finds it too; another value does not.
    assert!(keyring::lookup(&[("moat-test", "library")])
        .unwrap()
        .is_some());
    assert!(keyring::lookup(&[("moat-test", "other")])
        .unwrap()
        .is_none());
    assert!(keyring::delete(&attrs).unwrap());
    assert_eq!(keyring::lookup(&attrs).unwrap(), None, "one item only");
    assert!(!keyring::delete(&attrs).unwrap());
    // Every call joined its thread: the supervisor clones after this.
    assert_eq!(threads(), before, "keyring calls left threads behind");
    println!("child checks done");
}

/// A profile in `ws` that extends the default one without a network (the
/// proxy is not what these tests are about) and adds `extra`.
fn profile(ws: &Dir, extra: &str) -> PathBuf {
    write_profile(
        ws,
        "secrets.toml",
        &format!("extends = \"default\"\n[network]\nmode = \"none\"\n{extra}"),
    )
}

/// The run record path moat prints with --verbose.
fn record_path(out: &Output) -> PathBuf {
    out.stderr
        .lines()
        .find_map(|l| l.strip_prefix("moat: run record "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no run record path on stderr{out}"))
}

/// Runs `sh -c SCRIPT` with `--verbose` under the profile at `p`.
fn run_with(r: &Runner, ws: &Dir, p: &Path, script: &str) -> Output {
    r.exec(ws)
        .arg("--profile")
        .arg(p)
        .cmd(["sh", "-c", script])
        .run()
}

#[track_caller]
fn assert_absent(haystack: &str, value: &str, what: &str) {
    assert!(
        !haystack.contains(value),
        "secret value {value:?} appears in {what}:\n{haystack}"
    );
}

sandbox_test! {
    /// env: and file: sources reach the command as variables, and the
    /// values appear nowhere moat writes: not in its --verbose stderr, the
    /// run record, `moat runs` or `moat profile show`.
    fn env_and_file_secrets_reach_the_command_and_nothing_else(r: &Runner) {
        let ws = r.workspace();
        let from_env = unique("env-value-");
        let from_file = unique("file-value-");
        let in_home = HostFile::create(
            r.home.join(unique(".moat-secret-")),
            &format!("{from_file}\n"),
            0o600,
            (r.uid, r.gid),
            false,
        );
        let name = in_home.path.file_name().unwrap().to_str().unwrap().to_string();
        let p = profile(
            &ws,
            &format!(
                "[secrets]\nFROM_ENV = \"env:MOAT_TEST_SECRET_SRC\"\nFROM_FILE = \"file:~/{name}\"\n"
            ),
        );
        let data = r.dir_in(Path::new("/tmp"), "moat-secrets-data-");
        let out = r
            .moat()
            .env("XDG_DATA_HOME", data.path())
            .arg("--verbose")
            .arg("exec")
            .arg("--workspace")
            .arg(ws.path())
            .arg("--profile")
            .arg(&p)
            .env("MOAT_TEST_SECRET_SRC", &from_env)
            .cwd(ws.path())
            .cmd([
                "sh",
                "-c",
                "printf '%s|%s|%s' \"$FROM_ENV\" \"$FROM_FILE\" \"${MOAT_TEST_SECRET_SRC-unset}\"",
            ])
            .run();
        out.assert_ok();
        // The file's trailing newline is gone; the source variable itself
        // did not come in with its value.
        assert_eq!(out.stdout, format!("{from_env}|{from_file}|unset"), "{out}");
        for v in [&from_env, &from_file] {
            assert_absent(&out.stderr, v, "moat's --verbose stderr");
        }
        out.assert_stderr_has("secret FROM_ENV from env:MOAT_TEST_SECRET_SRC");

        let record_file = record_path(&out);
        let record = fs::read_to_string(&record_file).unwrap();
        for v in [&from_env, &from_file] {
            assert_absent(&record, v, "the run record");
        }
        let json: serde_json::Value = serde_json::from_str(&record).unwrap();
        assert_eq!(json["secrets"], serde_json::json!(["FROM_ENV", "FROM_FILE"]), "{record}");

        // The audit log names the secrets and holds no value.
        let audit = fs::read_to_string(data.join("moat/audit/audit.jsonl")).unwrap();
        for v in [&from_env, &from_file] {
            assert_absent(&audit, v, "the audit log");
        }
        let named: Vec<String> = audit
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["kind"] == "secret")
            .map(|e| e["data"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(named, ["FROM_ENV", "FROM_FILE"], "{audit}");

        let runs = r.moat().arg("runs").cwd(ws.path()).run();
        runs.assert_ok();
        assert!(runs.stdout.lines().next().unwrap().contains("SECRETS"), "{runs}");
        let id = record_file.file_stem().unwrap().to_str().unwrap();
        let line = runs.stdout.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{runs}"));
        assert!(line.contains("FROM_ENV,FROM_FILE"), "{runs}");
        for v in [&from_env, &from_file] {
            assert_absent(&runs.stdout, v, "`moat runs`");
        }

        let show = r.moat().args(["profile", "show"]).arg(&p).cwd(ws.path()).run();
        show.assert_ok();
        show.assert_stdout_has("FROM_ENV = \"env:MOAT_TEST_SECRET_SRC\"");
        show.assert_stdout_has(&format!("FROM_FILE = \"file:~/{name}\""));
        for v in [&from_env, &from_file] {
            assert_absent(&show.stdout, v, "`moat profile show`");
        }
    }
}

sandbox_test! {
    /// A `-` source that is absent leaves the variable unset (even one the
    /// host would pass through) with a one-line notice; the run goes on.
    fn optional_absent_secret_is_unset_with_a_notice(r: &Runner) {
        let ws = r.workspace();
        let p = profile(
            &ws,
            "[secrets]\nOPT_ENV = \"-env:MOAT_TEST_NEVER_SET\"\nOPT_FILE = \"-file:/nonexistent/moat-secret\"\n\
             TZ = \"-env:MOAT_TEST_NEVER_SET_TZ\"\n",
        );
        let out = r
            .exec(&ws)
            .arg("--profile")
            .arg(&p)
            .env("TZ", "UTC")
            .cmd(["sh", "-c", "echo \"env=${OPT_ENV-unset} file=${OPT_FILE-unset} tz=${TZ-unset}\""])
            .run();
        out.assert_ok();
        out.assert_stdout_has("env=unset file=unset tz=unset");
        for name in ["OPT_ENV", "OPT_FILE", "TZ"] {
            let notice = out
                .stderr
                .lines()
                .filter(|l| l.contains(&format!("optional secret `{name}` not set")))
                .count();
            assert_eq!(notice, 1, "one notice for {name}{out}");
        }
    }
}

sandbox_test! {
    /// A required source that is absent stops the start: 125, naming the
    /// secret and its source, printing no value (not even of the secrets
    /// that did resolve), and the command never runs.
    fn required_absent_secret_refuses_to_start(r: &Runner) {
        let ws = r.workspace();
        let present = unique("present-value-");
        for (spec, why) in [
            ("env:MOAT_TEST_NEVER_SET", "`MOAT_TEST_NEVER_SET` is not set"),
            ("file:/nonexistent/moat-secret", "/nonexistent/moat-secret does not exist"),
        ] {
            let p = profile(
                &ws,
                &format!("[secrets]\nA_PRESENT = \"env:MOAT_TEST_PRESENT\"\nB_MISSING = \"{spec}\"\n"),
            );
            let out = r
                .moat()
                .arg("--verbose")
                .arg("exec")
                .arg("--workspace")
                .arg(ws.path())
                .arg("--profile")
                .arg(&p)
                .env("MOAT_TEST_PRESENT", &present)
                .cwd(ws.path())
                .cmd(["sh", "-c", "echo RAN"])
                .run();
            out.assert_moat_error();
            out.assert_stderr_has(&format!("secret `B_MISSING` ({spec})"));
            out.assert_stderr_has(why);
            assert!(!out.stdout.contains("RAN"), "the command ran{out}");
            out.assert_no_leak(&present);
        }
    }
}

sandbox_test! {
    /// One name from two places is refused: [env] and [secrets] (also
    /// across `extends`), `-e` and [secrets]; and a secret may not take a
    /// variable moat sets itself.
    fn secret_name_clashes_and_moat_owned_names_are_refused(r: &Runner) {
        let ws = r.workspace();
        let base = write_profile(
            &ws,
            "base.toml",
            "extends = \"default\"\n[network]\nmode = \"none\"\n[secrets]\nDB_URL = \"env:MOAT_TEST_DB\"\n",
        );
        let child = write_profile(&ws, "child.toml", "extends = \"./base.toml\"\n[env]\nDB_URL = \"plain\"\n");
        let same = profile(&ws, "[env]\nDB_URL = \"plain\"\n[secrets]\nDB_URL = \"env:MOAT_TEST_DB\"\n");
        for p in [&child, &same] {
            let out = run_with(r, &ws, p, "echo RAN");
            out.assert_moat_error();
            out.assert_stderr_has("`DB_URL` is a secret");
            out.assert_stderr_has("[env]");
            assert!(!out.stdout.contains("RAN"), "{out}");
        }
        let out = r
            .exec(&ws)
            .arg("--profile")
            .arg(&base)
            .arg("-e")
            .arg("DB_URL=other")
            .env("MOAT_TEST_DB", "x")
            .cmd(["sh", "-c", "echo RAN"])
            .run();
        out.assert_moat_error();
        out.assert_stderr_has("-e DB_URL");

        for name in ["HOME", "PATH", "HTTPS_PROXY", "SSL_CERT_FILE", "no_proxy"] {
            let p = profile(&ws, &format!("[secrets]\n{name} = \"env:MOAT_TEST_DB\"\n"));
            let out = run_with(r, &ws, &p, "echo RAN");
            out.assert_moat_error();
            out.assert_stderr_has(&format!("`{name}` is a variable moat sets itself"));
            let check = r.moat().args(["profile", "check"]).arg(&p).cwd(ws.path()).run();
            assert_ne!(check.code(), Some(0), "{check}");
            check.assert_stderr_has("secrets.toml:5:1");
        }
    }
}

sandbox_test! {
    /// keyring:NAME and keyring:attr=value find items stored with
    /// secret-tool in a real gnome-keyring on the caller's session bus.
    fn keyring_secret_resolves_from_gnome_keyring(r: &Runner) {
        let k = Keyring::start(r);
        let ws = r.workspace();
        let by_name = unique("keyring-named-");
        let by_attrs = unique("keyring-attrs-");
        k.store(r, "moat: KR_NAMED", &[("moat-secret", "kr-named")], &by_name);
        k.store(r, "moat test", &[("service", "moat-test"), ("user", "agent")], &by_attrs);
        let p = profile(
            &ws,
            "[secrets]\nKR_NAMED = \"keyring:kr-named\"\nKR_ATTRS = \"keyring:service=moat-test,user=agent\"\n\
             KR_OPT = \"-keyring:not-stored\"\n",
        );
        let out = r
            .moat()
            .arg("--verbose")
            .arg("exec")
            .arg("--workspace")
            .arg(ws.path())
            .arg("--profile")
            .arg(&p)
            .env("DBUS_SESSION_BUS_ADDRESS", &k.address)
            .cwd(ws.path())
            .cmd(["sh", "-c", "printf '%s|%s|%s' \"$KR_NAMED\" \"$KR_ATTRS\" \"${KR_OPT-unset}\""])
            .run();
        out.assert_ok();
        assert_eq!(out.stdout, format!("{by_name}|{by_attrs}|unset"), "{out}");
        out.assert_stderr_has("optional secret `KR_OPT` not set");
        for v in [&by_name, &by_attrs] {
            assert_absent(&out.stderr, v, "moat's --verbose stderr");
            assert_absent(&fs::read_to_string(record_path(&out)).unwrap(), v, "the run record");
        }

        // The D-Bus calls ran on a thread that was joined before the
        // sandbox was cloned: while the command runs, the supervisor (no
        // network, so no proxy threads) has its main thread and only the
        // thread it starts after the clone, the audit log's. A thread left
        // over from before would be another copy of the main one's name
        // (unnamed), `moat-keyring`, or tokio's.
        let mut running = r
            .exec(&ws)
            .arg("--profile")
            .arg(&p)
            .env("DBUS_SESSION_BUS_ADDRESS", &k.address)
            .cmd(["sh", "-c", "echo READY; sleep 5"])
            .spawn();
        running.wait_for_stdout("READY", TIMEOUT);
        let pid = running.pid();
        let others: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .map(|t| t.unwrap().file_name().into_string().unwrap())
            .filter(|tid| *tid != pid.to_string())
            .map(|tid| fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap())
            .map(|comm| comm.trim().to_string())
            .collect();
        assert!(
            others.iter().all(|c| c == "moat-audit"),
            "moat kept threads from before the clone: {others:?}"
        );
        // Nor is the value in moat's own arguments or environment.
        for what in ["cmdline", "environ"] {
            let bytes = fs::read(format!("/proc/{}/{what}", running.pid())).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.is_empty(), "/proc/PID/{what} of moat is readable");
            for v in [&by_name, &by_attrs] {
                assert_absent(&text, v, &format!("moat's /proc/PID/{what}"));
            }
        }
        drop(running);

        // Locked, with nobody to answer a prompt: a clear refusal.
        k.lock(r);
        let out = r
            .exec(&ws)
            .arg("--profile")
            .arg(&p)
            .env("DBUS_SESSION_BUS_ADDRESS", &k.address)
            .cmd(["sh", "-c", "echo RAN"])
            .run();
        out.assert_moat_error();
        out.assert_stderr_has("secret `KR_ATTRS`");
        out.assert_stderr_has("keyring is locked");
        out.assert_no_leak(&by_name);
        out.assert_no_leak(&by_attrs);
        drop(k);
    }
}

sandbox_test! {
    /// No session bus, or a bus with no Secret Service on it: a required
    /// keyring secret says there is no keyring; an optional one is unset.
    fn keyring_secret_without_a_keyring(r: &Runner) {
        let ws = r.workspace();
        let required = profile(&ws, "[secrets]\nKR = \"keyring:moat-test-none\"\n");
        let optional = write_profile(
            &ws,
            "optional.toml",
            "extends = \"default\"\n[network]\nmode = \"none\"\n[secrets]\nKR = \"-keyring:moat-test-none\"\n",
        );
        let bus = Keyring::bus_only(r);
        let no_bus = format!("unix:path={}/no-such-bus", bus.path().display());
        for address in [no_bus.as_str(), bus.address.as_str()] {
            let out = r
                .exec(&ws)
                .arg("--profile")
                .arg(&required)
                .env("DBUS_SESSION_BUS_ADDRESS", address)
                .cmd(["sh", "-c", "echo RAN"])
                .run();
            out.assert_moat_error();
            out.assert_stderr_has("secret `KR` (keyring:moat-test-none)");
            out.assert_stderr_has("no keyring");
            let out = r
                .exec(&ws)
                .arg("--profile")
                .arg(&optional)
                .env("DBUS_SESSION_BUS_ADDRESS", address)
                .cmd(["sh", "-c", "echo \"KR=${KR-unset}\""])
                .run();
            out.assert_ok();
            out.assert_stdout_has("KR=unset");
            out.assert_stderr_has("optional secret `KR` not set: no keyring");
        }
        // And with no bus address at all (the runner's clean environment).
        let out = run_with(r, &ws, &required, "echo RAN");
        out.assert_moat_error();
        out.assert_stderr_has("no keyring");
    }
}

/// A stand-in for the 1Password CLI: answers one reference, fails others
/// the way `op` does, and logs its arguments.
const FAKE_OP: &str = r#"#!/bin/sh
printf '%s\n' "$*" >> "$(dirname "$0")/calls"
if [ "$#" -eq 3 ] && [ "$1" = read ] && [ "$2" = --no-newline ] && [ "$3" = "op://Private/Postgres/password" ]; then
    printf '%s' "$MOAT_TEST_OP_VALUE"
    exit 0
fi
echo "[ERROR] 2026/12/07 00:00:00 could not read secret '$3': isn't an item in the vault" >&2
exit 1
"#;

sandbox_test! {
    /// op:// references run `op read --no-newline REF` on the host; its
    /// failure is summarised without a value; a missing `op` is named.
    fn op_reference_reads_through_the_1password_cli(r: &Runner) {
        let ws = r.workspace();
        let bin = r.dir_in(Path::new("/tmp"), "moat-op-");
        let op = bin.write("op", FAKE_OP);
        fs::set_permissions(&op, fs::Permissions::from_mode(0o755)).unwrap();
        let value = unique("op-value-");
        let good = profile(&ws, "[secrets]\nPGPASSWORD = \"op://Private/Postgres/password\"\n");
        let path = format!("{}:{CLEAN_PATH}", bin.path_str());
        let out = r
            .moat()
            .arg("--verbose")
            .arg("exec")
            .arg("--workspace")
            .arg(ws.path())
            .arg("--profile")
            .arg(&good)
            .env("PATH", &path)
            .env("MOAT_TEST_OP_VALUE", &value)
            .cwd(ws.path())
            .cmd(["sh", "-c", "printf '%s' \"$PGPASSWORD\""])
            .run();
        out.assert_ok();
        assert_eq!(out.stdout, value, "{out}");
        assert_absent(&out.stderr, &value, "moat's --verbose stderr");
        assert_absent(&fs::read_to_string(record_path(&out)).unwrap(), &value, "the run record");
        assert_eq!(
            bin.read("calls"),
            "read --no-newline op://Private/Postgres/password\n",
            "moat must call `op read --no-newline REF` once"
        );

        let bad = write_profile(
            &ws,
            "bad.toml",
            "extends = \"default\"\n[network]\nmode = \"none\"\n[secrets]\nPGPASSWORD = \"op://Private/Nope/password\"\n",
        );
        let out = r
            .exec(&ws)
            .arg("--profile")
            .arg(&bad)
            .env("PATH", &path)
            .env("MOAT_TEST_OP_VALUE", &value)
            .cmd(["sh", "-c", "echo RAN"])
            .run();
        out.assert_moat_error();
        out.assert_stderr_has("secret `PGPASSWORD` (op://Private/Nope/password): `op read` failed");
        out.assert_stderr_has("isn't an item in the vault");
        out.assert_no_leak(&value);

        // No `op` on PATH.
        let out = run_with(r, &ws, &good, "echo RAN");
        out.assert_moat_error();
        out.assert_stderr_has("the 1Password CLI `op` is not on PATH");
        assert!(!out.stdout.contains("RAN"), "{out}");
    }
}
