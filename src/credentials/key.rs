//! Where the data key that encrypts the credential files lives: in the
//! desktop keyring (Secret Service) when one is reachable, otherwise in a
//! 0600 key file beside the store. `MOAT_KEY_BACKEND=file|keyring|auto`
//! forces the choice.

use super::crypto::DataKey;
use super::store;
use crate::keyring::{self, KeyringError};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where one key is kept; recorded in every credential file so reading
/// never guesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    File,
    Keyring,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::Keyring => "keyring",
        }
    }
}

/// What `MOAT_KEY_BACKEND` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Forced(Backend),
}

pub const ENV: &str = "MOAT_KEY_BACKEND";

pub fn choice() -> Result<Choice, String> {
    match std::env::var(ENV).ok().as_deref() {
        None | Some("") | Some("auto") => Ok(Choice::Auto),
        Some("file") => Ok(Choice::Forced(Backend::File)),
        Some("keyring") => Ok(Choice::Forced(Backend::Keyring)),
        Some(other) => Err(format!(
            "{ENV}={other:?} is not a key backend: use `file`, `keyring` or `auto`"
        )),
    }
}

const KEY_FILE: &str = "credentials.key";
const KEY_HEADER: &str = "moat-credential-key-v1 ";

/// The key file of a store whose data directory is `data_dir`.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

fn keyring_error(e: KeyringError) -> String {
    match e {
        KeyringError::Unavailable(s) => format!("no desktop keyring is available ({s})"),
        KeyringError::Locked(s) => format!("the desktop keyring is locked ({s}); unlock it"),
        KeyringError::Failed(s) => format!("the desktop keyring failed: {s}"),
    }
}

/// The keyring item of the store in `data_dir`: one per data directory, so
/// two stores of one user do not share (or overwrite) a key.
fn attrs(data_dir: &Path) -> [(&'static str, String); 3] {
    [
        ("application", "moat".to_string()),
        ("moat-item", "credential-key".to_string()),
        ("moat-store", data_dir.display().to_string()),
    ]
}

fn with_attrs<T>(data_dir: &Path, f: impl FnOnce(&[(&str, &str)]) -> T) -> T {
    let a = attrs(data_dir);
    let refs: Vec<(&str, &str)> = a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    f(&refs)
}

fn keyring_lookup(data_dir: &Path) -> Result<Option<DataKey>, String> {
    let found = with_attrs(data_dir, keyring::lookup).map_err(keyring_error)?;
    match found {
        None => Ok(None),
        Some(bytes) => {
            let decoded = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(&bytes[..])
                    .map_err(|_| "the key in the desktop keyring is not valid".to_string())?,
            );
            DataKey::from_bytes(&decoded)
                .map(Some)
                .ok_or_else(|| "the key in the desktop keyring has the wrong length".to_string())
        }
    }
}

fn keyring_create(data_dir: &Path) -> Result<DataKey, String> {
    let key = DataKey::generate()?;
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.bytes()));
    with_attrs(data_dir, |a| {
        keyring::store("moat credential key", a, encoded.as_bytes())
    })
    .map_err(keyring_error)?;
    Ok(key)
}

fn file_read(path: &Path) -> Result<Option<DataKey>, String> {
    let bytes = match store::read(path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading the key file {}: {e}", path.display())),
    };
    let text = std::str::from_utf8(&bytes).unwrap_or("");
    let decoded = text
        .trim_end()
        .strip_prefix(KEY_HEADER)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(Zeroizing::new);
    decoded
        .and_then(|d| DataKey::from_bytes(&d))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "the key file {} is damaged (not a moat credential key)",
                path.display()
            )
        })
}

fn file_create(data_dir: &Path) -> Result<DataKey, String> {
    let path = key_file(data_dir);
    let key = DataKey::generate()?;
    let line = Zeroizing::new(format!(
        "{KEY_HEADER}{}\n",
        base64::engine::general_purpose::STANDARD.encode(key.bytes())
    ));
    let created = store::create_atomic(data_dir, KEY_FILE, line.as_bytes())
        .map_err(|e| format!("creating the key file {}: {e}", path.display()))?;
    if created {
        return Ok(key);
    }
    // Another moat made one first: use that.
    file_read(&path)?.ok_or_else(|| format!("the key file {} vanished", path.display()))
}

fn file_key(data_dir: &Path) -> Result<DataKey, String> {
    match file_read(&key_file(data_dir))? {
        Some(k) => Ok(k),
        None => file_create(data_dir),
    }
}

fn file_notice(data_dir: &Path, why: &str) -> String {
    format!(
        "moat: {why}: the credential key is kept in the file {} (mode 0600)",
        key_file(data_dir).display()
    )
}

/// The key new credentials are encrypted with, its backend, and a notice
/// to print when it is a key file.
pub fn for_writing(data_dir: &Path) -> Result<(DataKey, Backend, Option<String>), String> {
    match choice()? {
        Choice::Forced(Backend::File) => Ok((
            file_key(data_dir)?,
            Backend::File,
            Some(file_notice(data_dir, &format!("{ENV}=file"))),
        )),
        Choice::Forced(Backend::Keyring) => {
            keyring::available().map_err(|e| format!("{ENV}=keyring, but {}", keyring_error(e)))?;
            let key = match keyring_lookup(data_dir)? {
                Some(k) => k,
                None => keyring_create(data_dir)?,
            };
            Ok((key, Backend::Keyring, None))
        }
        Choice::Auto => match keyring::available() {
            Ok(()) => {
                if let Some(k) = keyring_lookup(data_dir)? {
                    return Ok((k, Backend::Keyring, None));
                }
                // A store that started without a keyring keeps its key
                // file: one store, one key.
                if let Some(k) = file_read(&key_file(data_dir))? {
                    let n = file_notice(data_dir, "this store's key predates the keyring");
                    return Ok((k, Backend::File, Some(n)));
                }
                Ok((keyring_create(data_dir)?, Backend::Keyring, None))
            }
            Err(e) => Ok((
                file_key(data_dir)?,
                Backend::File,
                Some(file_notice(data_dir, &keyring_error(e))),
            )),
        },
    }
}

/// The key a credential recorded as kept in `backend` was encrypted with.
/// Errors say which credential file could not be opened and why.
pub fn for_reading(data_dir: &Path, backend: Backend, file: &Path) -> Result<DataKey, String> {
    match backend {
        Backend::File => {
            let path = key_file(data_dir);
            file_read(&path)
                .map_err(|e| format!("{}: {e}", file.display()))?
                .ok_or_else(|| {
                    format!(
                        "{}: its key file {} is missing, so it cannot be decrypted; \
                         remove it with `moat grant rm` and add the credential again",
                        file.display(),
                        path.display()
                    )
                })
        }
        Backend::Keyring => {
            keyring::available().map_err(|e| {
                format!(
                    "{}: its key is in the desktop keyring, but {}; run moat in a session \
                     with the keyring unlocked",
                    file.display(),
                    keyring_error(e)
                )
            })?;
            keyring_lookup(data_dir)
                .map_err(|e| format!("{}: {e}", file.display()))?
                .ok_or_else(|| {
                    format!(
                        "{}: its key is missing from the desktop keyring, so it cannot be \
                         decrypted; remove it with `moat grant rm` and add the credential again",
                        file.display()
                    )
                })
        }
    }
}
