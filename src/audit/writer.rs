//! Appending to the log: one `flock`ed batch at a time, so that several
//! moat runs can share one chain.
//!
//! Under the lock the writer reads the current head (the last line of the
//! file; cached while the file's length is what this writer left it at),
//! chains its entries onto it, writes them with one `write` on an
//! `O_APPEND` descriptor, and fsyncs when the batch holds a checkpoint.
//! A torn last line left by a writer that crashed is cut off first and
//! recorded as a `torn_tail` entry (its length and SHA-256), so the chain
//! goes on from the last complete entry and nothing is dropped silently.

use super::chain::{self, Entry, CHECKPOINT, GENESIS};
use super::sign;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const LOG_FILE: &str = "audit.jsonl";
pub const HEAD_FILE: &str = "audit.head";
/// A checkpoint after at most this many entries.
pub const CHECKPOINT_EVERY: u64 = 256;

/// `$XDG_DATA_HOME/moat/audit`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit")
}

/// The log file under `data_dir`.
pub fn log_path(data_dir: &Path) -> PathBuf {
    dir(data_dir).join(LOG_FILE)
}

/// The `.head` file beside a log: the last checkpoint's own seq and hash.
pub fn head_path(log: &Path) -> PathBuf {
    log.with_file_name(HEAD_FILE)
}

/// What `.head` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

pub fn read_head(log: &Path) -> Result<Option<Head>> {
    let p = head_path(log);
    let mut tries = 0;
    loop {
        let b = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        match serde_json::from_slice(&b) {
            Ok(h) => return Ok(Some(h)),
            // A writer overwrites the head in place and takes no lock
            // against readers: a read in the middle of that write is
            // read again before the head is called damaged.
            Err(_) if tries < 3 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => return Err(e).with_context(|| format!("{} is damaged", p.display())),
        }
    }
}

/// The end of the chain as this writer last saw it.
#[derive(Debug, Clone)]
struct Tip {
    len: u64,
    /// seq, hash and kind of the last entry.
    last: Option<(u64, String, bool)>,
    /// seq of the last checkpoint entry, when known.
    last_checkpoint: Option<u64>,
}

pub struct Log {
    data_dir: PathBuf,
    path: PathBuf,
    file: File,
    public_hex: String,
    tip: Option<Tip>,
    pub checkpoint_every: u64,
    /// Read at a checkpoint, and wiped after it, until
    /// [`Log::keep_signing_key`] (after the sandbox's init is cloned, so
    /// that no process of the sandbox ever holds it) reads it to keep.
    signing: Option<ed25519_dalek::SigningKey>,
    keep_signing: bool,
}

/// Holds `flock(LOCK_EX)` until dropped.
struct Locked<'a>(&'a File);

