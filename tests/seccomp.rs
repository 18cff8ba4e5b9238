//! The seccomp filter, seen from inside a real sandbox.
//!
//! A Python probe makes each denied call with ctypes and prints the errno.
//! The default profile must answer EPERM (ENOSYS for clone3). The same
//! probe under a profile that allows every group back must get the
//! kernel's own answer, which is never EPERM for the calls probed: that is
//! what shows the EPERM came from the filter and not from missing
//! capabilities or Landlock. The arguments are chosen so that the kernel
//! fails each call early and harmlessly (a bad command number, a NULL
//! pointer, /dev/null instead of a terminal) when the filter lets it
//! through.

mod common;

use common::*;
use moat::seccomp_policy::GROUPS;
use std::collections::BTreeMap;
use std::path::PathBuf;

const EPERM: i32 = libc::EPERM;
const ENOSYS: i32 = libc::ENOSYS;

/// argv[1]: `name=number,...`; argv[2..]: probes to run (default: all).
/// Prints `probe=errno` (0 = success) per probe.
const PROBE: &str = r#"
import ctypes, os, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {k: int(v) for k, v in (kv.split("=") for kv in sys.argv[1].split(","))}
MASK = (1 << 64) - 1

def sc(name, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR[name]), *[ctypes.c_ulong(a & MASK) for a in args])
    return r, ctypes.get_errno()

def errno_of(r_e):
    r, e = r_e
    return e if r == -1 else 0

def in_child(fn):
    # For calls that would change the probe itself (a new namespace, a
    # tracer, a persona): the child reports the errno as its exit code.
    pid = os.fork()
    if pid == 0:
        try:
            code = fn()
        except BaseException:
            code = 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)

def sock(family, type_, proto):
    r, e = sc("socket", family, type_, proto)
    if r >= 0:
        os.close(r)
        return 0
    return e

def clone_newuser():
    r, e = sc("clone", 0x10000000 | 17, 0, 0, 0, 0)  # CLONE_NEWUSER | SIGCHLD
    if r == 0:
        os._exit(0)
    if r < 0:
        return e
    os.waitpid(r, 0)
    return 0

null = os.open("/dev/null", os.O_RDWR)
ch = ctypes.c_char(b"x")
ch_addr = ctypes.addressof(ch)
root = ctypes.create_string_buffer(b"/")
root_addr = ctypes.addressof(root)
missing = ctypes.create_string_buffer(b"/nonexistent-moat-dir")
uts = ctypes.create_string_buffer(512)  # struct utsname is 390 bytes
uts_addr = ctypes.addressof(uts)
AT_FDCWD = -100
MS_NOUSER = 1 << 31  # rejected (EINVAL) before any permission check

