//! Proof bundles: one run's entries with the chain around them, checkable
//! offline with only the public key.
//!
//! A bundle holds every line from the last checkpoint before the run's
//! first entry (or the start of the log) through the first checkpoint at
//! or after its last entry, verbatim. Lines of other runs that fall in
//! between are included too: the hashes need them.

use super::chain::{self, CHECKPOINT};
use super::verify::{self, Report, Status};
use anyhow::{bail, Context, Result};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "moat-audit-bundle-1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    pub run: String,
    /// The key the checkpoints claim (hex); the verifier must bring the
    /// key it trusts and compare.
    pub public_key: String,
    /// The log's lines, each exactly as in the log, without the newline.
    pub entries: Vec<String>,
}

/// Whether `bytes` looks like a bundle rather than a log.
pub fn is_bundle(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("format")?
                .as_str()
                .map(|f| f.starts_with("moat-audit-bundle"))
        })
        .unwrap_or(false)
}

/// The runs in a log, in order of first appearance.
pub fn runs_in(log: &[u8]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut scratch = Vec::new();
    for line in complete_lines(log) {
        if let Ok((e, _)) = chain::parse(line, &mut scratch) {
            if !seen.contains(&e.run) {
                seen.push(e.run);
            }
        }
    }
    seen
}

fn complete_lines(log: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = log.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    log[..end]
        .split(|&b| b == b'\n')
        .take(log[..end].iter().filter(|&&b| b == b'\n').count())
}

/// `latest`, a run id, or a unique prefix of one.
pub fn find_run(log: &[u8], spec: &str) -> Result<String> {
    let runs = runs_in(log);
    if runs.is_empty() {
        bail!("the audit log holds no runs");
    }
    if spec == "latest" {
        return Ok(runs.last().cloned().expect("not empty"));
    }
    if runs.iter().any(|r| r == spec) {
        return Ok(spec.to_owned());
    }
    let m: Vec<&String> = runs.iter().filter(|r| r.starts_with(spec)).collect();
    match m.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no run `{spec}` in the audit log (`moat runs` lists runs)"),
        many => bail!("`{spec}` matches {} runs: give more of the id", many.len()),
    }
}

pub fn export(log: &[u8], run: &str, public_hex: &str) -> Result<Bundle> {
    let lines: Vec<&[u8]> = complete_lines(log).collect();
    let mut scratch = Vec::new();
    let parsed: Vec<Option<chain::Entry>> = lines
        .iter()
        .map(|l| chain::parse(l, &mut scratch).ok().map(|(e, _)| e))
        .collect();
    let of_run: Vec<usize> = parsed
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.as_ref()
                .is_some_and(|e| e.run == run && e.kind != CHECKPOINT)
        })
        .map(|(i, _)| i)
        .collect();
    let (Some(&first), Some(&last)) = (of_run.first(), of_run.last()) else {
        bail!("the audit log holds no entries of run `{run}`");
    };
    let is_cp = |i: &usize| parsed[*i].as_ref().is_some_and(|e| e.kind == CHECKPOINT);
    let start = (0..first).rev().find(is_cp).unwrap_or(0);
    let Some(end) = (last..lines.len()).find(is_cp) else {
        bail!("run `{run}` is not yet covered by a signed checkpoint (is it still running?)");
    };
    let entries = lines[start..=end]
        .iter()
        .map(|l| String::from_utf8(l.to_vec()).context("a log line is not UTF-8"))
        .collect::<Result<Vec<_>>>()?;
    Ok(Bundle {
        format: FORMAT.into(),
        run: run.into(),
        public_key: public_hex.into(),
        entries,
    })
}

/// Checks a bundle against the key the verifier trusts.
pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<Report> {
    let b: Bundle = serde_json::from_slice(bytes).context("not a moat audit bundle")?;
    if b.format != FORMAT {
        bail!(
            "bundle format `{}` is not one this moat reads ({FORMAT})",
            b.format
        );
    }
    let mut text = Vec::new();
    let mut split = false;
    for l in &b.entries {
        split |= l.contains('\n');
        text.extend_from_slice(l.as_bytes());
        text.push(b'\n');
    }
    let from_genesis = text.starts_with(b"{\"data\"")
        && chain::parse(
            &text[..text.iter().position(|&c| c == b'\n').unwrap_or(0)],
            &mut Vec::new(),
        )
        .is_ok_and(|(e, _)| e.seq == 0);
    let mut r = verify::verify_bytes(
        &text,
        &verify::Options {
            key,
            from_genesis,
            head: None,
            head_name: "",
        },
    );
    let trusted = super::sign::public_hex(key);
    if b.public_key != trusted {
        r.problems.insert(
            0,
            format!(
                "the bundle was made with key {}, not with the key you trust ({trusted})",
                b.public_key
            ),
        );
    }
    if split {
        r.problems
            .push("an entry holds a newline: the bundle was edited".into());
    }
    if !r.runs.contains_key(&b.run) {
        r.problems
            .push(format!("the bundle holds no entry of its run `{}`", b.run));
    }
    // A bundle is made to end at a checkpoint: anything unsigned in it is
    // an alteration, not a crash.
    for n in r.notes.drain(..) {
        r.problems.push(n);
    }
    r.status = if r.problems.is_empty() {
        Status::Intact
    } else {
        Status::Tampered
    };
    Ok(r)
}
