//! `moat doctor` tells the truth about this machine: every fact it reports
//! is measured again here by other means (python3 ctypes, util-linux,
//! statfs, mkdir in cgroupfs) and compared, as root and as moat-test.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Python that installs a one-instruction-deep seccomp filter of its own
/// (argv[1] = syscall number to deny with errno 55, ENOANO), then either
/// reports what that syscall returns (`probe`) or execs argv[3..] under the
/// filter (`exec`). Written apart from moat's own code on purpose.
const SECCOMP_PY: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
nr, mode = int(sys.argv[1]), sys.argv[2]
ins = lambda code, jt, jf, k: struct.pack("HBBI", code, jt, jf, k)
prog = (ins(0x20, 0, 0, 0)              # A = seccomp_data.nr
        + ins(0x15, 0, 1, nr)           # A == nr ?
        + ins(0x06, 0, 0, 0x00050000 | 55)  # ERRNO(ENOANO)
        + ins(0x06, 0, 0, 0x7fff0000))  # ALLOW
buf = ctypes.create_string_buffer(prog, len(prog))
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
f = Fprog(4, ctypes.cast(buf, ctypes.c_void_p))
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    sys.exit("no_new_privs: errno %d" % ctypes.get_errno())
if libc.prctl(22, 2, ctypes.byref(f), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
    sys.exit("seccomp: errno %d" % ctypes.get_errno())
if mode == "probe":
    r = libc.syscall(ctypes.c_long(nr))
    print("DENIED" if r == -1 and ctypes.get_errno() == 55 else "ALLOWED r=%d" % r)
else:
    os.execv(sys.argv[3], sys.argv[3:])
"#;

/// Runs `moat doctor --json` and parses it; the exit status is checked by
/// the caller.
fn doctor_json(r: &Runner) -> (Output, Value) {
    let out = r.moat().args(["doctor", "--json"]).run();
    let v = parse(&out);
    (out, v)
}

fn parse(out: &Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}){out}"))
}

#[track_caller]
fn check<'a>(v: &'a Value, name: &str, out: &Output) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks array{out}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check named {name}{out}"))
}

#[track_caller]
fn status<'a>(v: &'a Value, name: &str, out: &Output) -> &'a str {
    check(v, name, out)["status"]
        .as_str()
        .unwrap_or_else(|| panic!("check {name} has no status string{out}"))
}

/// The Landlock ABI as the kernel reports it to python3 through ctypes:
/// the ABI, or minus the errno.
fn landlock_abi_by_python(r: &Runner) -> i64 {
    let script = format!(
        "import ctypes; l = ctypes.CDLL(None, use_errno=True); \
         n = l.syscall(ctypes.c_long({}), ctypes.c_void_p(None), ctypes.c_size_t(0), ctypes.c_uint(1)); \
         print(n if n >= 0 else -ctypes.get_errno())",
        libc::SYS_landlock_create_ruleset
    );
    let out = r.host_sh(Path::new("/"), &format!("python3 -c '{script}'"));
    out.assert_ok();
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("python3 printed no number ({e}){out}"))
}

fn statfs_magic(path: &str) -> Option<i64> {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: `c` is NUL-terminated and `buf` is a statfs we own.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut buf) == 0).then_some(buf.f_type as i64)
    }
}

const CGROUP2_MAGIC: i64 = 0x6367_7270;
const CGROUP1_MAGIC: i64 = 0x0027_e0eb;