probes = {
    # Denied: bad arguments make the kernel fail them early, never with
    # EPERM, whenever the filter lets them through.
    "ptrace_traceme": lambda: in_child(lambda: errno_of(sc("ptrace", 0, 0, 0, 0))),
    "process_vm_readv": lambda: errno_of(sc("process_vm_readv", os.getpid(), 0, 0, 0, 0, 0)),
    "bpf": lambda: errno_of(sc("bpf", 9999, 0, 0)),
    "perf_event_open": lambda: errno_of(sc("perf_event_open", 0, 0, -1, -1, 0)),
    "keyctl": lambda: errno_of(sc("keyctl", 9999, 0, 0, 0, 0)),
    "unshare_newuser": lambda: in_child(lambda: errno_of(sc("unshare", 0x10000000))),
    "clone_newuser": lambda: in_child(clone_newuser),
    "setns": lambda: errno_of(sc("setns", null, 0)),
    "clone3": lambda: errno_of(sc("clone3", 0, 0)),
    "mount": lambda: errno_of(sc("mount", 0, root_addr, 0, MS_NOUSER, 0)),
    "io_uring_setup": lambda: errno_of(sc("io_uring_setup", 1, 0)),
    "tiocsti": lambda: errno_of(sc("ioctl", null, 0x5412, ch_addr)),
    "tiocsti_upper_bits": lambda: errno_of(sc("ioctl", null, 0x5412 | (1 << 32), ch_addr)),
    "tioclinux": lambda: errno_of(sc("ioctl", null, 0x541C, ch_addr)),
    # Type 11 (>= SOCK_MAX) fails with EINVAL before the family's own
    # CAP_NET_RAW check, which would answer EPERM for a real packet socket.
    "af_packet_bad_type": lambda: sock(17, 11, 0),
    "af_vsock": lambda: sock(40, 1, 0),
    "netlink_sock_diag": lambda: sock(16, 3, 4),
    "mptcp": lambda: sock(2, 1, 262),
    "mptcp6": lambda: sock(10, 1, 262),
    "personality_no_randomize": lambda: in_child(lambda: errno_of(sc("personality", 0x0040000))),
    "name_to_handle_at": lambda: errno_of(sc("name_to_handle_at", AT_FDCWD, root_addr, 0, 0, 0)),
    # Denied, but the kernel would refuse them too without CAP_NET_RAW.
    "af_packet_raw": lambda: sock(17, 3, 0x0300),
    # Ordinary calls that must keep working.
    "getpid": lambda: errno_of(sc("getpid")),
    "tcgets": lambda: errno_of(sc("ioctl", null, 0x5401, ch_addr)),
    "af_unix": lambda: sock(1, 1, 0),
    "af_inet": lambda: sock(2, 1, 0),
    "af_inet6": lambda: sock(10, 2, 0),
    "netlink_route": lambda: sock(16, 3, 0),
    "personality_query": lambda: in_child(lambda: errno_of(sc("personality", 0xFFFFFFFF))),
    "unshare_fs": lambda: in_child(lambda: errno_of(sc("unshare", 0x200))),
    "fork": lambda: in_child(lambda: 0),
    "chroot_missing": lambda: errno_of(sc("chroot", ctypes.addressof(missing))),
    "uname": lambda: errno_of(sc("uname", uts_addr)),
}
for name in sys.argv[2:] or list(probes):
    print(f"{name}={probes[name]()}", flush=True)
"#;

/// Denied probes, the group that denies each, and the errno the default
/// profile must give.
const DENIED: &[(&str, &str, i32)] = &[
    ("ptrace_traceme", "ptrace", EPERM),
    ("process_vm_readv", "ptrace", EPERM),
    ("bpf", "bpf", EPERM),
    ("perf_event_open", "perf", EPERM),
    ("keyctl", "keyring", EPERM),
    ("unshare_newuser", "namespaces", EPERM),
    ("clone_newuser", "namespaces", EPERM),
    ("setns", "namespaces", EPERM),
    ("clone3", "namespaces", ENOSYS),
    ("mount", "mount", EPERM),
    ("io_uring_setup", "io_uring", EPERM),
    ("tiocsti", "tty_injection", EPERM),
    ("tiocsti_upper_bits", "tty_injection", EPERM),
    ("tioclinux", "tty_injection", EPERM),
    ("af_packet_bad_type", "socket_families", EPERM),
    ("af_vsock", "socket_families", EPERM),
    ("netlink_sock_diag", "socket_families", EPERM),
    ("mptcp", "socket_families", EPERM),
    ("mptcp6", "socket_families", EPERM),
    ("personality_no_randomize", "personality", EPERM),
    ("name_to_handle_at", "file_handles", EPERM),
];

/// Ordinary probes and what they must return under the default profile.
const ORDINARY: &[(&str, i32)] = &[
    ("getpid", 0),
    ("tcgets", libc::ENOTTY),
    ("af_unix", 0),
    ("af_inet", 0),
    ("af_inet6", 0),
    ("netlink_route", 0),
    ("personality_query", 0),
    ("unshare_fs", 0),
    ("fork", 0),
    ("chroot_missing", libc::ENOENT),
    ("uname", 0),
];

/// Syscall numbers for the probe, from libc for this architecture.
fn numbers() -> String {
    [
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("keyctl", libc::SYS_keyctl),
        ("unshare", libc::SYS_unshare),
        ("clone", libc::SYS_clone),
        ("setns", libc::SYS_setns),
        ("clone3", libc::SYS_clone3),
        ("mount", libc::SYS_mount),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("ioctl", libc::SYS_ioctl),
        ("socket", libc::SYS_socket),
        ("personality", libc::SYS_personality),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("getpid", libc::SYS_getpid),
        ("chroot", libc::SYS_chroot),
        ("uname", libc::SYS_uname),
    ]
    .iter()
    .map(|(n, nr)| format!("{n}={nr}"))
    .collect::<Vec<_>>()
    .join(",")
}

