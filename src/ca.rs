//! moat's per-user certificate authority for TLS interception, and the CA
//! bundle the sandbox sees (the host's roots plus moat's CA). The private
//! key lives only in `$XDG_DATA_HOME/moat/` (0600) and in the supervisor's
//! memory; it is never mounted into a sandbox.
//!
//! The CA is made on first use. Two runs starting at once must end up with
//! the same CA, and a crash must never leave a file that looks whole but is
//! not: creation happens under a lock, each file is written to a temporary
//! name, synced, and renamed into place. A pair that is half there or does
//! not parse is an error naming the file, never a reason to make a new key
//! over it (that would silently break every client that trusts the old CA).

use anyhow::{anyhow, bail, Context as _, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The CA: certificate and key, PEM.
pub struct Ca {
    pub cert_pem: String,
    /// Secret: never logged, never written anywhere but the 0600 key file.
    pub key_pem: String,
    /// Where the certificate lives (for messages and the README).
    pub cert_path: PathBuf,
}

/// The certificate's file name in the data directory.
pub const CERT_FILE: &str = "ca.pem";
/// The private key's file name in the data directory.
pub const KEY_FILE: &str = "ca-key.pem";
const LOCK_FILE: &str = ".ca.lock";

/// How long a new CA is valid. Long, because every client that trusts it
/// would have to be told about a new one; the key never leaves the host.
const VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Backdating covers a sandbox whose clock runs a little behind.
const BACKDATE: Duration = Duration::from_secs(86_400);

/// Where hosts keep their bundle of trusted roots, most common first
/// (Debian/Ubuntu/Alpine/Arch, Fedora/RHEL, openSUSE, BSD-style/macOS
/// layouts some distributions copy, the Fedora/RHEL extracted bundle).
pub const BUNDLE_PATHS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert_path", &self.cert_path)
            .field("key_pem", &"<secret>")
            .finish()
    }
}

/// `$XDG_DATA_HOME/moat` (default `~/.local/share/moat`).
pub fn data_dir(home: &Path) -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(".local/share"))
        .join("moat")
}

/// Loads the CA, creating it on first use.
pub fn load_or_create(data_dir: &Path) -> Result<Ca> {
    match locate(data_dir)? {
        Located::Made(ca) => Ok(ca),
        Located::Found { cert, key } => load(&cert, &key),
    }
}

/// The CA in `data_dir`: found in place, or made now.
enum Located {
    Found { cert: PathBuf, key: PathBuf },
    Made(Ca),
}

/// Finds the CA's two files, or makes them on first use.
fn locate(data_dir: &Path) -> Result<Located> {
    ensure_private_dir(data_dir)?;
    let cert_path = data_dir.join(CERT_FILE);
    let key_path = data_dir.join(KEY_FILE);
    let found = |cert: PathBuf, key: PathBuf| Ok(Located::Found { cert, key });
    if exists(&cert_path)? && exists(&key_path)? {
        return found(cert_path, key_path);
    }
    // Someone is creating it, or nobody has yet: decide under the lock.
    let lock_path = data_dir.join(LOCK_FILE);
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {}", lock_path.display(), e.desc()))?;
    match (exists(&cert_path)?, exists(&key_path)?) {
        (true, true) => found(cert_path, key_path),
        (false, false) => create(data_dir, &cert_path, &key_path).map(Located::Made),
        (true, false) => bail!(
            "{} is missing but the CA certificate {} exists: moat will not make a new CA \
             over the old one (clients may trust it); restore the key, or remove {} to \
             make a new CA",
            key_path.display(),
            cert_path.display(),
            cert_path.display()
        ),
        (false, true) => bail!(
            "{} is missing but the CA key {} exists: moat will not make a new CA over an \
             existing key; restore the certificate, or remove {} to make a new CA",
            cert_path.display(),
            key_path.display(),
            key_path.display()
        ),
    }
}

