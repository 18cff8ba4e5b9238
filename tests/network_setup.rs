//! How a sandbox is wired to moat's proxy: the variables that point
//! clients at it, the socket it listens on inside, the CA bundle the
//! sandbox trusts, the CA key that must stay outside, and Landlock allowing
//! the proxy's port and no other. What the proxy does with requests is
//! tests/network.rs.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const PROXY_URL: &str = "http://127.0.0.1:3128";
const NO_PROXY: &str = "localhost,127.0.0.1,::1";
const BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];
const CA_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "AWS_CA_BUNDLE",
    "PIP_CERT",
];

fn env_map(out: &Output) -> BTreeMap<String, String> {
    out.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A profile file in a directory of its own under /tmp (outside the
/// workspace, so it is not what the workspace tests look at).
fn profile(r: &Runner, body: &str) -> (Dir, PathBuf) {
    let dir = r.dir_in(Path::new("/tmp"), "moat-netsetup-");
    let p = dir.write("p.toml", format!("extends = \"default\"\n{body}"));
    (dir, p)
}

fn with_profile(r: &Runner, ws: &Dir, profile: Option<&Path>) -> Moat {
    let mut m = r.exec(ws);
    if let Some(p) = profile {
        m.arg("--profile").arg(p);
    }
    m
}

/// moat's data directory for the runner: `~/.local/share/moat` (the
/// harness clears XDG_DATA_HOME).
fn data_dir(r: &Runner) -> PathBuf {
    r.home.join(".local/share/moat")
}

/// The host's bundle of roots, as moat finds it.
fn host_bundle() -> String {
    fs::read_to_string(BUNDLE).unwrap_or_else(|e| {
        panic!(
            "{BUNDLE}: {e}: the tests need the host's CA bundle (apt-get install ca-certificates)"
        )
    })
}

/// `/proc/net/tcp` lines in state LISTEN (0A) bound to 127.0.0.1:`port`.
fn listens(out: &Output, port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    out.stdout.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1] == want && f[3] == "0A"
    })
}

/// The `/proc/net/tcp` lines of sockets in state LISTEN.
fn listening(out: &Output) -> Vec<String> {
    out.stdout
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].contains(':') && f[3] == "0A"
        })
        .map(str::to_string)
        .collect()
}

sandbox_test! {
    /// The default profile (allowlist mode): every proxy variable points at
    /// 127.0.0.1:3128, NO_PROXY names only loopback, and every CA variable
    /// names the bundle that holds moat's CA.
    fn proxy_and_ca_variables(r: &Runner) {
        let ws = r.workspace();
        let out = r.exec(&ws).cmd(["env"]).run();
        out.assert_ok();
        let env = env_map(&out);
        for k in PROXY_VARS {
            assert_eq!(env.get(*k).map(String::as_str), Some(PROXY_URL), "{k}{out}");
        }
        for k in ["NO_PROXY", "no_proxy"] {
            assert_eq!(env.get(k).map(String::as_str), Some(NO_PROXY), "{k}{out}");
        }
        assert_eq!(env.get("NODE_USE_ENV_PROXY").map(String::as_str), Some("1"), "{out}");
        for k in CA_VARS {
            assert_eq!(env.get(*k).map(String::as_str), Some(BUNDLE), "{k}{out}");
        }
    }
}

