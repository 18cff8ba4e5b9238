//! Hardening layers behind the namespaces: capabilities, no_new_privs and
//! Landlock. Each layer is shown to hold on its own: Landlock by profiles
//! that mount a path but give it no Landlock rule (`[landlock] skip`), with
//! the same profile minus `skip` as the control that the mount really shows
//! it; the refusal of `mode = "required"` by running moat under a seccomp
//! filter that makes the Landlock syscalls fail as on a kernel without
//! Landlock.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};

/// The Landlock ABI of this kernel, asked the same way moat asks.
fn kernel_abi() -> i64 {
    // SAFETY: null attribute, size 0 and LANDLOCK_CREATE_RULESET_VERSION
    // only query a number.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    }
}

/// The tests below need a kernel that enforces everything moat asks of
/// Landlock (scoping is ABI 6); say so instead of passing vacuously.
fn require_landlock() -> i64 {
    let abi = kernel_abi();
    assert!(
        abi >= 6,
        "this kernel offers Landlock ABI {abi} (0 or less = none); the hardening tests need \
         ABI 6 or newer (Linux 6.12) to check what moat enforces"
    );
    abi
}

/// `KEY:\tVALUE` fields of a /proc/PID/status dump, after `marker` (a line
/// the script printed before the dump) and before the next `END` line.
fn status_field<'a>(out: &'a Output, marker: &str, key: &str) -> &'a str {
    let mut lines = out.stdout.lines().skip_while(|l| *l != marker);
    assert!(lines.next().is_some(), "no {marker} in the output{out}");
    lines
        .take_while(|l| *l != "END")
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{key} missing after {marker}{out}"))
}

const ZERO_CAPS: &str = "0000000000000000";
const CAP_SETS: [&str; 5] = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"];

/// A profile file extending the default one, in a directory of its own
/// (the profile is not read from inside the sandbox).
fn profile(r: &Runner, body: &str) -> (Dir, PathBuf) {
    let dir = r.dir_in(Path::new("/tmp"), "moat-profile-");
    let path = write_profile(&dir, "p.toml", &format!("extends = \"default\"\n{body}"));
    (dir, path)
}

fn run_with_profile(r: &Runner, ws: &Dir, profile: &Path, script: &str) -> Output {
    r.exec(ws)
        .arg("--profile")
        .arg(profile)
        .cmd(["sh", "-c", script])
        .run()
}

sandbox_test! {
    /// The command and init hold no capability in any of the five sets,
    /// and no_new_privs is set for both.
    fn no_capabilities_and_no_new_privs(r: &Runner) {
        let ws = r.workspace();
        // Control: the caller itself has a full bounding set, so an empty
        // one inside is moat's doing.
        let host = r.host_sh(ws.path(), "echo SELF; cat /proc/self/status; echo END");
        host.assert_ok();
        assert_ne!(status_field(&host, "SELF", "CapBnd"), ZERO_CAPS, "{host}");

        let out = r.sh(
            &ws,
            "echo SELF; cat /proc/self/status; echo END; echo INIT; cat /proc/1/status; echo END",
        );
        out.assert_ok();
        for who in ["SELF", "INIT"] {
            for set in CAP_SETS {
                assert_eq!(status_field(&out, who, set), ZERO_CAPS, "{who} {set}{out}");
            }
            assert_eq!(status_field(&out, who, "NoNewPrivs"), "1", "{who}{out}");
        }
    }
}

sandbox_test! {
    /// A setuid-root copy of a binary gains nothing: same uids, no
    /// capabilities. On the host the same file does run as root.
    fn setuid_root_binary_gains_nothing(r: &Runner) {
        let ws = r.workspace();
        let bin = ws.join("suid-cat");
        fs::copy("/usr/bin/cat", &bin).unwrap();
        chown(&bin, Some(0), Some(0)).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o4755)).unwrap();
        assert_eq!(
            fs::metadata(&bin).unwrap().permissions().mode() & 0o7777,
            0o4755,
            "the setuid bit did not stick"
        );

        // Control: outside, the file works as a setuid-root binary (euid 0
        // for the unprivileged caller, full capabilities for root).
        let host = r.host_sh(ws.path(), "echo SELF; ./suid-cat /proc/self/status; echo END");
        host.assert_ok();
        let uids: Vec<&str> = status_field(&host, "SELF", "Uid").split_whitespace().collect();
        assert_eq!(uids[1], "0", "the host does not honour the setuid bit{host}");
        assert_ne!(status_field(&host, "SELF", "CapEff"), ZERO_CAPS, "{host}");

        let out = r.sh(
            &ws,
            "echo SELF; ./suid-cat /proc/self/status; echo END; echo EUID=$(id -u)",
        );
        out.assert_ok();
        let want = r.uid.to_string();
        let uids: Vec<&str> = status_field(&out, "SELF", "Uid").split_whitespace().collect();
        assert_eq!(uids, vec![want.as_str(); 4], "real, effective, saved, fs uid{out}");
        out.assert_field("EUID", &want);
        for set in CAP_SETS {
            assert_eq!(status_field(&out, "SELF", set), ZERO_CAPS, "{set}{out}");
        }
    }
}

