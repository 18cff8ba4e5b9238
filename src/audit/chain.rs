//! Entries and their hashes.
//!
//! An entry is one JSON line with exactly the keys `data`, `hash`, `kind`,
//! `prev`, `run`, `seq`, `ts`, written in the canonical encoding (see
//! [`super::canonical`]). `hash` is the lowercase hex SHA-256 of the
//! canonical encoding of the same object without the `hash` key; `prev` is
//! the previous entry's `hash` ([`GENESIS`] for `seq` 0).

use super::canonical;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `prev` of the first entry of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The kind of a signed checkpoint entry.
pub const CHECKPOINT: &str = "checkpoint";

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds: `2026-12-07T05:01:02.345Z`.
    pub ts: String,
    pub run: String,
    pub kind: String,
    pub data: Value,
    pub prev: String,
    pub hash: String,
}

impl Entry {
    /// A new entry with its hash computed. `data` is normalized (floats
    /// become strings) so that it always has a canonical encoding.
    pub fn new(seq: u64, ts: String, run: &str, kind: &str, data: Value, prev: &str) -> Entry {
        let mut e = Entry {
            seq,
            ts,
            run: run.to_owned(),
            kind: kind.to_owned(),
            data: canonical::normalize(data),
            prev: prev.to_owned(),
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }

    fn object(&self, with_hash: bool) -> Value {
        let mut m = Map::new();
        m.insert("data".into(), self.data.clone());
        if with_hash {
            m.insert("hash".into(), Value::String(self.hash.clone()));
        }
        m.insert("kind".into(), Value::String(self.kind.clone()));
        m.insert("prev".into(), Value::String(self.prev.clone()));
        m.insert("run".into(), Value::String(self.run.clone()));
        m.insert("seq".into(), Value::from(self.seq));
        m.insert("ts".into(), Value::String(self.ts.clone()));
        Value::Object(m)
    }

    /// SHA-256 (hex) of the canonical encoding without `hash`.
    pub fn compute_hash(&self) -> String {
        let body = canonical::to_vec(&self.object(false)).expect("data is normalized");
        canonical::hex(&Sha256::digest(&body))
    }

    /// The entry's line, without the newline.
    pub fn line(&self) -> Vec<u8> {
        canonical::to_vec(&self.object(true)).expect("data is normalized")
    }
}

/// Why a line is not an entry.
#[derive(Debug, Clone, PartialEq)]
pub enum LineError {
    /// Not JSON, or not an object with the seven keys of the right types.
    Malformed(String),
    /// Valid JSON with the right keys, but not byte for byte in canonical
    /// form (so its hash could not be recomputed by someone else).
    NotCanonical,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::Malformed(m) => write!(f, "not an audit entry: {m}"),
            LineError::NotCanonical => f.write_str(
                "not in canonical form (keys sorted, no spaces, exact escapes): edited by hand?",
            ),
        }
    }
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses one line (without its newline) and returns the entry and the
/// hash its content actually has (which the caller compares with
/// `entry.hash`). `scratch` is reused between calls.
pub fn parse(line: &[u8], scratch: &mut Vec<u8>) -> Result<(Entry, String), LineError> {
    let bad = |m: String| LineError::Malformed(m);
    let v: Value = serde_json::from_slice(line).map_err(|e| bad(format!("invalid JSON ({e})")))?;
    let Value::Object(mut m) = v else {
        return Err(bad("not a JSON object".into()));
    };
    if m.len() != 7 {
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        return Err(bad(format!(
            "keys are {keys:?}, expected data, hash, kind, prev, run, seq, ts"
        )));
    }
    let mut text = |k: &str| match m.remove(k) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("`{k}` is not a string"))),
        None => Err(bad(format!("no `{k}`"))),
    };
    let hash = text("hash")?;
    let kind = text("kind")?;
    let prev = text("prev")?;
    let run = text("run")?;
    let ts = text("ts")?;
    let seq = match m.remove("seq") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| bad("`seq` is not a non-negative integer".into()))?,
        _ => return Err(bad("`seq` is missing or not a number".into())),
    };
    let data = m.remove("data").ok_or_else(|| bad("no `data`".into()))?;
    if !is_hash(&hash) || !is_hash(&prev) {
        return Err(bad("`hash` and `prev` must be 64 lowercase hex digits".into()));
    }
    let e = Entry {
        seq,
        ts,
        run,
        kind,
        data,
        prev,
        hash,
    };
    scratch.clear();
    canonical::encode(&e.object(true), scratch).map_err(|m| bad(format!("`data`: {m}")))?;
    if scratch.as_slice() != line {
        return Err(LineError::NotCanonical);
    }
    // The line is canonical, so the body without `hash` is the line minus
    // the `,"hash":"<64 hex>"` member. It is the last such byte sequence:
    // the members after it are strings (whose quotes would be escaped) and
    // an integer.
    const KEY: &[u8] = b",\"hash\":\"";
    let at = line
        .windows(KEY.len())
        .rposition(|w| w == KEY)
        .expect("a canonical entry has a hash member");
    let end = at + KEY.len() + 64 + 1;
    let mut h = Sha256::new();
    h.update(&line[..at]);
    h.update(&line[end..]);
    let actual = canonical::hex(&h.finalize());
    Ok((e, actual))
}

/// RFC 3339 UTC with milliseconds for a Unix time in milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn line_parses_back_with_matching_hash() {
        let e = Entry::new(
            7,
            rfc3339_ms(0),
            "R",
            "request",
            json!({"hash": "x", "a": {"b": 1, "hash": "y"}, "f": 0.5}),
            GENESIS,
        );
        let line = e.line();
        let (back, actual) = parse(&line, &mut Vec::new()).unwrap();
        assert_eq!(back, e);
        assert_eq!(actual, e.hash);
        assert_eq!(back.data["f"], json!("0.5"));
    }

    #[test]
    fn detects_edits() {
        let e = Entry::new(1, rfc3339_ms(0), "R", "k", json!({"n": 1}), GENESIS);
        let line = String::from_utf8(e.line()).unwrap();
        let edited = line.replace("\"n\":1", "\"n\":2");
        let (_, actual) = parse(edited.as_bytes(), &mut Vec::new()).unwrap();
        assert_ne!(actual, e.hash);
        let spaced = line.replace("\"n\":1", "\"n\": 1");
        assert_eq!(
            parse(spaced.as_bytes(), &mut Vec::new()).unwrap_err(),
            LineError::NotCanonical
        );
        assert!(matches!(
            parse(b"{\"a\":1}", &mut Vec::new()),
            Err(LineError::Malformed(_))
        ));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