sandbox_test! {
    /// The caller's environment, the profile's [env] and -e cannot point
    /// clients around the proxy or away from moat's CA.
    fn user_values_are_replaced(r: &Runner) {
        let ws = r.workspace();
        let (d, p) = profile(
            r,
            r#"pass_env = ["HTTPS_PROXY", "all_proxy", "no_proxy", "SSL_CERT_FILE", "MOAT_NETSETUP_PASSED"]
[env]
HTTP_PROXY = "http://profile.invalid:1"
NO_PROXY = "*"
REQUESTS_CA_BUNDLE = "/dev/null"
FROM_PROFILE = "kept"
"#,
        );
        let host_copy = d.write("host-bundle.pem", host_bundle());
        let out = with_profile(r, &ws, Some(&p))
            .env("HTTPS_PROXY", "http://host.invalid:8080")
            .env("all_proxy", "socks5://host.invalid:1080")
            .env("no_proxy", "*")
            // A real bundle elsewhere: moat's proxy reads the caller's
            // SSL_CERT_FILE for its own upstream roots.
            .env("SSL_CERT_FILE", &host_copy)
            .env("MOAT_NETSETUP_PASSED", "yes")
            .args([
                "-e", "HTTPS_PROXY=http://cli.invalid:3",
                "-e", "http_proxy=http://cli.invalid:4",
                "-e", "NO_PROXY=example.com",
                "-e", "NODE_USE_ENV_PROXY=0",
                "-e", "GIT_SSL_CAINFO=/nope",
                "-e", "FROM_CLI=kept",
            ])
            .cmd(["env"])
            .run();
        out.assert_ok();
        out.assert_no_leak(".invalid");
        out.assert_no_leak("host-bundle.pem");
        let env = env_map(&out);
        for k in PROXY_VARS {
            assert_eq!(env.get(*k).map(String::as_str), Some(PROXY_URL), "{k}{out}");
        }
        for k in ["NO_PROXY", "no_proxy"] {
            assert_eq!(env.get(k).map(String::as_str), Some(NO_PROXY), "{k}{out}");
        }
        assert_eq!(env.get("NODE_USE_ENV_PROXY").map(String::as_str), Some("1"), "{out}");
        for k in CA_VARS {
            assert_eq!(env.get(*k).map(String::as_str), Some(BUNDLE), "{k}{out}");
        }
        // The other sources still work: only the proxy's variables are moat's.
        out.assert_field("FROM_PROFILE", "kept")
            .assert_field("FROM_CLI", "kept")
            .assert_field("MOAT_NETSETUP_PASSED", "yes");
    }
}

/// Prints any socket the command inherited (INHERITED fd), /proc/net/tcp,
/// then for each port CONNECT-OK or CONNECT-ERR
/// errno, then whether it could bind the proxy's port itself.
const PROBE: &str = r#"
import os, socket, sys
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink("/proc/self/fd/" + fd)
    except OSError:
        continue
    if target.startswith("socket:"):
        print("INHERITED", fd, target)
print(open("/proc/net/tcp").read())
proxy = int(sys.argv[1])
for port in map(int, sys.argv[2:]):
    c = socket.socket()
    try:
        c.connect(("127.0.0.1", port))
        print("CONNECT-OK", port)
    except OSError as e:
        print("CONNECT-ERR", port, e.errno)
    c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", proxy))
    print("BIND-OK", proxy)
except OSError as e:
    print("BIND-ERR", proxy, e.errno)
print("DONE")
"#;

fn probe(r: &Runner, ws: &Dir, profile: Option<&Path>, proxy: u16, ports: &[u16]) -> Output {
    let mut argv = vec![
        "python3".to_string(),
        "-c".into(),
        PROBE.into(),
        proxy.to_string(),
    ];
    argv.extend(ports.iter().map(|p| p.to_string()));
    let out = with_profile(r, ws, profile).cmd(argv).run();
    out.assert_ok().assert_stdout_has("DONE");
    assert!(
        !out.stdout.contains("INHERITED"),
        "the command must not hold the proxy's socket (or any other){out}"
    );
    out
}

fn has_line(out: &Output, line: &str) -> bool {
    out.stdout.lines().any(|l| l == line)
}

