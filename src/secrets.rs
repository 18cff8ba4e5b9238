//! Secrets: values the agent is meant to see (a database URL, a test
//! account's password), named in a profile's `[secrets]` table by where
//! they come from, resolved on the host before the sandbox exists and set
//! as environment variables inside it.
//!
//! A secret's *spec* (`env:VAR`, `file:PATH`, `keyring:ITEM`,
//! `op://vault/item/field`) is plain profile data and may be shown
//! anywhere; its *value* goes only into the sandbox's environment. Nothing
//! here prints, logs or records a value, and errors name the secret and its
//! source, never what was read.

use crate::keyring::{self, KeyringError};
use serde::{Serialize, Serializer};
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The largest value moat accepts from any source. Environment variables
/// are not a place for bulk data, and a limit keeps a wrong path (a log
/// file, a device) from being read into every process's environment.
pub const MAX_VALUE: usize = 64 * 1024;

/// The attribute `keyring:NAME` looks up, as in
/// `secret-tool store --label='moat: NAME' moat-secret NAME`.
pub const KEYRING_ATTRIBUTE: &str = "moat-secret";

/// How long `op read` may take (it may wait for the 1Password app to be
/// unlocked) before the start is abandoned.
const OP_TIMEOUT: Duration = Duration::from_secs(120);

/// One `[secrets]` entry as written: where the value comes from, and
/// whether its absence is tolerated (a leading `-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub source: Source,
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A variable of the caller's environment.
    Env(String),
    /// A file on the host; `~` or `~/...` is the caller's home.
    File(String),
    /// The first keyring item carrying all these attributes.
    Keyring(Vec<(String, String)>),
    /// A 1Password secret reference, read with `op read`.
    OnePassword(String),
}

impl SecretSpec {
    /// Parses `[-]env:VAR`, `[-]file:PATH`, `[-]keyring:ITEM`,
    /// `[-]keyring:attr=value,...` or `[-]op://vault/item/field`.
    pub fn parse(text: &str) -> Result<SecretSpec, String> {
        let (optional, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let source = if let Some(var) = rest.strip_prefix("env:") {
            if !crate::environment::is_valid_name(var) {
                return Err(format!(
                    "`env:{var}`: `{var}` is not a variable name (letters, digits and `_`, \
                     not starting with a digit)"
                ));
            }
            Source::Env(var.to_string())
        } else if let Some(path) = rest.strip_prefix("file:") {
            if !(path.starts_with('/') || path == "~" || path.starts_with("~/")) {
                return Err(format!(
                    "`file:{path}`: the path must be absolute or start with `~/`"
                ));
            }
            if path.contains('\0') {
                return Err("`file:` path contains a NUL character".into());
            }
            Source::File(path.to_string())
        } else if let Some(item) = rest.strip_prefix("keyring:") {
            Source::Keyring(keyring_attributes(item)?)
        } else if let Some(path) = rest.strip_prefix("op://") {
            let segments: Vec<&str> = path.split('/').collect();
            if segments.len() < 3 || segments.iter().any(|s| s.is_empty()) {
                return Err(format!(
                    "`{rest}`: a 1Password reference is op://VAULT/ITEM/FIELD \
                     (or op://VAULT/ITEM/SECTION/FIELD)"
                ));
            }
            if rest.chars().any(char::is_control) {
                return Err("the 1Password reference contains a control character".into());
            }
            Source::OnePassword(rest.to_string())
        } else {
            return Err(format!(
                "`{text}` is not a secret source: use \"env:VAR\", \"file:PATH\", \
                 \"keyring:ITEM\" or \"op://vault/item/field\" (a leading `-` makes it optional)"
            ));
        };
        Ok(SecretSpec { source, optional })
    }
}

fn keyring_attributes(item: &str) -> Result<Vec<(String, String)>, String> {
    if item.is_empty() {
        return Err("`keyring:` needs an item name or attr=value pairs".into());
    }
    if !item.contains('=') {
        return Ok(vec![(KEYRING_ATTRIBUTE.to_string(), item.to_string())]);
    }
    item.split(',')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!(
                "`keyring:{item}`: expected an item name, or attr=value pairs separated by `,`"
            )),
        })
        .collect()
}

