//! Files of the credential store: a private directory, and writes that
//! either land whole or not at all (temp file in the same directory,
//! fsync, rename over, fsync the directory). A crash, a kill or a full
//! disk at any point leaves the old file as it was, at worst with a
//! `.tmp-*` file beside it that listing ignores.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` (and its parents) if needed; `dir` itself ends up 0700.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A temporary name in `dir` nobody else picks.
fn temp_path(dir: &Path, name: &str) -> io::Result<PathBuf> {
    let mut r = [0u8; 6];
    super::crypto::random(&mut r).map_err(io::Error::other)?;
    Ok(dir.join(format!(
        ".tmp-{name}-{}-{}",
        std::process::id(),
        super::crypto::hex(&r)
    )))
}

/// Writes a new 0600 temp file with `data`, synced to disk.
fn write_temp(dir: &Path, name: &str, data: &[u8]) -> io::Result<PathBuf> {
    let tmp = temp_path(dir, name)?;
    let r = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    match r {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces (or creates) `dir/name` with `data`, atomically.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = write_temp(dir, name, data)?;
    if let Err(e) = fs::rename(&tmp, dir.join(name)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Creates `dir/name` with `data` only if it does not exist yet, atomically
/// (a hard link does not replace). Returns false when it already existed.
pub fn create_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<bool> {
    let tmp = write_temp(dir, name, data)?;
    let r = fs::hard_link(&tmp, dir.join(name));
    let _ = fs::remove_file(&tmp);
    match r {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes `dir/name`; false when it was not there.
pub fn remove(dir: &Path, name: &str) -> io::Result<bool> {
    match fs::remove_file(dir.join(name)) {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads a store file, refusing anything but a regular file.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut v = Vec::new();
    io::Read::read_to_end(&mut &f, &mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("store");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        write_atomic(&dir, "a.json", b"one").unwrap();
        write_atomic(&dir, "a.json", b"two").unwrap();
        assert_eq!(fs::read(dir.join("a.json")).unwrap(), b"two");
        let mode = fs::metadata(dir.join("a.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        assert!(!create_atomic(&dir, "a.json", b"three").unwrap());
        assert_eq!(fs::read(dir.join("a.json")).unwrap(), b"two");
        assert!(create_atomic(&dir, "b.json", b"new").unwrap());
        assert!(remove(&dir, "b.json").unwrap());
        assert!(!remove(&dir, "b.json").unwrap());
    }

    #[test]
    fn a_write_that_dies_before_the_rename_leaves_the_old_file() {
        // What a kill or a full disk mid-write leaves: a temp file beside
        // the intact old one.
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        write_atomic(dir, "a.json", b"old").unwrap();
        let tmp = write_temp(dir, "a.json", b"half-writ").unwrap();
        assert!(tmp.file_name().unwrap().to_str().unwrap().starts_with('.'));
        assert_eq!(fs::read(dir.join("a.json")).unwrap(), b"old");
    }

    #[test]
    fn loosened_dir_is_tightened() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("s");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