sandbox_test! {
    /// Inside, 127.0.0.1:3128 is listening (the socket init made and the
    /// supervisor accepts on), connecting to it is allowed, connecting to
    /// any other port is EACCES (Landlock), and the command cannot take the
    /// port over.
    fn proxy_listens_and_only_its_port_is_reachable(r: &Runner) {
        let ws = r.workspace();
        let out = probe(r, &ws, None, 3128, &[3128, 3129, 80, 443]);
        assert!(listens(&out, 3128), "nothing listens on 127.0.0.1:3128{out}");
        assert_eq!(listening(&out).len(), 1, "only the proxy listens{out}");
        assert!(has_line(&out, "CONNECT-OK 3128"), "{out}");
        for port in [3129, 80, 443] {
            assert!(
                has_line(&out, &format!("CONNECT-ERR {port} {}", libc::EACCES)),
                "connecting to port {port} must fail with EACCES (Landlock){out}"
            );
        }
        assert!(
            has_line(&out, &format!("BIND-ERR 3128 {}", libc::EADDRINUSE)),
            "the command must not be able to bind the proxy's port{out}"
        );

        // And what listens is moat's proxy, serving from the supervisor: a
        // request for a loopback address it refuses gets its 403. (The
        // target is loopback and the test guard is on, so even a broken
        // policy would send nothing off this machine.)
        let script = r#"
import socket
c = socket.create_connection(("127.0.0.1", 3128), timeout=10)
c.sendall(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n")
data = b""
while True:
    b = c.recv(4096)
    if not b:
        break
    data += b
head = data.split(b"\r\n\r\n")[0].decode("latin-1")
for line in head.split("\r\n"):
    print("HEAD", line)
"#;
        let out = r
            .exec(&ws)
            .env("MOAT_TEST_LOOPBACK_ONLY", "1")
            .cmd(["python3", "-c", script])
            .run();
        out.assert_ok();
        let head: Vec<&str> = out.stdout.lines().filter_map(|l| l.strip_prefix("HEAD ")).collect();
        assert!(
            head.first().is_some_and(|l| l.starts_with("HTTP/1.1 403")),
            "the proxy must answer inside{out}"
        );
        assert!(
            head.iter().any(|l| l.to_ascii_lowercase().starts_with("x-moat-blocked:")),
            "{out}"
        );
    }
}

sandbox_test! {
    /// EACCES on another port is Landlock, not an empty port: a server the
    /// command starts itself on 3129 still cannot be reached, until the
    /// profile lists the port.
    fn other_ports_are_refused_by_landlock(r: &Runner) {
        let ws = r.workspace();
        let script = r#"
import socket
srv = socket.socket()
srv.bind(("127.0.0.1", 3129))
srv.listen()
for port in (3128, 3129):
    c = socket.socket()
    try:
        c.connect(("127.0.0.1", port))
        print("CONNECT-OK", port)
    except OSError as e:
        print("CONNECT-ERR", port, e.errno)
"#;
        let out = r.exec(&ws).cmd(["python3", "-c", script]).run();
        out.assert_ok();
        assert!(has_line(&out, "CONNECT-OK 3128"), "{out}");
        assert!(has_line(&out, &format!("CONNECT-ERR 3129 {}", libc::EACCES)), "{out}");

        let (_d, p) = profile(r, "[landlock]\nconnect_tcp = [3129]\n");
        let out = with_profile(r, &ws, Some(&p)).cmd(["python3", "-c", script]).run();
        out.assert_ok();
        assert!(has_line(&out, "CONNECT-OK 3129"), "{out}");
        // The proxy stays reachable beside the profile's own ports.
        assert!(has_line(&out, "CONNECT-OK 3128"), "{out}");
    }
}

sandbox_test! {
    /// `proxy_port` moves the socket, the variables and the Landlock rule
    /// together.
    fn proxy_port_setting(r: &Runner) {
        let ws = r.workspace();
        let (_d, p) = profile(r, "[network]\nproxy_port = 8899\n");
        let out = probe(r, &ws, Some(&p), 8899, &[8899, 3128]);
        assert!(listens(&out, 8899), "{out}");
        assert!(!listens(&out, 3128), "{out}");
        assert!(has_line(&out, "CONNECT-OK 8899"), "{out}");
        assert!(has_line(&out, &format!("CONNECT-ERR 3128 {}", libc::EACCES)), "{out}");
        let out = with_profile(r, &ws, Some(&p)).cmd(["env"]).run();
        out.assert_ok().assert_field("HTTPS_PROXY", "http://127.0.0.1:8899");
    }
}

sandbox_test! {
    /// The sandbox's system bundle is the host's roots followed by moat's
    /// CA certificate (the one in ~/.local/share/moat/ca.pem), read-only;
    /// the host's own file is unchanged.
    fn ca_bundle_is_host_roots_plus_moat_ca(r: &Runner) {
        let ws = r.workspace();
        let host_before = host_bundle();
        let out = r
            .exec(&ws)
            .cmd([
                "sh",
                "-c",
                &format!("cat {BUNDLE}; echo x >> {BUNDLE} 2>/dev/null && echo WRITABLE; true"),
            ])
            .run();
        out.assert_ok();
        let ca = fs::read_to_string(data_dir(r).join("ca.pem"))
            .unwrap_or_else(|e| panic!("moat's CA certificate after a run: {e}{out}"));
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        let inside = &out.stdout;
        assert!(
            inside.starts_with(&host_before),
            "the bundle inside must start with the host's roots{out}"
        );
        assert!(inside.contains(&ca), "moat's CA is missing from the bundle inside{out}");
        assert!(inside.trim_end().ends_with(ca.trim_end()), "{out}");
        assert_eq!(
            inside.matches("BEGIN CERTIFICATE").count(),
            host_before.matches("BEGIN CERTIFICATE").count() + 1,
            "{out}"
        );
        assert!(!inside.contains("PRIVATE KEY"), "{out}");
        assert!(!inside.contains("WRITABLE"), "the bundle must be read-only inside{out}");
        assert_eq!(host_bundle(), host_before, "the host's bundle changed");
    }
}

/// A base64 line of the PEM key that occurs in neither the certificate
/// nor the host's bundle: finding it anywhere means the key leaked.
fn unique_key_line(key_pem: &str, ca_pem: &str) -> String {
    let bundle = host_bundle();
    key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .find(|l| !ca_pem.contains(*l) && !bundle.contains(*l))
        .unwrap_or_else(|| panic!("no distinctive line in the CA key"))
        .to_string()
}

sandbox_test! {
    /// The CA key is private on the host (0600 in a 0700 directory, the
    /// caller's own) and nowhere in the sandbox: not at its path, and no
    /// line of it in any file of any mount but /proc, /sys and /dev.
    fn ca_key_is_private_and_never_inside(r: &Runner) {
        let ws = r.workspace();
        // Makes the CA if this is the runner's first network run.
        r.exec(&ws).cmd(["true"]).run().assert_ok();
        let dir = data_dir(r);
        let key_path = dir.join("ca-key.pem");
        let dmeta = fs::metadata(&dir).unwrap();
        assert_eq!(dmeta.mode() & 0o7777, 0o700, "{}", dir.display());
        assert_eq!(dmeta.uid(), r.uid, "{}", dir.display());
        let kmeta = fs::metadata(&key_path).unwrap();
        assert_eq!(kmeta.mode() & 0o7777, 0o600, "{}", key_path.display());
        assert_eq!(kmeta.uid(), r.uid, "{}", key_path.display());
        let cmeta = fs::metadata(dir.join("ca.pem")).unwrap();
        assert_eq!(cmeta.mode() & 0o7777, 0o644);

        let key = fs::read_to_string(&key_path).unwrap();
        let ca = fs::read_to_string(dir.join("ca.pem")).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        assert!(!ca.contains("PRIVATE KEY"));
        let line = unique_key_line(&key, &ca);

        // Every mount point but /proc, /sys, /dev and the (read-only,
        // mount points only) root; a copy the script plants in /tmp shows
        // that the search would find the line if it were there.
        let script = format!(
            r#"IFS= read -r LINE
test -e {key} && echo KEY-PATH-VISIBLE
printf '%s\n' "$LINE" > /tmp/planted-control
roots=$(awk '{{print $5}}' /proc/self/mountinfo | grep -v -e '^/proc' -e '^/sys' -e '^/dev' -e '^/$' | sort -u)
echo ROOTS $roots
grep -rlIF -e "$LINE" $roots 2>/dev/null | sed 's/^/FOUND /'
echo DONE"#,
            key = key_path.display()
        );
        let out = r
            .exec(&ws)
            .stdin(format!("{line}\n"))
            .cmd(["sh", "-c", &script])
            .run();
        out.assert_ok().assert_stdout_has("DONE");
        let roots_line = out
            .stdout
            .lines()
            .find(|l| l.starts_with("ROOTS "))
            .unwrap_or_else(|| panic!("no ROOTS line{out}"));
        for must in ["/usr", "/etc", "/tmp", BUNDLE, ws.path_str(), r.home.to_str().unwrap()] {
            assert!(
                roots_line.split_whitespace().any(|m| m == must),
                "{must} is not among the searched mounts{out}"
            );
        }
        assert!(!out.stdout.contains("KEY-PATH-VISIBLE"), "{out}");
        let found: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("FOUND "))
            .collect();
        assert_eq!(found, ["/tmp/planted-control"], "the CA key is visible in the sandbox{out}");
    }
}

