//! AES-256-GCM sealing of one credential: a fresh random 96-bit nonce per
//! write, and associated data that binds the ciphertext to the file's
//! metadata (name, provider, hosts, ...), so a ciphertext moved into
//! another file, or metadata edited to send the token elsewhere, fails to
//! open.

use aes_gcm::aead::{Aead, Generate, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Length of the data key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a GCM nonce in bytes.
pub const NONCE_LEN: usize = 12;

/// The data key, wiped when dropped.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    pub fn from_bytes(bytes: &[u8]) -> Option<DataKey> {
        let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(DataKey(Zeroizing::new(arr)))
    }

    /// A new random key.
    pub fn generate() -> Result<DataKey, String> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        random(&mut k[..])?;
        Ok(DataKey(k))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0[..]
    }

    /// A short public name of the key: tells "encrypted with another key"
    /// apart from "damaged" without revealing anything usable.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"moat credential key id\0");
        h.update(self.bytes());
        hex(&h.finalize()[..4])
    }
}

/// Fills `buf` from the kernel's random source.
pub fn random(buf: &mut [u8]) -> Result<(), String> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| "the system random source failed".to_string())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// First 8 hex digits of SHA-256 of the token: enough to tell two tokens
/// apart in `moat grant list`, far too little to learn anything from.
pub fn fingerprint(token: &[u8]) -> String {
    hex(&Sha256::digest(token)[..4])
}

/// Encrypts `plain` under `key` with `aad`; returns (nonce, ciphertext+tag).
pub fn seal(key: &DataKey, aad: &[u8], plain: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), String> {
    let cipher = Aes256Gcm::new_from_slice(key.bytes()).map_err(|e| e.to_string())?;
    let nonce = Nonce::try_generate().map_err(|e| format!("no random nonce: {e}"))?;
    let ct = cipher
        .encrypt(&nonce, Payload { msg: plain, aad })
        .map_err(|_| "encryption failed".to_string())?;
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(&nonce);
    Ok((n, ct))
}

/// Decrypts; `None` when the tag does not verify (wrong key, changed
/// ciphertext, changed metadata).
pub fn open(key: &DataKey, aad: &[u8], nonce: &[u8], ct: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let cipher = Aes256Gcm::new_from_slice(key.bytes()).ok()?;
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().ok()?;
    let nonce = Nonce::from(*nonce);
    cipher
        .decrypt(&nonce, Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = DataKey::generate().unwrap();
        let (n, ct) = seal(&k, b"meta", b"ghp_secret").unwrap();
        assert_eq!(&open(&k, b"meta", &n, &ct).unwrap()[..], b"ghp_secret");
        assert!(!ct.windows(10).any(|w| w == b"ghp_secret"));
        // Another key, other metadata, a flipped bit: all refused.
        let other = DataKey::generate().unwrap();
        assert!(open(&other, b"meta", &n, &ct).is_none());
        assert!(open(&k, b"other", &n, &ct).is_none());
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(open(&k, b"meta", &n, &bad).is_none());
        // Nonces differ per write.
        let (n2, _) = seal(&k, b"meta", b"ghp_secret").unwrap();
        assert_ne!(n, n2);
        assert_ne!(k.id(), other.id());
    }

    #[test]
    fn fingerprint_is_short_hex() {
        let f = fingerprint(b"abc");
        assert_eq!(f, "ba7816bf");
    }
}
