//! The request log: one JSON line per request in
//! `<runs dir>/<run id>.requests.jsonl`, written by one thread so lines never
//! interleave, and `moat log RUN` to read it back.
//!
//! What goes in a line is fixed by [`Entry`]: never a header value, never a
//! query string (tokens travel in both), only the path.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// One request as the log keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Unix time in milliseconds when the request arrived.
    pub ts_ms: u64,
    pub run: String,
    /// `GET`, `POST`, ...; `CONNECT` for tunnels and for refused CONNECTs;
    /// `-` when the request could not be parsed.
    pub method: String,
    /// `http`, `https` (intercepted TLS) or `tunnel` (CONNECT passed through
    /// without interception, or refused before it could be).
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Without the query string.
    pub path: String,
    /// The status moat sent the client; `None` when it sent none (a tunnel
    /// whose TLS handshake failed, a client that went away first).
    pub status: Option<u16>,
    /// Body bytes (tunnel bytes) from the client to the server.
    pub bytes_up: u64,
    /// Body bytes (tunnel bytes) from the server to the client.
    pub bytes_down: u64,
    pub duration_ms: u64,
    /// `allow` or `deny` (refused by the policy or as malformed).
    pub decision: String,
    /// Why it was refused, or what went wrong; empty when nothing did.
    pub reason: String,
    /// What credential grants did to this request: the grant's name and
    /// the action, never a value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialUse>,
}

/// One use of a credential grant on a request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CredentialUse {
    /// The grant's name (`moat grant list`).
    pub grant: String,
    /// `inject` (the token was put into the request), `strip` (a header
    /// carrying a placeholder was removed), `redact` (the token was masked
    /// in the response), `withheld` (a plain-HTTP request to a granted host
    /// went without the token).
    pub action: String,
}

// Boxing the entry would cost an allocation per request; `Stop` is sent
// once.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Entry(Entry),
    /// Write what is queued, flush, then say so on the sender.
    Stop(mpsc::Sender<()>),
}

/// The log file of run `id` in `runs_dir`.
pub fn path(runs_dir: &Path, id: &str) -> PathBuf {
    runs_dir.join(format!("{id}.requests.jsonl"))
}

const SUFFIX: &str = ".requests.jsonl";

/// The writer thread and the channel into it. Sending never blocks and
/// never touches the file on the request path; the thread batches what
/// queued up and flushes when the queue runs dry.
pub(crate) struct Writer {
    pub tx: mpsc::Sender<Msg>,
    /// Until `finish`. The thread is never joined: `finish` waits for its
    /// word that everything is written, not for it to end.
    running: bool,
}

