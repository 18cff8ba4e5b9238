//! The encrypted credential store under `$XDG_DATA_HOME/moat/credentials/`:
//! one JSON file per credential, its token sealed with AES-256-GCM under a
//! data key kept in the desktop keyring or a key file ([`key`]). The
//! metadata (provider, hosts, ...) stays readable for `moat grant list`
//! and is bound to the ciphertext as associated data.
//!
//! - [`crypto`]: sealing, fingerprints, randomness.
//! - [`key`]: where the data key lives.
//! - [`store`]: private directory, atomic writes.

pub mod crypto;
pub mod key;
pub mod store;

use base64::Engine as _;
use key::Backend;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// What is known about a credential without decrypting it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub name: String,
    pub provider: String,
    /// Host patterns replacing the provider's; empty: the provider's.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `header` provider: the header name and value template.
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    /// Variables that get the placeholder, replacing the provider's.
    #[serde(default)]
    pub env: Vec<String>,
    pub added_ms: u64,
    /// First 8 hex digits of the token's SHA-256.
    pub fingerprint: String,
}

const FORMAT: &str = "moat-credential-v1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    meta: Meta,
    key: Backend,
    key_id: String,
    nonce: String,
    ciphertext: String,
}

/// The associated data: the format and every metadata field.
fn aad(meta: &Meta) -> Vec<u8> {
    let mut v = FORMAT.as_bytes().to_vec();
    v.push(0);
    v.extend(serde_json::to_vec(meta).expect("metadata serializes"));
    v
}

/// Names of credentials: what `--grant` and profiles refer to, and the file
/// name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// A token as moat accepts it: visible ASCII, no spaces (it goes into an
/// HTTP header).
pub fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the token is empty".into());
    }
    if token.len() > 8192 {
        return Err("the token is longer than 8192 bytes".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the token has characters other than visible ASCII (spaces, control characters, \
             non-ASCII); it could not go into an HTTP header"
                .into(),
        );
    }
    Ok(())
}

/// The store of one user.
pub struct Store {
    /// `$XDG_DATA_HOME/moat`
    data_dir: PathBuf,
    /// `$XDG_DATA_HOME/moat/credentials`
    dir: PathBuf,
}

/// One entry of [`Store::list`]: the metadata, or why the file could not
/// be read.
pub type Listed = (String, Result<Meta, String>);

impl Store {
    pub fn new(data_dir: PathBuf) -> Store {
        Store {
            dir: data_dir.join("credentials"),
            data_dir,
        }
    }