fn exists(p: &Path) -> Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow!("{}: {e}", p.display())),
    }
}

/// Creates `dir` 0700 (its parents as usual), and makes sure an existing
/// one is a directory of ours that nobody else can read.
fn ensure_private_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(anyhow!("creating {}: {e}", dir.display())),
    }
    let md = fs::symlink_metadata(dir).with_context(|| format!("{}", dir.display()))?;
    if !md.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if md.uid() != euid {
        bail!(
            "{} belongs to uid {}, not to you (uid {euid}): moat keeps its CA key there",
            dir.display(),
            md.uid()
        );
    }
    if md.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(())
}

fn read(p: &Path) -> Result<String> {
    fs::read_to_string(p).with_context(|| format!("reading moat's CA file {}", p.display()))
}

/// Makes sure the CA exists, creating it on first use, without reading
/// it: what a run needs before its sandbox exists. Returns the
/// certificate's path. The proxy loads and checks the pair later
/// ([`load_or_create`]), and stops the run if it cannot.
pub fn ensure(data_dir: &Path) -> Result<PathBuf> {
    match locate(data_dir)? {
        Located::Made(mut ca) => {
            // The caller is about to be copied into the sandbox's init:
            // the key is not kept until then.
            zeroize::Zeroize::zeroize(&mut ca.key_pem);
            Ok(ca.cert_path)
        }
        Located::Found { cert, key } => {
            check_key_file(&cert, &key)?;
            Ok(cert)
        }
    }
}

/// The key is a regular file nobody else can read.
fn check_key_file(cert_path: &Path, key_path: &Path) -> Result<()> {
    let md = fs::symlink_metadata(key_path).with_context(|| format!("{}", key_path.display()))?;
    if !md.is_file() {
        bail!(
            "{}: moat's CA key is not a regular file",
            key_path.display()
        );
    }
    if md.mode() & 0o077 != 0 {
        bail!(
            "{}: moat's CA key is readable by others (mode {:04o}); run `chmod 600 {}`, \
             or remove it and {} to make a new CA",
            key_path.display(),
            md.mode() & 0o7777,
            key_path.display(),
            cert_path.display()
        );
    }
    Ok(())
}

fn load(cert_path: &Path, key_path: &Path) -> Result<Ca> {
    check_key_file(cert_path, key_path)?;
    let key_pem = read(key_path)?;
    let cert_pem = read(cert_path)?;
    let ca = Ca {
        cert_pem,
        key_pem,
        cert_path: cert_path.to_path_buf(),
    };
    check(&ca, key_path)?;
    Ok(ca)
}

/// The pair must be what the proxy can sign with: one certificate, a key
/// rcgen reads, and the certificate's public key that key's.
fn check(ca: &Ca, key_path: &Path) -> Result<()> {
    let corrupt = |p: &Path, why: &str| {
        anyhow!(
            "{}: {why}; moat will not replace it by itself: remove {} and {} to make a new CA",
            p.display(),
            ca.cert_path.display(),
            key_path.display()
        )
    };
    let key = rcgen::KeyPair::from_pem(&ca.key_pem)
        .map_err(|e| corrupt(key_path, &format!("not a usable private key ({e})")))?;
    let mut reader = ca.cert_pem.as_bytes();
    let certs: Vec<_> = rustls_pemfile::certs(&mut reader)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| corrupt(&ca.cert_path, &format!("not valid PEM ({e})")))?;
    let [cert] = certs.as_slice() else {
        return Err(corrupt(
            &ca.cert_path,
            &format!("expected one certificate, found {}", certs.len()),
        ));
    };
    if rustls_pemfile::private_key(&mut ca.cert_pem.as_bytes())
        .ok()
        .flatten()
        .is_some()
    {
        return Err(corrupt(
            &ca.cert_path,
            "holds a private key; the certificate file must hold only the certificate",
        ));
    }
    let public = key.public_key_raw();
    if !cert.as_ref().windows(public.len()).any(|w| w == public) {
        return Err(corrupt(
            &ca.cert_path,
            &format!(
                "the certificate is not for the key in {}",
                key_path.display()
            ),
        ));
    }
    rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, key)
        .map_err(|e| corrupt(&ca.cert_path, &format!("not a usable certificate ({e})")))?;
    Ok(())
}