/// A directory for profile files, readable by the runner.
fn profile_dir(r: &Runner) -> Dir {
    r.dir_in(std::path::Path::new("/tmp"), "moat-seccomp-profiles-")
}

fn profile(dir: &Dir, name: &str, seccomp: &str) -> PathBuf {
    write_profile(
        dir,
        &format!("{name}.toml"),
        &format!("extends = \"default\"\n\n[seccomp]\n{seccomp}\n"),
    )
}

fn allow_everything(dir: &Dir) -> PathBuf {
    let groups: Vec<String> = GROUPS.iter().map(|g| format!("\"{}\"", g.name)).collect();
    profile(
        dir,
        "allow-all",
        &format!("allow = [{}]", groups.join(", ")),
    )
}

/// Runs the probe (all of it, or `only`) in a sandbox on `ws`, with
/// `profile` or the default one, and returns each probe's errno.
fn probe(
    r: &Runner,
    ws: &Dir,
    profile: Option<&PathBuf>,
    only: &[&str],
) -> (BTreeMap<String, i32>, Output) {
    ws.write("probe.py", PROBE);
    let mut m = r.exec(ws);
    m.arg("-v");
    if let Some(p) = profile {
        m.arg("--profile").arg(p);
    }
    let nums = numbers();
    let mut argv = vec!["python3", "probe.py", nums.as_str()];
    argv.extend_from_slice(only);
    let out = m.cmd(argv).run();
    out.assert_ok();
    out.assert_stderr_has("moat: seccomp: installed");
    let results = out
        .stdout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    (results, out)
}

#[track_caller]
fn get(results: &BTreeMap<String, i32>, name: &str, out: &Output) -> i32 {
    *results
        .get(name)
        .unwrap_or_else(|| panic!("the probe printed no result for {name}{out}"))
}

sandbox_test! {
    /// Every group the issue lists answers EPERM from inside (clone3
    /// ENOSYS), ordinary calls are untouched, and with the groups allowed
    /// back the same calls get the kernel's own (non-EPERM) answers.
    fn denied_calls_fail_with_eperm(r: &Runner) {
        let ws = r.workspace();
        let (denied, out) = probe(r, &ws, None, &[]);
        for (name, group, want) in DENIED {
            assert_eq!(
                get(&denied, name, &out),
                *want,
                "{name} (group {group}) under the default profile{out}"
            );
        }
        for (name, want) in ORDINARY {
            assert_eq!(get(&denied, name, &out), *want, "{name} must keep working{out}");
        }
        // A real packet socket is refused too (the kernel would also
        // refuse it without CAP_NET_RAW, so this one proves less).
        assert_eq!(get(&denied, "af_packet_raw", &out), EPERM, "{out}");

        let dir = profile_dir(r);
        let all = allow_everything(&dir);
        let (allowed, out) = probe(r, &ws, Some(&all), &[]);
        out.assert_stderr_has("(0 syscall rules)");
        for (name, group, _) in DENIED {
            let got = get(&allowed, name, &out);
            assert!(
                got != EPERM && got != ENOSYS,
                "{name} (group {group}) still fails with errno {got} once every group is \
                 allowed back, so the default run does not show the filter at work{out}"
            );
        }
        for (name, want) in ORDINARY {
            assert_eq!(get(&allowed, name, &out), *want, "{name}{out}");
        }
    }
}

sandbox_test! {
    /// `allow = ["ptrace"]` lets ptrace (and the rest of its group)
    /// through and nothing else.
    fn allow_ptrace_lets_ptrace_through(r: &Runner) {
        let ws = r.workspace();
        let dir = profile_dir(r);
        let p = profile(&dir, "ptrace", "allow = [\"ptrace\"]");
        let (res, out) = probe(
            r,
            &ws,
            Some(&p),
            &["ptrace_traceme", "process_vm_readv", "bpf", "unshare_newuser"],
        );
        assert_eq!(get(&res, "ptrace_traceme", &out), 0, "PTRACE_TRACEME{out}");
        assert_eq!(get(&res, "process_vm_readv", &out), 0, "{out}");
        assert_eq!(get(&res, "bpf", &out), EPERM, "{out}");
        assert_eq!(get(&res, "unshare_newuser", &out), EPERM, "{out}");
    }
}

