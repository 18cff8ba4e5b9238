//! The tamper-evident audit log, end to end: real sandboxed runs making
//! real requests through moat's proxy to a loopback test server, then the
//! log they leave checked by `moat audit verify`, by an independent Python
//! verifier, and against a thousand and more random alterations; signed
//! checkpoints against other keys; proof bundles checked offline; a writer
//! killed mid-run; and runs stopped when the log cannot be written.
//!
//! Each test gives moat its own XDG_DATA_HOME (the log and key live there)
//! and XDG_STATE_HOME, and runs with MOAT_TEST_LOOPBACK_ONLY=1.

mod common;
mod support;

use common::*;
use moat::audit::chain::{self, Entry};
use moat::audit::verify::{self, Status};
use moat::audit::{sign, writer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

/// One test's directories and the test server.
struct Setup {
    fixtures: Dir,
    state: Dir,
    data: Dir,
    http: TestServer,
    profile: PathBuf,
}

impl Setup {
    fn new(r: &Runner) -> Setup {
        require_hosts_block();
        let fixtures = fixture_dir(r);
        let state = r.dir_in(Path::new("/tmp"), "moat-audit-state-");
        let data = r.dir_in(Path::new("/tmp"), "moat-audit-data-");
        let http = TestServer::start(Kind::Http, &fixtures);
        let profile = write_profile(
            &fixtures,
            &format!("{}.toml", unique("audit-")),
            &format!(
                "extends = \"default\"\n\n[network]\nallow = [\"plain.moat.test:{}\"]\n",
                http.port
            ),
        );
        Setup {
            fixtures,
            state,
            data,
            http,
            profile,
        }
    }

    fn env(&self, m: &mut Moat) {
        self.env_data(m, self.data.path());
    }

    fn env_data(&self, m: &mut Moat, data: &Path) {
        m.env("MOAT_TEST_LOOPBACK_ONLY", "1")
            .env("XDG_STATE_HOME", self.state.path())
            .env("XDG_DATA_HOME", data);
    }

    fn exec(&self, r: &Runner, ws: &Dir) -> Moat {
        let mut m = r.exec(ws);
        m.arg("--profile").arg(&self.profile);
        self.env(&mut m);
        m
    }

    /// A script making `n` allowed requests and one refused one.
    fn requests(&self, n: usize) -> String {
        format!(
            "i=0; while [ $i -lt {n} ]; do curl -sS --max-time 10 -o /dev/null http://plain.moat.test:{}/r$i || exit 9; i=$((i+1)); done; \
             curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}' http://denied.moat.test:{}/no; echo",
            self.http.port, self.http.port
        )
    }

    fn moat(&self, r: &Runner) -> Moat {
        let mut m = r.moat();
        self.env(&mut m);
        m
    }

    fn log_path(&self) -> PathBuf {
        writer::log_path(&self.data.join("moat"))
    }

    fn public_key(&self, r: &Runner) -> String {
        let out = self.moat(r).args(["audit", "key"]).run();
        out.assert_ok();
        let k = out.stdout.trim().to_string();
        assert_eq!(k.len(), 64, "{out}");
        k
    }

    /// The independent Python verifier run on the log, against `key`.
    fn python_verify(&self, r: &Runner, key: &str) -> Output {
        r.host_sh(
            self.fixtures.path(),
            &format!(
                "/usr/bin/python3 {}/tests/support/audit_verify.py {} {key}",
                env!("CARGO_MANIFEST_DIR"),
                self.log_path().display()
            ),
        )
    }

    fn entries(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.log_path()).unwrap();
        parse_json_lines(&text, "audit log")
    }
}

fn verify_in_process(bytes: &[u8], key: &str, head: Option<writer::Head>) -> verify::Report {
    let key = sign::parse_public(key).unwrap();
    verify::verify_bytes(
        bytes,
        &verify::Options {
            key: &key,
            from_genesis: true,
            head,
            head_name: "audit.head",
        },
    )
}