/// `user@host` for the CA's name, so a user who finds it in a trust store
/// can tell whose it is.
fn owner_label() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::geteuid().to_string());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    let mut f = File::open("/dev/urandom").context("opening /dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut b).context("reading /dev/urandom")?;
    Ok(b)
}

/// A new CA, in memory.
pub fn generate(label: &str) -> Result<(String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
        PKCS_ECDSA_P256_SHA256,
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| anyhow!("generating the CA key: {e}"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("moat local CA ({label})"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "moat");
    // Signs leaf certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + VALIDITY).into();
    let mut serial = random_bytes::<16>()?;
    // Positive and of full length: DER integers are signed.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let cert = params
        .self_signed(&key)
        .map_err(|e| anyhow!("signing the CA certificate: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<Ca> {
    let (cert_pem, key_pem) = generate(&owner_label())?;
    // The key first: a crash between the two renames leaves a key without
    // a certificate, which the next run reports instead of trusting.
    write_atomic(dir, key_path, key_pem.as_bytes(), 0o600)?;
    write_atomic(dir, cert_path, cert_pem.as_bytes(), 0o644)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(Ca {
        cert_pem,
        key_pem,
        cert_path: cert_path.to_path_buf(),
    })
}

/// Writes `path` whole or not at all: a temporary file with exactly
/// `mode` (whatever the umask), synced, then renamed over.
fn write_atomic(dir: &Path, path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_synced(dir, path, data, mode, true)
}

/// The temporary file, synced, then renamed over `path` (`replace`) or
/// linked to it, leaving a file already there as it is.
fn write_synced(dir: &Path, path: &Path, data: &[u8], mode: u32, replace: bool) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("ca");
    let rnd = random_bytes::<6>()?;
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        if replace {
            return fs::rename(&tmp, path);
        }
        let linked = fs::hard_link(&tmp, path);
        fs::remove_file(&tmp)?;
        match linked {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(anyhow!("writing {}: {e}", path.display()));
    }
    Ok(())
}

/// The host's bundle of trusted roots: the first of [`BUNDLE_PATHS`] that
/// is a readable file, with its text.
pub fn host_bundle() -> Option<(PathBuf, String)> {
    BUNDLE_PATHS.iter().find_map(|p| {
        let text = fs::read_to_string(p).ok()?;
        Some((PathBuf::from(p), text))
    })
}

/// The bundle the sandbox sees: the host's roots, then moat's CA.
pub fn bundle(host_bundle_pem: &str, ca_cert_pem: &str) -> String {
    let mut out = String::with_capacity(host_bundle_pem.len() + ca_cert_pem.len() + 128);
    out.push_str(host_bundle_pem);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("# moat local CA: moat's proxy re-signs HTTPS for this sandbox\n");
    out.push_str(ca_cert_pem);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Where the sandbox bundles are kept, under the data directory (which no
/// sandbox sees, so none can change what the next one trusts).
const BUNDLE_DIR: &str = "bundles";

/// A bundle for the sandbox, ready to bind: the file, and the host bundle
/// it was made from (`None` when the host has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxBundle {
    pub path: PathBuf,
    pub host: Option<PathBuf>,
}

/// The sandbox's bundle for moat's CA at `cert_path` and the host's roots
/// (the first readable of `candidates`, normally [`BUNDLE_PATHS`]).
///
/// Made once and kept: its name is a digest of what the two inputs' file
/// metadata say (device, inode, size, change and modification times), so
/// a run pays a few `stat`s instead of reading, joining and writing
/// 200 KB, and a changed host bundle or a new CA gets a new file. Written
/// to a temporary name, synced and linked into place, so a crash never
/// leaves a short bundle under a name a later run would trust.
pub fn sandbox_bundle(
    data_dir: &Path,
    cert_path: &Path,
    candidates: &[&str],
) -> Result<SandboxBundle> {
    use sha2::Digest as _;
    let host = candidates.iter().find_map(|p| {
        let f = File::open(p).ok()?;
        let md = f.metadata().ok()?;
        md.is_file().then(|| (PathBuf::from(p), f, md))
    });
    let cert_md = fs::metadata(cert_path).with_context(|| format!("{}", cert_path.display()))?;
    let mut id = sha2::Sha256::new();
    let mut stamp = |path: &Path, md: &fs::Metadata| {
        id.update(path.as_os_str().as_encoded_bytes());
        for n in [
            md.dev(),
            md.ino(),
            md.size(),
            md.mtime() as u64,
            md.mtime_nsec() as u64,
            md.ctime() as u64,
            md.ctime_nsec() as u64,
        ] {
            id.update(n.to_le_bytes());
        }
    };
    if let Some((path, _, md)) = &host {
        stamp(path, md);
    }
    stamp(cert_path, &cert_md);
    let id: String = id.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = data_dir.join(BUNDLE_DIR);
    let path = dir.join(format!("ca-bundle-{id}.pem"));
    let made = SandboxBundle {
        path: path.clone(),
        host: host.as_ref().map(|(p, _, _)| p.clone()),
    };
    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return Ok(made);
    }

    ensure_private_dir(&dir)?;
    let host_pem = match host {
        Some((p, mut f, _)) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut f, &mut text)
                .with_context(|| format!("reading the host's CA bundle {}", p.display()))?;
            text
        }
        None => String::new(),
    };
    let cert_pem = read(cert_path)?;
    write_once(&dir, &path, bundle(&host_pem, &cert_pem).as_bytes(), 0o644)?;
    forget_old_bundles(&dir, &path);
    Ok(made)
}

