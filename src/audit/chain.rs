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
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
        return Err(bad(
            "`hash` and `prev` must be 64 lowercase hex digits".into()
        ));
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
    let (y, m, d, hh, mm, ss) = crate::runs::utc_parts(ms / 1000);
    format!(
        "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z",
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

/// The members of an entry line as found by [`scan`], borrowed from it.
#[derive(Debug, Clone)]
pub struct Scanned<'a> {
    pub seq: u64,
    pub hash: &'a str,
    pub prev: &'a str,
    pub kind: std::borrow::Cow<'a, str>,
    pub run: std::borrow::Cow<'a, str>,
    /// The raw canonical bytes of `data`.
    pub data: &'a [u8],
    /// The hash the line's content actually has.
    pub actual: String,
}

/// The fast path of [`parse`] for verification: checks in one pass over
/// the bytes that `line` is an entry in canonical form (without building
/// a JSON tree) and hashes it. `None` when it is not; [`parse`] then says
/// exactly why.
pub fn scan(line: &[u8]) -> Option<Scanned<'_>> {
    std::str::from_utf8(line).ok()?;
    let mut s = Scanner { b: line, i: 0 };
    let members = s.object_members(0)?;
    if s.i != line.len() || members.len() != 7 {
        return None;
    }
    const KEYS: [&[u8]; 7] = [b"data", b"hash", b"kind", b"prev", b"run", b"seq", b"ts"];
    for ((k, _, _), want) in members.iter().zip(KEYS) {
        if &line[k.0..k.1] != want {
            return None;
        }
    }
    let val = |n: usize| &line[members[n].1 .0..members[n].1 .1];
    let string = |n: usize| -> Option<std::borrow::Cow<'_, str>> {
        let v = val(n);
        if v.first() != Some(&b'"') {
            return None;
        }
        let inner = &v[1..v.len() - 1];
        if members[n].2 {
            serde_json::from_slice::<String>(v).ok().map(Into::into)
        } else {
            std::str::from_utf8(inner).ok().map(Into::into)
        }
    };
    let hex64 = |n: usize| -> Option<&str> {
        let v = val(n);
        let inner = v.get(1..v.len().checked_sub(1)?)?;
        (v[0] == b'"'
            && inner.len() == 64
            && inner
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)))
        .then(|| std::str::from_utf8(inner).expect("hex"))
    };
    let hash = hex64(1)?;
    let prev = hex64(3)?;
    let kind = string(2)?;
    let run = string(4)?;
    string(6)?;
    let seq_b = val(5);
    if seq_b.first() == Some(&b'-') {
        return None;
    }
    let seq: u64 = std::str::from_utf8(seq_b).ok()?.parse().ok()?;
    // The `,"hash":"<64>"` member sits between the end of `data` and the
    // `,` before `kind`.
    let (cut_from, cut_to) = (members[0].1 .1, members[2].0 .0 - 2);
    let mut h = Sha256::new();
    h.update(&line[..cut_from]);
    h.update(&line[cut_to..]);
    Some(Scanned {
        seq,
        hash,
        prev,
        kind,
        run,
        data: val(0),
        actual: canonical::hex(&h.finalize()),
    })
}

/// Byte ranges of a key (inside its quotes), of its value, and whether
/// the key's value is a string with escapes in it.
type Member = ((usize, usize), (usize, usize), bool);

/// A validating reader of canonical JSON (see [`super::canonical`]).
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

