//! Profile errors, and turning byte offsets into `FILE:LINE:COLUMN`.
//!
//! serde's messages name Rust types and struct fields; users edit TOML. So
//! errors from the toml crate are reworded here in terms of keys and tables,
//! located by walking the document's span tree.

use std::ops::Range;
use toml::de::{DeTable, DeValue};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// A problem at a place in a profile file. Line and column are 1-based
    /// and the column counts characters, the format editors and CI annotate.
    #[error("{file}:{line}:{column}: {message}")]
    At {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A problem with a file as a whole (unreadable, not UTF-8).
    #[error("{file}: {message}")]
    File { file: String, message: String },
    /// A name or path that matched no profile.
    #[error("profile `{spec}` not found; looked in: {}", .searched.join(", "))]
    NotFound { spec: String, searched: Vec<String> },
    /// A spec that is neither a valid profile name nor a path.
    #[error("`{spec}` is not a valid profile name: {reason}")]
    InvalidName { spec: String, reason: String },
}

/// A profile's text with the name its errors are reported under.
pub(crate) struct Doc<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Doc<'_> {
    pub fn at(&self, span: Range<usize>, message: impl Into<String>) -> ProfileError {
        let (line, column) = line_col(self.text, span.start);
        ProfileError::At {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    pub fn whole(&self, message: impl Into<String>) -> ProfileError {
        ProfileError::File {
            file: self.file.to_string(),
            message: message.into(),
        }
    }

    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, ProfileError> {
        toml::from_str(self.text).map_err(|e| self.toml_error(&e))
    }

    fn toml_error(&self, err: &toml::de::Error) -> ProfileError {
        let span = err.span();
        let message = describe(err.message(), span.clone(), self.text);
        match span {
            Some(span) => self.at(span, message),
            None => self.whole(message),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Where an error span falls in the document.
enum Place {
    /// On a key, which sits in the table at this dotted path ("" = top).
    Key { table: String },
    /// On the value of this dotted key path.
    Value { key: String },
}

fn describe(message: &str, span: Option<Range<usize>>, text: &str) -> String {
    // If the text does not even parse as TOML, serde never ran and the
    // message is the parser's own.
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(_) => return syntax_message(message, span, text),
    };
    let place = span.and_then(|span| locate(root.get_ref(), "", &span));

    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((key, expected)) = rest.split_once('`') {
            return unknown_key(key, expected, place);
        }
    }
    let key = match place {
        Some(Place::Value { key }) => Some(key),
        _ => None,
    };
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let what = key.map_or_else(|| "this value".to_string(), |k| format!("`{k}`"));
            return format!(
                "{what} must be {}; found {}",
                type_name(expected),
                type_name(found)
            );
        }
    }
    match key {
        Some(key) => format!("`{key}`: {message}"),
        None => message.to_string(),
    }
}

fn syntax_message(message: &str, span: Option<Range<usize>>, text: &str) -> String {
    let snippet = span
        .and_then(|s| text.get(s))
        .filter(|s| !s.is_empty() && !s.contains('\n'));
    match (message, snippet) {
        ("duplicate key", Some(key)) => {
            format!("duplicate key `{key}`; a key may be set only once per table")
        }
        _ => format!("invalid TOML: {message}"),
    }
}

fn unknown_key(key: &str, expected: &str, place: Option<Place>) -> String {
    // serde lists the fields as "expected `a`, `b` or `c`" (or "there are no
    // fields"); the backquoted words are the keys this table accepts.
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let table = match place {
        Some(Place::Key { table }) if table.is_empty() => " at the top level".to_string(),
        Some(Place::Key { table }) => format!(" in [{table}]"),
        _ => String::new(),
    };
    let mut out = format!("unknown key `{key}`{table}");
    if known.is_empty() {
        out.push_str("; this table takes no keys");
    } else {
        let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
        out.push_str(&format!("; known keys: {}", list.join(", ")));
    }
    if let Some(guess) = closest(key, &known) {
        out.push_str(&format!(" (did you mean `{guess}`?)"));
    }
    out
}

/// serde's names for what it wanted or found, in TOML words.
fn type_name(serde_name: &str) -> String {
    let s = serde_name.trim();
    if s == "a sequence" || s.starts_with("sequence") {
        "an array".to_string()
    } else if s == "a map" || s.starts_with("map") || s.starts_with("struct ") {
        "a table".to_string()
    } else {
        s.to_string()
    }
}

fn locate(table: &DeTable<'_>, path: &str, span: &Range<usize>) -> Option<Place> {
    for (key, value) in table.iter() {
        let key_path = if path.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{path}.{}", key.get_ref())
        };
        if key.span() == *span {
            return Some(Place::Key {
                table: path.to_string(),
            });
        }
        if value.span() == *span {
            return Some(Place::Value { key: key_path });
        }
        if let Some(place) = locate_in(value.get_ref(), &key_path, span) {
            return Some(place);
        }
    }
    None
}

fn locate_in(value: &DeValue<'_>, path: &str, span: &Range<usize>) -> Option<Place> {
    match value {
        DeValue::Table(table) => locate(table, path, span),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let item_path = format!("{path}[{i}]");
            if item.span() == *span {
                Some(Place::Value { key: item_path })
            } else {
                locate_in(item.get_ref(), &item_path, span)
            }
        }),
        _ => None,
    }
}

/// The known key a typo most likely meant, if any is close enough.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (key.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based_and_counts_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // After the two-byte `é`: third character of line 2.
        assert_eq!(line_col(text, 9), (2, 3));
        // Inside `é`: the character itself.
        assert_eq!(line_col(text, 8), (2, 2));
        assert_eq!(line_col(text, 1000), (3, 1));
    }

    #[test]
    fn display_formats() {
        let doc = Doc {
            file: "p.toml",
            text: "x\ny = 1\n",
        };
        assert_eq!(doc.at(4..5, "bad").to_string(), "p.toml:2:3: bad");
        assert_eq!(doc.whole("bad").to_string(), "p.toml: bad");
        let e = ProfileError::NotFound {
            spec: "x".into(),
            searched: vec!["/a/x.toml".into(), "built-in profiles".into()],
        };
        assert_eq!(
            e.to_string(),
            "profile `x` not found; looked in: /a/x.toml, built-in profiles"
        );
    }

    #[test]
    fn typo_suggestions() {
        let known = ["hostname", "description", "pass_env"];
        assert_eq!(closest("hostnme", &known), Some("hostname"));
        assert_eq!(closest("pass-env", &known), Some("pass_env"));
        assert_eq!(closest("network", &known), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
