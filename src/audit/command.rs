//! `moat audit verify|export|show|key`.

use super::{bundle, chain, sign, verify, writer};
use crate::cli::AuditCommand;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn run(cmd: &AuditCommand) -> Result<i32> {
    let caller = crate::exec::Caller::current()?;
    let data_dir = super::data_dir(&caller.home);
    match cmd {
        AuditCommand::Verify { path, key } => {
            let (code, text) = verify_path(&data_dir, path.as_deref(), key.as_deref())?;
            print!("{text}");
            Ok(code)
        }
        AuditCommand::Export { run, output } => {
            let log = read(&writer::log_path(&data_dir))?;
            let id = bundle::find_run(&log, run)?;
            let key = sign::ensure_key(&data_dir)?;
            let b = bundle::export(&log, &id, &sign::public_hex(&key))?;
            let json = serde_json::to_vec_pretty(&b)?;
            std::fs::write(output, [json.as_slice(), b"\n"].concat())
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!(
                "moat: run {id}: {} lines written to {} (check with `moat audit verify {} --key {}`)",
                b.entries.len(),
                output.display(),
                output.display(),
                b.public_key
            );
            Ok(0)
        }
        AuditCommand::Show { run, json } => {
            let log = read(&writer::log_path(&data_dir))?;
            let id = bundle::find_run(&log, run)?;
            show(&log, &id, *json)
        }
        AuditCommand::Key => {
            let key = sign::ensure_key(&data_dir)?;
            println!("{}", sign::public_hex(&key));
            Ok(0)
        }
    }
}

fn read(p: &Path) -> Result<Vec<u8>> {
    match std::fs::read(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no audit log at {}: nothing has been recorded there yet",
            p.display()
        ),
        r => r.with_context(|| format!("reading {}", p.display())),
    }
}

/// Verifies a log or a bundle; returns the exit code and the report text.
pub fn verify_path(
    data_dir: &Path,
    path: Option<&Path>,
    key: Option<&str>,
) -> Result<(i32, String)> {
    let path: PathBuf = path.map_or_else(|| writer::log_path(data_dir), Path::to_path_buf);
    let bytes = read(&path)?;
    let (key, key_from) = match key {
        Some(k) => (sign::parse_public(k)?, "given with --key".to_string()),
        None => {
            let kp = sign::key_path(data_dir);
            if !kp.exists() {
                bail!(
                    "no audit key at {} to check signatures with: give the public key with --key PUBKEY",
                    kp.display()
                );
            }
            let k = sign::load_signing(data_dir)
                .map_err(|e| anyhow!("{e:#} (or give the public key with --key PUBKEY)"))?
                .verifying_key();
            (k, format!("this user's key {}", kp.display()))
        }
    };
    let shown = path.display().to_string();
    let report = if bundle::is_bundle(&bytes) {
        bundle::verify(&bytes, &key)?
    } else {
        let head = writer::read_head(&path)?;
        let head_name = writer::head_path(&path).display().to_string();
        verify::verify_bytes(
            &bytes,
            &verify::Options {
                key: &key,
                from_genesis: true,
                head,
                head_name: &head_name,
            },
        )
    };
    let mut text = verify::describe(&report, &shown);
    text.push_str(&format!("key: {} ({key_from})\n", sign::public_hex(&key)));
    Ok((report.status.exit_code(), text))
}

fn show(log: &[u8], run: &str, json: bool) -> Result<i32> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut scratch = Vec::new();
    let end = log.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut r = Ok(());
    if !json {
        r = writeln!(
            out,
            "run {run}\n{:>8} {:<24} {:<12} DATA",
            "SEQ", "TIME (UTC)", "KIND"
        );
    }
    for line in log[..end].split(|&b| b == b'\n') {
        if r.is_err() {
            break;
        }
        let Ok((e, _)) = chain::parse(line, &mut scratch) else {
            continue;
        };
        if e.run != run {
            continue;
        }
        r = if json {
            out.write_all(line).and_then(|()| out.write_all(b"\n"))
        } else {
            let mut data = e.data.to_string();
            if data.len() > 160 {
                let mut cut = 157;
                while !data.is_char_boundary(cut) {
                    cut -= 1;
                }
                data.truncate(cut);
                data.push_str("...");
            }
            writeln!(out, "{:>8} {:<24} {:<12} {data}", e.seq, e.ts, e.kind)
        };
    }
    match r.and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e.into()),
    }
}