/// The cgroup layout read from the file system types, and the directories
/// of the limit controllers moat uses.
fn cgroup_layout() -> (&'static str, Vec<PathBuf>) {
    let root = statfs_magic("/sys/fs/cgroup");
    let unified = statfs_magic("/sys/fs/cgroup/unified");
    let controllers = ["memory", "pids", "cpu"].map(|c| format!("/sys/fs/cgroup/{c}"));
    let v1 = controllers
        .iter()
        .all(|c| statfs_magic(c) == Some(CGROUP1_MAGIC));
    match (root, unified, v1) {
        (Some(CGROUP2_MAGIC), _, _) => ("v2", vec![PathBuf::from("/sys/fs/cgroup")]),
        (_, Some(CGROUP2_MAGIC), true) => ("hybrid", controllers.map(PathBuf::from).to_vec()),
        (_, None, true) => ("v1", controllers.map(PathBuf::from).to_vec()),
        other => panic!(
            "cgroup file systems not laid out as this test knows (statfs magics of \
             /sys/fs/cgroup, /sys/fs/cgroup/unified, v1 memory+pids+cpu: {other:?}): teach it"
        ),
    }
}

/// Whether the runner may create a group in `dir`: mkdir and rmdir one.
fn can_create_cgroup(r: &Runner, dir: &Path) -> bool {
    let name = unique("moat-doctor-test-");
    let out = r.host_sh(
        Path::new("/"),
        &format!(
            "mkdir {d}/{name} 2>/dev/null || exit 1; rmdir {d}/{name}",
            d = dir.display()
        ),
    );
    match out.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("probing {} went wrong{out}", dir.display()),
    }
}

sandbox_test! {
    /// Every fact in the JSON matches what the test measures itself.
    fn json_matches_this_machine(r: &Runner) {
        let (out, v) = doctor_json(r);
        out.assert_ok();
        assert_eq!(v["ready"], true, "{out}");
        assert_eq!(v["uid"], r.uid, "{out}");
        assert_eq!(v["root"], r.is_root(), "{out}");

        // Kernel and architecture, as uname says.
        let uname = r.host_sh(Path::new("/"), "uname -r; uname -m");
        uname.assert_ok();
        let mut lines = uname.stdout.lines();
        assert_eq!(v["kernel"]["release"], lines.next().unwrap(), "{out}");
        assert_eq!(v["kernel"]["arch"], lines.next().unwrap(), "{out}");
        assert_eq!(status(&v, "kernel", &out), "ok", "{out}");

        // User namespaces and everything moat builds in them, by util-linux.
        let premise = r.host_sh(
            Path::new("/"),
            "unshare -UrmpniuCf --mount-proc true",
        );
        premise.assert_ok();
        for name in ["user-namespaces", "namespaces", "proc"] {
            assert_eq!(status(&v, name, &out), "ok", "{name}{out}");
        }
        assert_eq!(v["enforce"]["namespaces"], true, "{out}");
        if r.is_root() {
            // And for everyone else: nobody, as util-linux tries it.
            let nobody = r.host_sh(
                Path::new("/"),
                "setpriv --reuid=65534 --regid=65534 --clear-groups \
                 unshare -Urmpf --mount-proc true",
            );
            nobody.assert_ok();
            assert_eq!(status(&v, "user-namespaces-rootless", &out), "ok", "{out}");
        } else {
            assert!(
                !out.stdout.contains("user-namespaces-rootless"),
                "only root asks on behalf of others{out}"
            );
        }

        // Landlock: the ABI python3 gets from the kernel.
        let abi = landlock_abi_by_python(r);
        assert!(abi > 0, "this machine offers Landlock (python3 got {abi})");
        assert_eq!(v["enforce"]["landlock_abi"], abi, "{out}");
        let (want_status, want_coverage) = if abi >= 6 { ("ok", "full") } else { ("limited", "partial") };
        assert_eq!(status(&v, "landlock", &out), want_status, "{out}");
        assert_eq!(v["enforce"]["landlock"], want_coverage, "{out}");
        let features = v["enforce"]["landlock_features"].as_array().unwrap();
        assert_eq!(features.len() as i64, abi.min(9), "{out}");
        let detail = check(&v, "landlock", &out)["detail"].as_str().unwrap();
        assert!(detail.starts_with(&format!("ABI {abi} ({want_coverage})")), "{out}");
        assert!(detail.contains("best-effort"), "the default profile's mode{out}");
        assert!(
            out.stdout.contains(&format!("Landlock ABI {abi} ({want_coverage})")),
            "summary{out}"
        );

        // seccomp: python3 installs a filter of its own and sees it deny.
        let py = {
            let mut c = r.command("/usr/bin/python3");
            c.args(["-c", SECCOMP_PY])
                .arg(libc::SYS_getppid.to_string())
                .arg("probe");
            run_command(c, format!("[{:?}] python3 seccomp probe", r.mode), None, TIMEOUT)
        };
        py.assert_ok().assert_stdout_has("DENIED");
        assert_eq!(status(&v, "seccomp", &out), "ok", "{out}");
        assert_eq!(v["enforce"]["seccomp"], true, "{out}");
        assert_eq!(status(&v, "capabilities", &out), "ok", "{out}");

        // The syscalls with fallbacks: this kernel (6.x) has both.
        assert_eq!(status(&v, "close-range", &out), "ok", "{out}");
        assert_eq!(status(&v, "mount-setattr", &out), "ok", "{out}");

        // Every check carries the fields scripts read; fixes only when needed.
        for c in v["checks"].as_array().unwrap() {
            for field in ["name", "status", "detail", "meaning"] {
                assert!(c[field].is_string(), "{field} of {c}{out}");
            }
            assert_eq!(c["fix"].is_string(), c["status"] != "ok", "fix of {c}{out}");
        }

        // And it can: a sandbox starts.
        let ws = r.workspace();
        r.sh(&ws, "true").assert_ok();
    }
}