sandbox_test! {
    /// A run's start (profile, its hash, command, uid, planned layers),
    /// what the kernel enforced, each request with its decision, and the
    /// exit land in the log, which `moat audit verify`, `moat audit show`
    /// and the independent Python verifier all accept.
    fn run_events_are_recorded_and_verify(r: &Runner) {
        let s = Setup::new(r);
        let ws = r.workspace();
        let out = s.exec(r, &ws).cmd(["sh", "-c", &s.requests(2)]).run();
        out.assert_ok().assert_stdout_has("403");
        let entries = s.entries();
        let kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["start", "enforced", "request", "request", "request", "exit", "checkpoint"],
            "{entries:#?}"
        );
        let run = entries[0]["run"].as_str().unwrap();
        assert!(entries.iter().all(|e| e["run"] == run));
        let start = &entries[0]["data"];
        assert_eq!(start["command"], json!(["sh", "-c", s.requests(2)]));
        assert_eq!(start["uid"], json!(r.uid));
        assert_eq!(start["profile"].as_str().unwrap(), s.profile.to_str().unwrap());
        assert_eq!(start["profile_sha256"].as_str().unwrap().len(), 64);
        assert_eq!(start["network"], "allowlist");
        let enforced = &entries[1]["data"];
        assert_eq!(enforced["seccomp"]["installed"], true, "{enforced}");
        assert_eq!(enforced["capabilities"]["all_dropped"], true, "{enforced}");
        assert!(enforced["landlock"]["status"].is_string(), "{enforced}");
        let reqs: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "request").map(|e| &e["data"]).collect();
        assert_eq!(reqs[0]["host"], "plain.moat.test");
        assert_eq!(reqs[0]["path"], "/r0");
        assert_eq!(reqs[0]["decision"], "allow");
        assert_eq!(reqs[0]["status"], 200);
        assert_eq!(reqs[2]["host"], "denied.moat.test");
        assert_eq!(reqs[2]["decision"], "deny");
        let exit = &entries[5]["data"];
        assert_eq!(exit["exit_code"], 0);
        assert_eq!(exit["outcome"], "exited");
        assert_eq!(exit["requests"], 3);
        assert_eq!(exit["denied"], 1);
        assert!(exit["duration_ms"].is_u64());
        let cp = &entries[6]["data"];
        assert_eq!(cp["seq"], entries[5]["seq"]);
        assert_eq!(cp["hash"], entries[5]["hash"]);

        let v = s.moat(r).args(["audit", "verify"]).run();
        v.assert_ok().assert_stdout_has("intact");
        let show = s.moat(r).args(["audit", "show", "latest"]).run();
        show.assert_ok().assert_stdout_has("enforced").assert_stdout_has("plain.moat.test");
        let key = s.public_key(r);
        let py = s.python_verify(r, &key);
        py.assert_ok().assert_stdout_has("7 entries, 1 signed checkpoints: OK");
    }
}