impl<'a> Locked<'a> {
    fn new(f: &'a File) -> std::io::Result<Locked<'a>> {
        loop {
            // SAFETY: flock on a descriptor we own; no memory is involved.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Locked(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Log {
    /// Opens the log under `data_dir` (creating it, its directory and the
    /// key as needed). Fails when any of them cannot be created or opened
    /// for writing.
    pub fn open(data_dir: &Path) -> Result<Log> {
        let public = sign::ensure_key(data_dir)?;
        let d = dir(data_dir);
        sign::ensure_private_dir(&d)?;
        Self::open_at(data_dir, &log_path(data_dir), sign::public_hex(&public))
    }

    fn open_at(data_dir: &Path, path: &Path, public_hex: String) -> Result<Log> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .read(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .with_context(|| format!("opening the audit log {}", path.display()))?;
        Ok(Log {
            data_dir: data_dir.to_owned(),
            path: path.to_owned(),
            file,
            public_hex,
            tip: None,
            checkpoint_every: CHECKPOINT_EVERY,
            signing: None,
            keep_signing: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// From now on the signing key stays loaded between checkpoints. It is
    /// loaded now, so that a key that cannot be read stops the run before
    /// the command starts, and the run's last checkpoint does not wait for
    /// the file.
    pub fn keep_signing_key(&mut self) -> Result<()> {
        self.keep_signing = true;
        if self.signing.is_none() {
            self.signing = Some(sign::load_signing(&self.data_dir)?);
        }
        Ok(())
    }

    /// Appends `events` for `run`, with checkpoints as the policy wants
    /// them, and a final one when `checkpoint` is set (unless the chain
    /// already ends with one). Returns the number of lines written.
    pub fn append(
        &mut self,
        run: &str,
        events: &[(&str, Value)],
        checkpoint: bool,
    ) -> Result<usize> {
        let r = self.append_inner(run, events, checkpoint);
        if !self.keep_signing {
            // Dropping the key wipes it.
            self.signing = None;
        }
        r
    }

    fn append_inner(
        &mut self,
        run: &str,
        events: &[(&str, Value)],
        checkpoint: bool,
    ) -> Result<usize> {
        let shown = self.path.display().to_string();
        let _lock = Locked::new(&self.file).with_context(|| format!("locking {shown}"))?;
        let len = self
            .file
            .metadata()
            .with_context(|| format!("reading {shown}"))?
            .len();
        let mut extra: Vec<(&str, Value)> = Vec::new();
        let tip = match self.tip.take() {
            Some(t) if t.len == len => t,
            _ => {
                let (tip, torn) = self.read_tip(len)?;
                if let Some(t) = torn {
                    extra.push(("torn_tail", t));
                }
                tip
            }
        };
        let start_len = tip.len;
        let mut next = tip.last.as_ref().map_or(0, |l| l.0 + 1);
        let mut prev = tip
            .last
            .as_ref()
            .map_or(GENESIS.to_string(), |l| l.1.clone());
        let mut last_is_cp = tip.last.as_ref().is_some_and(|l| l.2);
        let mut last_cp = tip.last_checkpoint;
        let key = &mut self.signing;
        let mut buf = Vec::with_capacity(512 * (events.len() + 1));
        let mut lines = 0;
        let mut head = None;
        let mut push = |e: Entry, buf: &mut Vec<u8>| {
            buf.extend_from_slice(&e.line());
            buf.push(b'\n');
            lines += 1;
            e
        };
        let mut cp = |next: &mut u64, prev: &mut String, buf: &mut Vec<u8>| -> Result<Entry> {
            if key.is_none() {
                *key = Some(sign::load_signing(&self.data_dir)?);
            }
            let covered = *next - 1;
            let sig = sign::sign(key.as_ref().expect("loaded"), covered, prev);
            let data =
                json!({"seq": covered, "hash": prev.clone(), "key": self.public_hex, "sig": sig});
            let e = Entry::new(*next, now(), run, CHECKPOINT, data, prev);
            *next += 1;
            prev.clone_from(&e.hash);
            buf.extend_from_slice(&e.line());
            buf.push(b'\n');
            Ok(e)
        };
        for (kind, data) in extra.iter().chain(events.iter()) {
            let e = push(
                Entry::new(next, now(), run, kind, data.clone(), &prev),
                &mut buf,
            );
            next += 1;
            prev = e.hash;
            last_is_cp = false;
            let since = next - last_cp.map_or(0, |c| c + 1);
            if since >= self.checkpoint_every {
                let c = cp(&mut next, &mut prev, &mut buf)?;
                last_cp = Some(c.seq);
                last_is_cp = true;
                head = Some(Head {
                    seq: c.seq,
                    hash: c.hash,
                });
            }
        }
        if checkpoint && !last_is_cp && next > 0 {
            let c = cp(&mut next, &mut prev, &mut buf)?;
            last_cp = Some(c.seq);
            last_is_cp = true;
            head = Some(Head {
                seq: c.seq,
                hash: c.hash,
            });
        }
        let lines = lines + usize::from(head.is_some());
        if buf.is_empty() {
            self.tip = Some(tip);
            return Ok(0);
        }
        if let Err(e) = (&self.file).write_all(&buf) {
            // Leave no half line behind for the next writer to cut off.
            let _ = self.file.set_len(start_len);
            return Err(anyhow!(e).context(format!("writing the audit log {shown}")));
        }
        if let Some(h) = &head {
            self.file
                .sync_data()
                .with_context(|| format!("syncing the audit log {shown}"))?;
            // Only once the checkpoint is on disk, so the head never names
            // one the disk may not hold.
            write_head(&self.path, h)?;
        }
        self.tip = Some(Tip {
            len: start_len + buf.len() as u64,
            last: Some((next - 1, prev, last_is_cp)),
            last_checkpoint: last_cp,
        });
        Ok(lines)
    }

    /// Reads the head from the file (someone else wrote since we did).
    /// Cuts a torn last line off and returns what it was.
    fn read_tip(&self, len: u64) -> Result<(Tip, Option<Value>)> {
        let shown = self.path.display();
        let mut torn = None;
        let mut end = len;
        if len > 0 {
            let mut b = [0u8; 1];
            self.file.read_exact_at(&mut b, len - 1)?;
            if b[0] != b'\n' {
                let start = line_start(&self.file, len)?;
                let mut frag = vec![0u8; (len - start) as usize];
                self.file.read_exact_at(&mut frag, start)?;
                self.file
                    .set_len(start)
                    .with_context(|| format!("cutting the torn last line off {shown}"))?;
                torn = Some(json!({
                    "bytes": frag.len(),
                    "sha256": super::canonical::hex(&Sha256::digest(&frag)),
                    "offset": start,
                }));
                end = start;
            }
        }
        if end == 0 {
            return Ok((
                Tip {
                    len: end,
                    last: None,
                    last_checkpoint: None,
                },
                torn,
            ));
        }
        let start = line_start(&self.file, end - 1)?;
        let mut line = vec![0u8; (end - 1 - start) as usize];
        self.file.read_exact_at(&mut line, start)?;
        let (e, actual) = chain::parse(&line, &mut Vec::new()).map_err(|err| {
            anyhow!(
                "the last entry of the audit log {shown} is damaged ({err}); run `moat audit verify` and move the log aside to start a new chain"
            )
        })?;
        if actual != e.hash {
            bail!("the last entry of the audit log {shown} does not match its hash; run `moat audit verify`");
        }
        let is_cp = e.kind == CHECKPOINT;
        let last_checkpoint = if is_cp {
            Some(e.seq)
        } else {
            read_head(&self.path)
                .ok()
                .flatten()
                .map(|h| h.seq)
                .filter(|s| *s < e.seq)
        };
        Ok((
            Tip {
                len: end,
                last: Some((e.seq, e.hash, is_cp)),
                last_checkpoint,
            },
            torn,
        ))
    }
}

/// Offset where the line containing byte `end - 1` starts (just after the
/// previous newline before `end`).
fn line_start(f: &File, end: u64) -> Result<u64> {
    let mut pos = end;
    let mut buf = vec![0u8; 8192];
    while pos > 0 {
        let from = pos.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(pos - from) as usize];
        f.read_exact_at(chunk, from)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(from + i as u64 + 1);
        }
        pos = from;
    }
    Ok(0)
}

fn now() -> String {
    chain::rfc3339_ms(crate::runs::now_ms())
}

/// Size of the head's one record: its JSON padded with spaces, then `\n`.
/// Every record has this size, so an overwrite leaves nothing of the last.
const HEAD_RECORD: usize = 128;

/// Overwrites the head in place with `h`.
///
/// Not synced: the checkpoint it names already is, and a head that a
/// crash sets back one checkpoint still vouches for a prefix of the log.
/// One aligned write inside one sector, so it never lands half way.
/// (A new file synced and renamed over the old one cost a second,
/// slower, wait for the disk at the end of every run.)
fn write_head(log: &Path, h: &Head) -> Result<()> {
    let p = head_path(log);
    let mut text = serde_json::to_vec(h).expect("plain data");
    debug_assert!(text.len() < HEAD_RECORD);
    text.resize(HEAD_RECORD - 1, b' ');
    text.push(b'\n');
    (|| -> std::io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            // Overwritten, never emptied: a crash between a truncate and
            // the write would leave no head at all.
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&p)?;
        f.write_all_at(&text, 0)?;
        if f.metadata()?.len() > HEAD_RECORD as u64 {
            f.set_len(HEAD_RECORD as u64)?;
        }
        Ok(())
    })()
    .with_context(|| format!("writing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify::{verify_bytes, Options, Status};

    #[test]
    fn concurrent_writers_share_one_chain_with_checkpoints() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("moat");
        Log::open(&data).unwrap();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let data = data.clone();
                std::thread::spawn(move || {
                    // Each its own descriptor, as separate moat processes.
                    let mut log = Log::open(&data).unwrap();
                    for i in 0..300 {
                        let ev = [("request", json!({"w": w, "i": i}))];
                        log.append(&format!("run{w}"), &ev, false).unwrap();
                    }
                    log.append(&format!("run{w}"), &[], true).unwrap();
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let path = log_path(&data);
        let bytes = std::fs::read(&path).unwrap();
        let key = sign::ensure_key(&data).unwrap();
        let r = verify_bytes(
            &bytes,
            &Options {
                key: &key,
                from_genesis: true,
                head: read_head(&path).unwrap(),
                head_name: "head",
            },
        );
        assert_eq!(r.status, Status::Intact, "{:?} {:?}", r.problems, r.notes);
        assert_eq!(r.runs.len(), 4);
        // 1200 events: a checkpoint at least every 256 entries.
        assert!(r.checkpoints >= 1200 / 256, "{}", r.checkpoints);
        let mut since = 0;
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let (e, _) = chain::parse(line, &mut Vec::new()).unwrap();
            since = if e.kind == CHECKPOINT { 0 } else { since + 1 };
            assert!(since <= CHECKPOINT_EVERY);
        }
        assert_eq!(
            read_head(&path).unwrap().unwrap().seq,
            r.last_checkpoint.unwrap()
        );
    }

    #[test]
    fn the_head_is_one_record_overwritten_in_place() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("moat");
        let path = log_path(&data);
        let head = head_path(&path);
        // A longer head from an older moat: replaced, nothing of it left.
        std::fs::create_dir_all(dir(&data)).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&head)
            .unwrap()
            .write_all(&[b'x'; 300])
            .unwrap();
        let mut log = Log::open(&data).unwrap();
        let mut inodes = Vec::new();
        for i in 0..3 {
            log.append("r", &[("start", json!({ "i": i }))], true)
                .unwrap();
            let meta = std::fs::metadata(&head).unwrap();
            assert_eq!(meta.len(), HEAD_RECORD as u64);
            assert_eq!(meta.mode() & 0o777, 0o600);
            inodes.push(meta.ino());
            let bytes = std::fs::read(&path).unwrap();
            let last = bytes[..bytes.len() - 1]
                .split(|&b| b == b'\n')
                .next_back()
                .unwrap();
            let (cp, _) = chain::parse(last, &mut Vec::new()).unwrap();
            assert_eq!(cp.kind, CHECKPOINT);
            assert_eq!(
                read_head(&path).unwrap().unwrap(),
                Head {
                    seq: cp.seq,
                    hash: cp.hash.to_string()
                }
            );
        }
        assert!(inodes.iter().all(|i| *i == inodes[0]), "{inodes:?}");
        // A head that stays unreadable is reported, not taken as none.
        std::fs::write(&head, b"{\"seq\":").unwrap();
        let err = read_head(&path).unwrap_err();
        assert!(format!("{err:#}").contains("is damaged"), "{err:#}");
    }

    #[test]
    fn a_damaged_last_entry_stops_appends() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("moat");
        let mut log = Log::open(&data).unwrap();
        log.append("r", &[("start", json!({}))], false).unwrap();
        std::fs::write(log_path(&data), b"{\"not\":\"an entry\"}\n").unwrap();
        let err = log
            .append("r", &[("exit", json!({}))], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("damaged"), "{err}");
    }
}