impl Writer {
    /// Opens (appends to, creating 0600) `path`. With `audit`, every entry
    /// also goes to the audit log, after it is written here.
    pub fn open(
        path: &Path,
        run: String,
        audit: Option<std::sync::Arc<crate::audit::Recorder>>,
    ) -> std::io::Result<Writer> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        let (tx, rx) = mpsc::channel();
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("moat-proxy-log".into())
            .spawn(move || write_loop(file, rx, run, shown, audit))?;
        Ok(Writer { tx, running: true })
    }

    /// Writes what is queued, flushes, and ends the thread. Returns once
    /// everything is written (and audited), without waiting for the thread
    /// to wind down: nothing it does after that matters.
    pub fn finish(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        let (done_tx, done_rx) = mpsc::channel();
        // A thread that is gone (or dies before it answers) drops the
        // sender, and the wait ends at once.
        if self.tx.send(Msg::Stop(done_tx)).is_ok() {
            let _ = done_rx.recv();
        }
    }

    /// For a log that was sent nothing: its thread ends by itself once
    /// every sender is gone, and is not waited for.
    pub fn forget(&mut self) {
        self.running = false;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn write_loop(
    file: File,
    rx: mpsc::Receiver<Msg>,
    run: String,
    shown: String,
    audit: Option<std::sync::Arc<crate::audit::Recorder>>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let mut failed = false;
    let mut line = Vec::with_capacity(512);
    // The batch's entries for the audit log, recorded in one locked write
    // when the queue runs dry. A failure there stops the run (the
    // recorder kills the sandbox), so it needs no handling here.
    let mut audited: Vec<serde_json::Value> = Vec::new();
    let audit_on = audit.is_some();
    let mut write = |out: &mut BufWriter<File>,
                     mut e: Entry,
                     failed: &mut bool,
                     audited: &mut Vec<serde_json::Value>| {
        e.run.clone_from(&run);
        if audit_on {
            if let Ok(v) = serde_json::to_value(&e) {
                audited.push(v);
            }
        }
        line.clear();
        if serde_json::to_writer(&mut line, &e).is_err() {
            return;
        }
        line.push(b'\n');
        if let Err(err) = out.write_all(&line) {
            if !*failed {
                eprintln!("moat: request log {shown}: {err}");
                *failed = true;
            }
        }
    };
    let mut done = None;
    'outer: while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Entry(e) => write(&mut out, e, &mut failed, &mut audited),
            Msg::Stop(ack) => {
                done = Some(ack);
                break;
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Msg::Entry(e)) => write(&mut out, e, &mut failed, &mut audited),
                Ok(Msg::Stop(ack)) => {
                    done = Some(ack);
                    break 'outer;
                }
                Err(mpsc::TryRecvError::Disconnected) => break 'outer,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        if let Err(err) = out.flush() {
            if !failed {
                eprintln!("moat: request log {shown}: {err}");
                failed = true;
            }
        }
        if let Some(a) = &audit {
            let _ = a.events("request", std::mem::take(&mut audited));
        }
    }
    let _ = out.flush();
    if let Some(a) = &audit {
        let _ = a.events("request", std::mem::take(&mut audited));
    }
    if let Some(ack) = done {
        let _ = ack.send(());
    }
}

/// Creates the runs directory (0700) if needed.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// The run ids that have a request log in `dir`, sorted (oldest first: ids
/// sort by start time).
fn logged_runs(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(SUFFIX).map(str::to_owned)
        })
        .filter(|id| !id.is_empty() && !id.starts_with('.'))
        .collect();
    ids.sort();
    ids
}

/// `latest`, a full run id or a unique prefix of one.
pub fn find_run(dir: &Path, spec: &str) -> Result<String> {
    let ids = logged_runs(dir);
    if ids.is_empty() {
        bail!("no request logs in {}", dir.display());
    }
    if spec == "latest" {
        return Ok(ids.last().cloned().expect("not empty"));
    }
    if ids.iter().any(|id| id == spec) {
        return Ok(spec.to_string());
    }
    let matching: Vec<&String> = ids.iter().filter(|id| id.starts_with(spec)).collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "no request log for run `{spec}` in {} (`moat runs` lists runs)",
            dir.display()
        ),
        many => bail!(
            "`{spec}` matches {} runs ({}, ...): give more of the id",
            many.len(),
            many[..2]
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `moat log RUN [--json]` for the calling user. Returns the exit code.
pub fn command(args: &crate::cli::LogArgs) -> Result<i32> {
    let caller = crate::exec::Caller::current()?;
    show(&crate::runs::dir(&caller.home), &args.run, args.json)
}

/// `moat log RUN [--json]` over the runs directory `runs_dir`.
pub fn show(runs_dir: &Path, spec: &str, json: bool) -> Result<i32> {
    let id = find_run(runs_dir, spec)?;
    let file = path(runs_dir, &id);
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let r = if json {
        out.write_all(text.as_bytes())
    } else {
        write_table(&mut out, &id, &text)
    };
    match r.and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        // `moat log RUN | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn write_table(out: &mut impl Write, id: &str, text: &str) -> std::io::Result<()> {
    writeln!(out, "run {id}")?;
    writeln!(
        out,
        "{:<12} {:<5} {:>6} {:<7} {:<6} {:<32} {:>8} {:>8} {:>7}  PATH / REASON",
        "TIME (UTC)", "DEC", "STATUS", "METHOD", "SCHEME", "HOST:PORT", "UP", "DOWN", "MS"
    )?;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: Entry = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(err) => {
                eprintln!("moat: line {}: not a request entry: {err}", n + 1);
                continue;
            }
        };
        let status = e
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        let target = if e.host.contains(':') {
            format!("[{}]:{}", e.host, e.port)
        } else {
            format!("{}:{}", e.host, e.port)
        };
        let mut tail = e.path.clone();
        if !e.credentials.is_empty() {
            let uses: Vec<String> = e
                .credentials
                .iter()
                .map(|c| format!("{}:{}", c.action, c.grant))
                .collect();
            tail.push_str(&format!("  [{}]", uses.join(" ")));
        }
        if !e.reason.is_empty() {
            if !tail.is_empty() {
                tail.push_str("  ");
            }
            tail.push_str("# ");
            tail.push_str(&e.reason);
        }
        writeln!(
            out,
            "{:<12} {:<5} {:>6} {:<7} {:<6} {:<32} {:>8} {:>8} {:>7}  {}",
            clock(e.ts_ms),
            e.decision,
            status,
            e.method,
            e.scheme,
            target,
            human(e.bytes_up),
            human(e.bytes_down),
            e.duration_ms,
            tail
        )?;
    }
    Ok(())
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in milliseconds.
fn clock(ms: u64) -> String {
    let day_ms = ms % 86_400_000;
    let s = day_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s % 3600 / 60,
        s % 60,
        day_ms % 1000
    )
}