sandbox_test! {
    /// `deny` adds syscalls: uname and chroot fail with EPERM where they
    /// worked (or failed otherwise) before, and the coreutils tool says so.
    fn deny_adds_denials(r: &Runner) {
        let ws = r.workspace();
        let (before, out) = probe(r, &ws, None, &["uname", "chroot_missing"]);
        assert_eq!(get(&before, "uname", &out), 0, "{out}");
        assert_eq!(get(&before, "chroot_missing", &out), libc::ENOENT, "{out}");

        let dir = profile_dir(r);
        let p = profile(&dir, "deny", "deny = [\"uname\", \"chroot\"]");
        let (after, out) = probe(r, &ws, Some(&p), &["uname", "chroot_missing", "getpid"]);
        assert_eq!(get(&after, "uname", &out), EPERM, "{out}");
        assert_eq!(get(&after, "chroot_missing", &out), EPERM, "{out}");
        assert_eq!(get(&after, "getpid", &out), 0, "{out}");

        let out = r
            .exec(&ws)
            .arg("--profile")
            .arg(&p)
            .cmd(["sh", "-c", "uname -s; echo rc=$?"])
            .run();
        out.assert_ok().assert_field("rc", "1");
        out.assert_stderr_has("Operation not permitted");
        out.assert_no_leak("Linux");
    }
}

sandbox_test! {
    /// Unknown or impossible names stop moat before anything runs, with a
    /// message naming the entry and listing the groups.
    fn bad_names_are_moat_errors(r: &Runner) {
        let ws = r.workspace();
        let dir = profile_dir(r);
        let marker = ws.join("ran");
        let script = format!("touch {}", marker.display());
        for (name, seccomp, needle) in [
            ("unknown-allow", "allow = [\"no_such_call\"]", "\"no_such_call\""),
            ("unknown-deny", "deny = [\"no_such_call\"]", "\"no_such_call\""),
            ("not-on-list", "allow = [\"chroot\"]", "does not deny chroot"),
            ("init-needs", "deny = [\"execve\"]", "\"execve\""),
        ] {
            let p = profile(&dir, name, seccomp);
            let out = r.exec(&ws).arg("--profile").arg(&p).cmd(["sh", "-c", &script]).run();
            out.assert_moat_error().assert_stderr_has(needle);
            if name.starts_with("unknown") {
                out.assert_stderr_has("socket_families");
            }
            assert!(!marker.exists(), "the command ran despite a bad profile{out}");
        }
    }
}

sandbox_test! {
    /// What ordinary work does: a shell, coreutils, git, python3 with
    /// threads, subprocesses and sockets, all under the installed filter.
    fn ordinary_programs_work(r: &Runner) {
        let ws = r.workspace();
        let script = r#"
set -e
echo hello | tr a-z A-Z
mkdir -p d/e && cp /etc/passwd d/e/p && sort d/e/p | sha256sum >/dev/null
wc -l < d/e/p >/dev/null && ls -la d >/dev/null && find d -type f | grep -q p
ln -s e/p d/link && cat d/link >/dev/null && chmod 600 d/e/p && stat -c %a d/e/p
du -s d >/dev/null && df . >/dev/null && date -u +%Y >/dev/null && id -u >/dev/null
rm -r d
(sleep 0.1; echo bg) & wait
sh -c 'exit 3' || echo "sub=$?"
git init -q repo && cd repo
echo content > f && git add f
git -c user.name=moat -c user.email=moat@example.invalid commit -q -m first
git log --oneline | wc -l | sed 's/^ */commits=/'
git status --porcelain | wc -l | sed 's/^ */dirty=/'
cd ..
python3 - <<'EOF'
import concurrent.futures, subprocess, socket, tempfile, os, hashlib, sqlite3
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    assert list(pool.map(lambda x: x * x, range(8)))[-1] == 49
assert subprocess.run(["echo", "child"], capture_output=True, text=True).stdout == "child\n"
a, b = socket.socketpair()
a.sendall(b"ping"); assert b.recv(4) == b"ping"
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); v.sendto(b"udp", u.getsockname())
assert u.recv(3) == b"udp"
socket.getaddrinfo("localhost", 80)
with tempfile.TemporaryDirectory() as d:
    db = sqlite3.connect(os.path.join(d, "x.db")); db.execute("create table t (x)"); db.close()
print("python=ok")
EOF
echo done=yes
"#;
        let out = r.exec(&ws).arg("-v").cmd(["sh", "-c", script]).run();
        out.assert_ok()
            .assert_stderr_has("moat: seccomp: installed")
            .assert_stdout_has("HELLO")
            .assert_field("sub", "3")
            .assert_field("commits", "1")
            .assert_field("dirty", "0")
            .assert_field("python", "ok")
            .assert_field("done", "yes");
    }
}

