//! Checking a chain: every line's form and hash, every link, every
//! checkpoint's signature, and the `.head` file, with a message that says
//! where and how the chain breaks.

use super::chain::{self, CHECKPOINT, GENESIS};
use super::sign;
use super::writer::Head;
use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every entry checks out and the last one is a valid checkpoint.
    Intact,
    /// Nothing was altered, but the end is not covered by a signature: a
    /// torn last line, or entries after the last checkpoint.
    IncompleteTail,
    /// Something does not check out.
    Tampered,
}

impl Status {
    /// `moat audit verify`'s exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Intact => 0,
            Status::Tampered => 1,
            Status::IncompleteTail => 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub status: Status,
    /// Complete lines read.
    pub lines: u64,
    pub checkpoints: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// seq of the last valid checkpoint entry.
    pub last_checkpoint: Option<u64>,
    /// What was altered, one line each, in file order.
    pub problems: Vec<String>,
    /// What is incomplete (not tampering).
    pub notes: Vec<String>,
    /// Entries per run id.
    pub runs: BTreeMap<String, u64>,
    /// Runs with a `start` but no `exit` entry: still running, or moat was
    /// killed (not an alteration by itself).
    pub unfinished: Vec<String>,
}

pub struct Options<'a> {
    pub key: &'a VerifyingKey,
    /// The chain must start at seq 0 with the genesis `prev` (a whole log;
    /// a bundle starts mid-chain).
    pub from_genesis: bool,
    /// The log's `.head`, when there is one.
    pub head: Option<Head>,
    /// What to call the `.head` in messages.
    pub head_name: &'a str,
}

const MAX_PROBLEMS: usize = 50;

/// Checks the bytes of a log (or of a bundle's lines joined by newlines).
pub fn verify_bytes(bytes: &[u8], opts: &Options) -> Report {
    let trusted = sign::public_hex(opts.key);
    let mut r = Report {
        status: Status::Intact,
        lines: 0,
        checkpoints: 0,
        first_seq: None,
        last_seq: None,
        last_checkpoint: None,
        problems: Vec::new(),
        notes: Vec::new(),
        runs: BTreeMap::new(),
        unfinished: Vec::new(),
    };
    let mut open_runs: Vec<String> = Vec::new();
    let mut problems = 0usize;
    let mut problem = |r: &mut Report, m: String| {
        problems += 1;
        if r.problems.len() < MAX_PROBLEMS {
            r.problems.push(m);
        }
    };
    let (body, torn) = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => (&bytes[..=i], &bytes[i + 1..]),
        None => (&bytes[..0], bytes),
    };
    // (seq, stored hash) of the previous good line.
    let mut prev: Option<(u64, &str)> = None;
    let mut head_seen: Option<(String, bool)> = None;
    let mut scratch = Vec::with_capacity(1024);
    let mut offset = 0usize;
    for (i, line) in body[..body.len().saturating_sub(1)]
        .split(|&b| b == b'\n')
        .enumerate()
        .take_while(|_| !body.is_empty())
    {
        let ln = i + 1;
        r.lines += 1;
        let at = offset;
        offset += line.len() + 1;
        if line.is_empty() {
            problem(&mut r, format!("line {ln} (byte {at}): empty line"));
            prev = None;
            continue;
        }
        let Some(e) = chain::scan(line) else {
            // The slow path says exactly what is wrong with the line.
            let why = match chain::parse(line, &mut scratch) {
                Err(err) => err.to_string(),
                Ok(_) => chain::LineError::NotCanonical.to_string(),
            };
            problem(&mut r, format!("line {ln} (byte {at}): {why}"));
            // The next link cannot be checked against a line that is
            // not an entry; the break is reported here.
            prev = None;
            continue;
        };
        let at_line = format!("line {ln} (seq {})", e.seq);
        if e.actual != e.hash {
            problem(
                &mut r,
                format!("{at_line}: content does not match its hash: the entry was modified"),
            );
        }
        match prev {
            None if ln == 1 && opts.from_genesis => {
                if e.seq != 0 {
                    problem(
                        &mut r,
                        format!("{at_line}: the log starts at seq {} instead of 0: its beginning was deleted", e.seq),
                    );
                } else if e.prev != GENESIS {
                    problem(
                        &mut r,
                        format!("{at_line}: the first entry's prev is not the genesis value (all zeros)"),
                    );
                }
            }
            None => {}
            Some((pseq, phash)) => {
                if e.seq == pseq + 1 {
                    if e.prev != phash {
                        problem(
                            &mut r,
                            format!("{at_line}: prev does not match line {}'s hash: an entry was replaced, inserted or edited here", ln - 1),
                        );
                    }
                } else if e.seq > pseq + 1 {
                    let (a, b) = (pseq + 1, e.seq - 1);
                    let what = if a == b {
                        format!("entry seq {a} is")
                    } else {
                        format!("entries seq {a} to {b} are")
                    };
                    problem(
                        &mut r,
                        format!("{at_line}: {what} missing after line {} (deleted)", ln - 1),
                    );
                } else {
                    problem(
                        &mut r,
                        format!("{at_line}: follows seq {pseq}: entries duplicated, reordered or inserted"),
                    );
                }
            }
        }
        if e.kind == CHECKPOINT {
            let data: Value = serde_json::from_slice(e.data).unwrap_or(Value::Null);
            match check_checkpoint(e.seq, e.prev, &data, &trusted, opts.key) {
                Ok(()) => {
                    r.checkpoints += 1;
                    r.last_checkpoint = Some(e.seq);
                }
                Err(m) => problem(&mut r, format!("{at_line}: checkpoint {m}")),
            }
        }
        if let Some(h) = &opts.head {
            if h.seq == e.seq {
                head_seen = Some((e.hash.to_string(), e.kind == CHECKPOINT));
            }
        }
        match &*e.kind {
            "start" => open_runs.push(e.run.to_string()),
            "exit" => open_runs.retain(|x| *x != e.run),
            _ => {}
        }
        r.first_seq.get_or_insert(e.seq);
        r.last_seq = Some(e.seq);
        match r.runs.get_mut(&*e.run) {
            Some(c) => *c += 1,
            None => {
                r.runs.insert(e.run.to_string(), 1);
            }
        }
        prev = Some((e.seq, e.hash));
    }
    if !torn.is_empty() {
        r.notes.push(format!(
            "incomplete tail: the last {} bytes (from byte {}) are not a complete line, a write cut short by a crash or a full disk; every complete entry before them was checked",
            torn.len(),
            body.len()
        ));
    }
    if r.lines == 0 && torn.is_empty() {
        let why = if opts.head.is_some() {
            "everything was deleted"
        } else {
            "nothing was recorded yet, or everything was deleted"
        };
        problem(
            &mut r,
            format!("the log is empty: it holds no entries ({why})"),
        );
    }
    match (r.last_seq, r.last_checkpoint) {
        (Some(last), Some(cp)) if last > cp => r.notes.push(format!(
            "{} entries after the last checkpoint (seq {cp}), up to seq {last}, are not covered by a signature: a run still going, or one that ended without its final checkpoint (crash); entries there could be cut off or changed without detection",
            last - cp
        )),
        (Some(last), None) => r.notes.push(format!(
            "no valid checkpoint: none of the entries (up to seq {last}) is covered by a signature"
        )),
        _ => {}
    }
    if let Some(h) = &opts.head {
        let last_seq = r.last_seq;
        match head_seen {
            Some((hash, true)) if hash == h.hash => {}
            Some(_) => problem(
                &mut r,
                format!(
                    "entry seq {} is not the checkpoint {} records (hash {}): the log was rewritten",
                    h.seq, opts.head_name, h.hash
                ),
            ),
            None if last_seq.map_or(true, |l| l < h.seq) => problem(
                &mut r,
                format!(
                    "truncated: {} records a checkpoint at seq {}, but the log ends at {}: entries were cut off the end",
                    opts.head_name,
                    h.seq,
                    last_seq.map_or("no entry".to_string(), |l| format!("seq {l}"))
                ),
            ),
            None => problem(
                &mut r,
                format!(
                    "the checkpoint {} records (seq {}) is not in the log",
                    opts.head_name, h.seq
                ),
            ),
        }
    }
    r.unfinished = open_runs;
    if problems > r.problems.len() {
        let more = problems - r.problems.len();
        r.problems.push(format!("... and {more} more problems"));
    }
    r.status = if !r.problems.is_empty() {
        Status::Tampered
    } else if !r.notes.is_empty() {
        Status::IncompleteTail
    } else {
        Status::Intact
    };
    r
}