/// The spec as a profile spells it: what `moat profile show` prints.
impl fmt::Display for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.optional {
            f.write_str("-")?;
        }
        match &self.source {
            Source::Env(var) => write!(f, "env:{var}"),
            Source::File(path) => write!(f, "file:{path}"),
            Source::Keyring(attrs) => {
                if let [(k, v)] = attrs.as_slice() {
                    if k == KEYRING_ATTRIBUTE && !v.contains('=') {
                        return write!(f, "keyring:{v}");
                    }
                }
                let pairs: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "keyring:{}", pairs.join(","))
            }
            Source::OnePassword(reference) => f.write_str(reference),
        }
    }
}

impl Serialize for SecretSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Whether a secret may use `name`. moat sets these itself (identity,
/// search path, proxy and CA variables): a secret there would either be
/// overwritten or point the sandbox's clients away from the proxy.
pub fn name_allowed(name: &str) -> Result<(), String> {
    if !crate::environment::is_valid_name(name) {
        return Err(format!(
            "`{}` is not a valid variable name: use letters, digits and `_`, not starting \
             with a digit",
            name.escape_debug()
        ));
    }
    if crate::environment::is_moat_owned(name) {
        return Err(format!(
            "`{name}` is a variable moat sets itself inside the sandbox; give the secret \
             another name"
        ));
    }
    Ok(())
}

/// The secrets of a run, resolved: names with their values, in name order.
#[derive(Default)]
pub struct Resolved {
    pub values: Vec<(String, Zeroizing<Vec<u8>>)>,
    /// One line per optional secret left unset, for the user.
    pub notices: Vec<String>,
}

impl Resolved {
    pub fn names(&self) -> Vec<String> {
        self.values.iter().map(|(n, _)| n.clone()).collect()
    }
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("names", &self.names())
            .field("notices", &self.notices)
            .finish()
    }
}

/// What reading a source found, short of an error.
pub enum Found {
    Value(Zeroizing<Vec<u8>>),
    /// The source does not exist (variable unset, file missing, no such
    /// keyring item); the reason names the source, never a value.
    Absent(String),
}

/// Where sources are read from: the real host, or a test's stand-in.
pub trait Host {
    fn env(&self, var: &str) -> Option<OsString>;
    fn home(&self) -> &Path;
    fn keyring(&self, attrs: &[(&str, &str)]) -> Result<Found, String>;
    fn op_read(&self, reference: &str) -> Result<Found, String>;
}

/// The machine moat runs on, as the caller.
pub struct RealHost {
    pub home: PathBuf,
}

impl Host for RealHost {
    fn env(&self, var: &str) -> Option<OsString> {
        std::env::var_os(var)
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn keyring(&self, attrs: &[(&str, &str)]) -> Result<Found, String> {
        match keyring::lookup(attrs) {
            Ok(Some(v)) => Ok(Found::Value(v)),
            Ok(None) => Ok(Found::Absent("no keyring item has these attributes".into())),
            // No keyring at all is an absent source too: an optional
            // secret is then left unset, a required one names the cause.
            Err(KeyringError::Unavailable(why)) => Ok(Found::Absent(format!(
                "no keyring ({why}); start a Secret Service provider in this session \
                 (e.g. gnome-keyring-daemon), or take the secret from another source"
            ))),
            Err(e) => Err(e.to_string()),
        }
    }

    fn op_read(&self, reference: &str) -> Result<Found, String> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let Some(op) = find_in_path("op", &path) else {
            return Ok(Found::Absent(
                "the 1Password CLI `op` is not on PATH; install it and sign in (`op signin`)"
                    .into(),
            ));
        };
        run_op(&op, reference).map(Found::Value)
    }
}