sandbox_test! {
    /// Landlock stands on its own: a directory the profile mounts but lists
    /// in `[landlock] skip` is visible yet unreadable (and unwritable),
    /// while the same profile without `skip` reads and writes it.
    fn landlock_alone_denies_a_mounted_path(r: &Runner) {
        require_landlock();
        let ws = r.workspace();
        ws.write("allowed.txt", "ALLOWED-CONTENT\n");
        // Not under any path the default profile grants (/tmp, the home,
        // /usr, /etc...), so only its own rule could allow it.
        let ro = r.dir_in(Path::new("/srv"), "moat-ll-ro-");
        let rw = r.dir_in(Path::new("/srv"), "moat-ll-rw-");
        let marker = unique("LANDLOCK-ONLY-");
        ro.write("data.txt", &marker);
        let binds = format!(
            "[filesystem]\nread_only = [\"{}\"]\nread_write = [\"{}\"]\n",
            ro.path_str(),
            rw.path_str()
        );
        let script = format!(
            r#"
            test -f {ro}/data.txt && echo VISIBLE
            if cat {ro}/data.txt 2>/tmp/err; then echo; echo READ; else echo "READ-ERR $(cat /tmp/err)"; fi
            if ls {ro} >/dev/null 2>/tmp/err; then echo LISTED; else echo "LIST-ERR $(cat /tmp/err)"; fi
            if touch {rw}/new 2>/tmp/err; then echo WROTE; else echo "WRITE-ERR $(cat /tmp/err)"; fi
            cat allowed.txt
            echo DONE
            "#,
            ro = ro.path_str(),
            rw = rw.path_str(),
        );

        // Control: mounted and granted, both work.
        let (_pd, granted) = profile(r, &binds);
        let out = run_with_profile(r, &ws, &granted, &script);
        out.assert_ok().assert_stdout_has("DONE");
        for want in ["VISIBLE", "READ", "LISTED", "WROTE", &marker] {
            out.assert_stdout_has(want);
        }
        assert!(rw.join("new").exists(), "the write did not reach the host{out}");
        fs::remove_file(rw.join("new")).unwrap();

        // Same mounts, no Landlock rule: the mount namespace shows both
        // directories, Landlock alone refuses them.
        let (_ps, skipped) = profile(
            r,
            &format!(
                "{binds}[landlock]\nskip = [\"{}\", \"{}\"]\n",
                ro.path_str(),
                rw.path_str()
            ),
        );
        let out = run_with_profile(r, &ws, &skipped, &script);
        out.assert_ok().assert_stdout_has("DONE").assert_no_leak(&marker);
        out.assert_stdout_has("VISIBLE").assert_stdout_has("ALLOWED-CONTENT");
        for (what, err) in [("READ", "READ-ERR"), ("LISTED", "LIST-ERR"), ("WROTE", "WRITE-ERR")] {
            assert!(
                !out.stdout.lines().any(|l| l == what),
                "{what}: Landlock let it through{out}"
            );
            assert!(
                out.stdout
                    .lines()
                    .any(|l| l.starts_with(err) && l.contains("Permission denied")),
                "{what} must fail with EACCES{out}"
            );
        }
        assert!(!rw.join("new").exists(), "the write reached the host{out}");
    }
}

/// Binds 127.0.0.1:PORT inside the sandbox, then connects to it; prints
/// BIND-OK/BIND-ERR n and CONNECT-OK/CONNECT-ERR n per port.
const TCP_PROBE: &str = r#"
import socket, sys
for port in map(int, sys.argv[1:]):
    srv = socket.socket()
    try:
        srv.bind(("127.0.0.1", port))
        srv.listen()
        print("BIND-OK", port)
    except OSError as e:
        print("BIND-ERR", port, e.errno)
        continue
    c = socket.socket()
    try:
        c.connect(("127.0.0.1", port))
        print("CONNECT-OK", port)
    except OSError as e:
        print("CONNECT-ERR", port, e.errno)
print("DONE")
"#;

