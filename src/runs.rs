//! The record of each run: what was asked, what the kernel enforced, how it
//! ended. One JSON file per run under `$XDG_STATE_HOME/moat/runs/` (default
//! `~/.local/state/moat/runs/`), private to the caller and never visible
//! inside a sandbox (the home there is an empty tmpfs).

use crate::sandbox::harden;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: String,
    /// Unix time in milliseconds.
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub profile: String,
    pub profile_sources: Vec<String>,
    pub command: Vec<String>,
    pub workspace: PathBuf,
    pub uid: u32,
    /// What the kernel enforced, as init reported it.
    pub hardening: Option<harden::Report>,
    pub exit_code: Option<i32>,
    /// Why moat ended the run early, if it did (limits, timeout).
    pub ended_by: Vec<String>,
    /// Peak memory of the run's cgroup in bytes, where the kernel kept it.
    #[serde(default)]
    pub peak_memory: Option<u64>,
    /// Names of the secrets set in the sandbox; never their values.
    #[serde(default)]
    pub secrets: Vec<String>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A run id: sortable by start time, unique enough on one machine.
pub fn new_id() -> String {
    let ms = now_ms();
    let mut rnd = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut rnd);
    }
    format!(
        "{}-{:02x}{:02x}{:02x}{:02x}",
        format_utc(ms / 1000),
        rnd[0],
        rnd[1],
        rnd[2],
        rnd[3]
    )
}

/// A Unix time in seconds as UTC (year, month, day, hour, minute, second),
/// without pulling in a date crate.
pub fn utc_parts(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `YYYYMMDDTHHMMSSZ`.
pub fn format_utc(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = utc_parts(secs);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
}

/// Where run records live for this caller.
pub fn dir(home: &Path) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(".local/state"));
    base.join("moat/runs")
}

impl Record {
    /// Writes the record atomically (temp file, rename), 0600. Not
    /// fsynced: the record is an index of what the audit log holds, and
    /// the log's checkpoint is synced at the same moment; three syncs at
    /// once queue for the disk, and each run would wait for all three.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.id));
        let tmp = dir.join(format!(".{}.json.tmp", self.id));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        // One write: serde_json would make one system call per token.
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        f.write_all(&text)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    pub fn load(path: &Path) -> Result<Record> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// `moat runs`: one line per recorded run, newest last.
pub fn list(home: &Path) -> Result<i32> {
    let dir = dir(home);
    let mut records = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                match Record::load(&p) {
                    Ok(r) => records.push(r),
                    Err(err) => eprintln!("moat: skipping {}: {err:#}", p.display()),
                }
            }
        }
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    if records.is_empty() {
        println!("no runs recorded in {}", dir.display());
        return Ok(0);
    }
    println!(
        "{:<26} {:>5} {:<12} {:<10} {:<24} COMMAND",
        "RUN", "EXIT", "PROFILE", "LANDLOCK", "SECRETS"
    );
    for r in records {
        let exit = r
            .exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let landlock = r
            .hardening
            .as_ref()
            .map(|h| format!("abi{} {}", h.landlock.abi, h.landlock.status))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<26} {:>5} {:<12} {:<10} {:<24} {}",
            r.id,
            exit,
            r.profile,
            landlock,
            secrets_column(&r.secrets),
            r.command.join(" ")
        );
    }
    Ok(0)
}

/// Names when they fit the column, else how many.
fn secrets_column(names: &[String]) -> String {
    if names.is_empty() {
        return "-".into();
    }
    let joined = names.join(",");
    if joined.len() <= 24 {
        joined
    } else {
        format!("{} secrets", names.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_column_shows_names_or_count() {
        assert_eq!(secrets_column(&[]), "-");
        assert_eq!(
            secrets_column(&["DB_URL".into(), "PGPASS".into()]),
            "DB_URL,PGPASS"
        );
        let many: Vec<String> = (0..5).map(|i| format!("SECRET_{i}")).collect();
        assert_eq!(secrets_column(&many), "5 secrets");
    }

    #[test]
    fn utc_format() {
        assert_eq!(format_utc(0), "19700101T000000Z");
        assert_eq!(format_utc(1_795_320_000), "20261122T040000Z");
        assert_eq!(format_utc(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn save_and_load_private() {
        let t = tempfile::tempdir().unwrap();
        let r = Record {
            id: new_id(),
            started_ms: 1,
            ended_ms: Some(2),
            profile: "default".into(),
            profile_sources: vec!["builtin:default".into()],
            command: vec!["true".into()],
            workspace: "/w".into(),
            uid: 1000,
            hardening: Some(harden::Report::default()),
            exit_code: Some(0),
            ended_by: vec![],
            peak_memory: Some(1 << 20),
            secrets: vec!["DATABASE_URL".into()],
        };
        let p = r.save(t.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(Record::load(&p).unwrap(), r);
    }
}