sandbox_test! {
    /// cgroups: the layout from the file system types, and limits exactly
    /// when this caller can create a group in every limit controller.
    fn cgroups_match_this_machine(r: &Runner) {
        let (layout, dirs) = cgroup_layout();
        let (out, v) = doctor_json(r);
        out.assert_ok();
        assert_eq!(v["enforce"]["cgroup_layout"], layout, "{out}");
        assert_eq!(v["cgroup"]["layout"], layout, "{out}");
        let c = check(&v, "cgroups", &out);
        assert!(
            c["detail"].as_str().unwrap().starts_with(layout),
            "detail names the layout{out}"
        );

        let can = dirs.iter().all(|d| can_create_cgroup(r, d));
        // This machine: root may, moat-test may not (v1 has no delegation).
        assert_eq!(can, r.is_root(), "premise: who may create cgroups here ({dirs:?})");
        assert_eq!(v["enforce"]["cgroup_limits"], can, "{out}");
        assert_eq!(v["cgroup"]["limits_available"], can, "{out}");
        if can {
            assert_eq!(c["status"], "ok", "{out}");
            assert!(out.stdout.contains("cgroup limits yes"), "{out}");
        } else {
            assert_eq!(c["status"], "limited", "{out}");
            let fix = c["fix"].as_str().unwrap_or_else(|| panic!("no fix{out}"));
            assert!(!fix.trim().is_empty(), "{out}");
            assert!(out.stdout.contains("cgroup limits no"), "{out}");
        }
    }
}

sandbox_test! {
    /// The table names every check, with the summary, and exits 0.
    fn table_names_every_check(r: &Runner) {
        let (_, v) = doctor_json(r);
        let out = r.moat().arg("doctor").run();
        out.assert_ok().assert_stdout_has("moat will enforce: namespaces yes, Landlock ABI ");
        out.assert_stdout_has("moat can run here.");
        let names: Vec<&str> = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(names.len() >= 10, "{names:?}");
        for c in v["checks"].as_array().unwrap() {
            let (name, st) = (c["name"].as_str().unwrap(), c["status"].as_str().unwrap());
            // Not a terminal: one line per check, with its detail.
            let line = out
                .stdout
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(name))
                .unwrap_or_else(|| panic!("no line for {name}{out}"));
            assert!(line.starts_with(st), "{name} is {st}: {line}{out}");
            assert!(line.contains(c["detail"].as_str().unwrap()), "{line}{out}");
            if st != "ok" {
                assert!(out.stdout.contains(c["fix"].as_str().unwrap().lines().next().unwrap()), "{out}");
            }
        }
        assert!(!out.stdout.trim_start().starts_with('{'), "the table is not JSON{out}");
    }
}