fn tcp_probe(r: &Runner, ws: &Dir, profile: Option<&Path>, ports: &[u16]) -> Output {
    let mut m = r.exec(ws);
    if let Some(p) = profile {
        m.arg("--profile").arg(p);
    }
    let mut argv = vec!["python3".to_string(), "-c".into(), TCP_PROBE.into()];
    argv.extend(ports.iter().map(|p| p.to_string()));
    let out = m.cmd(argv).run();
    out.assert_ok().assert_stdout_has("DONE");
    out
}

fn has_line(out: &Output, line: &str) -> bool {
    out.stdout.lines().any(|l| l == line)
}

sandbox_test! {
    /// TCP: binding is allowed by default, connecting is not (EACCES), and
    /// the profile's port lists open exactly the ports they name.
    fn landlock_tcp_ports(r: &Runner) {
        require_landlock();
        let ws = r.workspace();
        // The sandbox has a network namespace of its own: these ports are
        // free there whatever the host runs.
        let (a, b) = (8123u16, 8124u16);

        let out = tcp_probe(r, &ws, None, &[a]);
        assert!(has_line(&out, &format!("BIND-OK {a}")), "bind is allowed by default{out}");
        assert!(
            has_line(&out, &format!("CONNECT-ERR {a} {}", libc::EACCES)),
            "connect must fail with EACCES by default{out}"
        );

        let (_d, p) = profile(r, &format!("[landlock]\nconnect_tcp = [{a}]\n"));
        let out = tcp_probe(r, &ws, Some(&p), &[a, b]);
        assert!(has_line(&out, &format!("CONNECT-OK {a}")), "{out}");
        assert!(has_line(&out, &format!("CONNECT-ERR {b} {}", libc::EACCES)), "{out}");

        let (_d, p) = profile(r, &format!("[landlock]\nbind_tcp = [{a}]\nconnect_tcp = \"any\"\n"));
        let out = tcp_probe(r, &ws, Some(&p), &[a, b]);
        assert!(has_line(&out, &format!("BIND-OK {a}")), "{out}");
        assert!(has_line(&out, &format!("CONNECT-OK {a}")), "{out}");
        assert!(has_line(&out, &format!("BIND-ERR {b} {}", libc::EACCES)), "{out}");
    }
}

/// The `path` of the `moat: run record PATH` line.
fn run_record(out: &Output) -> serde_json::Value {
    let path = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("moat: run record "))
        .unwrap_or_else(|| panic!("no run record line{out}"));
    let text = fs::read_to_string(path.trim())
        .unwrap_or_else(|e| panic!("reading the run record {path}: {e}{out}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("run record {path}: {e}\n{text}"))
}

sandbox_test! {
    /// `mode = "required"` runs on this kernel, and `-v` and the run record
    /// say what the kernel enforced.
    fn required_mode_runs_and_reports(r: &Runner) {
        let abi = require_landlock();
        let ws = r.workspace();
        let (_d, p) = profile(r, "[landlock]\nmode = \"required\"\n");
        let out = r
            .exec(&ws)
            .arg("-v")
            .arg("--profile")
            .arg(&p)
            .cmd(["sh", "-c", "echo RAN"])
            .run();
        out.assert_ok().assert_stdout_has("RAN");
        out.assert_stderr_has(&format!("moat: landlock: ABI {abi}, full enforced"));
        out.assert_stderr_has("moat: capabilities: all dropped; no_new_privs: true");
        let rec = run_record(&out);
        let h = &rec["hardening"];
        assert_eq!(h["landlock"]["abi"], abi, "{rec}");
        assert_eq!(h["landlock"]["status"], "full", "{rec}");
        assert!(h["landlock"]["path_rules"].as_u64().unwrap_or(0) > 0, "{rec}");
        assert_eq!(h["capabilities"]["all_dropped"], true, "{rec}");
        assert_eq!(h["capabilities"]["no_new_privs"], true, "{rec}");
        // SECBIT_NOROOT, _LOCKED, KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE,
        // _LOCKED: uid 0 inside is not special on exec.
        let bits = h["capabilities"]["securebits"].as_u64().unwrap_or(0);
        assert_eq!(bits & 0xe3, 0xe3, "securebits {bits:#x}{rec}");
    }
}

/// Runs moat (as `r`) under a seccomp filter that fails every Landlock
/// syscall with ENOSYS, as a kernel built without Landlock does.
fn moat_without_landlock(r: &Runner, ws: &Dir, args: &[&str]) -> Output {
    const WRAPPER: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]
ENOSYS = 38
# landlock_create_ruleset, landlock_add_rule, landlock_restrict_self: 444-446
# on every architecture moat builds for.
insns = [
    Insn(0x20, 0, 0, 0),                      # A = syscall number
    Insn(0x35, 0, 2, 444),                    # A < 444: allow
    Insn(0x35, 1, 0, 447),                    # A >= 447: allow
    Insn(0x06, 0, 0, 0x00050000 | ENOSYS),    # errno ENOSYS
    Insn(0x06, 0, 0, 0x7fff0000),             # allow
]
arr = (Insn * len(insns))(*insns)
prog = Prog(len(insns), arr)
if libc.prctl(38, 1, 0, 0, 0) != 0:           # PR_SET_NO_NEW_PRIVS
    sys.exit("no_new_privs: errno %d" % ctypes.get_errno())
if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, filter
    sys.exit("seccomp: errno %d" % ctypes.get_errno())
os.execv(sys.argv[1], sys.argv[1:])
"#;
    let mut c = r.command("/usr/bin/python3");
    c.arg("-c").arg(WRAPPER).arg(moat_bin(r.mode)).arg("exec");
    c.arg("--workspace")
        .arg(ws.path())
        .args(args)
        .current_dir(ws.path());
    run_command(
        c,
        format!("[{:?}] moat (no Landlock) exec {args:?}", r.mode),
        None,
        TIMEOUT,
    )
}

