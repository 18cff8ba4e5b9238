//! The canonical encoding that entry hashes are computed over, defined
//! here and in the README so that anyone can recompute a hash:
//!
//! - JSON, UTF-8, no whitespace anywhere outside strings.
//! - Object keys sorted by their UTF-8 bytes; no duplicate keys.
//! - Numbers are integers only (no fraction, no exponent, no `-0`), written
//!   in shortest decimal form.
//! - Strings: `"` and `\` escaped as `\"` and `\\`; U+0008, U+0009, U+000A,
//!   U+000C, U+000D as `\b`, `\t`, `\n`, `\f`, `\r`; every other code point
//!   below U+0020 as `\u00XX` with lowercase hex; everything else (including
//!   `/`, U+007F and non-ASCII) as its raw UTF-8 bytes.
//! - `true`, `false`, `null` as such.
//!
//! This is what Python's `json.dumps(v, sort_keys=True,
//! separators=(",", ":"), ensure_ascii=False)` produces for the same data.

use serde_json::Value;

/// Appends the canonical encoding of `v` to `out`. Fails on a number that
/// is not an integer: such data must go through [`normalize`] first.
pub fn encode(v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_u64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else {
                return Err(format!("{n} is not an integer"));
            }
        }
        Value::String(s) => string(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                encode(x, out)?;
            }
            out.push(b']');
        }
        Value::Object(m) => {
            // Sorted here rather than trusting the map's order: another
            // crate in the build may turn on serde_json's `preserve_order`.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                encode(&m[k], out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// The canonical encoding of `v` as a new buffer.
pub fn to_vec(v: &Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(256);
    encode(v, &mut out)?;
    Ok(out)
}

/// Writes `s` as a canonical JSON string.
pub fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Makes `v` encodable: every number that is not an integer becomes its
/// decimal text (a string), so no event is refused for carrying a float.
pub fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) if n.as_u64().is_none() && n.as_i64().is_none() => {
            Value::String(n.to_string())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
    s
}

/// The bytes of lowercase or uppercase hex text.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(d(p[0])? << 4 | d(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_escapes_exactly() {
        let v = json!({"b": 1, "a": [true, null, -3], "é": "x\"\\\n\u{1}/\u{7f}é"});
        let s = String::from_utf8(to_vec(&v).unwrap()).unwrap();
        assert_eq!(
            s,
            "{\"a\":[true,null,-3],\"b\":1,\"é\":\"x\\\"\\\\\\n\\u0001/\u{7f}é\"}"
        );
    }

    #[test]
    fn refuses_floats_until_normalized() {
        let v = json!({"x": 1.5});
        assert!(to_vec(&v).is_err());
        assert_eq!(to_vec(&normalize(v)).unwrap(), b"{\"x\":\"1.5\"}");
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00ABff").unwrap(), vec![0, 0xab, 0xff]);
        assert!(unhex("0g").is_none());
        assert!(unhex("abc").is_none());
    }
}