/// One random single alteration of a log. Returns the altered bytes and
/// what was done, for the failure message.
fn mutate(lines: &[Vec<u8>], rng: &mut u64, key: &str) -> (Vec<u8>, String) {
    let mut next = |n: usize| -> usize {
        // xorshift64*: reproducible from the seed printed on failure.
        *rng ^= *rng >> 12;
        *rng ^= *rng << 25;
        *rng ^= *rng >> 27;
        (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    };
    let join = |ls: &[Vec<u8>]| -> Vec<u8> {
        let mut out = Vec::new();
        for l in ls {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        out
    };
    let mut ls = lines.to_vec();
    let n = ls.len();
    match next(6) {
        0 => {
            let mut all = join(&ls);
            let at = next(all.len());
            let bit = 1u8 << next(8);
            all[at] ^= bit;
            (all, format!("flip bit {bit:#x} of byte {at}"))
        }
        1 => {
            let i = next(n);
            ls.remove(i);
            (join(&ls), format!("delete line {}", i + 1))
        }
        2 => {
            let i = next(n);
            let dup = ls[i].clone();
            let at = next(n + 1);
            ls.insert(at, dup);
            (join(&ls), format!("duplicate line {} at {}", i + 1, at + 1))
        }
        3 => {
            let i = next(n);
            let mut j = next(n);
            if j == i {
                j = (i + 1) % n;
            }
            ls.swap(i, j);
            (join(&ls), format!("swap lines {} and {}", i + 1, j + 1))
        }
        4 => {
            // A well-formed entry with a correct hash, linked to the line
            // before it: what a forger who knows the format would write.
            let at = next(n + 1);
            let (seq, prev) = if at == 0 {
                (0, chain::GENESIS.to_string())
            } else {
                let (e, _) = chain::parse(&ls[at - 1], &mut Vec::new()).unwrap();
                (e.seq + 1, e.hash)
            };
            let kind = ["request", "exit", "checkpoint"][next(3)];
            let data = if kind == "checkpoint" {
                json!({"seq": seq.saturating_sub(1), "hash": prev, "key": key, "sig": "00".repeat(64)})
            } else {
                json!({"host": "forged.example", "decision": "allow", "exit_code": 0})
            };
            let e = Entry::new(seq, chain::rfc3339_ms(1), "forged", kind, data, &prev);
            ls.insert(at, e.line());
            (
                join(&ls),
                format!("insert a forged {kind} at line {}", at + 1),
            )
        }
        _ => {
            let all = join(&ls);
            let keep = next(all.len());
            (all[..keep].to_vec(), format!("truncate to {keep} bytes"))
        }
    }
}

sandbox_test! {
    /// A real log of a few hundred entries from concurrent runs survives
    /// no single alteration: 1200 random byte flips, deleted, duplicated,
    /// swapped and forged lines and truncations are each reported (in
    /// process, and a sample through `moat audit verify`), while the log
    /// as written verifies, also with the Python verifier.
    fn every_single_mutation_is_detected(r: &Runner) {
        let s = Setup::new(r);
        let ws = r.workspace();
        // Concurrent writers share the chain through the lock.
        let running: Vec<Running> = (0..3)
            .map(|_| s.exec(r, &ws).cmd(["sh", "-c", &s.requests(80)]).spawn())
            .collect();
        for run in running {
            run.finish(Duration::from_secs(120)).assert_ok();
        }
        let out = s.exec(r, &ws).cmd(["sh", "-c", &s.requests(60)]).run();
        out.assert_ok();
        let key = s.public_key(r);
        let bytes = std::fs::read(s.log_path()).unwrap();
        let head = writer::read_head(&s.log_path()).unwrap();
        assert!(head.is_some(), "no .head written");
        let lines: Vec<Vec<u8>> = bytes
            .strip_suffix(b"\n")
            .unwrap()
            .split(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        assert!(lines.len() >= 200, "only {} entries", lines.len());
        let clean = verify_in_process(&bytes, &key, head.clone());
        assert_eq!(clean.status, Status::Intact, "{}", verify::describe(&clean, "log"));
        assert_eq!(clean.runs.len(), 4);
        // Runs that end together may share one final checkpoint (a run's
        // own is skipped when the chain already ends in one covering its
        // exit), so the three concurrent runs give at least one, the last
        // run another.
        assert!(clean.checkpoints >= 2, "{} checkpoints", clean.checkpoints);

        let seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(r.uid);
        let mut rng = seed;
        let started = Instant::now();
        let sample = r.dir_in(s.data.path(), "mutated-");
        let mut kinds = std::collections::BTreeMap::new();
        for i in 0..1200 {
            let (m, what) = mutate(&lines, &mut rng, &key);
            if m == bytes {
                // A forged checkpoint identical to the real one cannot
                // happen (the signature differs); anything else identical
                // is not a mutation.
                continue;
            }
            *kinds.entry(what.split(' ').next().unwrap().to_string()).or_insert(0) += 1;
            let rep = verify_in_process(&m, &key, head.clone());
            assert_ne!(
                rep.status,
                Status::Intact,
                "mutation {i} (seed {seed:#x}) not detected: {what}\n{}",
                verify::describe(&rep, "log")
            );
            if i % 100 == 0 {
                // Through the binary, with the real .head beside it.
                let p = sample.join(writer::LOG_FILE);
                std::fs::write(&p, &m).unwrap();
                std::fs::copy(writer::head_path(&s.log_path()), writer::head_path(&p)).unwrap();
                sample.chown_all();
                let out = s.moat(r).args(["audit", "verify"]).arg(&p).run();
                assert!(
                    matches!(out.code(), Some(1) | Some(2)),
                    "binary missed mutation {i}: {what}{out}"
                );
                assert!(out.stdout.contains("TAMPERED") || out.stdout.contains("INCOMPLETE"), "{out}");
            }
        }
        assert!(kinds.len() == 6, "not every kind of mutation ran: {kinds:?}");
        eprintln!(
            "{} entries, {} mutations {kinds:?} all detected in {:?}",
            lines.len(),
            kinds.values().sum::<usize>(),
            started.elapsed()
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "1200 verifications took {:?}",
            started.elapsed()
        );
        let py = s.python_verify(r, &key);
        py.assert_ok().assert_stdout_has(": OK");
    }
}

/// A log's lines with the last checkpoint re-signed by `other`, its hash
/// and the `.head` recomputed, so the signature is the only thing wrong.
fn resign_last_checkpoint(
    bytes: &[u8],
    other: &ed25519_dalek::SigningKey,
    claim_key: &str,
) -> (Vec<u8>, writer::Head) {
    let mut lines: Vec<Vec<u8>> = bytes
        .strip_suffix(b"\n")
        .unwrap()
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let last = lines.len() - 1;
    let (mut e, _) = chain::parse(&lines[last], &mut Vec::new()).unwrap();
    assert_eq!(e.kind, "checkpoint");
    let covered = e.seq - 1;
    e.data = json!({"seq": covered, "hash": e.prev, "key": claim_key, "sig": sign::sign(other, covered, &e.prev)});
    let e = Entry::new(
        e.seq,
        e.ts.clone(),
        &e.run,
        &e.kind,
        e.data.clone(),
        &e.prev,
    );
    lines[last] = e.line();
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(&l);
        out.push(b'\n');
    }
    (
        out,
        writer::Head {
            seq: e.seq,
            hash: e.hash,
        },
    )
}

sandbox_test! {
    /// A checkpoint re-signed with another key fails against the real
    /// public key, whether it names the other key or claims the real one;
    /// an exported bundle verifies offline with only the public key (in
    /// a fresh HOME with no key of its own) and fails with a wrong key or
    /// after an edit.
    fn signatures_and_bundles(r: &Runner) {
        let s = Setup::new(r);
        let ws = r.workspace();
        s.exec(r, &ws).cmd(["sh", "-c", &s.requests(3)]).run().assert_ok();
        let key = s.public_key(r);
        let bytes = std::fs::read(s.log_path()).unwrap();
        let other = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
        let other_hex = sign::public_hex(&other.verifying_key());
        let (forged, head) = resign_last_checkpoint(&bytes, &other, &other_hex);
        let rep = verify_in_process(&forged, &key, Some(head.clone()));
        assert_eq!(rep.status, Status::Tampered);
        assert!(rep.problems[0].contains("not by the trusted key"), "{:?}", rep.problems);
        // Against the other key it would pass: the check is the key.
        assert_eq!(verify_in_process(&forged, &other_hex, Some(head)).status, Status::Intact);
        let (forged, head) = resign_last_checkpoint(&bytes, &other, &key);
        let rep = verify_in_process(&forged, &key, Some(head));
        assert!(rep.problems[0].contains("signature does not verify"), "{:?}", rep.problems);

        let bundle = s.fixtures.join("bundle.json");
        s.moat(r).args(["audit", "export", "latest", "-o"]).arg(&bundle).run().assert_ok();
        let fresh = r.dir_in(Path::new("/tmp"), "moat-audit-fresh-");
        let offline = |args: &[&str], file: &Path| {
            let mut m = r.moat();
            s.env_data(&mut m, fresh.path());
            m.env("HOME", fresh.path());
            m.args(["audit", "verify"]).arg(file).args(args);
            m.run()
        };
        offline(&["--key", &key], &bundle).assert_ok().assert_stdout_has("intact");
        offline(&["--key", &other_hex], &bundle).assert_code(1).assert_stdout_has("not with the key you trust");
        // Without a key of its own nor --key there is nothing to trust.
        offline(&[], &bundle).assert_moat_error().assert_stderr_has("--key");
        offline(&["--key", "xyz"], &bundle).assert_moat_error().assert_stderr_has("64 hex digits");
        let text = std::fs::read_to_string(&bundle).unwrap();
        let edited = s.fixtures.join("edited.json");
        std::fs::write(&edited, text.replacen("/r1", "/r7", 1)).unwrap();
        offline(&["--key", &key], &edited).assert_code(1).assert_stdout_has("TAMPERED");
        assert!(!fresh.join("moat/audit.key").exists(), "offline verify made a key");
    }
}

sandbox_test! {
    /// moat killed with SIGKILL mid-run leaves a log whose complete entries
    /// all verify (exit 2: its end is not signed), with the periodic
    /// checkpoint made while it ran; a torn last line is reported as an
    /// incomplete tail, not as tampering; the next run cuts it off, records
    /// that it did, and the log is intact again.
    fn killed_writer_leaves_a_verifiable_log(r: &Runner) {
        let s = Setup::new(r);
        let ws = r.workspace();
        // Requests, a pause past one periodic checkpoint, more requests,
        // then moat is killed before the next checkpoint could sign them.
        let tick = recorder_tick().as_millis() as f64 / 1000.0;
        let script = format!(
            "{}; sleep {}; {}; echo MORE; sleep 60",
            s.requests(3),
            tick + 1.5,
            s.requests(2)
        );
        let mut running = s.exec(r, &ws).cmd(["sh", "-c", &script]).spawn();
        running.wait_for_stdout("MORE", Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(300));
        running.signal(libc::SIGKILL);
        running.finish(Duration::from_secs(30));
        let kinds: Vec<String> = s.entries().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
        let cp = kinds.iter().position(|k| k == "checkpoint").unwrap_or_else(|| panic!("no periodic checkpoint: {kinds:?}"));
        assert_eq!(kinds[cp + 1..], ["request", "request", "request"], "{kinds:?}");
        let out = s.moat(r).args(["audit", "verify"]).run();
        out.assert_code(2)
            .assert_stdout_has("3 entries after the last checkpoint")
            .assert_stdout_has("not covered by a signature")
            .assert_stdout_has("has no exit entry");
        assert!(!out.stdout.contains("TAMPERED"), "{out}");

        // A write cut short: half of a line at the end.
        let mut bytes = std::fs::read(s.log_path()).unwrap();
        let half = br#"{"data":{"host":"plain.moat.test","decision":"al"#;
        bytes.extend_from_slice(half);
        std::fs::write(s.log_path(), &bytes).unwrap();
        let out = s.moat(r).args(["audit", "verify"]).run();
        out.assert_code(2).assert_stdout_has("incomplete tail");
        assert!(!out.stdout.contains("TAMPERED"), "{out}");

        s.exec(r, &ws).cmd(["true"]).run().assert_ok();
        let entries = s.entries();
        let torn = entries.iter().find(|e| e["kind"] == "torn_tail").expect("torn_tail entry");
        assert_eq!(torn["data"]["bytes"], half.len());
        s.moat(r).args(["audit", "verify"]).run().assert_ok();
    }
}

fn recorder_tick() -> Duration {
    moat::audit::recorder::TICK
}

/// Mounts a tmpfs of `size` owned by the runner at `dir`; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(r: &Runner, dir: &Path, size: &str) -> Tmpfs {
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},uid={},gid={},mode=0700", r.uid, r.gid))
            .arg("moat-audit-test")
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

sandbox_test! {
    /// Fail closed: with the log on a read-only file system moat refuses to
    /// start the command; when the disk fills up mid-run the run is
    /// stopped (exit 125) with a message naming the audit log, and the
    /// command does not get to finish.
    fn unwritable_log_stops_the_run(r: &Runner) {
        let s = Setup::new(r);
        let ws = r.workspace();
        // Read-only: a bind of the (already used) data directory.
        s.exec(r, &ws).cmd(["true"]).run().assert_ok();
        let ro = r.dir_in(Path::new("/tmp"), "moat-audit-ro-");
        let sh = |c: &str| {
            let st = std::process::Command::new("sh").arg("-c").arg(c).status().unwrap();
            assert!(st.success(), "{c}");
        };
        sh(&format!("mount --bind {} {} && mount -o remount,bind,ro {}", s.data.path_str(), ro.path_str(), ro.path_str()));
        let _unmount = Tmpfs(ro.path().to_path_buf());
        let mut m = r.exec(&ws);
        m.arg("--profile").arg(&s.profile);
        s.env_data(&mut m, ro.path());
        let out = m.cmd(["sh", "-c", "touch ran"]).run();
        out.assert_moat_error().assert_stderr_has("audit log");
        assert!(!ws.join("ran").exists(), "the command ran without an audit log{out}");

        // Full disk mid-run.
        let small = r.dir_in(Path::new("/tmp"), "moat-audit-tmpfs-");
        let _tmpfs = Tmpfs::mount(r, small.path(), "2m");
        let mut m = r.exec(&ws);
        m.arg("--profile").arg(&s.profile);
        s.env_data(&mut m, small.path());
        let mut running = m.cmd(["sh", "-c", "echo READY; sleep 40; touch survived"]).spawn();
        running.wait_for_stdout("READY", Duration::from_secs(30));
        let filled = Instant::now();
        // Fills the tmpfs to the last block (dd fails with ENOSPC).
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}/fill", small.path_str()))
            .stderr(std::process::Stdio::null())
            .status();
        let out = running.finish(Duration::from_secs(30));
        out.assert_moat_error().assert_stderr_has("audit log").assert_stderr_has("stopped");
        assert!(
            filled.elapsed() < recorder_tick() * 3,
            "the run went on for {:?} after the disk filled",
            filled.elapsed()
        );
        assert!(!ws.join("survived").exists());
    }
}