sandbox_test! {
    /// On a kernel without Landlock (emulated with seccomp), a profile that
    /// requires it refuses to start with the reason; best-effort runs and
    /// says nothing was enforced, and the other layers still hold.
    fn required_refuses_without_landlock(r: &Runner) {
        let ws = r.workspace();
        let (_d, req) = profile(r, "[landlock]\nmode = \"required\"\n");
        let out = moat_without_landlock(
            r,
            &ws,
            &["--profile", req.to_str().unwrap(), "--", "sh", "-c", "echo RAN"],
        );
        out.assert_moat_error();
        assert!(!out.stdout.contains("RAN"), "the command ran{out}");
        out.assert_stderr_has("Landlock is required by the profile but this kernel does not offer Landlock");
        out.assert_stderr_has("the profile's rules need ABI 6 (Linux 6.12)");

        let out = moat_without_landlock(
            r,
            &ws,
            &["-v", "--", "sh", "-c", "echo RAN; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status"],
        );
        out.assert_ok().assert_stdout_has("RAN");
        out.assert_stderr_has("moat: landlock: ABI 0, none enforced");
        out.assert_stderr_has("only the mount namespace restricts paths");
        out.assert_stdout_has(&format!("CapEff:\t{ZERO_CAPS}"));
        out.assert_stdout_has(&format!("CapBnd:\t{ZERO_CAPS}"));
        out.assert_stdout_has("NoNewPrivs:\t1");
    }
}

sandbox_test! {
    /// What ordinary programs do still works under the rules: terminals
    /// and /dev/null, /proc writes, shared memory, fifos, scripts in the
    /// workspace, Python. The sandbox root itself grants nothing.
    fn landlock_keeps_ordinary_things_working(r: &Runner) {
        require_landlock();
        let ws = r.workspace();
        ws.write("run.sh", "#!/bin/sh\necho SCRIPT-RAN\n");
        fs::set_permissions(ws.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let out = r.sh(
            &ws,
            r#"
            echo x > /dev/null && echo DEVNULL-OK
            head -c 4 /dev/urandom | wc -c | tr -d ' ' | sed 's/^/URANDOM=/'
            echo 500 > /proc/self/oom_score_adj && echo PROC-WRITE-OK
            echo shm > /dev/shm/moat-test && cat /dev/shm/moat-test && rm /dev/shm/moat-test
            mkfifo /tmp/fifo && rm /tmp/fifo && echo FIFO-OK
            mkdir -p sub/dir && echo data > sub/dir/f && mv sub/dir/f moved && cat moved
            ./run.sh
            python3 -c 'import json, multiprocessing; print("PY-OK")'
            if ls / >/dev/null 2>/tmp/err; then echo ROOT-LISTED; else echo "ROOT-ERR $(cat /tmp/err)"; fi
            echo DONE
            "#,
        );
        out.assert_ok().assert_stdout_has("DONE");
        for want in ["DEVNULL-OK", "URANDOM=4", "PROC-WRITE-OK", "shm", "FIFO-OK", "data", "SCRIPT-RAN", "PY-OK"] {
            out.assert_stdout_has(want);
        }
        assert!(
            out.stdout.lines().any(|l| l.starts_with("ROOT-ERR") && l.contains("Permission denied")),
            "/ itself has no Landlock rule{out}"
        );
    }
}
