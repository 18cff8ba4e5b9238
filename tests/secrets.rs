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
    uid: u32,
    gid: u32,
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
            uid: r.uid,
            gid: r.gid,
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

    pub fn owner(&self) -> (u32, u32) {
        (self.uid, self.gid)
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
