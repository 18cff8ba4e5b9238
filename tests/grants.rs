//! Credential grants end to end: `moat grant` stores tokens encrypted;
//! `moat exec --grant` (or a profile's `grants`) gives a sandbox
//! placeholders only, and moat's proxy puts the real token into requests
//! to the grant's hosts, strips placeholders bound anywhere else, sends no
//! token over plain HTTP and masks the token in responses.
//!
//! The upstreams are tests/support/test_server.py on the host's loopback
//! (names from the `# moat-tests` /etc/hosts block); each grant's hosts
//! are pointed at them with `--host NAME:PORT`. Tokens are random per
//! test. The sandbox is told only the first half of a token, so it can
//! search its whole visible file system, every process's environment and
//! command line, and what it received, for anything starting like the
//! token; the host then checks that no match is the token itself.

mod common;
mod support;

use base64::Engine as _;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A random token of a provider's shape: `prefix` then `len` letters and
/// digits.
fn token(prefix: &str, len: usize) -> String {
    let mut bytes = vec![0u8; len];
    let f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut &f, &mut bytes).unwrap();
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = bytes
        .iter()
        .map(|b| ALNUM[*b as usize % ALNUM.len()] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// Every form a token can travel in: raw, base64, and the github Basic form.
fn forms(token: &str) -> Vec<String> {
    vec![
        token.to_string(),
        B64.encode(token),
        B64.encode(format!("x-access-token:{token}")),
    ]
}

/// One test's directories: fixtures, state (run records, request logs),
/// data (the credential store), and the test CA.
struct Setup {
    fixtures: Dir,
    state: Dir,
    data: Dir,
    ca: TestCa,
}

impl Setup {
    fn new(r: &Runner) -> Setup {
        require_hosts_block();
        let fixtures = fixture_dir(r);
        let ca = TestCa::new(&fixtures);
        Setup {
            state: r.dir_in(Path::new("/tmp"), "moat-grants-state-"),
            data: r.dir_in(Path::new("/tmp"), "moat-grants-data-"),
            fixtures,
            ca,
        }
    }

    fn moat(&self, r: &Runner) -> Moat {
        let mut m = r.moat();
        self.env(&mut m);
        m
    }

    fn env(&self, m: &mut Moat) {
        m.env("XDG_DATA_HOME", self.data.path())
            .env("XDG_STATE_HOME", self.state.path())
            .env("MOAT_KEY_BACKEND", "file")
            .env("MOAT_UPSTREAM_CA", &self.ca.ca_pem)
            .env("MOAT_TEST_LOOPBACK_ONLY", "1");
    }

    /// `moat grant add PROVIDER --name NAME ARGS` with the token on stdin.
    #[track_caller]
    fn add(&self, r: &Runner, provider: &str, name: &str, args: &[&str], token: &str) -> Output {
        let out = self
            .moat(r)
            .args(["grant", "add", provider, "--name", name])
            .args(args)
            .stdin(format!("{token}\n"))
            .run();
        out.assert_ok();
        out
    }

    fn store(&self) -> PathBuf {
        self.data.join("moat/credentials")
    }

    fn exec(&self, r: &Runner, ws: &Dir) -> Moat {
        let mut m = r.exec(ws);
        self.env(&mut m);
        m
    }

    fn profile(&self, body: &str) -> PathBuf {
        write_profile(
            &self.fixtures,
            &format!("{}.toml", unique("grants-")),
            &format!("extends = \"default\"\n{body}\n"),
        )
    }

    /// Every file moat wrote for the user: the store, run records and
    /// request logs.
    fn host_files(&self) -> Vec<PathBuf> {
        let mut v = walk(self.data.path());
        v.extend(walk(self.state.path()));
        v
    }
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Fails if any form of `token` is in any of `files`.
#[track_caller]
fn assert_not_in_files(files: &[PathBuf], token: &str, ctx: &dyn std::fmt::Display) {
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for form in forms(token) {
            assert!(
                !text.contains(&form),
                "a form of the token is in {}{ctx}",
                f.display()
            );
        }
    }
}

/// The headers the server received on requests for `path` (with any
/// query string).
fn received(server: &TestServer, path: &str) -> Vec<Vec<(String, String)>> {
    server
        .requests()
        .iter()
        .filter(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p == path || p.starts_with(&format!("{path}?")))
        })
        .map(|e| {
            e["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|kv| {
                    (
                        kv[0].as_str().unwrap().to_ascii_lowercase(),
                        kv[1].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .collect()
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The one request log of this setup's state directory, as JSON lines.
fn request_log(s: &Setup) -> (PathBuf, Vec<serde_json::Value>) {
    let logs = request_logs(&runs_dir(s.state.path()));
    assert_eq!(logs.len(), 1, "{logs:?}");
    let text = std::fs::read_to_string(&logs[0]).unwrap();
    let lines = parse_json_lines(&text, "request log");
    (logs[0].clone(), lines)
}

/// The credential actions logged for requests to `path`.
fn logged_uses(lines: &[serde_json::Value], path: &str) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .filter(|l| l["path"].as_str() == Some(path))
        .flat_map(|l| {
            l["credentials"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    format!(
                        "{}:{}",
                        c["action"].as_str().unwrap(),
                        c["grant"].as_str().unwrap()
                    )
                })
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

sandbox_test! {
    /// The store: a token from stdin or a named variable, never argv;
    /// files 0600 in a 0700 directory with no token in clear; `list` shows
    /// a fingerprint, never the token; a damaged file or a replaced key is
    /// an error naming the file; the file backend says where the key is.
    fn grant_store(r: &Runner) {
        let s = Setup::new(r);
        let tok = token("ghp_", 36);
        let out = s.add(r, "github", "gh", &[], &tok);
        out.assert_stderr_has("the credential key is kept in the file")
            .assert_stderr_has("MOAT_KEY_BACKEND=file");
        let oa = token("sk-proj-", 48);
        let out = s
            .moat(r)
            .args(["grant", "add", "openai", "--name", "oa", "--from-env", "MY_OPENAI"])
            .env("MY_OPENAI", &oa)
            .run();
        out.assert_ok();
        // A token on the command line is refused: there is no such argument.
        s.moat(r)
            .args(["grant", "add", "github", "--name", "argv", &tok])
            .run()
            .assert_code(2);
        assert!(!s.store().join("argv.json").exists());
        // No token: refused, nothing stored.
        s.moat(r)
            .args(["grant", "add", "github", "--name", "empty"])
            .stdin("\n")
            .run()
            .assert_moat_error()
            .assert_stderr_has("no token given");

        let list = s.moat(r).args(["grant", "list"]).run();
        list.assert_ok();
        let fp = {
            use sha2::Digest;
            let d = sha2::Sha256::digest(tok.as_bytes());
            d[..4].iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let line = list.stdout.lines().find(|l| l.starts_with("gh ")).unwrap_or_else(|| panic!("{list}"));
        assert!(line.contains("github") && line.contains(&fp) && line.contains("api.github.com"), "{list}");
        assert!(list.stdout.contains("oa ") && list.stdout.contains("api.openai.com"), "{list}");
        list.assert_no_leak(&tok).assert_no_leak(&oa);
        s.moat(r).args(["grant", "check", "gh"]).run().assert_ok().assert_stdout_has("gh: OK");

        let dir_mode = std::fs::metadata(s.store()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let files = walk(s.data.path());
        for f in &files {
            let m = std::fs::metadata(f).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{}", f.display());
            assert_eq!(std::os::unix::fs::MetadataExt::uid(&m), r.uid, "{}", f.display());
        }
        assert!(files.iter().any(|f| f.ends_with("moat/credentials.key")), "{files:?}");
        assert_not_in_files(&files, &tok, &list);
        assert_not_in_files(&files, &oa, &list);

        // Tampered ciphertext: detected, the file named.
        let gh = s.store().join("gh.json");
        let orig = std::fs::read_to_string(&gh).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&orig).unwrap();
        let mut ct = B64.decode(v["ciphertext"].as_str().unwrap()).unwrap();
        ct[5] ^= 1;
        v["ciphertext"] = B64.encode(&ct).into();
        std::fs::write(&gh, v.to_string()).unwrap();
        s.moat(r).args(["grant", "check", "gh"]).run()
            .assert_moat_error()
            .assert_stderr_has(&gh.display().to_string())
            .assert_stderr_has("decryption failed");
        // A run asking for it fails before anything starts.
        let ws = r.workspace();
        s.exec(r, &ws).args(["--grant", "gh"]).cmd(["true"]).run()
            .assert_moat_error()
            .assert_stderr_has(&gh.display().to_string());
        // Garbage: named.
        std::fs::write(&gh, "{ not json").unwrap();
        s.moat(r).args(["grant", "check", "gh"]).run()
            .assert_moat_error()
            .assert_stderr_has(&gh.display().to_string())
            .assert_stderr_has("damaged");
        std::fs::write(&gh, &orig).unwrap();
        s.moat(r).args(["grant", "check", "gh"]).run().assert_ok();
        // Wrong key: the key file replaced by another key.
        let key = s.data.join("moat/credentials.key");
        let other = format!("moat-credential-key-v1 {}\n", B64.encode([7u8; 32]));
        std::fs::write(&key, other).unwrap();
        s.moat(r).args(["grant", "check", "gh"]).run()
            .assert_moat_error()
            .assert_stderr_has(&gh.display().to_string())
            .assert_stderr_has("encrypted with another key");
        // Missing key file.
        std::fs::remove_file(&key).unwrap();
        s.moat(r).args(["grant", "check", "oa"]).run()
            .assert_moat_error()
            .assert_stderr_has("key file")
            .assert_stderr_has("is missing");

        s.moat(r).args(["grant", "rm", "gh"]).run().assert_ok();
        assert!(!gh.exists());
        s.moat(r).args(["grant", "rm", "gh"]).run().assert_moat_error();
        // An unknown grant stops a run with moat's error.
        s.exec(r, &ws).args(["--grant", "nosuch"]).cmd(["true"]).run()
            .assert_moat_error()
            .assert_stderr_has("no credential named `nosuch`");
    }
}

/// The sandbox side of the leak search: lines of everything it can see
/// that start like the token (its first half `half`), and like the two
/// base64 forms (their prefixes `b1`, `b2`). The host checks that none of
/// these is the token. The sandbox's `/` is not listable (Landlock), so
/// the file search walks every mount point it has, /dev/shm included.
fn leak_search(half: &str, b1: &str, b2: &str) -> String {
    format!(
        r#"
# A control: the search must find this file.
echo "{half}CONTROL" > /tmp/leak-control
pats='-e {half}.\{{0,200\}} -e {b1}.\{{0,200\}} -e {b2}.\{{0,200\}}'
echo "== env"; env | grep -ao $pats | head -n 5
echo "== proc"
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
  tr '\0' '\n' < "$f" 2>/dev/null | grep -ao $pats | head -n 3
done
echo "== files"
mounts=$(awk '{{print $5}}' /proc/self/mountinfo | grep -v '^/proc\|^/sys\|^/dev\|^/$' | sort -u)
grep -rsao $pats $mounts /dev/shm --exclude-dir=proc --exclude-dir=sys | head -n 100
echo SEARCH_DONE=1
"#
    )
}

sandbox_test! {
    /// Real tokens reach the test server in each provider's header form on
    /// TLS requests to the granted host; the sandbox sees placeholders of
    /// the right shape only and finds no token anywhere it can look, even
    /// though the server echoes the request headers back; placeholders to
    /// a host that is not granted are stripped; plain HTTP to a granted
    /// host carries no token; the token is in none of moat's output, argv,
    /// environment, request log or run record.
    fn tokens_reach_the_server_and_never_the_sandbox(r: &Runner) {
        let s = Setup::new(r);
        let tls = TestServer::start(Kind::Https(&s.ca), &s.fixtures);
        let other = TestServer::start(Kind::Https(&s.ca), &s.fixtures);
        let plain = TestServer::start(Kind::Http, &s.fixtures);
        let (p, po, pp) = (tls.port, other.port, plain.port);
        let gh = token("ghp_", 36);
        let an = token("sk-ant-api03-", 80);
        let oat = token("sk-ant-oat01-", 80);
        let oa = token("sk-proj-", 48);
        let hd = token("hdr_", 40);
        let host = |h: &str, port: u16| format!("{h}.moat.test:{port}");
        s.add(r, "github", "gh", &["--host", &host("allowed", p), "--host", &host("plain", pp)], &gh);
        s.add(r, "anthropic", "an", &["--host", &host("git", p)], &an);
        s.add(r, "anthropic", "oat", &["--host", &host("denied", p), "--env", "ANTHROPIC_AUTH_TOKEN"], &oat);
        s.add(r, "openai", "oa", &["--host", &host("plain", p)], &oa);
        s.add(r, "header", "hd", &["--host", &host("allowed", po),
            "--header", "X-Custom-Auth", "--value-template", "Token {token}", "--env", "CUSTOM_TOKEN"], &hd);
        // `allowed.moat.test:<other port>` is hd's host; the same name on
        // the tls port is gh's. A third host, not granted, is allowed in
        // the profile: the strip test's target.
        let profile = s.profile(&format!(
            "grants = [\"gh\", \"an\"]\n[network]\nallow = [\"allowed.moat.test:{pp}\", \"git.moat.test:{po}\"]"
        ));

        let half = &gh[..gh.len() / 2];
        let b1 = &B64.encode(&gh)[..24];
        let b2 = &B64.encode(format!("x-access-token:{gh}"))[..32];
        let ws = r.workspace();
        let script = format!(
            r#"
echo "GH_TOKEN=$GH_TOKEN"
echo "GITHUB_TOKEN=$GITHUB_TOKEN"
echo "ANTHROPIC_API_KEY=$ANTHROPIC_API_KEY"
echo "ANTHROPIC_AUTH_TOKEN=$ANTHROPIC_AUTH_TOKEN"
echo "OPENAI_API_KEY=$OPENAI_API_KEY"
echo "CUSTOM_TOKEN=$CUSTOM_TOKEN"
c() {{ curl -sS --max-time 15 -D - "$@"; echo; }}
c -H "Authorization: Bearer $GH_TOKEN" https://allowed.moat.test:{p}/reflect/gh-api
c https://allowed.moat.test:{p}/reflect/gh-added
c -H "x-api-key: $ANTHROPIC_API_KEY" https://git.moat.test:{p}/reflect/an
c -H "x-api-key: $ANTHROPIC_API_KEY" https://denied.moat.test:{p}/reflect/oat
c -H "Authorization: Bearer $OPENAI_API_KEY" https://plain.moat.test:{p}/reflect/oa
c -H "X-Custom-Auth: Token $CUSTOM_TOKEN" https://allowed.moat.test:{po}/reflect/hd
c -H "Authorization: Bearer $GH_TOKEN" -H "X-Leak: $OPENAI_API_KEY" "https://git.moat.test:{po}/reflect/strip?a=1&key=$OPENAI_API_KEY"
c -H "Authorization: Bearer $GH_TOKEN" http://plain.moat.test:{pp}/reflect/plain
echo READY
sleep 2
{search}
"#,
            search = leak_search(half, b1, b2),
        );
        let mut run = s.exec(r, &ws);
        run.arg("--profile").arg(&profile).args(["--grant", "oat", "--grant", "oa", "--grant", "hd"])
            .cmd(["sh", "-c", &script])
            .timeout(Duration::from_secs(240));
        let mut running = run.spawn();
        running.wait_for_stdout("READY", Duration::from_secs(60));
        // moat's own argv and environment, while it runs.
        for what in ["cmdline", "environ"] {
            let bytes = std::fs::read(format!("/proc/{}/{what}", running.pid())).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            for t in [&gh, &an, &oat, &oa, &hd] {
                assert!(!text.contains(t.as_str()), "a token is in moat's {what}");
            }
        }
        let out = running.finish(Duration::from_secs(240));
        out.assert_ok().assert_field("SEARCH_DONE", "1");

        // Placeholders: the right shape, obviously fake, one per grant.
        let ph = |k: &str| out.field(k).unwrap_or_else(|| panic!("no {k}{out}")).to_string();
        let gh_ph = ph("GH_TOKEN");
        assert_eq!(gh_ph, ph("GITHUB_TOKEN"));
        assert!(gh_ph.starts_with("ghp_moat") && gh_ph.len() == 40, "{out}");
        assert!(ph("ANTHROPIC_API_KEY").starts_with("sk-ant-api03-moat"), "{out}");
        assert!(ph("ANTHROPIC_AUTH_TOKEN").starts_with("sk-ant-api03-moat"), "{out}");
        assert_ne!(ph("ANTHROPIC_API_KEY"), ph("ANTHROPIC_AUTH_TOKEN"));
        assert!(ph("OPENAI_API_KEY").starts_with("sk-proj-moat"), "{out}");
        assert!(ph("CUSTOM_TOKEN").starts_with("moat-placeholder-"), "{out}");

        // What the servers received.
        let one = |srv: &TestServer, path: &str| {
            let r = received(srv, path);
            assert_eq!(r.len(), 1, "{path}: {r:?}{out}");
            r.into_iter().next().unwrap()
        };
        let h = one(&tls, "/reflect/gh-api");
        assert_eq!(header(&h, "authorization"), Some(format!("Bearer {gh}").as_str()), "{out}");
        assert_eq!(header(&h, "accept-encoding"), Some("identity"));
        let h = one(&tls, "/reflect/gh-added");
        assert_eq!(header(&h, "authorization"), Some(format!("Bearer {gh}").as_str()), "{out}");
        let h = one(&tls, "/reflect/an");
        assert_eq!(header(&h, "x-api-key"), Some(an.as_str()), "{out}");
        let h = one(&tls, "/reflect/oat");
        assert_eq!(header(&h, "authorization"), Some(format!("Bearer {oat}").as_str()), "{out}");
        assert_eq!(header(&h, "x-api-key"), None, "the api-key placeholder must be stripped{out}");
        let h = one(&tls, "/reflect/oa");
        assert_eq!(header(&h, "authorization"), Some(format!("Bearer {oa}").as_str()), "{out}");
        let h = one(&other, "/reflect/hd");
        assert_eq!(header(&h, "x-custom-auth"), Some(format!("Token {hd}").as_str()), "{out}");
        let h = one(&other, "/reflect/strip");
        assert_eq!(header(&h, "authorization"), None, "placeholder to a non-granted host{out}");
        assert_eq!(header(&h, "x-leak"), None, "placeholder to a non-granted host{out}");
        let paths: Vec<String> = other
            .requests()
            .iter()
            .filter_map(|e| e["path"].as_str().map(str::to_string))
            .filter(|p| p.starts_with("/reflect/strip"))
            .collect();
        assert_eq!(paths, ["/reflect/strip?a=1"], "placeholder in a query string{out}");
        let h = one(&plain, "/reflect/plain");
        assert_eq!(header(&h, "authorization"), None, "no token over plain HTTP{out}");

        // The servers echoed the token back in headers and body: masked.
        let mask = "*".repeat(gh.len());
        assert!(out.stdout.contains(&format!("Bearer {mask}")), "echoed token must be masked{out}");
        assert!(out.stdout.to_ascii_lowercase().contains(&format!("x-reflect-authorization: bearer {mask}")), "{out}");
        for t in [&gh, &an, &oat, &oa, &hd] {
            for f in forms(t) {
                assert!(!out.stdout.contains(&f) && !out.stderr.contains(&f), "a token form leaked{out}");
            }
        }
        // The leak search found the first half only where the script itself
        // carries it, never followed by the rest.
        assert!(
            out.stdout.contains(&format!("/tmp/leak-control:{half}CONTROL")),
            "the file search must find its control file{out}"
        );

        // moat's files: request log and run record hold no token, and the
        // log says what each grant did.
        let files = s.host_files();
        for t in [&gh, &an, &oat, &oa, &hd] {
            assert_not_in_files(&files, t, &out);
        }
        let (_, lines) = request_log(&s);
        assert_eq!(logged_uses(&lines, "/reflect/gh-api"), ["inject:gh", "redact:gh"], "{lines:?}");
        assert_eq!(logged_uses(&lines, "/reflect/oat"), ["inject:oat", "redact:oat", "strip:an"], "{lines:?}");
        assert_eq!(logged_uses(&lines, "/reflect/strip"), ["strip:gh", "strip:oa"], "{lines:?}");
        assert_eq!(logged_uses(&lines, "/reflect/plain"), ["strip:gh", "withheld:gh"], "{lines:?}");
        // The audit log (beside the store) carries the same actions.
        let audit_has_inject = walk(&s.data.join("moat")).iter().any(|f| {
            std::fs::read_to_string(f)
                .is_ok_and(|t| {
                    // Key order depends on the writer (the audit log sorts).
                    t.contains(r#"{"grant":"gh","action":"inject"}"#)
                        || t.contains(r#"{"action":"inject","grant":"gh"}"#)
                })
        });
        assert!(audit_has_inject, "the audit log must record the injection{out}");
        let shown = s.moat(r).args(["log", "latest"]).run();
        shown.assert_ok().assert_stdout_has("inject:gh").assert_stdout_has("strip:oa");
    }
}

sandbox_test! {
    /// A large streamed response that carries the token across every chunk
    /// boundary arrives whole, with each copy masked; a compressed response
    /// from a granted host is refused (502) rather than passed unchecked.
    fn redaction_streams_and_compressed_bodies_are_refused(r: &Runner) {
        let s = Setup::new(r);
        let tls = TestServer::start(Kind::Https(&s.ca), &s.fixtures);
        let p = tls.port;
        let gh = token("ghp_", 36);
        s.add(r, "github", "gh", &["--host", &format!("allowed.moat.test:{p}")], &gh);
        let half = &gh[..gh.len() / 2];
        let n = 3000;
        let script = format!(
            r#"
curl -sS --max-time 60 -o /tmp/big https://allowed.moat.test:{p}/stream/{n}
echo "BIG_EXIT=$?"
echo "BIG_SIZE=$(wc -c < /tmp/big)"
echo "MASKED=$(grep -o 'Bearer \*\{{{len}\}}' /tmp/big | wc -l)"
echo "HALF=$(grep -c '{half}' /tmp/big)"
curl -sS --max-time 15 -o /dev/null -D /tmp/gz.h -w '%{{http_code}}' https://allowed.moat.test:{p}/gzip > /tmp/gz.code
echo "GZIP_CODE=$(cat /tmp/gz.code)"
echo "GZIP_ERR=$(grep -i '^x-moat-error:' /tmp/gz.h | tr -d '\r')"
"#,
            len = gh.len()
        );
        let ws = r.workspace();
        let out = s
            .exec(r, &ws)
            .args(["--grant", "gh"])
            .cmd(["sh", "-c", &script])
            .timeout(Duration::from_secs(120))
            .run();
        out.assert_ok()
            .assert_field("BIG_EXIT", "0")
            .assert_field("BIG_SIZE", &(n * 1000).to_string())
            .assert_field("MASKED", &(n - 1).to_string())
            .assert_field("HALF", "0")
            .assert_field("GZIP_CODE", "502");
        assert!(out.field("GZIP_ERR").unwrap().contains("compressed"), "{out}");
        let h = &received(&tls, &format!("/stream/{n}"))[0];
        assert_eq!(header(h, "authorization"), Some(format!("Bearer {gh}").as_str()));
        assert_eq!(header(h, "accept-encoding"), Some("identity"));
        let (_, lines) = request_log(&s);
        assert_eq!(logged_uses(&lines, &format!("/stream/{n}")), ["inject:gh", "redact:gh"]);
        assert_not_in_files(&s.host_files(), &gh, &out);
    }
}

sandbox_test! {
    /// git clones over HTTPS with no credentials of its own: the proxy
    /// adds github's Basic x-access-token form on the smart-HTTP requests.
    fn git_clone_gets_the_github_basic_form(r: &Runner) {
        let s = Setup::new(r);
        let root = tempfile::Builder::new().prefix("moat-git-").tempdir().unwrap();
        let bare = root.path().join("repo.git");
        let seed = root.path().join("seed");
        let git = |args: &[&str], dir: &Path| {
            let o = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@moat.test", "-c", "init.defaultBranch=main"])
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        };
        git(&["init", "-q", "--bare", bare.to_str().unwrap()], root.path());
        std::fs::create_dir(&seed).unwrap();
        git(&["init", "-q"], &seed);
        std::fs::write(seed.join("seed.txt"), "seeded\n").unwrap();
        git(&["add", "seed.txt"], &seed);
        git(&["commit", "-q", "-m", "seed"], &seed);
        git(&["push", "-q", bare.to_str().unwrap(), "HEAD:main"], &seed);
        let server = TestServer::start(Kind::Git(&s.ca, root.path()), &s.fixtures);
        let port = server.port;
        let gh = token("ghp_", 36);
        s.add(r, "github", "gh", &["--host", &format!("git.moat.test:{port}")], &gh);
        let ws = r.workspace();
        let out = s
            .exec(r, &ws)
            .args(["--grant", "gh"])
            .cmd(["sh", "-c", &format!(
                "git clone -q https://git.moat.test:{port}/repo.git clone && echo \"SEED=$(cat clone/seed.txt)\""
            )])
            .timeout(Duration::from_secs(60))
            .run();
        out.assert_ok().assert_field("SEED", "seeded");
        let want = format!("Basic {}", B64.encode(format!("x-access-token:{gh}")));
        for path in ["/repo.git/info/refs", "/repo.git/git-upload-pack"] {
            let reqs = received(&server, path);
            assert!(!reqs.is_empty(), "{path}{out}");
            for h in reqs {
                assert_eq!(header(&h, "authorization"), Some(want.as_str()), "{path}{out}");
            }
        }
        let (_, lines) = request_log(&s);
        assert!(logged_uses(&lines, "/repo.git/info/refs").contains(&"inject:gh".to_string()));
        out.assert_no_leak(&gh);
    }
}

/// A private D-Bus session bus with GNOME Keyring's Secret Service on it,
/// run as the runner's user with its keyrings under `data`; both stop
/// when dropped (the keyring daemon exits when its bus goes away).
struct Keyring {
    bus: String,
    bus_pid: i32,
    runtime: Dir,
}

impl Keyring {
    fn start(r: &Runner, s: &Setup) -> Keyring {
        let runtime = r.dir_in(Path::new("/tmp"), "moat-grants-run-");
        std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut c = r.command("dbus-daemon");
        c.args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .env("XDG_RUNTIME_DIR", runtime.path());
        let out = c
            .output()
            .expect("run dbus-daemon (scripts/test installs dbus)");
        assert!(
            out.status.success(),
            "dbus-daemon: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let bus = lines.next().unwrap().to_string();
        let bus_pid: i32 = lines.next().unwrap().trim().parse().unwrap();
        let k = Keyring {
            bus,
            bus_pid,
            runtime,
        };
        let mut c = r.command("/bin/sh");
        c.args([
            "-c",
            "printf moat-test-password | gnome-keyring-daemon --unlock --components=secrets --daemonize",
        ]);
        k.env_std(&mut c, s);
        let out = c
            .output()
            .expect("run gnome-keyring-daemon (scripts/test installs gnome-keyring)");
        assert!(
            out.status.success(),
            "gnome-keyring-daemon: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        k
    }

    fn env_std(&self, c: &mut std::process::Command, s: &Setup) {
        c.env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("XDG_RUNTIME_DIR", self.runtime.path())
            .env("XDG_DATA_HOME", s.data.path());
    }

    fn env(&self, m: &mut Moat) {
        m.env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("XDG_RUNTIME_DIR", self.runtime.path());
    }

    /// What the keyring holds for moat's credential key, via secret-tool.
    fn lookup(&self, r: &Runner, s: &Setup) -> String {
        let mut c = r.command("secret-tool");
        c.args([
            "lookup",
            "application",
            "moat",
            "moat-item",
            "credential-key",
        ]);
        self.env_std(&mut c, s);
        let out = c
            .output()
            .expect("run secret-tool (scripts/test installs libsecret-tools)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is the
        // bus daemon this test started.
        unsafe {
            libc::kill(self.bus_pid, libc::SIGTERM);
        }
    }
}

sandbox_test! {
    /// With a Secret Service on the session bus, the data key goes into
    /// the keyring and no key file is written; a run decrypts through it;
    /// without the keyring the credential's file is named in a clear
    /// error, and forcing the keyring backend where there is none fails.
    fn keyring_backend(r: &Runner) {
        let s = Setup::new(r);
        let ring = Keyring::start(r, &s);
        let tls = TestServer::start(Kind::Https(&s.ca), &s.fixtures);
        let gh = token("ghp_", 36);
        let mut m = s.moat(r);
        m.env("MOAT_KEY_BACKEND", "auto");
        ring.env(&mut m);
        let out = m
            .args(["grant", "add", "github", "--name", "gh", "--host"])
            .arg(format!("allowed.moat.test:{}", tls.port))
            .stdin(format!("{gh}\n"))
            .run();
        out.assert_ok();
        assert!(!out.stderr.contains("credentials.key"), "no key-file notice with a keyring{out}");
        assert!(!s.data.join("moat/credentials.key").exists(), "the key must not be in a file{out}");
        let stored = ring.lookup(r, &s);
        assert_eq!(B64.decode(&stored).map(|k| k.len()).ok(), Some(32), "key in the keyring: {stored:?}{out}");
        assert_not_in_files(&walk(s.data.path()), &gh, &out);

        let ws = r.workspace();
        let mut m = s.exec(r, &ws);
        m.env("MOAT_KEY_BACKEND", "auto");
        ring.env(&mut m);
        let out = m
            .args(["--grant", "gh"])
            .cmd(["sh", "-c", &format!("curl -sS --max-time 15 https://allowed.moat.test:{}/reflect/kr", tls.port)])
            .run();
        out.assert_ok().assert_no_leak(&gh);
        let h = &received(&tls, "/reflect/kr")[0];
        assert_eq!(header(h, "authorization"), Some(format!("Bearer {gh}").as_str()), "{out}");

        // No session bus: the file is named, the keyring blamed.
        let file = s.store().join("gh.json");
        let mut m = s.moat(r);
        m.env("MOAT_KEY_BACKEND", "auto").env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
        m.args(["grant", "check", "gh"]).run()
            .assert_moat_error()
            .assert_stderr_has(&file.display().to_string())
            .assert_stderr_has("desktop keyring");
        let mut m = s.moat(r);
        m.env("MOAT_KEY_BACKEND", "keyring").env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
        m.args(["grant", "add", "openai", "--name", "oa"]).stdin("sk-x\n").run()
            .assert_moat_error()
            .assert_stderr_has("MOAT_KEY_BACKEND=keyring");
        assert!(!s.store().join("oa.json").exists());
    }
}

/// A small tmpfs the test fills up, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(r: &Runner) -> SmallFs {
        let dir = std::env::temp_dir().join(unique("moat-grants-full-"));
        std::fs::create_dir(&dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size=256k,mode=0755,uid={},gid={}", r.uid, r.gid))
            .arg("tmpfs")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs on {}", dir.display());
        SmallFs(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

sandbox_test! {
    /// A full disk while replacing a credential: `grant add` fails with
    /// moat's error, and the old credential is intact and still decrypts,
    /// with no temporary file left behind.
    fn full_disk_keeps_the_old_credential(r: &Runner) {
        let s = Setup::new(r);
        let fs = SmallFs::mount(r);
        let old = token("ghp_", 36);
        let add = |tok: &str, replace: bool| {
            let mut m = s.moat(r);
            m.env("XDG_DATA_HOME", &fs.0).args(["grant", "add", "github", "--name", "gh"]);
            if replace {
                m.arg("--replace");
            }
            m.stdin(format!("{tok}\n")).run()
        };
        add(&old, false).assert_ok();
        // Fill what is left.
        let fill = fs.0.join("fill");
        let mut f = std::fs::File::create(&fill).unwrap();
        let block = vec![0u8; 4096];
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
        drop(f);
        let new = token("ghp_", 4000);
        let out = add(&new, true);
        out.assert_moat_error().assert_stderr_has("gh.json");
        let check = {
            let mut m = s.moat(r);
            m.env("XDG_DATA_HOME", &fs.0).args(["grant", "check", "gh"]).run()
        };
        let fp = {
            use sha2::Digest;
            let d = sha2::Sha256::digest(old.as_bytes());
            d[..4].iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        check.assert_ok().assert_stdout_has(&fp);
        let left: Vec<_> = std::fs::read_dir(fs.0.join("moat/credentials"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["gh.json"], "{out}");
    }
}

sandbox_test! {
    /// moat's data directory (credential files, key file, CA key) stays
    /// hidden even when a profile binds the directory above it, or the
    /// workspace contains it.
    fn the_store_is_hidden_from_the_sandbox(r: &Runner) {
        let s = Setup::new(r);
        let gh = token("ghp_", 36);
        s.add(r, "github", "gh", &[], &gh);
        let data = s.data.path().display().to_string();
        let profile = s.profile(&format!("[filesystem]\nread_only = [\"{data}\"]"));
        let ws = r.workspace();
        let script = format!(
            "ls -A {data}; echo \"STORE=$(ls -A {data}/moat | tr '\\n' ' ')\"; cat {data}/moat/credentials.key; echo CAT_EXIT=$?"
        );
        let out = s.exec(r, &ws).arg("--profile").arg(&profile).cmd(["sh", "-c", &script]).run();
        out.assert_ok().assert_field("STORE", "").assert_stdout_has("moat");
        assert_ne!(out.field("CAT_EXIT"), Some("0"), "{out}");
        // The workspace itself holding the data directory.
        let out = s
            .exec(r, &s.data)
            .cmd(["sh", "-c", "echo \"STORE=$(ls -A moat | tr '\\n' ' ')\""])
            .run();
        out.assert_ok().assert_field("STORE", "");
    }
}

/// Drives `moat grant add` on a terminal: waits for the prompt, types the
/// token, and prints everything the terminal showed.
const PTY_DRIVER: &str = r#"
import os, pty, sys, time
moat, name, token = sys.argv[1], sys.argv[2], sys.argv[3]
pid, fd = pty.fork()
if pid == 0:
    os.execv(moat, [moat, "grant", "add", "github", "--name", name])
seen = b""
deadline = time.time() + 20
while b"not echoed" not in seen and time.time() < deadline:
    seen += os.read(fd, 1024)
time.sleep(0.2)
os.write(fd, token.encode() + b"\n")
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode("utf-8", "replace"))
print("\nEXIT=%d" % os.waitstatus_to_exitcode(status))
"#;

sandbox_test! {
    /// On a terminal the token is asked for without echo: what the
    /// terminal shows has the prompt and not the token, and the token
    /// stored is the one typed.
    fn tty_prompt_does_not_echo(r: &Runner) {
        let s = Setup::new(r);
        let tok = token("ghp_", 36);
        let mut c = r.command("/usr/bin/python3");
        c.arg("-c")
            .arg(PTY_DRIVER)
            .arg(moat_bin(r.mode))
            .arg("tty")
            .arg(&tok)
            .env("XDG_DATA_HOME", s.data.path())
            .env("MOAT_KEY_BACKEND", "file");
        let out = run_command(c, "pty driver".into(), None, TIMEOUT);
        out.assert_ok().assert_field("EXIT", "0");
        assert!(out.stdout.contains("Token for `tty`"), "{out}");
        // The driver's own argv carries the token; what the terminal showed
        // must not.
        let shown: String = out.stdout.lines().filter(|l| !l.starts_with("EXIT=")).collect();
        assert!(!shown.contains(&tok), "the token was echoed{out}");
        let fp = {
            use sha2::Digest;
            let d = sha2::Sha256::digest(tok.as_bytes());
            d[..4].iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        s.moat(r).args(["grant", "check", "tty"]).run().assert_ok().assert_stdout_has(&fp);
    }
}

sandbox_test! {
    /// `grant add --replace` killed with SIGKILL between writing its new
    /// file and renaming it over the old one (strace holds the rename):
    /// the old credential is intact and decrypts, the half-done temp file
    /// is ignored by `list`, and the store keeps working.
    fn kill_during_write_keeps_the_old_credential(r: &Runner) {
        let s = Setup::new(r);
        let old = token("ghp_", 36);
        s.add(r, "github", "gh", &[], &old);
        let new = token("ghp_", 36);
        let mut c = r.command("strace");
        c.args(["-qq", "-f", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2"])
            .args(["-e", "inject=rename,renameat,renameat2:delay_enter=5000000"])
            .arg(moat_bin(r.mode))
            .args(["grant", "add", "github", "--name", "gh", "--replace"])
            .env("XDG_DATA_HOME", s.data.path())
            .env("MOAT_KEY_BACKEND", "file")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().expect("run strace (scripts/test installs it)");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            writeln!(stdin, "{new}").unwrap();
        }
        // The temp file's name carries the writer's pid.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let tmp = loop {
            let found = std::fs::read_dir(s.store())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with(".tmp-gh.json-"));
            if let Some(n) = found {
                break n;
            }
            assert!(std::time::Instant::now() < deadline, "no temp file appeared");
            std::thread::sleep(Duration::from_millis(20));
        };
        let pid: i32 = tmp.split('-').nth(2).unwrap().parse().unwrap();
        // SAFETY: kill has no memory-safety preconditions; `pid` is the
        // moat this test started (named in its own temp file).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let st = child.wait().unwrap();
        assert!(!st.success(), "the killed write must not report success");

        assert!(s.store().join(&tmp).exists(), "the temp file of the killed write stays");
        let fp = |t: &str| {
            use sha2::Digest;
            let d = sha2::Sha256::digest(t.as_bytes());
            d[..4].iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        s.moat(r).args(["grant", "check", "gh"]).run().assert_ok().assert_stdout_has(&fp(&old));
        let list = s.moat(r).args(["grant", "list"]).run();
        list.assert_ok();
        assert_eq!(list.stdout.lines().count(), 2, "header and gh only{list}");
        s.add(r, "github", "gh2", &[], &new);
        s.moat(r).args(["grant", "check", "gh2"]).run().assert_ok().assert_stdout_has(&fp(&new));
    }
}
