//! The TOML schema of one profile file, and its validation into a [`Layer`].
//!
//! Values whose errors are found only after deserializing are kept
//! [`Spanned`] so those errors can still point at a line and column. Adding a
//! table means adding a field to [`RawProfile`], a struct for the table, and
//! its check in [`RawProfile::validate`].

use super::error::{Doc, ProfileError};
use super::layer::{
    FilesystemLayer, LandlockLayer, Layer, LimitsLayer, NetworkLayer, SeccompLayer,
};
use super::model::{Enforcement, NetworkMode, PathSpec, Ports, WorkspaceAccess};
use crate::secrets::SecretSpec;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

type Text = Spanned<String>;

/// A value of any TOML type. Used where the key accepts more than one type
/// (`memory = 536870912` or `memory = "512M"`), so that a wrong one gets a
/// message listing what the key accepts rather than serde's type names.
type AnyValue = Spanned<toml::Value>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfile {
    description: Option<Text>,
    extends: Option<Text>,
    hostname: Option<Text>,
    #[serde(default)]
    pass_env: Vec<Text>,
    #[serde(default)]
    env: BTreeMap<Text, Text>,
    #[serde(default)]
    grants: Vec<Text>,
    #[serde(default)]
    secrets: BTreeMap<Text, Text>,
    #[serde(default)]
    filesystem: RawFilesystem,
    #[serde(default)]
    landlock: RawLandlock,
    #[serde(default)]
    seccomp: RawSeccomp,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    network: RawNetwork,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesystem {
    workspace: Option<Text>,
    #[serde(default)]
    read_only: Vec<Text>,
    #[serde(default)]
    read_write: Vec<Text>,
    #[serde(default)]
    mask: Vec<Text>,
    #[serde(default)]
    tmpfs: Vec<Text>,
    #[serde(default)]
    protect: Vec<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLandlock {
    mode: Option<Text>,
    connect_tcp: Option<Spanned<RawPorts>>,
    bind_tcp: Option<Spanned<RawPorts>>,
    #[serde(default)]
    skip: Vec<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeccomp {
    #[serde(default)]
    deny: Vec<Text>,
    #[serde(default)]
    allow: Vec<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<AnyValue>,
    pids: Option<AnyValue>,
    cpu: Option<AnyValue>,
    timeout: Option<AnyValue>,
    required: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    mode: Option<Text>,
    #[serde(default)]
    allow: Vec<Text>,
    #[serde(default)]
    deny: Vec<Text>,
    proxy_port: Option<AnyValue>,
    #[serde(default)]
    upstream_ca: Vec<Text>,
}

/// `connect_tcp` / `bind_tcp` as written: a word (only `"any"` is valid) or
/// an array whose items keep their spans, so that a bad port is pointed at
/// rather than the whole array.
#[derive(Debug)]
enum RawPorts {
    Word(String),
    List(Vec<AnyValue>),
}

impl<'de> Deserialize<'de> for RawPorts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortsVisitor;

        impl<'de> Visitor<'de> for PortsVisitor {
            type Value = RawPorts;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"any\" or an array of port numbers (1 to 65535)")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPorts, E> {
                Ok(RawPorts::Word(v.to_string()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawPorts, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<AnyValue>()? {
                    items.push(item);
                }
                Ok(RawPorts::List(items))
            }
        }

        deserializer.deserialize_any(PortsVisitor)
    }
}

/// Parses and validates one profile file (its own keys only; `extends` is
/// checked for syntax here and resolved by the caller).
pub(crate) fn parse(doc: &Doc<'_>) -> Result<Layer, ProfileError> {
    doc.deserialize::<RawProfile>()?.validate(doc)
}

impl RawProfile {
    fn validate(self, doc: &Doc<'_>) -> Result<Layer, ProfileError> {
        if let Some(extends) = &self.extends {
            check_extends(doc, extends)?;
        }
        let hostname = match self.hostname {
            Some(h) => Some(hostname(doc, &h)?),
            None => None,
        };
        let pass_env = self
            .pass_env
            .iter()
            .map(|p| pass_env_entry(doc, p))
            .collect::<Result<_, _>>()?;
        let mut env = BTreeMap::new();
        for (key, value) in self.env {
            check_env(doc, &key, &value)?;
            env.insert(key.into_inner(), value.into_inner());
        }
        let grants = self
            .grants
            .iter()
            .map(|g| {
                if crate::credentials::valid_name(g.get_ref()) {
                    Ok(g.get_ref().clone())
                } else {
                    Err(doc.at(
                        g.span(),
                        format!(
                            "`grants` entry `{}` is not a credential name: use letters, \
                             digits, `-`, `_` and `.`",
                            g.get_ref().escape_debug()
                        ),
                    ))
                }
            })
            .collect::<Result<_, _>>()?;
        let mut secrets = BTreeMap::new();
        for (key, value) in self.secrets {
            let spec = secret(doc, &key, &value)?;
            secrets.insert(key.into_inner(), spec);
        }
        Ok(Layer {
            extends: self.extends,
            grants,
            description: self.description.map(Spanned::into_inner),
            hostname,
            pass_env,
            env,
            secrets,
            filesystem: self.filesystem.validate(doc)?,
            landlock: self.landlock.validate(doc)?,
            seccomp: self.seccomp.validate(doc)?,
            limits: self.limits.validate(doc)?,
            network: self.network.validate(doc)?,
        })
    }
}

impl RawFilesystem {
    fn validate(self, doc: &Doc<'_>) -> Result<FilesystemLayer, ProfileError> {
        let paths = |list: &'static str, items: &[Text]| -> Result<Vec<PathSpec>, ProfileError> {
            items
                .iter()
                .map(|p| path_spec(doc, &format!("filesystem.{list}"), p))
                .collect()
        };
        Ok(FilesystemLayer {
            workspace: match &self.workspace {
                Some(w) => Some(workspace(doc, w)?),
                None => None,
            },
            read_only: paths("read_only", &self.read_only)?,
            read_write: paths("read_write", &self.read_write)?,
            mask: paths("mask", &self.mask)?,
            tmpfs: paths("tmpfs", &self.tmpfs)?,
            protect: self
                .protect
                .iter()
                .map(|p| protect_entry(doc, p))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl RawLandlock {
    fn validate(self, doc: &Doc<'_>) -> Result<LandlockLayer, ProfileError> {
        Ok(LandlockLayer {
            mode: match &self.mode {
                Some(m) => Some(enforcement(doc, m)?),
                None => None,
            },
            connect_tcp: match &self.connect_tcp {
                Some(p) => Some(ports(doc, "connect_tcp", p)?),
                None => None,
            },
            bind_tcp: match &self.bind_tcp {
                Some(p) => Some(ports(doc, "bind_tcp", p)?),
                None => None,
            },
            skip: self
                .skip
                .iter()
                .map(|p| path_spec(doc, "landlock.skip", p))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl RawSeccomp {
    fn validate(self, doc: &Doc<'_>) -> Result<SeccompLayer, ProfileError> {
        let names = |list: &'static str, items: &[Text]| -> Result<Vec<String>, ProfileError> {
            items.iter().map(|n| syscall_name(doc, list, n)).collect()
        };
        Ok(SeccompLayer {
            deny: names("deny", &self.deny)?,
            allow: names("allow", &self.allow)?,
        })
    }
}

impl RawLimits {
    fn validate(self, doc: &Doc<'_>) -> Result<LimitsLayer, ProfileError> {
        Ok(LimitsLayer {
            memory: self.memory.map(|v| memory(doc, &v)).transpose()?,
            pids: self.pids.map(|v| pids(doc, &v)).transpose()?,
            cpu_millis: self.cpu.map(|v| cpu(doc, &v)).transpose()?,
            timeout_ms: self.timeout.map(|v| timeout(doc, &v)).transpose()?,
            required: self.required.map(Spanned::into_inner),
        })
    }
}

impl RawNetwork {
    fn validate(self, doc: &Doc<'_>) -> Result<NetworkLayer, ProfileError> {
        let patterns = |list: &'static str, items: &[Text]| -> Result<Vec<String>, ProfileError> {
            items.iter().map(|p| host_pattern(doc, list, p)).collect()
        };
        Ok(NetworkLayer {
            mode: self.mode.map(|m| network_mode(doc, &m)).transpose()?,
            allow: patterns("allow", &self.allow)?,
            deny: patterns("deny", &self.deny)?,
            proxy_port: self.proxy_port.map(|p| proxy_port(doc, &p)).transpose()?,
            upstream_ca: self
                .upstream_ca
                .iter()
                .map(|p| path_spec(doc, "network.upstream_ca", p))
                .collect::<Result<_, _>>()?,
        })
    }
}

fn network_mode(doc: &Doc<'_>, mode: &Text) -> Result<NetworkMode, ProfileError> {
    NetworkMode::from_name(mode.get_ref()).ok_or_else(|| {
        doc.at(
            mode.span(),
            format!(
                "`mode` in [network] must be \"allowlist\" (only the hosts in `allow`), \
                 \"open\" (any host not in `deny`) or \"none\" (no network at all), not \"{}\"",
                mode.get_ref().escape_debug()
            ),
        )
    })
}

/// An `allow` / `deny` entry, in its canonical spelling (lower case, IPv6
/// compressed) so that merging drops repeats written differently.
fn host_pattern(doc: &Doc<'_>, list: &str, entry: &Text) -> Result<String, ProfileError> {
    crate::network_policy::Pattern::parse(entry.get_ref())
        .map(|p| p.to_string())
        .map_err(|reason| {
            doc.at(
                entry.span(),
                format!(
                    "`network.{list}` entry \"{}\" is not a host pattern: {reason}",
                    entry.get_ref().escape_debug()
                ),
            )
        })
}

fn proxy_port(doc: &Doc<'_>, value: &AnyValue) -> Result<u16, ProfileError> {
    match value.get_ref() {
        toml::Value::Integer(n) if (1..=65535).contains(n) => Ok(*n as u16),
        other => Err(doc.at(
            value.span(),
            format!(
                "`proxy_port` in [network] must be a TCP port number from 1 to 65535 (the \
                 default is {}); found {}",
                super::model::DEFAULT_PROXY_PORT,
                found(other)
            ),
        )),
    }
}

fn enforcement(doc: &Doc<'_>, mode: &Text) -> Result<Enforcement, ProfileError> {
    match mode.get_ref().as_str() {
        "best-effort" => Ok(Enforcement::BestEffort),
        "required" => Ok(Enforcement::Required),
        other => Err(doc.at(
            mode.span(),
            format!(
                "`mode` in [landlock] must be \"best-effort\" (use what the kernel offers) or \
                 \"required\" (refuse to run without full Landlock), not \"{}\"",
                other.escape_debug()
            ),
        )),
    }
}

fn ports(doc: &Doc<'_>, key: &str, value: &Spanned<RawPorts>) -> Result<Ports, ProfileError> {
    let accepted = "\"any\", or an array of port numbers from 1 to 65535 (`[]` for none)";
    let items = match value.get_ref() {
        RawPorts::Word(word) if word == "any" => return Ok(Ports::Any),
        RawPorts::Word(word) => {
            return Err(doc.at(
                value.span(),
                format!(
                    "`{key}` in [landlock] must be {accepted}, not \"{}\"",
                    word.escape_debug()
                ),
            ))
        }
        RawPorts::List(items) => items,
    };
    let mut out: Vec<u16> = Vec::with_capacity(items.len());
    for item in items {
        let port = match item.get_ref() {
            toml::Value::Integer(n) => u16::try_from(*n).ok().filter(|p| *p != 0),
            _ => None,
        };
        let Some(port) = port else {
            return Err(doc.at(
                item.span(),
                format!(
                    "`{key}` in [landlock]: {} is not a TCP port; list port numbers from 1 to \
                     65535, or write `{key} = \"any\"` for all of them",
                    found(item.get_ref())
                ),
            ));
        };
        if !out.contains(&port) {
            out.push(port);
        }
    }
    Ok(Ports::Only(out))
}

fn syscall_name(doc: &Doc<'_>, list: &str, name: &Text) -> Result<String, ProfileError> {
    let s = name.get_ref();
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        let (what, example) = if list == "deny" {
            ("a syscall name", "chroot")
        } else {
            ("a syscall or group name", "ptrace")
        };
        return Err(doc.at(
            name.span(),
            format!(
                "`seccomp.{list}` entry \"{}\" is not {what}: use lowercase letters, digits \
                 and `_` (such as \"{example}\")",
                s.escape_debug()
            ),
        ));
    }
    Ok(s.clone())
}

/// Below this a shell cannot even start, so a smaller limit is surely a
/// mistake (a missing unit, most likely) rather than a wish.
pub(crate) const MIN_MEMORY: u64 = 4 << 20;
const MEMORY_FORMS: &str = "a number of bytes as an integer, or a string of a number and a unit \
     K, M, G or T (1024-based; `MiB`, `MB` and `m` mean the same as `M`), such as \"512M\" or \
     \"1.5G\"";

fn memory(doc: &Doc<'_>, value: &AnyValue) -> Result<u64, ProfileError> {
    let err = |message: String| Err(doc.at(value.span(), message));
    let bytes = match value.get_ref() {
        toml::Value::Integer(n) if *n >= 0 => *n as u64,
        toml::Value::String(s) => match parse_size(s) {
            Ok(bytes) => bytes,
            Err(reason) => {
                return err(format!(
                    "`memory` in [limits]: {reason}; write {MEMORY_FORMS}"
                ))
            }
        },
        other => {
            return err(format!(
                "`memory` in [limits] must be {MEMORY_FORMS}; found {}",
                found(other)
            ))
        }
    };
    if bytes < MIN_MEMORY {
        let hint = match value.get_ref() {
            toml::Value::Integer(n) => {
                format!(" (an integer is a byte count: did you mean \"{n}M\"?)")
            }
            _ => String::new(),
        };
        return err(format!(
            "`memory` in [limits] is {bytes} bytes, less than the 4 MiB (\"4M\") moat needs: \
             even a shell cannot start in less{hint}"
        ));
    }
    Ok(bytes)
}

/// Bytes from `"512M"`, `"1.5G"`, `"2GiB"`, `"64kb"`: a number (a decimal
/// point allowed) and a 1024-based unit, case-insensitive. The reason it is
/// not one on failure.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("the value is empty".to_string());
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim_start());
    let shown = text.escape_debug();
    if number.is_empty() {
        return Err(format!("\"{shown}\" does not start with a number"));
    }
    let unit_lower = unit.to_ascii_lowercase();
    let (prefix, suffix) = unit_lower.split_at(unit_lower.len().min(1));
    let shift = match prefix {
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "" => return Err(format!("\"{shown}\" has no unit")),
        _ => return Err(format!("\"{shown}\" has an unknown unit `{unit}`")),
    };
    if !matches!(suffix, "" | "i" | "ib" | "b") {
        return Err(format!("\"{shown}\" has an unknown unit `{unit}`"));
    }
    let bytes = scaled(number, 1u128 << shift)
        .ok_or_else(|| format!("\"{shown}\" is not a number followed by a unit"))?;
    // Kept within TOML's integers so that any limit can be written back as
    // an exact byte count.
    u64::try_from(bytes)
        .ok()
        .filter(|b| *b <= i64::MAX as u64)
        .ok_or_else(|| format!("\"{shown}\" is more memory than any machine has"))
}

/// `number` (digits, at most one `.`) times `unit`, rounded down to a
/// whole number; `None` when it is not such a number or overflows.
fn scaled(number: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    let parse = |s: &str| -> Option<u128> {
        if s.is_empty() {
            Some(0)
        } else {
            s.parse().ok()
        }
    };
    // Digits past the 30th cannot change the result for any unit used here.
    let fraction = &fraction[..fraction.len().min(30)];
    let whole = parse(whole)?.checked_mul(unit)?;
    let denominator = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let part = parse(fraction)?.checked_mul(unit)? / denominator;
    whole.checked_add(part)
}

/// Fewer and a login shell with a pipeline already fails to fork.
pub(crate) const MIN_PIDS: u64 = 8;

fn pids(doc: &Doc<'_>, value: &AnyValue) -> Result<u64, ProfileError> {
    let err = |message: String| Err(doc.at(value.span(), message));
    match value.get_ref() {
        toml::Value::Integer(n) if *n >= MIN_PIDS as i64 => Ok(*n as u64),
        toml::Value::Integer(n) if *n >= 0 => err(format!(
            "`pids` in [limits] is {n}, but a shell needs more than that; allow at least \
             {MIN_PIDS} processes and threads (the default profile allows 4096)"
        )),
        other => err(format!(
            "`pids` in [limits] must be a whole number of processes and threads, at least \
             {MIN_PIDS} (such as 512); found {}",
            found(other)
        )),
    }
}

pub(crate) const MAX_CPUS: u64 = 4096;

fn cpu(doc: &Doc<'_>, value: &AnyValue) -> Result<u64, ProfileError> {
    let cores = match value.get_ref() {
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(n) => Some(*n as f64),
        _ => None,
    };
    match cores {
        Some(c) if c > 0.0 && c <= MAX_CPUS as f64 => {
            // A tiny positive share still means "limited", never "zero".
            Ok(((c * 1000.0).round() as u64).max(1))
        }
        _ => Err(doc.at(
            value.span(),
            format!(
                "`cpu` in [limits] is a number of cores, more than 0 and at most {MAX_CPUS} \
                 (such as 0.5 or 2); found {}",
                found(value.get_ref())
            ),
        )),
    }
}

const TIMEOUT_FORMS: &str = "a whole number of seconds (such as 90), or a string of numbers \
     with units ms, s, m, h or d (such as \"500ms\", \"90s\", \"1h30m\")";

fn timeout(doc: &Doc<'_>, value: &AnyValue) -> Result<u64, ProfileError> {
    let err = |message: String| Err(doc.at(value.span(), message));
    let ms = match value.get_ref() {
        toml::Value::Integer(n) if *n > 0 => match (*n as u64).checked_mul(1000) {
            Some(ms) => ms,
            None => return err(format!("`timeout` in [limits]: {n} seconds is too long")),
        },
        toml::Value::Integer(n) => {
            return err(format!(
                "`timeout` in [limits] must be more than zero, not {n}; for no timeout, leave \
                 the key out"
            ))
        }
        toml::Value::String(s) => match parse_duration(s) {
            Ok(0) => {
                return err(format!(
                    "`timeout` in [limits] must be more than zero, not \"{}\"; for no timeout, \
                     leave the key out",
                    s.escape_debug()
                ))
            }
            Ok(ms) => ms,
            Err(reason) => {
                return err(format!(
                    "`timeout` in [limits]: {reason}; write {TIMEOUT_FORMS}"
                ))
            }
        },
        other => {
            return err(format!(
                "`timeout` in [limits] must be {TIMEOUT_FORMS}; found {}",
                found(other)
            ))
        }
    };
    Ok(ms)
}

/// Milliseconds from `"90s"`, `"1h30m"`, `"1.5h"`, `"500ms"`: number and
/// unit groups, added up (fractions of a millisecond are dropped). Units
/// are lowercase only: `M` could as well mean months.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let shown = text.escape_debug();
    let mut rest = text.trim_start();
    if rest.is_empty() {
        return Err("the value is empty".to_string());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..split];
        rest = rest[split..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = rest[unit_end..].trim_start();
        if number.is_empty() {
            return Err(match unit {
                "" => format!("\"{shown}\" is not a duration"),
                _ => format!("\"{shown}\" has a unit `{unit}` without a number before it"),
            });
        }
        let ms_per_unit: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{number}` in \"{shown}\" has no unit")),
            _ => return Err(format!("\"{shown}\" has an unknown unit `{unit}`")),
        };
        let ms = scaled(number, ms_per_unit)
            .ok_or_else(|| format!("`{number}` in \"{shown}\" is not a number"))?;
        total = total.saturating_add(ms);
    }
    u64::try_from(total)
        .ok()
        .filter(|ms| *ms <= i64::MAX as u64)
        .ok_or_else(|| format!("\"{shown}\" is too long"))
}

/// A value as messages show it: its TOML type, then the value.
fn found(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("string \"{}\"", s.escape_debug()),
        toml::Value::Array(_) => "an array".to_string(),
        toml::Value::Table(_) => "a table".to_string(),
        other => format!("{} `{other}`", value.type_str()),
    }
}

/// A spec names a file when it looks like one; anything else is a name
/// looked up in the profile directories.
pub(crate) fn is_path_spec(spec: &str) -> bool {
    spec.contains('/') || spec.ends_with(".toml")
}

/// Names become file names (`NAME.toml`) in the search directories, so they
/// must not climb out of them or hide as dotfiles.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() || !ok_chars || name.starts_with('.') {
        return Err(
            "names use letters, digits, `_`, `.` and `-`, and do not start with `.`; \
                    to use a file, give a path containing `/` or ending in `.toml`"
                .to_string(),
        );
    }
    Ok(())
}

fn check_extends(doc: &Doc<'_>, extends: &Text) -> Result<(), ProfileError> {
    let spec = extends.get_ref();
    if spec.is_empty() {
        return Err(doc.at(
            extends.span(),
            "`extends` is empty; name a profile (`extends = \"default\"`) or a file \
             (`extends = \"./base.toml\"`), or remove the key to inherit nothing",
        ));
    }
    if spec.contains('\0') {
        return Err(doc.at(extends.span(), "`extends` contains a NUL character"));
    }
    if !is_path_spec(spec) {
        check_name(spec).map_err(|reason| {
            doc.at(
                extends.span(),
                format!("`extends`: `{spec}` is not a valid profile name: {reason}"),
            )
        })?;
    }
    Ok(())
}

fn hostname(doc: &Doc<'_>, h: &Text) -> Result<String, ProfileError> {
    let name = h.get_ref();
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if name.is_empty() || name.len() > 64 || !ok_chars || name.starts_with('-') {
        return Err(doc.at(
            h.span(),
            format!(
                "hostname `{}` is not valid: use 1 to 64 letters, digits, `-` and `.`, \
                 not starting with `-`",
                name.escape_debug()
            ),
        ));
    }
    Ok(name.clone())
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn pass_env_entry(doc: &Doc<'_>, entry: &Text) -> Result<String, ProfileError> {
    let s = entry.get_ref();
    if s == "*" {
        // An allowlist that allows everything would hand the agent every
        // token and key in the caller's environment.
        return Err(doc.at(
            entry.span(),
            "`pass_env` entry `*` would pass the whole host environment; list the variables \
             you need, or prefixes such as `LC_*`",
        ));
    }
    if !is_env_name(s.strip_suffix('*').unwrap_or(s)) {
        return Err(doc.at(
            entry.span(),
            format!(
                "`pass_env` entry `{}` is not a variable name: use letters, digits and `_`, \
                 not starting with a digit, optionally ending in `*` to match a prefix",
                s.escape_debug()
            ),
        ));
    }
    Ok(s.clone())
}

fn check_env(doc: &Doc<'_>, key: &Text, value: &Text) -> Result<(), ProfileError> {
    if !is_env_name(key.get_ref()) {
        return Err(doc.at(
            key.span(),
            format!(
                "[env] key `{}` is not a valid variable name: use letters, digits and `_`, \
                 not starting with a digit",
                key.get_ref().escape_debug()
            ),
        ));
    }
    if value.get_ref().contains('\0') {
        return Err(doc.at(
            value.span(),
            format!(
                "[env] value of `{}` contains a NUL character, which no program can receive",
                key.get_ref()
            ),
        ));
    }
    Ok(())
}

/// One `[secrets]` entry: the name is a variable name moat does not set
/// itself, the value a source spec (see `crate::secrets`).
fn secret(doc: &Doc<'_>, key: &Text, value: &Text) -> Result<SecretSpec, ProfileError> {
    crate::secrets::name_allowed(key.get_ref())
        .map_err(|e| doc.at(key.span(), format!("[secrets] {e}")))?;
    SecretSpec::parse(value.get_ref())
        .map_err(|e| doc.at(value.span(), format!("[secrets] `{}`: {e}", key.get_ref())))
}

fn workspace(doc: &Doc<'_>, w: &Text) -> Result<WorkspaceAccess, ProfileError> {
    match w.get_ref().as_str() {
        "read-write" => Ok(WorkspaceAccess::ReadWrite),
        "read-only" => Ok(WorkspaceAccess::ReadOnly),
        other => Err(doc.at(
            w.span(),
            format!(
                "`workspace` in [filesystem] must be \"read-write\" or \"read-only\", not \"{}\"",
                other.escape_debug()
            ),
        )),
    }
}

fn path_spec(doc: &Doc<'_>, list: &str, entry: &Text) -> Result<PathSpec, ProfileError> {
    let err = |message: String| Err(doc.at(entry.span(), message));
    let written = entry.get_ref();
    let (optional, path) = match written.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, written.as_str()),
    };
    if path.is_empty() {
        return err(format!(
            "empty path in `{list}`; write an absolute path or one starting with `~/`"
        ));
    }
    if path.contains('\0') {
        return err(format!(
            "path `{}` in `{list}` contains a NUL character",
            path.escape_debug()
        ));
    }
    if !(path.starts_with('/') || path == "~" || path.starts_with("~/")) {
        return err(format!(
            "path `{}` in `{list}` must be absolute or start with `~/` \
             (relative paths would depend on where moat is run)",
            path.escape_debug()
        ));
    }
    // Bind mounts are set up by path; a `..` would make the entry mean
    // something other than what it reads as once symlinks are involved.
    if path.split('/').any(|c| c == "..") {
        return err(format!(
            "path `{}` in `{list}` contains a `..` component; write the path it \
             leads to instead",
            path.escape_debug()
        ));
    }
    Ok(PathSpec {
        path: normalize_path(path),
        optional,
    })
}

