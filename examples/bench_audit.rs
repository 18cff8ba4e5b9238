//! The audit log's costs, measured in one run (scripts/bench-audit):
//!
//! - append: entries per second through `writer::Log::append`, one locked
//!   write per entry (the worst case: the proxy batches) with the
//!   checkpoint policy on (a signed, fsynced checkpoint every 256 entries);
//! - verify: MB/s of `verify::verify_bytes` over the file just written,
//!   read from the page cache, beside `sha256sum` of the same file.
//!
//! usage: bench_audit [ENTRIES] (default 200000). Works in a temporary
//! XDG_DATA_HOME-like directory of its own; your own log and key are not
//! touched.

use moat::audit::{sign, verify, writer};
use serde_json::json;
use std::time::{Duration, Instant};

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        out = Some(r);
    }
    (best, out.expect("at least one run"))
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ENTRIES must be a number"))
        .unwrap_or(200_000);
    let tmp = std::env::temp_dir().join(format!("moat-bench-audit-{}", std::process::id()));
    let data = tmp.join("moat");
    let mut log = writer::Log::open(&data).expect("open the log");
    // What a request event carries: the request log's entry.
    let event = json!({
        "ts_ms": 1_765_000_000_000u64, "run": "20261207T000000Z-00000000", "method": "GET",
        "scheme": "https", "host": "api.example.com", "port": 443,
        "path": "/v1/messages/0123456789", "status": 200, "bytes_up": 1234,
        "bytes_down": 56789, "duration_ms": 12, "decision": "allow", "reason": ""
    });
    let t = Instant::now();
    for _ in 0..n {
        log.append("bench", &[("request", event.clone())], false)
            .expect("append");
    }
    log.append("bench", &[], true).expect("final checkpoint");
    let append = t.elapsed();
    let path = writer::log_path(&data);
    let size = std::fs::metadata(&path).unwrap().len();
    let key = sign::ensure_key(&data).unwrap();
    let head = writer::read_head(&path).unwrap();
    let mb = size as f64 / 1e6;

    let (vt, report) = best(3, || {
        let bytes = std::fs::read(&path).unwrap();
        verify::verify_bytes(
            &bytes,
            &verify::Options {
                key: &key,
                from_genesis: true,
                head: head.clone(),
                head_name: "audit.head",
            },
        )
    });
    assert_eq!(
        report.status,
        verify::Status::Intact,
        "{:?}",
        report.problems
    );
    let (st, ok) = best(3, || {
        std::process::Command::new("sha256sum")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    assert!(ok, "sha256sum failed");
    let vr = mb / vt.as_secs_f64();
    let sr = mb / st.as_secs_f64();
    println!(
        "append: {n} entries ({} checkpoints) in {:.2} s: {:.0} entries/s, {:.1} us/entry",
        report.checkpoints,
        append.as_secs_f64(),
        n as f64 / append.as_secs_f64(),
        append.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "verify: {mb:.1} MB in {:.3} s: {vr:.0} MB/s; sha256sum {:.3} s: {sr:.0} MB/s; verify/sha256sum = {:.0}%",
        vt.as_secs_f64(),
        st.as_secs_f64(),
        100.0 * vr / sr
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