/// Runs `doctor ARGS` as the runner inside a user namespace of its own in
/// which `user.max_user_namespaces` is 0: the kernel then refuses every
/// further user namespace, as on a host with that sysctl at 0, without
/// touching the host's setting.
fn doctor_without_userns(r: &Runner, args: &str) -> Output {
    let mut c = r.command("/usr/bin/unshare");
    c.args(["-Ur", "sh", "-c"])
        .arg(format!(
            "echo 0 > /proc/sys/user/max_user_namespaces || exit 99\n\
             unshare -U true 2>/dev/null && exit 98\n\
             exec \"$0\" doctor {args}"
        ))
        .arg(moat_bin(r.mode));
    run_command(
        c,
        format!(
            "[{:?}] unshare -Ur moat doctor {args} (no user namespaces)",
            r.mode
        ),
        None,
        TIMEOUT,
    )
}

sandbox_test! {
    /// Without user namespaces moat cannot run: doctor says which knob and
    /// how to fix it, and exits 1; the optional layers are still reported.
    fn no_user_namespaces_is_diagnosed(r: &Runner) {
        let out = doctor_without_userns(r, "--json");
        assert!(
            !matches!(out.code(), Some(98 | 99)),
            "cannot provoke unavailable user namespaces this way{out}"
        );
        out.assert_code(1);
        let v = parse(&out);
        assert_eq!(v["ready"], false, "{out}");
        assert_eq!(v["enforce"]["namespaces"], false, "{out}");
        assert_eq!(v["sysctls"]["user.max_user_namespaces"], 0, "{out}");
        let c = check(&v, "user-namespaces", &out);
        assert_eq!(c["status"], "missing", "{out}");
        assert!(c["detail"].as_str().unwrap().contains("user.max_user_namespaces=0"), "{out}");
        let fix = c["fix"].as_str().unwrap();
        assert!(fix.contains("sysctl -w user.max_user_namespaces="), "{out}");
        for name in ["namespaces", "proc"] {
            assert_eq!(status(&v, name, &out), "missing", "{name}{out}");
        }
        // Root in there cannot switch to another uid to ask for others,
        // so the sysctl decides: off for everyone.
        assert_eq!(status(&v, "user-namespaces-rootless", &out), "missing", "{out}");
        // Optional layers are still there and do not fail the run by
        // themselves.
        assert_eq!(status(&v, "landlock", &out), "ok", "{out}");
        assert_eq!(status(&v, "seccomp", &out), "ok", "{out}");

        let table = doctor_without_userns(r, "");
        table.assert_code(1);
        table.assert_stdout_has("moat cannot run here: see user-namespaces");
        table.assert_stdout_has("fix: ");
        table.assert_stdout_has("namespaces no");
    }
}

sandbox_test! {
    /// Under someone else's seccomp filter (a container runtime's, here
    /// python3's), doctor says so and still finds filters usable.
    fn outer_seccomp_filter_is_reported(r: &Runner) {
        let mut c = r.command("/usr/bin/python3");
        c.args(["-c", SECCOMP_PY])
            .arg(libc::SYS_acct.to_string())
            .arg("exec")
            .arg(moat_bin(r.mode))
            .args(["doctor", "--json"]);
        let out = run_command(c, format!("[{:?}] python3 filter + moat doctor", r.mode), None, TIMEOUT);
        out.assert_ok();
        let v = parse(&out);
        let c = check(&v, "seccomp", &out);
        assert_eq!(c["status"], "ok", "{out}");
        assert!(
            c["detail"].as_str().unwrap().contains("already runs under 1 seccomp filter"),
            "{out}"
        );
        // Without it, nothing is said about an outer filter.
        let (plain_out, plain) = doctor_json(r);
        plain_out.assert_ok();
        assert!(
            !check(&plain, "seccomp", &plain_out)["detail"].as_str().unwrap().contains("already"),
            "{plain_out}"
        );
    }
}