fn find_in_path(program: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `op read --no-newline REF`. Its output is the value: it is kept in
/// memory only. Its stderr is summarised (first line, shortened) and
/// dropped entirely if it contains the value.
fn run_op(op: &Path, reference: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut child = Command::new(op)
        .args(["read", "--no-newline", reference])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", op.display()))?;
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    // Scoped readers, joined before returning: the supervisor must be
    // single-threaded again when it clones the sandbox.
    let (out, err, status) = std::thread::scope(|scope| {
        let out = scope.spawn(move || {
            let mut buf = Zeroizing::new(Vec::new());
            let _ = (&mut out_pipe)
                .take(MAX_VALUE as u64 + 1)
                .read_to_end(&mut buf);
            // Drain the rest so op is not blocked on a full pipe.
            let _ = std::io::copy(&mut out_pipe, &mut std::io::sink());
            buf
        });
        let err = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut err_pipe).take(64 * 1024).read_to_end(&mut buf);
            let _ = std::io::copy(&mut err_pipe, &mut std::io::sink());
            buf
        });
        let deadline = Instant::now() + OP_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Ok(s),
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!(
                        "`op read` did not finish within {} s",
                        OP_TIMEOUT.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => break Err(format!("waiting for `op`: {e}")),
            }
        };
        (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
            status,
        )
    });
    let status = status?;
    if !status.success() {
        return Err(format!(
            "`op read` failed ({}){}",
            status,
            op_summary(&err, &out)
        ));
    }
    Ok(out)
}

fn op_summary(stderr: &[u8], value: &[u8]) -> String {
    if !value.is_empty() && stderr.windows(value.len()).any(|w| w == value) {
        return String::new();
    }
    let text = String::from_utf8_lossy(stderr);
    let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return String::new();
    };
    let mut line: String = line.chars().filter(|c| !c.is_control()).take(200).collect();
    if text.trim().chars().count() > line.chars().count() {
        line.push_str(" ...");
    }
    format!(": {line}")
}

/// Resolves every secret in `secrets` (name order). The first required
/// secret that cannot be read stops it with an error naming the secret and
/// its source.
pub fn resolve<'a>(
    secrets: impl IntoIterator<Item = (&'a String, &'a SecretSpec)>,
    host: &dyn Host,
) -> Result<Resolved, String> {
    let mut resolved = Resolved::default();
    for (name, spec) in secrets {
        let fail = |why: String| format!("secret `{name}` ({spec}): {why}");
        match read(spec, host).map_err(fail)? {
            Found::Value(mut value) => {
                if value.contains(&0) {
                    return Err(fail(
                        "the value contains a NUL byte, which no environment variable can hold"
                            .into(),
                    ));
                }
                if value.len() > MAX_VALUE {
                    return Err(fail(format!(
                        "the value is larger than {} KiB",
                        MAX_VALUE / 1024
                    )));
                }
                if matches!(spec.source, Source::File(_)) {
                    strip_newline(&mut value);
                }
                resolved.values.push((name.clone(), value));
            }
            Found::Absent(why) if spec.optional => resolved
                .notices
                .push(format!("optional secret `{name}` not set: {why}")),
            Found::Absent(why) => {
                return Err(fail(format!(
                    "{why} (mark it optional with a leading `-` to run without it)"
                )))
            }
        }
    }
    Ok(resolved)
}

fn strip_newline(value: &mut Zeroizing<Vec<u8>>) {
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
}

fn read(spec: &SecretSpec, host: &dyn Host) -> Result<Found, String> {
    match &spec.source {
        Source::Env(var) => Ok(match host.env(var) {
            Some(v) => Found::Value(Zeroizing::new(v.as_bytes().to_vec())),
            None => Found::Absent(format!(
                "the variable `{var}` is not set in moat's environment"
            )),
        }),
        Source::File(path) => read_file(&expand_home(path, host.home())),
        Source::Keyring(attrs) => {
            let attrs: Vec<(&str, &str)> = attrs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            host.keyring(&attrs)
        }
        Source::OnePassword(reference) => host.op_read(reference),
    }
}