/// One spelling per path (`/usr//lib/./` is `/usr/lib`) so that merging can
/// drop duplicates by comparing strings.
fn normalize_path(path: &str) -> String {
    let (root, rest) = match path.strip_prefix('/') {
        Some(rest) => ("", rest),
        None => ("~", path.strip_prefix('~').unwrap_or(path)),
    };
    let parts: Vec<&str> = rest
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    match (root, parts.is_empty()) {
        ("", true) => "/".to_string(),
        (root, true) => root.to_string(),
        (root, false) => format!("{root}/{}", parts.join("/")),
    }
}

fn protect_entry(doc: &Doc<'_>, entry: &Text) -> Result<String, ProfileError> {
    let err = |message: String| Err(doc.at(entry.span(), message));
    let s = entry.get_ref();
    if s.is_empty() {
        return err(
            "empty entry in `filesystem.protect`; name a path inside the workspace, such as \
             `.git/hooks`"
                .to_string(),
        );
    }
    if s.contains('\0') {
        return err(format!(
            "`filesystem.protect` entry `{}` contains a NUL character",
            s.escape_debug()
        ));
    }
    if s.starts_with('/') {
        return err(format!(
            "`filesystem.protect` entry `{}` must be relative to the workspace (like \
             `.git/hooks`); to hide or bind host paths use `mask` or `read_only`",
            s.escape_debug()
        ));
    }
    if s.split('/').any(|c| c == "..") {
        return err(format!(
            "`filesystem.protect` entry `{}` contains a `..` component; it may only name \
             paths inside the workspace",
            s.escape_debug()
        ));
    }
    let parts: Vec<&str> = s
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() {
        return err(format!(
            "`filesystem.protect` entry `{}` names the whole workspace; set \
             `workspace = \"read-only\"` in [filesystem] instead",
            s.escape_debug()
        ));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(text: &str) -> Result<Layer, String> {
        parse(&Doc {
            file: "p.toml",
            text,
        })
        .map_err(|e| e.to_string())
    }

    fn error(text: &str) -> String {
        match layer(text) {
            Ok(l) => panic!("expected an error for {text:?}, got {l:?}"),
            Err(e) => e,
        }
    }

    fn assert_error(text: &str, position: &str, needle: &str) {
        let e = error(text);
        assert!(
            e.starts_with(&format!("p.toml:{position}: ")),
            "wrong position in {e:?}, expected {position}"
        );
        assert!(e.contains(needle), "{e:?} does not mention {needle:?}");
    }

    #[test]
    fn empty_file_sets_nothing() {
        let l = layer("").unwrap();
        assert_eq!(l.extends, None);
        assert_eq!(l.description, None);
        assert_eq!(l.hostname, None);
        assert_eq!(l.filesystem.workspace, None);
        assert!(l.pass_env.is_empty() && l.env.is_empty());
        assert!(l.filesystem.read_only.is_empty() && l.filesystem.protect.is_empty());
    }

    #[test]
    fn unknown_top_level_key() {
        let e = error("description = \"x\"\n  hostnme = \"box\"\n");
        assert!(
            e.starts_with("p.toml:2:3: unknown key `hostnme` at the top level; known keys: "),
            "{e}"
        );
        assert!(
            e.contains("`hostname`") && e.contains("`filesystem`"),
            "{e}"
        );
        assert!(e.ends_with("(did you mean `hostname`?)"), "{e}");
    }

    #[test]
    fn unknown_key_in_filesystem() {
        let e = error("[filesystem]\nread_only = []\nreadonly = [\"/usr\"]\n");
        assert!(
            e.starts_with("p.toml:3:1: unknown key `readonly` in [filesystem]; known keys: "),
            "{e}"
        );
        assert!(e.contains("`workspace`") && e.contains("`protect`"), "{e}");
        assert!(e.contains("did you mean `read_only`?"), "{e}");
        // Dotted keys and inline tables land in the same table.
        assert_error(
            "filesystem.tmpf = []\n",
            "1:12",
            "unknown key `tmpf` in [filesystem]",
        );
        assert_error(
            "filesystem = { mask = [], bogus = 1 }\n",
            "1:27",
            "unknown key `bogus` in [filesystem]",
        );
    }

    #[test]
    fn wrong_types() {
        assert_error(
            "hostname = 5\n",
            "1:12",
            "`hostname` must be a string; found integer `5`",
        );
        assert_error(
            "pass_env = \"HOME\"\n",
            "1:12",
            "`pass_env` must be an array; found string \"HOME\"",
        );
        assert_error(
            "[filesystem]\nread_only = [\"/usr\", 3]\n",
            "2:22",
            "`filesystem.read_only[1]` must be a string",
        );
        assert_error("filesystem = 1\n", "1:14", "`filesystem` must be a table");
        assert_error("[env]\nA = true\n", "2:5", "`env.A` must be a string");
    }

    #[test]
    fn toml_syntax_errors() {
        assert_error("hostname = \"moat\"\nhostname = \n", "2:12", "invalid TOML");
        assert_error("[filesystem\n", "1:12", "invalid TOML");
        assert_error(
            "hostname = \"a\"\nhostname = \"b\"\n",
            "2:1",
            "duplicate key `hostname`",
        );
    }

    #[test]
    fn hostname_rules() {
        for ok in ["moat", "a", "build-1.example", &"x".repeat(64)] {
            assert_eq!(
                layer(&format!("hostname = {ok:?}"))
                    .unwrap()
                    .hostname
                    .as_deref(),
                Some(ok)
            );
        }
        for bad in ["", "-x", "a_b", "a b", "ü", &"x".repeat(65)] {
            assert_error(&format!("hostname = {bad:?}"), "1:12", "is not valid");
        }
    }

    #[test]
    fn pass_env_rules() {
        let l = layer("pass_env = [\"HOME\", \"LC_*\", \"_x1\", \"A*\"]").unwrap();
        assert_eq!(l.pass_env, ["HOME", "LC_*", "_x1", "A*"]);
        for bad in ["", "1A", "A-B", "A*B", "**", "A**"] {
            assert_error(
                &format!("pass_env = [\"OK\", {bad:?}]"),
                "1:19",
                "is not a variable name",
            );
        }
        assert_error("pass_env = [\"*\"]", "1:13", "whole host environment");
    }

    #[test]
    fn grants_rules() {
        let l = layer("grants = [\"github\", \"work.gh-2\"]").unwrap();
        assert_eq!(l.grants, ["github", "work.gh-2"]);
        assert_error(
            "grants = [\"ok\", \"a/b\"]",
            "1:17",
            "is not a credential name",
        );
    }

    #[test]
    fn env_rules() {
        let l = layer("[env]\nA = \"1\"\n_b = \"\"\n").unwrap();
        assert_eq!(l.env["A"], "1");
        assert_eq!(l.env["_b"], "");
        assert_error(
            "[env]\nA = \"1\"\n\"1X\" = \"2\"\n",
            "3:1",
            "[env] key `1X`",
        );
        assert_error("[env]\n\"A-B\" = \"2\"\n", "2:1", "[env] key `A-B`");
        assert_error("[env]\nA = \"a\\u0000b\"\n", "2:5", "NUL");
    }

    #[test]
    fn secrets_rules() {
        let l = layer("[secrets]\nDB = \"env:DB_URL\"\nOPT = \"-keyring:db\"\n").unwrap();
        assert_eq!(l.secrets["DB"].to_string(), "env:DB_URL");
        assert!(l.secrets["OPT"].optional);
        assert_error(
            "[secrets]\n\"1X\" = \"env:A\"\n",
            "2:1",
            "not a valid variable name",
        );
        assert_error("[secrets]\nHOME = \"env:A\"\n", "2:1", "moat sets itself");
        assert_error(
            "[secrets]\nHTTPS_PROXY = \"env:A\"\n",
            "2:1",
            "moat sets itself",
        );
        assert_error("[secrets]\nA = \"vault:x\"\n", "2:5", "not a secret source");
        assert_error("[secrets]\nA = \"file:rel\"\n", "2:5", "absolute");
    }

    #[test]
    fn workspace_values() {
        let l = layer("[filesystem]\nworkspace = \"read-only\"").unwrap();
        assert_eq!(l.filesystem.workspace, Some(WorkspaceAccess::ReadOnly));
        assert_error(
            "[filesystem]\nworkspace = \"rw\"",
            "2:13",
            "must be \"read-write\" or \"read-only\", not \"rw\"",
        );
        assert_error("[filesystem]\nworkspace = true", "2:13", "must be a string");
    }

    #[test]
    fn path_rules() {
        let l = layer(
            "[filesystem]\nread_only = [\"/usr\", \"-/opt\", \"~\", \"-~/.gitconfig\", \
             \"/usr//lib/./\", \"~/\", \"/\"]",
        )
        .unwrap();
        let got: Vec<String> = l
            .filesystem
            .read_only
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            got,
            ["/usr", "-/opt", "~", "-~/.gitconfig", "/usr/lib", "~", "/"]
        );

        for (bad, needle) in [
            (
                "etc",
                "path `etc` in `filesystem.tmpfs` must be absolute or start with `~/`",
            ),
            ("-etc", "path `etc` in `filesystem.tmpfs` must be absolute"),
            ("~root/x", "must be absolute or start with `~/`"),
            ("--/x", "must be absolute"),
            ("", "empty path in `filesystem.tmpfs`"),
            ("-", "empty path"),
            ("/a/../etc", "`..` component"),
            ("~/..", "`..` component"),
        ] {
            assert_error(
                &format!("[filesystem]\ntmpfs = [\"/tmp\",\n  {bad:?}]"),
                "3:3",
                needle,
            );
        }
        assert_error("[filesystem]\ntmpfs = [\"/a\\u0000b\"]", "2:10", "NUL");
        // `..` inside a name is just a name.
        let l = layer("[filesystem]\nmask = [\"/a/..b\"]").unwrap();
        assert_eq!(l.filesystem.mask[0].path, "/a/..b");
    }

    #[test]
    fn protect_rules() {
        let l = layer("[filesystem]\nprotect = [\".git/hooks\", \"./.envrc\", \"a//b/\"]").unwrap();
        assert_eq!(l.filesystem.protect, [".git/hooks", ".envrc", "a/b"]);
        for (bad, needle) in [
            ("", "empty entry"),
            ("/etc", "must be relative to the workspace"),
            ("../x", "`..` component"),
            ("a/../../x", "`..` component"),
            (".", "names the whole workspace"),
            ("./", "names the whole workspace"),
        ] {
            assert_error(
                &format!("[filesystem]\nprotect = [{bad:?}]"),
                "2:12",
                needle,
            );
        }
    }

    #[test]
    fn extends_syntax() {
        assert!(layer("extends = \"default\"").is_ok());
        assert!(layer("extends = \"../x/base.toml\"").is_ok());
        assert!(layer("extends = \"base.toml\"").is_ok());
        assert_error("extends = \"\"", "1:11", "`extends` is empty");
        assert_error("extends = \".hidden\"", "1:11", "not a valid profile name");
        assert_error("extends = \"a b\"", "1:11", "not a valid profile name");
        assert_error("extends = 1", "1:11", "`extends` must be a string");
    }

    fn limits(text: &str) -> LimitsLayer {
        layer(&format!("[limits]\n{text}"))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .limits
    }

    /// `[limits]` on line 1, the value at line 2 column `column`.
    fn assert_limit_error(text: &str, column: usize, needle: &str) {
        assert_error(&format!("[limits]\n{text}"), &format!("2:{column}"), needle);
    }

    #[test]
    fn landlock_keys() {
        let l = layer(
            "[landlock]\nmode = \"required\"\nconnect_tcp = [443, 80, 443]\nbind_tcp = []\n\
             skip = [\"/srv/x\", \"-~/y/\"]\n",
        )
        .unwrap()
        .landlock;
        assert_eq!(l.mode, Some(Enforcement::Required));
        assert_eq!(l.connect_tcp, Some(Ports::Only(vec![443, 80])));
        assert_eq!(l.bind_tcp, Some(Ports::Only(vec![])));
        let skip: Vec<String> = l.skip.iter().map(|p| p.to_string()).collect();
        assert_eq!(skip, ["/srv/x", "-~/y"]);

        let l = layer(
            "[landlock]\nmode = \"best-effort\"\nconnect_tcp = \"any\"\nbind_tcp = [1, 65535]",
        )
        .unwrap()
        .landlock;
        assert_eq!(l.mode, Some(Enforcement::BestEffort));
        assert_eq!(l.connect_tcp, Some(Ports::Any));
        assert_eq!(l.bind_tcp, Some(Ports::Only(vec![1, 65535])));

        let l = layer("").unwrap().landlock;
        assert_eq!(l, LandlockLayer::default());
    }

    #[test]
    fn landlock_errors() {
        assert_error(
            "[landlock]\nmode = \"strict\"",
            "2:8",
            "`mode` in [landlock] must be \"best-effort\" (use what the kernel offers) or \
             \"required\" (refuse to run without full Landlock), not \"strict\"",
        );
        assert_error(
            "[landlock]\nmode = 1",
            "2:8",
            "`landlock.mode` must be a string",
        );
        for bad in ["0", "70000", "-1", "\"all\"", "80.0", "\"80\""] {
            assert_error(
                &format!("[landlock]\nconnect_tcp = [80, {bad}]"),
                "2:20",
                "is not a TCP port; list port numbers from 1 to 65535, or write \
                 `connect_tcp = \"any\"` for all of them",
            );
        }
        assert_error(
            "[landlock]\nbind_tcp = [0]",
            "2:13",
            "`bind_tcp` in [landlock]: integer `0` is not a TCP port",
        );
        assert_error(
            "[landlock]\nbind_tcp = [\"all\"]",
            "2:13",
            "string \"all\" is not a TCP port",
        );
        assert_error(
            "[landlock]\nbind_tcp = \"all\"",
            "2:12",
            "`bind_tcp` in [landlock] must be \"any\", or an array of port numbers from 1 to \
             65535 (`[]` for none), not \"all\"",
        );
        assert_error(
            "[landlock]\nconnect_tcp = 80",
            "2:15",
            "`landlock.connect_tcp` must be \"any\" or an array of port numbers (1 to 65535); \
             found integer `80`",
        );
        assert_error(
            "[landlock]\nskip = [\"/a\", \"srv\"]",
            "2:15",
            "path `srv` in `landlock.skip` must be absolute or start with `~/`",
        );
    }

    #[test]
    fn seccomp_keys() {
        let s = layer(
            "[seccomp]\ndeny = [\"chroot\", \"io_uring_setup\"]\nallow = [\"ptrace\", \"x86_64\"]",
        )
        .unwrap()
        .seccomp;
        assert_eq!(s.deny, ["chroot", "io_uring_setup"]);
        assert_eq!(s.allow, ["ptrace", "x86_64"]);
        for bad in ["", "Chroot", "a-b", "a b", "é"] {
            assert_error(
                &format!("[seccomp]\ndeny = [\"x\", {bad:?}]"),
                "2:14",
                "is not a syscall name: use lowercase letters, digits and `_`",
            );
            assert_error(
                &format!("[seccomp]\nallow = [{bad:?}]"),
                "2:10",
                "`seccomp.allow` entry",
            );
        }
        assert_error(
            "[seccomp]\nallow = \"ptrace\"",
            "2:9",
            "`seccomp.allow` must be an array",
        );
    }

    #[test]
    fn limits_memory() {
        for (text, bytes) in [
            ("\"512M\"", 512u64 << 20),
            ("\"1.5G\"", 3 << 29),
            ("\"2GiB\"", 2 << 30),
            ("\"64mb\"", 64 << 20),
            ("\"4096k\"", 4 << 20),
            ("\"4096Ki\"", 4 << 20),
            ("\" 1 T \"", 1 << 40),
            ("\"0.5g\"", 1 << 29),
            // A fraction of a byte is dropped.
            ("\"4.0000001M\"", 4 << 20),
            ("4194304", 4 << 20),
            ("8589934592", 8 << 30),
        ] {
            assert_eq!(
                limits(&format!("memory = {text}")).memory,
                Some(bytes),
                "{text}"
            );
        }
        for (text, needle) in [
            ("\"512X\"", "`memory` in [limits]: \"512X\" has an unknown unit `X`; write a number of bytes"),
            ("\"512\"", "\"512\" has no unit"),
            ("\"M\"", "\"M\" does not start with a number"),
            ("\"\"", "the value is empty"),
            ("\"1.2.3M\"", "\"1.2.3M\" is not a number followed by a unit"),
            ("\".M\"", "is not a number followed by a unit"),
            ("\"512Mx\"", "unknown unit `Mx`"),
            ("\"512KiBB\"", "unknown unit `KiBB`"),
            ("\"5 12M\"", "unknown unit `12M`"),
            ("\"99999999T\"", "more memory than any machine has"),
            ("-1", "`memory` in [limits] must be a number of bytes as an integer, or a string of a number and a unit K, M, G or T"),
            ("true", "found boolean `true`"),
            ("1.5", "found float `1.5`"),
            ("1024", "is 1024 bytes, less than the 4 MiB (\"4M\") moat needs: even a shell cannot start in less (an integer is a byte count: did you mean \"1024M\"?)"),
            ("\"1M\"", "is 1048576 bytes, less than the 4 MiB"),
            ("\"3.99M\"", "less than the 4 MiB"),
            ("\"0G\"", "is 0 bytes"),
        ] {
            assert_limit_error(&format!("memory = {text}"), 10, needle);
        }
        let e = error("[limits]\nmemory = \"3M\"");
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn limits_pids() {
        assert_eq!(limits("pids = 512").pids, Some(512));
        assert_eq!(limits("pids = 8").pids, Some(8));
        for bad in ["0", "3", "7"] {
            assert_limit_error(
                &format!("pids = {bad}"),
                8,
                &format!("`pids` in [limits] is {bad}, but a shell needs more than that; allow at least 8"),
            );
        }
        for (bad, found) in [
            ("-1", "integer `-1`"),
            ("\"512\"", "string \"512\""),
            ("1.5", "float `1.5`"),
        ] {
            assert_limit_error(
                &format!("pids = {bad}"),
                8,
                &format!("`pids` in [limits] must be a whole number of processes and threads, at least 8 (such as 512); found {found}"),
            );
        }
    }

    #[test]
    fn limits_cpu() {
        for (text, millis) in [
            ("1.5", 1500),
            ("2", 2000),
            ("0.25", 250),
            ("0.0001", 1),
            ("0.0015", 2),
            ("1.2345", 1235),
            ("4096", 4_096_000),
            ("4096.0", 4_096_000),
        ] {
            assert_eq!(
                limits(&format!("cpu = {text}")).cpu_millis,
                Some(millis),
                "{text}"
            );
        }
        for bad in [
            "0", "0.0", "-1", "-0.5", "10000", "4096.5", "nan", "inf", "\"2\"", "true",
        ] {
            assert_limit_error(
                &format!("cpu = {bad}"),
                7,
                "`cpu` in [limits] is a number of cores, more than 0 and at most 4096 (such as 0.5 or 2); found ",
            );
        }
        assert_limit_error("cpu = 10000", 7, "found integer `10000`");
    }

    #[test]
    fn limits_timeout() {
        for (text, ms) in [
            ("\"30m\"", 1_800_000u64),
            ("\"1h30m\"", 5_400_000),
            ("\"90s\"", 90_000),
            ("\"500ms\"", 500),
            ("\"1d 2h\"", 93_600_000),
            ("\"1.5h\"", 5_400_000),
            ("\"2s500ms\"", 2_500),
            ("\"1m1m\"", 120_000),
            ("30", 30_000),
        ] {
            assert_eq!(
                limits(&format!("timeout = {text}")).timeout_ms,
                Some(ms),
                "{text}"
            );
        }
        for (text, needle) in [
            ("\"\"", "`timeout` in [limits]: the value is empty; write a whole number of seconds (such as 90), or a string of numbers with units ms, s, m, h or d"),
            ("\"  \"", "the value is empty"),
            ("\"5x\"", "`timeout` in [limits]: \"5x\" has an unknown unit `x`; write"),
            ("\"5\"", "`5` in \"5\" has no unit"),
            ("\"1h30\"", "`30` in \"1h30\" has no unit"),
            ("\"1H\"", "unknown unit `H`"),
            ("\"m\"", "has a unit `m` without a number before it"),
            ("\"-5s\"", "\"-5s\" is not a duration"),
            ("\"1.2.3s\"", "`1.2.3` in \"1.2.3s\" is not a number"),
            ("\"99999999999999999999d\"", "is too long"),
            ("0", "`timeout` in [limits] must be more than zero, not 0; for no timeout, leave the key out"),
            ("-5", "must be more than zero, not -5"),
            ("\"0s\"", "must be more than zero, not \"0s\""),
            ("\"0.0001s\"", "must be more than zero"),
            ("9223372036854775807", "seconds is too long"),
            ("1.5", "`timeout` in [limits] must be a whole number of seconds (such as 90), or a string of numbers with units ms, s, m, h or d (such as \"500ms\", \"90s\", \"1h30m\"); found float `1.5`"),
        ] {
            assert_limit_error(&format!("timeout = {text}"), 11, needle);
        }
    }

    #[test]
    fn limits_required_and_defaults() {
        assert_eq!(limits("required = true").required, Some(true));
        assert_eq!(limits("required = false").required, Some(false));
        assert_eq!(limits(""), LimitsLayer::default());
        assert_limit_error(
            "required = \"yes\"",
            12,
            "`limits.required` must be a boolean; found string \"yes\"",
        );
    }

    #[test]
    fn unknown_keys_in_new_tables() {
        for (text, position, start, known, guess) in [
            (
                "[landlock]\nmode = \"required\"\nmodee = 1\n",
                "3:1",
                "unknown key `modee` in [landlock]; known keys: ",
                &["`mode`", "`connect_tcp`", "`bind_tcp`", "`skip`"][..],
                Some("mode"),
            ),
            (
                "[seccomp]\ndenny = []\n",
                "2:1",
                "unknown key `denny` in [seccomp]; known keys: ",
                &["`deny`", "`allow`"][..],
                Some("deny"),
            ),
            (
                "[limits]\npids = 64\nmemroy = \"1G\"\n",
                "3:1",
                "unknown key `memroy` in [limits]; known keys: ",
                &["`memory`", "`pids`", "`cpu`", "`timeout`", "`required`"][..],
                Some("memory"),
            ),
            (
                "[limits]\nnetwork = 1\n",
                "2:1",
                "unknown key `network` in [limits]; known keys: ",
                &["`memory`", "`required`"][..],
                None,
            ),
            (
                "limits.timout = 5\n",
                "1:8",
                "unknown key `timout` in [limits]; known keys: ",
                &["`timeout`"][..],
                Some("timeout"),
            ),
            (
                "[limit]\npids = 64\n",
                "1:2",
                "unknown key `limit` at the top level; known keys: ",
                &["`landlock`", "`seccomp`", "`limits`", "`filesystem`"][..],
                Some("limits"),
            ),
        ] {
            let e = error(text);
            assert!(e.starts_with(&format!("p.toml:{position}: {start}")), "{e}");
            for key in known {
                assert!(e.contains(key), "{e} lacks {key}");
            }
            match guess {
                Some(g) => assert!(e.ends_with(&format!("(did you mean `{g}`?)")), "{e}"),
                None => assert!(!e.contains("did you mean"), "{e}"),
            }
        }
    }

    #[test]
    fn network_keys() {
        let n = layer(
            "[network]\nmode = \"open\"\nallow = [\"API.GitHub.com\", \"*.githubusercontent.com\", \
             \"registry.npmjs.org:443\", \"10.0.0.5\", \"[0::1]:8080\"]\n\
             deny = [\"*.tracker.example\"]\nproxy_port = 8888\n\
             upstream_ca = [\"/etc/corp-ca.pem\", \"-~/ca//x.pem\"]\n",
        )
        .unwrap()
        .network;
        assert_eq!(n.mode, Some(NetworkMode::Open));
        assert_eq!(
            n.allow,
            [
                "api.github.com",
                "*.githubusercontent.com",
                "registry.npmjs.org:443",
                "10.0.0.5",
                "[::1]:8080"
            ]
        );
        assert_eq!(n.deny, ["*.tracker.example"]);
        assert_eq!(n.proxy_port, Some(8888));
        let cas: Vec<String> = n.upstream_ca.iter().map(|p| p.to_string()).collect();
        assert_eq!(cas, ["/etc/corp-ca.pem", "-~/ca/x.pem"]);

        for (word, mode) in [
            ("allowlist", NetworkMode::Allowlist),
            ("open", NetworkMode::Open),
            ("none", NetworkMode::None),
        ] {
            let n = layer(&format!("[network]\nmode = \"{word}\""))
                .unwrap()
                .network;
            assert_eq!(n.mode, Some(mode));
        }
        for port in [1, 65535] {
            let n = layer(&format!("network.proxy_port = {port}"))
                .unwrap()
                .network;
            assert_eq!(n.proxy_port, Some(port));
        }
        assert_eq!(layer("").unwrap().network, NetworkLayer::default());
        assert_eq!(layer("[network]").unwrap().network, NetworkLayer::default());
    }

    #[test]
    fn network_errors() {
        assert_error(
            "[network]\nmode = \"allow\"",
            "2:8",
            "`mode` in [network] must be \"allowlist\" (only the hosts in `allow`), \"open\" \
             (any host not in `deny`) or \"none\" (no network at all), not \"allow\"",
        );
        assert_error(
            "[network]\nmode = true",
            "2:8",
            "`network.mode` must be a string",
        );
        for (bad, needle) in [
            (
                "*",
                "a lone `*` would match every host; use `mode = \"open\"`",
            ),
            ("", "it is empty"),
            ("https://a.com", "it has a scheme `https://`"),
            ("a.com/x", "it has a `/`"),
            ("a.com.", "trailing dot"),
            ("a_b.com", "not `_`"),
            ("a.*.com", "`*` may only stand alone"),
            ("a.com:0", "`0` after the `:` is not a port"),
            ("a.com:99999", "not a port"),
            ("::1", "must be in brackets"),
            ("[::1", "closing `]`"),
            ("10.1", "looks like an IP address"),
        ] {
            for list in ["allow", "deny"] {
                let text = format!("[network]\n{list} = [\"ok.com\", {bad:?}]");
                assert_error(
                    &text,
                    &format!("2:{}", list.len() + 15),
                    &format!(
                        "`network.{list}` entry \"{}\" is not a host pattern: ",
                        bad.escape_debug()
                    ),
                );
                let e = error(&text);
                assert!(e.contains(needle), "{e:?} does not mention {needle:?}");
            }
        }
        assert_error(
            "[network]\nallow = \"a.com\"",
            "2:9",
            "`network.allow` must be an array",
        );
        assert_error("[network]\nallow = [1]", "2:10", "must be a string");
        for (bad, found) in [
            ("0", "integer `0`"),
            ("65536", "integer `65536`"),
            ("-1", "integer `-1`"),
            ("\"3128\"", "string \"3128\""),
            ("3128.0", "float `3128.0`"),
        ] {
            assert_error(
                &format!("[network]\nproxy_port = {bad}"),
                "2:14",
                &format!(
                    "`proxy_port` in [network] must be a TCP port number from 1 to 65535 (the \
                     default is 3128); found {found}"
                ),
            );
        }
        assert_error(
            "[network]\nupstream_ca = [\"ca.pem\"]",
            "2:16",
            "path `ca.pem` in `network.upstream_ca` must be absolute or start with `~/`",
        );
        assert_error(
            "[network]\nupstream_ca = [\"/a/../ca.pem\"]",
            "2:16",
            "contains a `..` component",
        );
        let e = error("[network]\nallowlist = []\n");
        assert!(
            e.starts_with(
                "p.toml:2:1: unknown key `allowlist` in [network]; known keys: `mode`, `allow`, \
                 `deny`, `proxy_port`, `upstream_ca`"
            ),
            "{e}"
        );
        let e = error("[netwrok]\n");
        assert!(e.ends_with("(did you mean `network`?)"), "{e}");
    }

    #[test]
    fn size_and_duration_parsers() {
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("0.1K"), Ok(102));
        // Exact: 0.99999999 TiB is 2^40 - 10995.116... bytes, rounded down.
        assert_eq!(
            parse_size("8191.99999999T"),
            Ok((8191u64 << 40) + (1 << 40) - 10_996)
        );
        assert!(parse_size("8388608T").is_err(), "2^63 is past i64::MAX");
        assert_eq!(parse_size("8388607T"), Ok(8_388_607u64 << 40));
        assert_eq!(parse_duration("1.0005s"), Ok(1000));
        assert_eq!(parse_duration("1d1h1m1s1ms"), Ok(90_061_001));
    }

    #[test]
    fn names() {
        for ok in ["default", "a.b", "x_y-z", "A1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "a b", "a/b", "ü", "a:b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(is_path_spec("./x") && is_path_spec("x.toml") && is_path_spec("/etc/x"));
        assert!(!is_path_spec("default") && !is_path_spec("x.tom"));
    }
}