sandbox_test! {
    /// `[network] mode = "none"`: no proxy, no proxy or CA variables,
    /// nothing listening, and the host's bundle as it is.
    fn mode_none_has_no_proxy(r: &Runner) {
        let ws = r.workspace();
        let (_d, p) = profile(r, "[network]\nmode = \"none\"\n");
        let out = with_profile(r, &ws, Some(&p)).cmd(["env"]).run();
        out.assert_ok();
        let env = env_map(&out);
        for k in PROXY_VARS.iter().chain(CA_VARS).chain(&["NO_PROXY", "no_proxy", "NODE_USE_ENV_PROXY"]) {
            assert!(!env.contains_key(*k), "{k} set with mode = \"none\"{out}");
        }
        let out = probe(r, &ws, Some(&p), 3128, &[3128]);
        assert!(listening(&out).is_empty(), "nothing may listen{out}");
        assert!(has_line(&out, &format!("CONNECT-ERR 3128 {}", libc::EACCES)), "{out}");
        assert!(has_line(&out, "BIND-OK 3128"), "{out}");
        let out = with_profile(r, &ws, Some(&p)).cmd(["cat", BUNDLE]).run();
        out.assert_ok();
        assert_eq!(out.stdout, host_bundle(), "the bundle must be the host's{out}");
    }
}

