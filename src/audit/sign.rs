//! The checkpoint signing key and the checkpoint signature.
//!
//! The key is an Ed25519 seed kept as 64 hex digits in
//! `$XDG_DATA_HOME/moat/audit.key` (0600, directory 0700), made on first
//! use. A checkpoint signs the ASCII message
//! `moat-audit-checkpoint-v1 <seq> <hash>` where `<seq>` is the decimal
//! sequence number and `<hash>` the hex hash of the entry it covers.

use super::canonical::{hex, unhex};
use anyhow::{anyhow, bail, Context, Result};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const KEY_FILE: &str = "audit.key";

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// The message a checkpoint covering entry `seq` with hash `hash` signs.
pub fn message(seq: u64, hash: &str) -> Vec<u8> {
    format!("moat-audit-checkpoint-v1 {seq} {hash}").into_bytes()
}

pub fn sign(key: &SigningKey, seq: u64, hash: &str) -> String {
    hex(&key.sign(&message(seq, hash)).to_bytes())
}

/// Whether `sig_hex` is `key`'s signature over the checkpoint message,
/// with the strict checks (no malleable or small-order encodings).
pub fn check(key: &VerifyingKey, seq: u64, hash: &str, sig_hex: &str) -> bool {
    let Some(bytes) = unhex(sig_hex) else {
        return false;
    };
    let Ok(arr) = <[u8; 64]>::try_from(bytes.as_slice()) else {
        return false;
    };
    key.verify_strict(&message(seq, hash), &Signature::from_bytes(&arr))
        .is_ok()
}

/// A public key given on the command line: 64 hex digits (what
/// `moat audit key` prints).
pub fn parse_public(s: &str) -> Result<VerifyingKey> {
    let s = s.trim();
    let bytes = unhex(s).filter(|b| b.len() == 32).ok_or_else(|| {
        anyhow!("`{s}` is not a public key: expected 64 hex digits (as `moat audit key` prints)")
    })?;
    let arr: [u8; 32] = bytes.try_into().expect("32 bytes");
    VerifyingKey::from_bytes(&arr).map_err(|_| anyhow!("`{s}` is not a valid Ed25519 public key"))
}

pub fn public_hex(key: &VerifyingKey) -> String {
    hex(key.as_bytes())
}

/// Creates `dir` (0700) if missing.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn random_seed() -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    let mut got = 0;
    while got < seed.len() {
        // SAFETY: the pointer and length describe the unfilled tail of
        // `seed`, which lives for the whole call.
        let n = unsafe { libc::getrandom(seed[got..].as_mut_ptr().cast(), seed.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("getrandom");
        }
        got += n as usize;
    }
    Ok(seed)
}

/// The public key, making the key pair first if there is none. The
/// private half is not kept in memory: it is read again for each
/// checkpoint (the supervisor's memory is copied into the sandbox's init).
pub fn ensure_key(data_dir: &Path) -> Result<VerifyingKey> {
    ensure_private_dir(data_dir)?;
    let path = key_path(data_dir);
    if !path.exists() {
        let mut seed = random_seed()?;
        let tmp = data_dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(format!("{}\n", hex(&seed)).as_bytes())?;
            f.sync_all()?;
            // A hard link never replaces: a key another moat made at the
            // same moment wins and ours is dropped.
            match std::fs::hard_link(&tmp, &path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            }
        })();
        seed.fill(0);
        let _ = std::fs::remove_file(&tmp);
        written.with_context(|| format!("creating the audit key {}", path.display()))?;
    }
    Ok(load_signing(data_dir)?.verifying_key())
}

/// Reads the private key, refusing one that others can read.
pub fn load_signing(data_dir: &Path) -> Result<SigningKey> {
    let path = key_path(data_dir);
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("reading the audit key {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "the audit key {} is readable by others (mode {:o}): run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        bail!("the audit key {} belongs to another user", path.display());
    }
    let mut text = std::fs::read(&path)
        .with_context(|| format!("reading the audit key {}", path.display()))?;
    let bytes = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| unhex(t.trim()))
        .filter(|b| b.len() == 32);
    text.fill(0);
    let Some(mut bytes) = bytes else {
        bail!(
            "the audit key {} is damaged (expected 64 hex digits)",
            path.display()
        );
    };
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&bytes);
    bytes.fill(0);
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_made_once_and_signatures_check() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("moat");
        let pk = ensure_key(&dir).unwrap();
        assert_eq!(ensure_key(&dir).unwrap(), pk);
        let mode = std::fs::metadata(key_path(&dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sk = load_signing(&dir).unwrap();
        let h = super::super::chain::GENESIS;
        let sig = sign(&sk, 3, h);
        assert!(check(&pk, 3, h, &sig));
        assert!(!check(&pk, 4, h, &sig));
        let other = SigningKey::from_bytes(&[7; 32]);
        assert!(!check(&other.verifying_key(), 3, h, &sig));
        assert!(!check(&pk, 3, h, "zz"));
        assert_eq!(parse_public(&public_hex(&pk)).unwrap(), pk);
        assert!(parse_public("abc").is_err());
    }
}
