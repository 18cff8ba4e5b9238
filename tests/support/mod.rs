//! Test servers and fixtures for the network tests: a test CA with a
//! server certificate for the `*.moat.test` names, upstream HTTP(S) and git
//! servers on the host's loopback (tests/support/test_server.py), the
//! /etc/hosts block those names come from, and readers for moat's request
//! log.
//!
//! Every server runs on 127.0.0.1 only and stops by itself: when the test
//! drops it (killed), when the test process dies (its stdin closes), or
//! after its lifetime.

// Each test file uses a different part of the support code.
#![allow(dead_code)]

use crate::common::{Dir, Runner};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The names scripts/test adds to /etc/hosts between `# moat-tests begin`
/// and `# moat-tests end`, with the address each must have.
pub const TEST_HOSTS: &[(&str, &str)] = &[
    ("allowed.moat.test", "127.0.0.1"),
    ("denied.moat.test", "127.0.0.1"),
    ("git.moat.test", "127.0.0.1"),
    ("plain.moat.test", "127.0.0.1"),
    ("other.moat.test", "127.0.0.2"),
    ("private.moat.test", "10.255.255.1"),
    ("metadata.moat.test", "169.254.169.254"),
    ("cgnat.moat.test", "100.64.0.1"),
];

/// Fails the test unless /etc/hosts has the `# moat-tests` block with every
/// name at its address: without it the proxy would resolve the names
/// through DNS, and the tests must never send a packet off this machine.
pub fn require_hosts_block() {
    let hosts = fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
    let fix = "run scripts/test as root (it adds the `# moat-tests begin` ... `# moat-tests end` \
               block of *.moat.test names to /etc/hosts)";
    let mut block: Option<BTreeMap<String, String>> = None;
    let mut inside = false;
    for line in hosts.lines() {
        let t = line.trim();
        if t == "# moat-tests begin" {
            inside = true;
            block = Some(BTreeMap::new());
            continue;
        }
        if t == "# moat-tests end" {
            inside = false;
            continue;
        }
        if inside && !t.starts_with('#') {
            let mut f = t.split_whitespace();
            if let Some(addr) = f.next() {
                for name in f {
                    block
                        .as_mut()
                        .unwrap()
                        .insert(name.to_string(), addr.to_string());
                }
            }
        }
    }
    let block = block.unwrap_or_else(|| panic!("/etc/hosts has no moat-tests block: {fix}"));
    assert!(
        !inside,
        "/etc/hosts: `# moat-tests begin` without an end: {fix}"
    );
    for (name, addr) in TEST_HOSTS {
        assert_eq!(
            block.get(*name).map(String::as_str),
            Some(*addr),
            "/etc/hosts must map {name} to {addr} in the moat-tests block: {fix}"
        );
    }
    // An earlier line for the same name would win over the block.
    for line in hosts.lines() {
        let t = line.split('#').next().unwrap_or("");
        let mut f = t.split_whitespace();
        let Some(addr) = f.next() else { continue };
        for name in f {
            if let Some((_, want)) = TEST_HOSTS.iter().find(|(n, _)| *n == name) {
                assert_eq!(
                    addr, *want,
                    "/etc/hosts maps {name} to {addr} elsewhere: {fix}"
                );
            }
        }
    }
}

/// A CA made for one test, and a server certificate it signed for every
/// `*.moat.test` name, all PEM files in a directory the runner can read.
pub struct TestCa {
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub ca_text: String,
}

impl TestCa {
    pub fn new(dir: &Dir) -> TestCa {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType,
            ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "moat end-to-end test CA");
        ca.distinguished_name = dn;
        let ca_cert = ca.self_signed(&ca_key).unwrap();

        let names: Vec<String> = TEST_HOSTS.iter().map(|(n, _)| n.to_string()).collect();
        let mut leaf = CertificateParams::new(names).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "allowed.moat.test");
        leaf.distinguished_name = dn;
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

        let ca_text = ca_cert.pem();
        TestCa {
            ca_pem: dir.write("test-ca.pem", &ca_text),
            cert_pem: dir.write("server.pem", leaf_cert.pem()),
            key_pem: dir.write("server.key", leaf_key.serialize_pem()),
            ca_text,
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/test_server.py")
}

/// The system python: the test server needs nothing beyond its standard
/// library, and a pyenv shim may not survive a cleared environment.
const PYTHON: &str = "/usr/bin/python3";

/// A test server on the host's 127.0.0.1, killed on drop.
pub struct TestServer {
    child: Child,
    pub port: u16,
    log: PathBuf,
    what: String,
}

pub enum Kind<'a> {
    /// The echo server over plain HTTP.
    Http,
    /// The echo server over TLS with the test CA's certificate.
    Https(&'a TestCa),
    /// `git http-backend` over TLS for the bare repositories under a root.
    Git(&'a TestCa, &'a Path),
    /// Not HTTP: the server speaks first (a banner line, as SSH does),
    /// then answers one line upper-cased.
    Banner,
}

impl TestServer {
    /// Starts a server; its event log goes into `dir`.
    pub fn start(kind: Kind<'_>, dir: &Dir) -> TestServer {
        let log = dir.join(crate::common::unique("server-log-"));
        let mut c = Command::new(PYTHON);
        c.arg(script()).arg("--log").arg(&log);
        let what = match kind {
            Kind::Http => "http echo server".to_string(),
            Kind::Https(ca) => {
                c.arg("--cert")
                    .arg(&ca.cert_pem)
                    .arg("--key")
                    .arg(&ca.key_pem);
                "https echo server".to_string()
            }
            Kind::Git(ca, root) => {
                c.arg("--cert")
                    .arg(&ca.cert_pem)
                    .arg("--key")
                    .arg(&ca.key_pem);
                c.arg("--git-root").arg(root);
                "git smart-HTTP server".to_string()
            }
            Kind::Banner => {
                c.arg("--banner");
                "banner (server-speaks-first) server".to_string()
            }
        };
        c.env_clear()
            .env("PATH", crate::common::CLEAN_PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({PYTHON}): {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_default();
        let port = match line
            .trim()
            .strip_prefix("PORT=")
            .and_then(|p| p.parse().ok())
        {
            Some(p) => p,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not start (printed {line:?})");
            }
        };
        TestServer {
            child,
            port,
            log,
            what,
        }
    }

    /// Everything the server saw so far: `connect` and `request` events.
    pub fn events(&self) -> Vec<Value> {
        match fs::read_to_string(&self.log) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("server log line is JSON"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read {}: {e}", self.log.display()),
        }
    }

    /// The requests the server received.
    pub fn requests(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "request")
            .collect()
    }

    pub fn describe(&self) -> String {
        format!("{} on 127.0.0.1:{}", self.what, self.port)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory moat keeps run records and request logs in when started
/// with `XDG_STATE_HOME=state`.
pub fn runs_dir(state: &Path) -> PathBuf {
    state.join("moat/runs")
}

/// The request logs (`*.requests.jsonl`) under a runs directory.
pub fn request_logs(runs: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(runs) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".requests.jsonl"))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Parses JSON lines; a line that is not a JSON object fails the test.
pub fn parse_json_lines(text: &str, what: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what}: line is not JSON ({e}): {l}"));
            assert!(v.is_object(), "{what}: line is not a JSON object: {l}");
            v
        })
        .collect()
}

/// A directory for one test's fixtures (certificates, profiles, server
/// logs), owned by the runner so moat can read what it must.
pub fn fixture_dir(r: &Runner) -> Dir {
    r.dir_in(Path::new("/tmp"), "moat-net-")
}