    /// The store of the user whose home is `home`.
    pub fn for_home(home: &Path) -> Store {
        Store::new(crate::ca::data_dir(home))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file_name(name: &str) -> String {
        format!("{name}.json")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(Store::file_name(name))
    }

    /// Encrypts and stores `token` under `meta.name`. Refuses to replace an
    /// existing credential unless `replace`. Returns a notice to print
    /// (the key is in a file, not a keyring).
    pub fn add(&self, meta: &Meta, token: &[u8], replace: bool) -> Result<Option<String>, String> {
        if !valid_name(&meta.name) {
            return Err(format!(
                "`{}` is not a valid credential name: use 1 to 64 letters, digits, `-`, `_` \
                 and `.`, not starting with `.`",
                meta.name.escape_debug()
            ));
        }
        let path = self.path(&meta.name);
        if !replace && path.exists() {
            return Err(format!(
                "a credential named `{}` exists ({}); remove it first with `moat grant rm {}`, \
                 or pass --replace",
                meta.name,
                path.display(),
                meta.name
            ));
        }
        store::ensure_private_dir(&self.data_dir)
            .and_then(|()| store::ensure_private_dir(&self.dir))
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let (key, backend, notice) = key::for_writing(&self.data_dir)?;
        let (nonce, ct) = crypto::seal(&key, &aad(meta), token)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let file = File {
            format: FORMAT.into(),
            meta: meta.clone(),
            key: backend,
            key_id: key.id(),
            nonce: b64.encode(nonce),
            ciphertext: b64.encode(ct),
        };
        let mut text = serde_json::to_vec_pretty(&file).expect("serializes");
        text.push(b'\n');
        store::write_atomic(&self.dir, &Store::file_name(&meta.name), &text)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(notice)
    }

    fn read_file(&self, name: &str) -> Result<(PathBuf, File), String> {
        let path = self.path(name);
        if !valid_name(name) {
            return Err(format!(
                "`{}` is not a valid credential name",
                name.escape_debug()
            ));
        }
        let bytes = match store::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "no credential named `{name}` (looked for {}); `moat grant list` shows \
                     the credentials, `moat grant add` adds one",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let file: File = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{}: not a valid moat credential file ({e}); it is damaged",
                path.display()
            )
        })?;
        if file.format != FORMAT {
            return Err(format!(
                "{}: unknown format `{}` (this moat reads {FORMAT})",
                path.display(),
                file.format
            ));
        }
        if file.meta.name != name {
            return Err(format!(
                "{}: the file names the credential `{}`, not `{name}`; it was renamed or \
                 replaced",
                path.display(),
                file.meta.name
            ));
        }
        Ok((path, file))
    }

    /// The metadata of `name`, without decrypting.
    pub fn meta(&self, name: &str) -> Result<Meta, String> {
        self.read_file(name).map(|(_, f)| f.meta)
    }

    /// The metadata and the decrypted token of `name`.
    pub fn load(&self, name: &str) -> Result<(Meta, Zeroizing<String>), String> {
        let (path, file) = self.read_file(name)?;
        let key = key::for_reading(&self.data_dir, file.key, &path)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let damaged = |what: &str| format!("{}: {what}; the file is damaged", path.display());
        let nonce = b64
            .decode(&file.nonce)
            .map_err(|_| damaged("the nonce is not base64"))?;
        let ct = b64
            .decode(&file.ciphertext)
            .map_err(|_| damaged("the ciphertext is not base64"))?;
        let Some(plain) = crypto::open(&key, &aad(&file.meta), &nonce, &ct) else {
            if key.id() != file.key_id {
                return Err(format!(
                    "{}: encrypted with another key (key id {}, the {} key is {}); the key \
                     was replaced, so this credential cannot be decrypted: remove it with \
                     `moat grant rm {}` and add it again",
                    path.display(),
                    file.key_id,
                    file.key.as_str(),
                    key.id(),
                    file.meta.name
                ));
            }
            return Err(damaged(
                "decryption failed (the ciphertext or its metadata was changed)",
            ));
        };
        let token = String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| damaged("the token is not text"))?;
        Ok((file.meta, token))
    }

    /// Removes `name`; false when it did not exist.
    pub fn remove(&self, name: &str) -> Result<bool, String> {
        if !valid_name(name) {
            return Err(format!(
                "`{}` is not a valid credential name",
                name.escape_debug()
            ));
        }
        store::remove(&self.dir, &Store::file_name(name))
            .map_err(|e| format!("removing {}: {e}", self.path(name).display()))
    }

    /// Every credential file, sorted by name; a file that cannot be read
    /// is listed with the reason.
    pub fn list(&self) -> Result<Vec<Listed>, String> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("reading {}: {e}", self.dir.display())),
        };
        let mut names: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|n| {
                let m = self.meta(&n);
                (n, m)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str) -> Meta {
        Meta {
            name: name.into(),
            provider: "github".into(),
            hosts: vec![],
            header: None,
            template: None,
            env: vec![],
            added_ms: 1,
            fingerprint: crypto::fingerprint(b"ghp_realtoken"),
        }
    }

    // One test touches MOAT_KEY_BACKEND; the others do not read it.
    #[test]
    fn store_round_trip_and_failures() {
        std::env::set_var(key::ENV, "file");
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path().join("moat"));
        let notice = s.add(&meta("gh"), b"ghp_realtoken", false).unwrap();
        assert!(notice.unwrap().contains("credentials.key"));
        let (m, t) = s.load("gh").unwrap();
        assert_eq!(m, meta("gh"));
        assert_eq!(&t[..], "ghp_realtoken");
        assert!(s
            .add(&meta("gh"), b"x", false)
            .unwrap_err()
            .contains("exists"));
        // Nothing under the data dir holds the token in plain text.
        for e in walk(d.path()) {
            let bytes = std::fs::read(&e).unwrap();
            assert!(
                !bytes.windows(13).any(|w| w == b"ghp_realtoken"),
                "{}",
                e.display()
            );
        }
        let list = s.list().unwrap();
        assert_eq!(list.len(), 1);

        // Metadata edited to send the token elsewhere: refused.
        let p = s.path("gh");
        let orig = std::fs::read_to_string(&p).unwrap();
        std::fs::write(
            &p,
            orig.replace("\"hosts\": []", "\"hosts\": [\"evil.example\"]"),
        )
        .unwrap();
        let e = s.load("gh").unwrap_err();
        assert!(
            e.contains(&p.display().to_string()) && e.contains("damaged"),
            "{e}"
        );
        // A flipped ciphertext byte: refused.
        let mut f: serde_json::Value = serde_json::from_str(&orig).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut ct = b64.decode(f["ciphertext"].as_str().unwrap()).unwrap();
        ct[3] ^= 0x40;
        f["ciphertext"] = b64.encode(&ct).into();
        std::fs::write(&p, f.to_string()).unwrap();
        let e = s.load("gh").unwrap_err();
        assert!(e.contains("decryption failed"), "{e}");
        // A wrong key: named as such.
        std::fs::write(&p, &orig).unwrap();
        assert!(s.load("gh").is_ok());
        std::fs::remove_file(key::key_file(&d.path().join("moat"))).unwrap();
        let e = s.load("gh").unwrap_err();
        assert!(e.contains("key file") && e.contains("missing"), "{e}");
        s.add(&meta("other"), b"tok", false).unwrap(); // makes a new key
        let e = s.load("gh").unwrap_err();
        assert!(e.contains("another key"), "{e}");
        // Garbage: named.
        std::fs::write(&p, "{not json").unwrap();
        let e = s.load("gh").unwrap_err();
        assert!(
            e.contains(&p.display().to_string()) && e.contains("damaged"),
            "{e}"
        );
        assert!(s.remove("gh").unwrap());
        assert!(s.load("gh").unwrap_err().contains("no credential named"));
        std::env::remove_var(key::ENV);
    }

    fn walk(p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn names_and_tokens() {
        assert!(valid_name("github") && valid_name("gh.work-2"));
        assert!(!valid_name("") && !valid_name(".x") && !valid_name("a/b"));
        assert!(check_token("ghp_abc").is_ok());
        assert!(check_token("a b").is_err() && check_token("").is_err());
    }
}