/// Byte counts short enough for a column: 999, 1.5K, 12M.
fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if n < 1000 {
        return n.to_string();
    }
    let mut v = n as f64;
    let mut unit = "";
    for u in UNITS {
        v /= 1024.0;
        unit = u;
        if v < 1000.0 {
            break;
        }
    }
    if v < 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str) -> Entry {
        Entry {
            ts_ms: 1_700_000_000_123,
            method: "GET".into(),
            scheme: "https".into(),
            host: host.into(),
            port: 443,
            path: "/x".into(),
            status: Some(200),
            bytes_up: 0,
            bytes_down: 2048,
            duration_ms: 3,
            decision: "allow".into(),
            ..Entry::default()
        }
    }

    #[test]
    fn writer_appends_whole_lines_and_flushes_on_finish() {
        let t = tempfile::tempdir().unwrap();
        let p = path(t.path(), "R1");
        let mut w = Writer::open(&p, "R1".into(), None).unwrap();
        let senders: Vec<_> = (0..4)
            .map(|i| {
                let tx = w.tx.clone();
                std::thread::spawn(move || {
                    for j in 0..250 {
                        let e = entry(&format!("h{i}-{j}.example"));
                        tx.send(Msg::Entry(e)).unwrap();
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        w.finish();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<Entry> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1000);
        assert!(lines.iter().all(|e| e.run == "R1" && e.bytes_down == 2048));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn finds_runs_by_prefix_and_latest() {
        let t = tempfile::tempdir().unwrap();
        for id in [
            "20250101T000000Z-aa",
            "20250102T000000Z-bb",
            "20250102T000000Z-bc",
        ] {
            std::fs::write(path(t.path(), id), "").unwrap();
        }
        std::fs::write(t.path().join("20250103T000000Z-cc.json"), "{}").unwrap();
        assert_eq!(find_run(t.path(), "latest").unwrap(), "20250102T000000Z-bc");
        assert_eq!(
            find_run(t.path(), "20250101").unwrap(),
            "20250101T000000Z-aa"
        );
        let err = find_run(t.path(), "20250102").unwrap_err().to_string();
        assert!(err.contains("matches 2 runs"), "{err}");
        let err = find_run(t.path(), "2024").unwrap_err().to_string();
        assert!(err.contains("no request log for run"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(find_run(empty.path(), "latest").is_err());
    }

    #[test]
    fn table_shows_each_entry() {
        let mut deny = entry("denied.example");
        deny.decision = "deny".into();
        deny.status = Some(403);
        deny.reason = "denied.example:443 is not in network.allow".into();
        let text = [entry("a.example"), deny]
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let mut out = Vec::new();
        write_table(&mut out, "R", &text).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.lines().count(), 4, "{out}");
        assert!(out.contains("22:13:20.123"), "{out}");
        assert!(out.contains("a.example:443"), "{out}");
        assert!(out.contains("2.0K"), "{out}");
        assert!(out.contains("# denied.example:443 is not in network.allow"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(999), "999");
        assert_eq!(human(1536), "1.5K");
        assert_eq!(human(50 * 1024 * 1024), "50M");
    }
}