/// Bad input gets a precise message and a non-zero exit, never a panic.
#[test]
fn bad_input_is_reported() {
    let r = Runner::root();
    let data = r.dir_in(Path::new("/tmp"), "moat-audit-bad-");
    let verify_file = |content: &[u8], extra: &[&str]| {
        let p = data.join(unique("log-"));
        std::fs::write(&p, content).unwrap();
        let mut m = r.moat();
        m.env("XDG_DATA_HOME", data.path())
            .args(["audit", "verify"])
            .arg(&p)
            .args(extra);
        m.run()
    };
    let key = {
        let mut m = r.moat();
        m.env("XDG_DATA_HOME", data.path()).args(["audit", "key"]);
        m.run().stdout.trim().to_string()
    };
    let out = verify_file(b"", &[]);
    out.assert_code(1).assert_stdout_has("empty");
    let out = verify_file(b"not json\n", &[]);
    out.assert_code(1)
        .assert_stdout_has("line 1 (byte 0): not an audit entry");
    let out = verify_file(b"{\"a\":1}\n", &["--key", &key]);
    out.assert_code(1)
        .assert_stdout_has("expected data, hash, kind");
    let out = verify_file(b"{}", &[]);
    out.assert_code(2).assert_stdout_has("incomplete tail");
    let out = verify_file(b"x\n", &["--key", "00"]);
    out.assert_moat_error().assert_stderr_has("64 hex digits");
    let mut m = r.moat();
    m.env("XDG_DATA_HOME", data.path())
        .args(["audit", "export", "no-such-run", "-o"])
        .arg(data.join("b.json"));
    m.run().assert_moat_error().assert_stderr_has("audit log");
    let mut m = r.moat();
    m.env("XDG_DATA_HOME", data.path())
        .args(["audit", "verify", "/nonexistent/log"]);
    m.run()
        .assert_moat_error()
        .assert_stderr_has("/nonexistent/log");
    let out = verify_file(b"\xff\xfe\n", &[]);
    out.assert_code(1).assert_stdout_has("not an audit entry");
    assert!(!out.stderr.contains("panicked"), "{out}");
}