const MAX_DEPTH: usize = 128;

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn value(&mut self, depth: usize) -> Option<bool> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object_members(depth).map(|_| false),
            b'[' => {
                self.i += 1;
                if self.eat(b']').is_some() {
                    return Some(false);
                }
                loop {
                    self.value(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(false);
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => self.string().map(|(_, _, esc)| esc),
            b't' => self.literal(b"true").map(|_| false),
            b'f' => self.literal(b"false").map(|_| false),
            b'n' => self.literal(b"null").map(|_| false),
            b'-' | b'0'..=b'9' => self.number().map(|_| false),
            _ => None,
        }
    }

    fn literal(&mut self, w: &[u8]) -> Option<()> {
        (self.b.get(self.i..self.i + w.len())? == w).then(|| self.i += w.len())
    }

    fn number(&mut self) -> Option<()> {
        let start = self.i;
        let neg = self.eat(b'-').is_some();
        let digits = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let d = &self.b[digits..self.i];
        if d.is_empty() || (d[0] == b'0' && (d.len() > 1 || neg)) {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        if neg {
            text.parse::<i64>().ok().map(|_| ())
        } else {
            text.parse::<u64>().ok().map(|_| ())
        }
    }

    /// Returns the range inside the quotes and whether it has escapes.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut esc = false;
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Some((start, self.i - 1, esc)),
                b'\\' => {
                    esc = true;
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'b' | b't' | b'n' | b'f' | b'r' => {}
                        b'u' => {
                            let h = self.b.get(self.i..self.i + 4)?;
                            self.i += 4;
                            let lower = |x: u8| x.is_ascii_digit() || (b'a'..=b'f').contains(&x);
                            if &h[..2] != b"00" || !lower(h[2]) || !lower(h[3]) || h[2] > b'1' {
                                return None;
                            }
                            let v =
                                u8::from_str_radix(std::str::from_utf8(&h[2..]).ok()?, 16).ok()?;
                            if matches!(v, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => {}
            }
        }
    }

    fn object_members(&mut self, depth: usize) -> Option<Vec<Member>> {
        self.eat(b'{')?;
        let mut out: Vec<Member> = Vec::new();
        if self.eat(b'}').is_some() {
            return Some(out);
        }
        let mut prev_key: Option<(usize, usize, bool)> = None;
        loop {
            let k = self.string()?;
            if let Some(p) = prev_key {
                if !self.key_less(p, k) {
                    return None;
                }
            }
            prev_key = Some(k);
            self.eat(b':')?;
            let vs = self.i;
            let esc = self.value(depth + 1)?;
            out.push(((k.0, k.1), (vs, self.i), esc));
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(out);
                }
                _ => return None,
            }
        }
    }

    /// Whether key `a` sorts strictly before key `b` by their UTF-8 bytes.
    fn key_less(&self, a: (usize, usize, bool), b: (usize, usize, bool)) -> bool {
        if !a.2 && !b.2 {
            return self.b[a.0..a.1] < self.b[b.0..b.1];
        }
        let un =
            |k: (usize, usize, bool)| serde_json::from_slice::<String>(&self.b[k.0 - 1..=k.1]).ok();
        match (un(a), un(b)) {
            (Some(x), Some(y)) => x.as_bytes() < y.as_bytes(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod scan_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scan_agrees_with_parse() {
        let datas = [
            json!({}),
            json!([]),
            json!({"a": [1, -2, 0, true, false, null, "x\u{1}\u{1f}\"\\\n\t\r\u{8}\u{c}/é\u{7f}"], "b": {"\"q": 1, "a\"": 2}}),
            json!({"k": u64::MAX, "m": i64::MIN, "hash": "h", "z": {"hash": 1}}),
        ];
        for d in datas {
            let e = Entry::new(5, rfc3339_ms(9), "r\"un", "ki\nnd", d, GENESIS);
            let line = e.line();
            let s = scan(&line).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&line)));
            assert_eq!(s.actual, e.hash);
            assert_eq!(s.hash, e.hash);
            assert_eq!(s.seq, 5);
            assert_eq!(s.run, "r\"un");
            assert_eq!(s.kind, "ki\nnd");
            assert_eq!(serde_json::from_slice::<Value>(s.data).unwrap(), e.data);
        }
    }

    #[test]
    fn scan_refuses_what_is_not_canonical() {
        let e = Entry::new(
            1,
            rfc3339_ms(0),
            "r",
            "k",
            json!({"a": 1, "b": "x"}),
            GENESIS,
        );
        let line = String::from_utf8(e.line()).unwrap();
        for bad in [
            line.replace("{\"a\":1,\"b\":\"x\"}", "{\"b\":\"x\",\"a\":1}"),
            line.replace("\"a\":1", "\"a\":1.0"),
            line.replace("\"a\":1", "\"a\":01"),
            line.replace("\"a\":1", "\"a\":-0"),
            line.replace("\"a\":1", "\"a\" :1"),
            line.replace("\"x\"", "\"\\u0078\""),
            line.replace("\"x\"", "\"\\/\""),
            line.replace("\"a\":1,", "\"a\":1,\"a\":1,"),
            format!("{line} "),
        ] {
            assert!(scan(bad.as_bytes()).is_none(), "{bad}");
        }
    }
}