fn check_checkpoint(
    entry_seq: u64,
    entry_prev: &str,
    data: &Value,
    trusted: &str,
    key: &VerifyingKey,
) -> Result<(), String> {
    let field = |k: &str| data.get(k);
    let (
        Some(Value::Number(seq)),
        Some(Value::String(hash)),
        Some(Value::String(k)),
        Some(Value::String(sig)),
    ) = (field("seq"), field("hash"), field("key"), field("sig"))
    else {
        return Err("lacks seq, hash, key or sig".into());
    };
    if seq.as_u64() != entry_seq.checked_sub(1) || hash != entry_prev {
        return Err(format!(
            "signs seq {seq} but follows seq {}: moved from elsewhere",
            entry_seq.saturating_sub(1)
        ));
    }
    if k != trusted {
        return Err(format!(
            "is signed by key {k}, not by the trusted key {trusted}"
        ));
    }
    if !sign::check(key, entry_seq - 1, hash, sig) {
        return Err("signature does not verify: forged or re-signed".into());
    }
    Ok(())
}

/// Human-readable summary of a report.
pub fn describe(r: &Report, what: &str) -> String {
    let mut s = String::new();
    for p in &r.problems {
        s.push_str(&format!("TAMPERED: {p}\n"));
    }
    for n in &r.notes {
        s.push_str(&format!("INCOMPLETE: {n}\n"));
    }
    for u in &r.unfinished {
        s.push_str(&format!(
            "note: run {u} has no exit entry: still running, or moat was killed\n"
        ));
    }
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!("seq {a} to {b}"),
        _ => "no entries".into(),
    };
    let verdict = match r.status {
        Status::Intact => "intact: every hash, link and signature checks out, and the last entry is a signed checkpoint".to_string(),
        Status::IncompleteTail => "not altered, but its tail is not covered by a signature (see above)".to_string(),
        Status::Tampered => "TAMPERED (see above)".to_string(),
    };
    s.push_str(&format!(
        "{what}: {} lines ({range}), {} runs, {} valid checkpoints{}: {verdict}\n",
        r.lines,
        r.runs.len(),
        r.checkpoints,
        r.last_checkpoint
            .map(|c| format!(", last at seq {c}"))
            .unwrap_or_default()
    ));
    s
}
