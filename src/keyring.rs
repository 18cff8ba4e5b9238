//! Placeholder until the Secret Service client from the `secrets` branch is
//! cherry-picked: reports no keyring.

pub enum KeyringError {
    Unavailable(String),
    Locked(String),
    Failed(String),
}

pub fn available() -> Result<(), KeyringError> {
    Err(KeyringError::Unavailable("not built in".into()))
}

pub fn lookup(
    _attrs: &[(&str, &str)],
) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, KeyringError> {
    Err(KeyringError::Unavailable("not built in".into()))
}

pub fn store(_label: &str, _attrs: &[(&str, &str)], _secret: &[u8]) -> Result<(), KeyringError> {
    Err(KeyringError::Unavailable("not built in".into()))
}

pub fn delete(_attrs: &[(&str, &str)]) -> Result<bool, KeyringError> {
    Err(KeyringError::Unavailable("not built in".into()))
}