/// Like [`write_atomic`], but never replaces: a run that found the file
/// holds it open by descriptor to bind it, and a file renamed over would
/// leave it holding a deleted one, which the kernel refuses to bind. When
/// another run made the file first, its copy (of the same inputs) stands.
fn write_once(dir: &Path, path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_synced(dir, path, data, mode, false)
}

/// Removes bundles made from inputs that have since changed, once they are
/// a day old: a run that started just before the change may still be
/// about to bind the one it chose.
fn forget_old_bundles(dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let day = Duration::from_secs(86_400);
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let ours = name
            .to_str()
            .is_some_and(|n| n.starts_with("ca-bundle-") && n.ends_with(".pem"));
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if ours && old && p != keep {
            let _ = fs::remove_file(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_once_then_reused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("share/moat");
        let a = load_or_create(&dir).unwrap();
        assert_eq!(a.cert_path, dir.join(CERT_FILE));
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.key_pem.contains("PRIVATE KEY"));
        let b = load_or_create(&dir).unwrap();
        assert_eq!(a.cert_pem, b.cert_pem);
        assert_eq!(a.key_pem, b.key_pem);
        // Nothing left behind but the pair and the lock.
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [LOCK_FILE, KEY_FILE, CERT_FILE]);
    }

    #[test]
    fn permissions() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("moat");
        load_or_create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(CERT_FILE)), 0o644);
    }

    #[test]
    fn loose_directory_is_tightened() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("moat");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        load_or_create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn key_never_in_cert_file_or_bundle() {
        let t = tempfile::tempdir().unwrap();
        let ca = load_or_create(t.path()).unwrap();
        let cert_file = fs::read_to_string(t.path().join(CERT_FILE)).unwrap();
        assert!(!cert_file.contains("PRIVATE KEY"));
        let key_body: Vec<&str> = ca
            .key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(!key_body.is_empty());
        let bundle = bundle("host roots\n", &ca.cert_pem);
        for line in key_body {
            assert!(!cert_file.contains(line));
            assert!(!bundle.contains(line));
        }
        assert!(!format!("{ca:?}").contains(&ca.key_pem));
    }

    /// The sandbox's bundle is made once per host bundle and CA, reused
    /// while neither changes, remade when one does; stale ones go once a
    /// day old.
    #[test]
    fn sandbox_bundle_is_cached_by_its_inputs() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("moat");
        let cert = ensure(&data).unwrap();
        let host = t.path().join("roots.pem");
        fs::write(
            &host,
            "-----BEGIN CERTIFICATE-----\nHOST\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = t.path().join("missing.pem");
        let candidates = [missing.to_str().unwrap(), host.to_str().unwrap()];

        let a = sandbox_bundle(&data, &cert, &candidates).unwrap();
        assert_eq!(a.host.as_deref(), Some(host.as_path()));
        assert_eq!(a.path.parent().unwrap(), data.join(BUNDLE_DIR));
        assert_eq!(mode(&data.join(BUNDLE_DIR)), 0o700);
        assert_eq!(mode(&a.path), 0o644);
        let cert_pem = fs::read_to_string(&cert).unwrap();
        let text = fs::read_to_string(&a.path).unwrap();
        assert_eq!(text, bundle(&fs::read_to_string(&host).unwrap(), &cert_pem));
        assert!(!text.contains("PRIVATE KEY"));

        // Reused as it is: same file, not rewritten.
        let ino = fs::metadata(&a.path).unwrap().ino();
        let b = sandbox_bundle(&data, &cert, &candidates).unwrap();
        assert_eq!(b, a);
        assert_eq!(fs::metadata(&b.path).unwrap().ino(), ino);

        // A changed host bundle gets a new file with its text (sizes differ:
        // two writes may fall in one tick of the file time stamps).
        fs::write(
            &host,
            "-----BEGIN CERTIFICATE-----\nNEW-ROOTS\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let c = sandbox_bundle(&data, &cert, &candidates).unwrap();
        assert_ne!(c.path, a.path);
        assert!(fs::read_to_string(&c.path).unwrap().contains("NEW-ROOTS"));
        // The old one is kept while young (a run may be about to bind it)...
        assert!(a.path.exists());

        // ...and goes once it is a day old.
        let old = SystemTime::now() - Duration::from_secs(2 * 86_400);
        File::options()
            .write(true)
            .open(&a.path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        fs::write(
            &host,
            "-----BEGIN CERTIFICATE-----\nNEWER-ROOTS-AGAIN\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let d = sandbox_bundle(&data, &cert, &candidates).unwrap();
        assert!(!a.path.exists(), "a stale bundle was left behind");
        assert!(c.path.exists() && d.path.exists());

        // No host bundle: moat's CA alone.
        let e = sandbox_bundle(&data, &cert, &[missing.to_str().unwrap()]).unwrap();
        assert_eq!(e.host, None);
        assert_eq!(fs::read_to_string(&e.path).unwrap(), bundle("", &cert_pem));

        // A new CA (the old pair removed) gets a new bundle too.
        fs::remove_file(data.join(CERT_FILE)).unwrap();
        fs::remove_file(data.join(KEY_FILE)).unwrap();
        let cert2 = ensure(&data).unwrap();
        let f = sandbox_bundle(&data, &cert2, &candidates).unwrap();
        assert_ne!(f.path, d.path);
        assert!(fs::read_to_string(&f.path)
            .unwrap()
            .ends_with(&fs::read_to_string(&cert2).unwrap()));
    }

    /// Two runs making the same bundle at once: the second never replaces
    /// the first's file (the first may hold it open to bind it).
    #[test]
    fn a_made_bundle_is_never_replaced() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("ca-bundle-x.pem");
        write_once(t.path(), &path, b"first", 0o644).unwrap();
        let held = File::open(&path).unwrap();
        write_once(t.path(), &path, b"second", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(
            held.metadata().unwrap().nlink(),
            1,
            "the file held open was unlinked"
        );
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ca-bundle-x.pem"], "temporary files left behind");
    }

    /// `ensure` makes the CA on first use and checks the key file's mode
    /// without reading the pair.
    #[test]
    fn ensure_creates_then_checks_the_key_file() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("moat");
        let cert = ensure(&dir).unwrap();
        assert_eq!(cert, dir.join(CERT_FILE));
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert_eq!(ensure(&dir).unwrap(), cert);
        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let e = ensure(&dir).unwrap_err().to_string();
        assert!(e.contains("readable by others"), "{e}");
    }

    /// Signs a leaf for `example.test` with the CA and asks rustls, as a
    /// client of the proxy would, whether it trusts the leaf at `at`
    /// (webpki does not look at a trust anchor's own validity).
    fn leaf_trusted_at(cert_pem: &str, key_pem: &str, at: SystemTime) -> bool {
        use rustls::client::danger::ServerCertVerifier;
        let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(cert_pem, key).unwrap();
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["example.test".to_string()]).unwrap();
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut cert_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        verifier
            .verify_server_cert(
                leaf.der(),
                &[],
                &rustls::pki_types::ServerName::try_from("example.test").unwrap(),
                &[],
                rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(secs)),
            )
            .is_ok()
    }

    /// The certificate's validity as Unix times, read straight from the
    /// DER (Certificate > TBSCertificate > Validity).
    fn validity(der: &[u8]) -> (i64, i64) {
        fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
            let tag = b[0];
            let (len, hdr) = if b[1] < 0x80 {
                (b[1] as usize, 2)
            } else {
                let n = (b[1] & 0x7f) as usize;
                let len = b[2..2 + n].iter().fold(0usize, |a, x| a << 8 | *x as usize);
                (len, 2 + n)
            };
            (tag, &b[hdr..hdr + len], &b[hdr + len..])
        }
        fn time(tag: u8, v: &[u8]) -> i64 {
            let s = std::str::from_utf8(v).unwrap();
            let (y, rest) = match tag {
                0x17 => {
                    let yy: i64 = s[..2].parse().unwrap();
                    (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
                }
                0x18 => (s[..4].parse().unwrap(), &s[4..]),
                t => panic!("not a time: tag {t:#x}"),
            };
            let n = |i: usize| -> i64 { rest[i..i + 2].parse().unwrap() };
            let (m, d) = (n(0), n(2));
            // Days from civil (Howard Hinnant's algorithm).
            let y = if m <= 2 { y - 1 } else { y };
            let era = y.div_euclid(400);
            let yoe = y - era * 400;
            let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            let days = era * 146_097 + doe - 719_468;
            days * 86_400 + n(4) * 3600 + n(6) * 60 + n(8)
        }
        let (_, cert, _) = tlv(der);
        let (_, mut tbs, _) = tlv(cert);
        if tbs[0] == 0xa0 {
            tbs = tlv(tbs).2;
        }
        let rest = tlv(tbs).2; // serial
        let rest = tlv(rest).2; // signature algorithm
        let rest = tlv(rest).2; // issuer
        let (_, validity, _) = tlv(rest);
        let (t1, v1, rest) = tlv(validity);
        let (t2, v2, _) = tlv(rest);
        (time(t1, v1), time(t2, v2))
    }

    #[test]
    fn certificate_is_a_ca_for_ten_years() {
        let (cert_pem, key_pem) = generate("alice@box").unwrap();
        let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let name = b"moat local CA (alice@box)";
        assert!(der.as_ref().windows(name.len()).any(|w| w == name));
        let issuer = rcgen::Issuer::from_ca_cert_pem(&cert_pem, key).unwrap();
        assert_eq!(
            issuer.key_usages(),
            [
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign
            ]
        );
        // A client trusts what it signs, so it is a CA.
        let now = SystemTime::now();
        assert!(leaf_trusted_at(&cert_pem, &key_pem, now));
        // Valid from a day ago (clock skew) for ten years.
        let (not_before, not_after) = validity(der.as_ref());
        let now_s = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (not_before - (now_s - 86_400)).abs() < 300,
            "{not_before} vs {now_s}"
        );
        assert!(
            (not_after - (now_s + 3650 * 86_400)).abs() < 300,
            "{not_after} vs {now_s}"
        );
        // Another CA's certificate does not vouch for our leaves.
        let (other, _) = generate("x@y").unwrap();
        assert!(!leaf_trusted_at(&other, &key_pem, now));
    }

    #[test]
    fn concurrent_creators_agree() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("moat");
        let certs: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create(&dir).unwrap().cert_pem))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(certs.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(fs::read_to_string(dir.join(CERT_FILE)).unwrap(), certs[0]);
    }

    #[test]
    fn corrupt_or_half_present_is_an_error_naming_the_file() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let good = load_or_create(dir).unwrap();
        let cert = dir.join(CERT_FILE);
        let key = dir.join(KEY_FILE);

        fs::write(&cert, "garbage").unwrap();
        let e = format!("{:#}", load_or_create(dir).unwrap_err());
        assert!(e.contains(&cert.display().to_string()), "{e}");
        // Not regenerated behind the user's back.
        assert_eq!(fs::read_to_string(&cert).unwrap(), "garbage");
        assert_eq!(fs::read_to_string(&key).unwrap(), good.key_pem);

        fs::write(&cert, &good.cert_pem).unwrap();
        let keep = fs::read_to_string(&key).unwrap();
        fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = format!("{:#}", load_or_create(dir).unwrap_err());
        assert!(e.contains(&key.display().to_string()), "{e}");

        // A certificate for a different key.
        let (other_cert, _) = generate("x@y").unwrap();
        fs::write(&key, &keep).unwrap();
        fs::write(&cert, &other_cert).unwrap();
        let e = format!("{:#}", load_or_create(dir).unwrap_err());
        assert!(e.contains("not for the key"), "{e}");

        fs::remove_file(&cert).unwrap();
        let e = format!("{:#}", load_or_create(dir).unwrap_err());
        assert!(e.contains(&cert.display().to_string()), "{e}");
        assert!(!cert.exists(), "no new certificate over the old key");
        assert_eq!(fs::read_to_string(&key).unwrap(), keep);

        fs::write(&cert, &good.cert_pem).unwrap();
        fs::remove_file(&key).unwrap();
        let e = format!("{:#}", load_or_create(dir).unwrap_err());
        assert!(e.contains(&key.display().to_string()), "{e}");
        assert!(!key.exists());

        fs::write(&key, &keep).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", load_or_create(dir).unwrap_err());
        assert!(e.contains("readable by others"), "{e}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_or_create(dir).unwrap().cert_pem, good.cert_pem);
    }

    #[test]
    fn bundle_is_host_roots_then_ca() {
        let t = tempfile::tempdir().unwrap();
        let ca = load_or_create(t.path()).unwrap();
        let b = bundle(
            "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----",
            &ca.cert_pem,
        );
        assert!(b.starts_with("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"));
        assert!(b.ends_with(&ca.cert_pem));
        assert_eq!(
            bundle("", &ca.cert_pem)
                .matches("BEGIN CERTIFICATE")
                .count(),
            1
        );
    }

    #[test]
    fn host_bundle_is_one_of_the_known_paths() {
        if let Some((p, text)) = host_bundle() {
            assert!(BUNDLE_PATHS.iter().any(|b| Path::new(b) == p));
            assert!(text.contains("BEGIN CERTIFICATE"));
        }
    }
}