sandbox_test! {
    /// A limit that ends the run is recorded as a `limit` entry before the
    /// `exit`, which says the run timed out; the end is still signed.
    fn limit_hits_are_recorded(r: &Runner) {
        let s = Setup::new(r);
        let ws = r.workspace();
        let p = write_profile(
            &s.fixtures,
            &format!("{}.toml", unique("audit-limit-")),
            "extends = \"default\"\n\n[limits]\ntimeout = \"1s\"\n",
        );
        let mut m = r.exec(&ws);
        m.arg("--profile").arg(&p);
        s.env(&mut m);
        m.cmd(["sleep", "20"]).run().assert_code(124);
        let entries = s.entries();
        let kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds[kinds.len() - 3..], ["limit", "exit", "checkpoint"], "{kinds:?}");
        let limit = &entries[kinds.len() - 3]["data"]["reason"];
        assert!(limit.as_str().unwrap().contains("timeout"), "{limit}");
        let exit = &entries[kinds.len() - 2]["data"];
        assert_eq!(exit["outcome"], "timed_out");
        assert_eq!(exit["exit_code"], 124);
        s.moat(r).args(["audit", "verify"]).run().assert_ok();
    }
}

/// Forks children that exit at once and are never reaped, so the pids
/// limit is reached and stays reached, and goes on asking for more; the
/// parent (the command) exits after a moment.
const FORK_AFTER_EXIT: &str = "
import os, time
if os.fork() == 0:
    while True:
        try:
            if os.fork() == 0:
                os._exit(0)
        except OSError:
            pass