/// A foreign-ABI syscall (i386 `int 0x80` from a 64-bit process) would
/// bypass every number-based rule, so the filter kills the process. The
/// same code outside the sandbox returns the pid, which shows the code is
/// right and the kill is the filter's.
#[cfg(target_arch = "x86_64")]
mod foreign_abi {
    use super::*;

    const INT80: &str = r#"
import ctypes, mmap
# mov eax, 20 (getpid in the i386 table); int 0x80; ret
code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
print("before=1", flush=True)
print("pid=%d" % f(), flush=True)
"#;

    sandbox_test! {
        fn int80_is_killed(r: &Runner) {
            let ws = r.workspace();
            let script = ws.write("int80.py", INT80);
            let host = r.host_sh(ws.path(), &format!("/usr/bin/python3 {}", script.display()));
            host.assert_ok();
            assert!(
                host.field("pid").is_some_and(|p| p.parse::<u32>().is_ok_and(|p| p > 1)),
                "the int 0x80 probe does not work on the host, so it proves nothing{host}"
            );
            let out = r.exec(&ws).cmd(["python3", "int80.py"]).run();
            out.assert_field("before", "1");
            out.assert_code(128 + libc::SIGSYS);
            assert!(out.field("pid").is_none(), "the i386 call returned{out}");
        }
    }
}

/// `cargo build --offline` of a small crate with a thread and a build
/// script, under the filter. Root only: the toolchain lives under /root
/// (mode 0700), which moat-test cannot read, so a rootless caller has no
/// toolchain to bind; installing one for moat-test would need the network.
#[test]
fn cargo_build_works() {
    let r = Runner::root();
    for dir in ["/root/.rustup", "/root/.cargo/bin"] {
        assert!(
            std::path::Path::new(dir).is_dir(),
            "{dir} is missing: this test builds with the root-installed rustup toolchain"
        );
    }
    let ws = r.workspace();
    ws.write(
        "hello/Cargo.toml",
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
    );
    ws.write(
        "hello/build.rs",
        "fn main() {\n    println!(\"cargo:rustc-env=MOAT_BUILT=yes\");\n}\n",
    );
    ws.write(
        "hello/src/main.rs",
        "fn main() {\n    let t = std::thread::spawn(|| 6 * 7);\n    \
         println!(\"answer={} built={}\", t.join().unwrap(), env!(\"MOAT_BUILT\"));\n}\n",
    );
    let dir = profile_dir(&r);
    // HOME inside is an empty tmpfs at /root; the read-only binds of the
    // toolchain land inside it.
    let p = write_profile(
        &dir,
        "cargo.toml",
        "extends = \"default\"\n\n[filesystem]\nread_only = [\"/root/.rustup\", \"/root/.cargo\"]\n\n\
         [env]\nRUSTUP_HOME = \"/root/.rustup\"\nCARGO_HOME = \"/root/.cargo\"\n\
         PATH = \"/root/.cargo/bin:/usr/local/bin:/usr/bin:/bin\"\n",
    );
    let out = r
        .exec(&ws)
        .arg("-v")
        .arg("--profile")
        .arg(&p)
        .cmd([
            "sh",
            "-c",
            "cd hello && cargo build --offline && ./target/debug/hello",
        ])
        .timeout(std::time::Duration::from_secs(180))
        .run();
    out.assert_ok()
        .assert_stderr_has("moat: seccomp: installed")
        .assert_stdout_has("answer=42 built=yes");
}