fn expand_home(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix('~') {
        Some(rest) => home.join(rest.trim_start_matches('/')),
        None => PathBuf::from(path),
    }
}

fn read_file(path: &Path) -> Result<Found, String> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking so that a FIFO at the path cannot stall the start; it
    // is refused below like any other file that is not a regular one.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Found::Absent(format!("{} does not exist", path.display())))
        }
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut value = Zeroizing::new(Vec::new());
    // One byte over the limit (plus a newline that would be stripped) tells
    // "too large" apart from "exactly at the limit".
    file.take(MAX_VALUE as u64 + 3)
        .read_to_end(&mut value)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if value.len() > MAX_VALUE + 2 {
        return Err(format!(
            "{} is larger than {} KiB",
            path.display(),
            MAX_VALUE / 1024
        ));
    }
    Ok(Found::Value(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec(s: &str) -> SecretSpec {
        SecretSpec::parse(s).unwrap()
    }

    #[test]
    fn parse_and_print_round_trip() {
        for s in [
            "env:DB_URL",
            "-env:DB_URL",
            "file:/run/secrets/db",
            "file:~/.config/db",
            "-file:~",
            "keyring:db-password",
            "keyring:service=db,user=alice",
            "op://Private/Postgres/password",
            "-op://Private/Postgres/section/password",
        ] {
            assert_eq!(spec(s).to_string(), s);
        }
        assert_eq!(
            spec("keyring:db").source,
            Source::Keyring(vec![("moat-secret".into(), "db".into())])
        );
        assert!(spec("-env:X").optional);
        assert!(!spec("env:X").optional);
    }

    #[test]
    fn bad_specs_are_refused() {
        for s in [
            "",
            "-",
            "DB_URL",
            "env:",
            "env:1X",
            "env:A-B",
            "file:relative/path",
            "file:",
            "file:~alice/x",
            "keyring:",
            "keyring:a=,b=c",
            "keyring:=x",
            "op://vault/item",
            "op://vault//field",
            "op:vault/item/field",
            "--env:X",
            "vault:x",
        ] {
            assert!(SecretSpec::parse(s).is_err(), "{s:?} was accepted");
        }
    }

    #[test]
    fn moat_owned_names_are_refused() {
        for n in [
            "HOME",
            "USER",
            "PATH",
            "HTTPS_PROXY",
            "https_proxy",
            "NO_PROXY",
            "SSL_CERT_FILE",
            "NODE_EXTRA_CA_CERTS",
            "NODE_USE_ENV_PROXY",
        ] {
            assert!(name_allowed(n).is_err(), "{n}");
        }
        assert!(name_allowed("1X").is_err());
        assert!(name_allowed("DATABASE_URL").is_ok());
    }

    struct FakeHost {
        home: PathBuf,
        env: BTreeMap<String, String>,
    }

    impl Host for FakeHost {
        fn env(&self, var: &str) -> Option<OsString> {
            self.env.get(var).map(OsString::from)
        }
        fn home(&self) -> &Path {
            &self.home
        }
        fn keyring(&self, attrs: &[(&str, &str)]) -> Result<Found, String> {
            Ok(match attrs {
                [("moat-secret", "present")] => Found::Value(Zeroizing::new(b"kv".to_vec())),
                [("moat-secret", "locked")] => return Err("keyring is locked".into()),
                _ => Found::Absent("no keyring item has these attributes".into()),
            })
        }
        fn op_read(&self, _reference: &str) -> Result<Found, String> {
            Ok(Found::Absent(
                "the 1Password CLI `op` is not on PATH".into(),
            ))
        }
    }

    fn resolve_one(name: &str, s: &str, host: &FakeHost) -> Result<Resolved, String> {
        let mut m = BTreeMap::new();
        m.insert(name.to_string(), spec(s));
        resolve(&m, host)
    }

    fn host() -> (tempfile::TempDir, FakeHost) {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_path_buf();
        std::fs::write(home.join("one"), "value\n\n").unwrap();
        std::fs::write(home.join("crlf"), "value\r\n").unwrap();
        std::fs::write(home.join("nul"), "a\0b").unwrap();
        std::fs::write(home.join("big"), vec![b'x'; MAX_VALUE + 1]).unwrap();
        std::fs::write(home.join("limit"), vec![b'x'; MAX_VALUE]).unwrap();
        let mut env = BTreeMap::new();
        env.insert("SRC".to_string(), "from-env".to_string());
        (dir, FakeHost { home, env })
    }

    fn value(r: &Resolved) -> &[u8] {
        &r.values[0].1
    }

    #[test]
    fn sources_resolve() {
        let (_d, h) = host();
        assert_eq!(
            value(&resolve_one("A", "env:SRC", &h).unwrap()),
            b"from-env"
        );
        // One trailing newline only.
        assert_eq!(
            value(&resolve_one("A", "file:~/one", &h).unwrap()),
            b"value\n"
        );
        assert_eq!(
            value(&resolve_one("A", "file:~/crlf", &h).unwrap()),
            b"value"
        );
        assert_eq!(
            value(&resolve_one("A", "keyring:present", &h).unwrap()),
            b"kv"
        );
        assert_eq!(
            value(&resolve_one("A", "file:~/limit", &h).unwrap()).len(),
            MAX_VALUE
        );
    }

    #[test]
    fn missing_required_names_secret_and_source() {
        let (_d, h) = host();
        for (s, needle) in [
            ("env:NOPE", "`NOPE` is not set"),
            ("file:~/nope", "does not exist"),
            ("keyring:absent", "no keyring item"),
            ("op://v/i/f", "`op` is not on PATH"),
        ] {
            let e = resolve_one("MY_SECRET", s, &h).unwrap_err();
            assert!(e.contains("`MY_SECRET`") && e.contains(s), "{e}");
            assert!(e.contains(needle), "{e}");
            assert!(e.contains("optional"), "{e}");
        }
    }

    #[test]
    fn missing_optional_is_a_notice() {
        let (_d, h) = host();
        for s in [
            "-env:NOPE",
            "-file:~/nope",
            "-keyring:absent",
            "-op://v/i/f",
        ] {
            let r = resolve_one("OPT", s, &h).unwrap();
            assert!(r.values.is_empty());
            assert_eq!(r.notices.len(), 1);
            assert!(r.notices[0].contains("`OPT`"), "{:?}", r.notices);
        }
        // Optional covers absence only, not a locked keyring.
        assert!(resolve_one("OPT", "-keyring:locked", &h).is_err());
    }

    #[test]
    fn bad_values_are_refused_without_printing_them() {
        let (_d, h) = host();
        let e = resolve_one("A", "file:~/nul", &h).unwrap_err();
        assert!(e.contains("NUL") && !e.contains("a\0b"), "{e}");
        let e = resolve_one("A", "file:~/big", &h).unwrap_err();
        assert!(e.contains("64 KiB"), "{e}");
        let e = resolve_one("A", "file:~", &h).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        nix::unistd::mkfifo(
            &h.home.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = resolve_one("A", "file:~/fifo", &h).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let r = resolve_one("A", "env:SRC", &h).unwrap();
        assert!(!format!("{r:?}").contains("from-env"));
    }

    #[test]
    fn op_stderr_summary_hides_the_value() {
        assert_eq!(
            op_summary(b"[ERROR] item not found\nmore\n", b""),
            ": [ERROR] item not found ..."
        );
        assert_eq!(op_summary(b"error: s3cret is wrong", b"s3cret"), "");
        assert_eq!(op_summary(b"", b""), "");
    }
}