time.sleep(0.3)
";

/// The end is recorded as soon as the command exits, while init tears the
/// sandbox down, with the limit counters as they are then; a process left
/// running may still be refused a fork before the kernel kills it, and
/// that is recorded after the teardown. Here a background fork loop runs
/// into the pids limit until the end: the count moat prints, the run
/// record's and the last `limit` event of the run agree, and the log
/// verifies.
#[test]
fn limits_hit_while_the_sandbox_ends_are_recorded() {
    let r = Runner::root();
    let s = Setup::new(&r);
    let ws = r.workspace();
    let profile = write_profile(
        &s.fixtures,
        &format!("{}.toml", unique("audit-pids-")),
        "extends = \"default\"\n\n[limits]\npids = 8\n",
    );
    let mut m = r.exec(&ws);
    m.arg("--profile").arg(&profile);
    s.env(&mut m);
    let out = m.cmd(["python3", "-c", FORK_AFTER_EXIT]).run();
    out.assert_ok();
    let said = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("moat: "))
        .filter(|l| l.starts_with("the pids limit (8) refused "))
        .unwrap_or_else(|| panic!("moat did not name the pids limit{out}"))
        .to_string();

    let entries = s.entries();
    let run = entries.last().unwrap()["run"].as_str().unwrap().to_string();
    let ours: Vec<&Value> = entries
        .iter()
        .filter(|e| e["run"] == run.as_str())
        .collect();
    let limits: Vec<&str> = ours
        .iter()
        .filter(|e| e["kind"] == "limit")
        .map(|e| e["data"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(limits.last(), Some(&said.as_str()), "{ours:#?}{out}");
    assert!(ours.iter().any(|e| e["kind"] == "exit"), "{ours:#?}");
    assert_eq!(ours.last().unwrap()["kind"], "checkpoint", "{ours:#?}");
    let v = s.moat(&r).args(["audit", "verify"]).run();
    v.assert_ok().assert_stdout_has("intact");

    let record_path = s.state.path().join("moat/runs").join(format!("{run}.json"));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    assert_eq!(record["ended_by"], json!([said]), "{record:#}");
    assert_eq!(record["exit_code"], 0, "{record:#}");
}