sandbox_test! {
    /// The sandbox's bundle comes from a copy kept in moat's private data
    /// directory, made once and bound read-only by every run after it; the
    /// request log goes in the runs directory under the run's id.
    fn bundle_copy_is_kept_private_and_reused(r: &Runner) {
        let ws = r.workspace();
        let bundle_of = |out: &Output| -> PathBuf {
            let line = out
                .stderr
                .lines()
                .find(|l| l.starts_with("moat: network: "))
                .unwrap_or_else(|| panic!("no network line{out}"));
            let rest = line
                .split_once("; sandbox bundle ")
                .unwrap_or_else(|| panic!("-v names no sandbox bundle{out}"))
                .1;
            PathBuf::from(rest.split_once(" (").unwrap().0)
        };
        let out = r.exec(&ws).arg("-v").cmd(["cat", BUNDLE]).run();
        out.assert_ok();
        let copy = bundle_of(&out);
        let dir = copy.parent().unwrap();
        assert_eq!(dir, data_dir(r).join("bundles"), "{out}");
        assert_eq!(fs::metadata(dir).unwrap().mode() & 0o777, 0o700, "{}", dir.display());
        assert_eq!(
            fs::read_to_string(&copy).unwrap(),
            out.stdout,
            "the sandbox must see the kept copy{out}"
        );
        let inode = fs::metadata(&copy).unwrap().ino();
        let again = r.exec(&ws).arg("-v").cmd(["true"]).run();
        again.assert_ok();
        assert_eq!(bundle_of(&again), copy, "the second run made another copy{again}");
        assert_eq!(fs::metadata(&copy).unwrap().ino(), inode, "the copy was rewritten{again}");
        let record = out
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("moat: run record "))
            .unwrap_or_else(|| panic!("no run record line{out}"));
        let record = Path::new(record.trim());
        let id = record.file_stem().unwrap().to_str().unwrap();
        let runs = record.parent().unwrap();
        assert_eq!(
            fs::metadata(runs).unwrap().mode() & 0o077,
            0,
            "{} must be private",
            runs.display()
        );
        let log = runs.join(format!("{id}.requests.jsonl"));
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with("moat: network: ") && l.ends_with(&format!("log {}", log.display()))),
            "-v must name the request log {}{out}",
            log.display()
        );
    }
}

sandbox_test! {
    /// The command is held back until the proxy accepts on its socket: a
    /// proxy that fails to start ends the run (exit 125, saying why) before
    /// the command's first instruction, so no unconfined moment exists.
    fn a_proxy_that_fails_to_start_stops_the_run_before_the_command(r: &Runner) {
        let ws = r.workspace();
        let out = r
            .exec(&ws)
            .env("MOAT_TEST_FAIL_PROXY_START", "1")
            .cmd(["sh", "-c", "echo ran > ran"])
            .run();
        out.assert_moat_error()
            .assert_stderr_has("starting the network proxy failed");
        assert!(
            !ws.join("ran").exists(),
            "the command ran although its proxy never started{out}"
        );

        // Without the fault the same command runs: the check above is not
        // passing because the command cannot write.
        r.exec(&ws).cmd(["sh", "-c", "echo ran > ran"]).run().assert_ok();
        assert_eq!(ws.read("ran"), "ran\n");
    }
}
