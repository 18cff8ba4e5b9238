//! Harness for the integration tests: runs the real moat binary, as root or
//! as the unprivileged user `moat-test`, with a clean environment and a hard
//! timeout, and reports everything it saw when an assertion fails.
//!
//! The tests must run as root (scripts/test does that): root can run moat as
//! both kinds of caller and can plant host files (secrets, sockets) that the
//! sandbox must hide.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{chown, lchown, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const TEST_USER: &str = "moat-test";
/// Long enough for a loaded 2-core CI machine, short enough that a hung
/// sandbox fails the run instead of eating CI's time budget.
pub const TIMEOUT: Duration = Duration::from_secs(30);
pub const CLEAN_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Generates one test per caller kind, `NAME::root` and `NAME::rootless`,
/// from a body that takes the runner. Every sandbox property must hold for
/// both: root takes other kernel paths (no uid mapping restrictions, real
/// CAP_SYS_ADMIN outside) than an ordinary user.
#[macro_export]
macro_rules! sandbox_test {
    ($(#[$meta:meta])* fn $name:ident($r:ident: &Runner) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$meta])*
            fn body($r: &Runner) $body

            #[test]
            fn root() {
                body(&Runner::root())
            }

            #[test]
            fn rootless() {
                body(&Runner::rootless())
            }
        }
    };
}

/// A name no other test, run or leftover will share.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}-{}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Root,
    Rootless,
}

/// Who runs moat: root, or `moat-test` through setpriv.
#[derive(Clone, Debug)]
pub struct Runner {
    pub mode: Mode,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub home: PathBuf,
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "the integration tests must run as root (they run moat as root and as the \
             unprivileged user {TEST_USER}): run scripts/test as root"
        );
    }
}

struct PasswdEntry {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

fn passwd_entry(user: &str) -> Option<PasswdEntry> {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 7 && f[0] == user {
            Some(PasswdEntry {
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: PathBuf::from(f[5]),
            })
        } else {
            None
        }
    })
}

impl Runner {
    pub fn root() -> Runner {
        require_root();
        Runner {
            mode: Mode::Root,
            uid: 0,
            gid: 0,
            user: "root".into(),
            home: PathBuf::from("/root"),
        }
    }

    pub fn rootless() -> Runner {
        require_root();
        let e = passwd_entry(TEST_USER).unwrap_or_else(|| {
            panic!(
                "test user `{TEST_USER}` does not exist, so the rootless half of the suite \
                 cannot run: run scripts/test as root (it creates the user), or \
                 `useradd --create-home --home-dir /home/{TEST_USER} {TEST_USER}`"
            )
        });
        assert_ne!(e.uid, 0, "{TEST_USER} must not be uid 0");
        let meta = fs::metadata(&e.home).unwrap_or_else(|err| {
            panic!(
                "home {} of {TEST_USER} is missing ({err}): run scripts/test as root",
                e.home.display()
            )
        });
        assert_eq!(
            meta.uid(),
            e.uid,
            "home {} of {TEST_USER} must belong to it: run scripts/test as root",
            e.home.display()
        );
        Runner {
            mode: Mode::Rootless,
            uid: e.uid,
            gid: e.gid,
            user: TEST_USER.into(),
            home: e.home,
        }
    }

    pub fn is_root(&self) -> bool {
        self.mode == Mode::Root
    }

    /// A command that runs `program` as this runner with a clean
    /// environment (HOME, USER, LOGNAME, PATH only).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = match self.mode {
            Mode::Root => Command::new(program),
            Mode::Rootless => {
                let mut c = Command::new(setpriv());
                c.arg(format!("--reuid={}", self.uid))
                    .arg(format!("--regid={}", self.gid))
                    .arg("--clear-groups")
                    .arg("--inh-caps=-all")
                    .arg("--")
                    .arg(program);
                c
            }
        };
        c.env_clear()
            .env("HOME", &self.home)
            .env("USER", &self.user)
            .env("LOGNAME", &self.user)
            .env("PATH", CLEAN_PATH)
            .current_dir(&self.home);
        c
    }

    /// A moat invocation with no arguments yet.
    pub fn moat(&self) -> Moat {
        Moat {
            cmd: self.command(moat_bin(self.mode)),
            what: format!("[{:?}] moat", self.mode),
            stdin: None,
            timeout: TIMEOUT,
        }
    }

    /// `moat exec --workspace WS` started in WS; add options, then `.cmd()`.
    pub fn exec(&self, ws: &Dir) -> Moat {
        let mut m = self.moat();
        m.arg("exec").arg("--workspace").arg(ws.path());
        m.cwd(ws.path());
        m
    }

    /// Runs `sh -c SCRIPT` in a default-profile sandbox on WS.
    pub fn sh(&self, ws: &Dir, script: &str) -> Output {
        self.exec(ws).cmd(["sh", "-c", script]).run()
    }

    /// Runs `sh -c SCRIPT` on the host (no sandbox) as this runner: the
    /// control that shows a test's host setup really is reachable without
    /// moat.
    pub fn host_sh(&self, cwd: &Path, script: &str) -> Output {
        let mut c = self.command("/bin/sh");
        c.arg("-c").arg(script).current_dir(cwd);
        run_command(
            c,
            format!("[{:?}] host sh -c {script:?}", self.mode),
            None,
            TIMEOUT,
        )
    }

    /// A new workspace under the runner's home, owned by the runner.
    pub fn workspace(&self) -> Dir {
        self.dir_in(&self.home, "ws-")
    }

    /// A new workspace under /tmp (where the sandbox mounts its own tmpfs),
    /// owned by the runner.
    pub fn tmp_workspace(&self) -> Dir {
        self.dir_in(Path::new("/tmp"), "moat-ws-")
    }

    /// A new directory owned by the runner under `parent`, removed on drop.
    pub fn dir_in(&self, parent: &Path, prefix: &str) -> Dir {
        let path = parent.join(unique(prefix));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        chown(&path, Some(self.uid), Some(self.gid)).unwrap();
        Dir {
            path,
            uid: self.uid,
            gid: self.gid,
        }
    }
}

fn setpriv() -> &'static str {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("setpriv (util-linux) is missing: run scripts/test as root, it installs it")
}

/// Whether a user that is neither owner nor in the group can run `bin`.
fn reachable_by_others(bin: &Path) -> bool {
    let Ok(meta) = fs::metadata(bin) else {
        return false;
    };
    if meta.mode() & 0o005 != 0o005 {
        return false;
    }
    bin.ancestors().skip(1).all(|dir| {
        fs::metadata(dir)
            .map(|m| m.mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// The moat binary as `mode`'s caller can run it. Cargo's target dir may
/// sit somewhere the test user cannot traverse (e.g. under /root); then a
/// world-readable copy under /tmp is used.
pub fn moat_bin(mode: Mode) -> PathBuf {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_moat"));
    if mode == Mode::Root || reachable_by_others(&built) {
        return built;
    }
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let dir = Path::new("/tmp/moat-test-bin");
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("mkdir {}: {e}", dir.display()),
        }
        let meta = fs::symlink_metadata(dir).unwrap();
        assert!(
            meta.is_dir() && meta.uid() == 0 && meta.mode() & 0o022 == 0,
            "{} must be a root-owned directory not writable by others",
            dir.display()
        );
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        let src = fs::metadata(&built).unwrap();
        // Named after the build, so test binaries of one build share the
        // copy and a new build never overwrites a binary that is running.
        let dst = dir.join(format!(
            "moat-{}-{}",
            src.len(),
            src.mtime_nsec() ^ src.mtime()
        ));
        if !dst.exists() {
            let tmp = dir.join(unique(".moat-"));
            fs::copy(&built, &tmp).unwrap();
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
            fs::rename(&tmp, &dst).unwrap();
        }
        dst
    })
    .clone()
}

/// A directory removed (with everything in it) on drop. Helpers create
/// files in it owned by the runner, as if the runner had made them.
pub struct Dir {
    path: PathBuf,
    uid: u32,
    gid: u32,
}

impl Dir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("test paths are UTF-8")
    }

    /// Writes `rel` (creating parents), owned by the runner.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            self.mkdir_p(parent);
        }
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        chown(&p, Some(self.uid), Some(self.gid)).unwrap();
        p
    }

    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.path.join(rel);
        self.mkdir_p(&p);
        p
    }

    pub fn symlink(&self, target: impl AsRef<Path>, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.path.join(rel);
        std::os::unix::fs::symlink(target, &p).unwrap();
        lchown(&p, Some(self.uid), Some(self.gid)).unwrap();
        p
    }

    pub fn read(&self, rel: impl AsRef<Path>) -> String {
        let p = self.path.join(rel);
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    /// Gives every file under the directory to the runner, e.g. after a tool
    /// (git init) ran as root on the host.
    pub fn chown_all(&self) {
        fn walk(p: &Path, uid: u32, gid: u32) {
            lchown(p, Some(uid), Some(gid)).unwrap();
            if fs::symlink_metadata(p).unwrap().is_dir() {
                for e in fs::read_dir(p).unwrap() {
                    walk(&e.unwrap().path(), uid, gid);
                }
            }
        }
        walk(&self.path, self.uid, self.gid);
    }

    fn mkdir_p(&self, p: &Path) {
        if p.exists() {
            return;
        }
        if let Some(parent) = p.parent() {
            self.mkdir_p(parent);
        }
        fs::create_dir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        chown(p, Some(self.uid), Some(self.gid)).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Held (shared) by every run of moat, and exclusively while a test plants
/// or removes a file that moat itself looks at when it builds a sandbox
/// (~/.gitconfig, ~/.config/git). Without it a concurrent test's moat could
/// see such a file exist, then fail to bind it because it just vanished:
/// the tests' own race, not moat's.
static MOAT_INPUTS: RwLock<()> = RwLock::new(());

fn moat_inputs_shared() -> RwLockReadGuard<'static, ()> {
    MOAT_INPUTS.read().unwrap_or_else(|e| e.into_inner())
}

/// Directories HostFiles created, with how many HostFiles need each: tests
/// run in parallel and may plant files in the same new directory (~/.ssh
/// of a home that had none).
fn planted_dirs() -> std::sync::MutexGuard<'static, std::collections::HashMap<PathBuf, usize>> {
    static DIRS: OnceLock<Mutex<std::collections::HashMap<PathBuf, usize>>> = OnceLock::new();
    DIRS.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A file planted on the host at an absolute path (a secret in ~/.ssh, a
/// file in another user's home), with any parent directories it needed.
/// Drop removes the file and only the directories it created, so a real
/// ~/.ssh of the machine is left as it was.
pub struct HostFile {
    pub path: PathBuf,
    created_dirs: Vec<PathBuf>,
    /// Whether moat reads this path while building a sandbox.
    moat_input: bool,
}

impl HostFile {
    /// Creates `path` with `contents`, mode `mode`, owned by uid:gid;
    /// missing parents get mode 0700 (0755 if `open_dirs`) and the same
    /// owner.
    pub fn create(
        path: impl Into<PathBuf>,
        contents: &str,
        mode: u32,
        owner: (u32, u32),
        open_dirs: bool,
    ) -> HostFile {
        Self::create_inner(path.into(), contents, mode, owner, open_dirs, false)
    }

    /// Like `create`, for a path moat itself reads (a profile's optional
    /// bind such as ~/.config/git): waits until no moat is running, and
    /// so does the removal.
    pub fn create_moat_input(
        path: impl Into<PathBuf>,
        contents: &str,
        mode: u32,
        owner: (u32, u32),
    ) -> HostFile {
        Self::create_inner(path.into(), contents, mode, owner, false, true)
    }

    fn create_inner(
        path: PathBuf,
        contents: &str,
        mode: u32,
        owner: (u32, u32),
        open_dirs: bool,
        moat_input: bool,
    ) -> HostFile {
        let _excl = moat_input.then(|| MOAT_INPUTS.write().unwrap_or_else(|e| e.into_inner()));
        let mut shared = planted_dirs();
        let mut missing = Vec::new();
        let mut p = path.parent();
        while let Some(dir) = p {
            // A directory another HostFile planted counts as missing: this
            // one needs it too, and it goes when the last of them does.
            if dir.exists() && !shared.contains_key(dir) {
                break;
            }
            missing.push(dir.to_path_buf());
            p = dir.parent();
        }
        let mut created_dirs = Vec::new();
        for dir in missing.into_iter().rev() {
            if let Some(users) = shared.get_mut(&dir) {
                *users += 1;
            } else {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                let m = if open_dirs { 0o755 } else { 0o700 };
                fs::set_permissions(&dir, fs::Permissions::from_mode(m)).unwrap();
                chown(&dir, Some(owner.0), Some(owner.1)).unwrap();
                shared.insert(dir.clone(), 1);
            }
            created_dirs.push(dir);
        }
        let file = HostFile {
            path,
            created_dirs,
            moat_input,
        };
        fs::write(&file.path, contents)
            .unwrap_or_else(|e| panic!("write {}: {e}", file.path.display()));
        fs::set_permissions(&file.path, fs::Permissions::from_mode(mode)).unwrap();
        chown(&file.path, Some(owner.0), Some(owner.1)).unwrap();
        file
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        let _excl = self
            .moat_input
            .then(|| MOAT_INPUTS.write().unwrap_or_else(|e| e.into_inner()));
        let mut shared = planted_dirs();
        let _ = fs::remove_file(&self.path);
        for dir in self.created_dirs.iter().rev() {
            let users = shared.get_mut(dir).expect("planted directory is tracked");
            *users -= 1;
            if *users == 0 {
                shared.remove(dir);
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// Host paths a test's sandboxed command tries (and must fail) to create.
/// If the sandbox is broken and they appear anyway, they are removed on
/// drop, so a failing run leaves the machine as it was.
pub struct RemoveOnDrop(pub Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

/// A builder for one moat invocation.
pub struct Moat {
    cmd: Command,
    what: String,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Moat {
    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut Self {
        self.what.push(' ');
        self.what.push_str(&a.as_ref().to_string_lossy());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// `-- CMD ARGS...`
    pub fn cmd<I, S>(&mut self, argv: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.arg("--").args(argv)
    }

    /// Sets a variable in moat's own (the caller's) environment.
    pub fn env(&mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(&mut self, k: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env_remove(k);
        self
    }

    pub fn cwd(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn stdin(&mut self, input: impl Into<Vec<u8>>) -> &mut Self {
        self.stdin = Some(input.into());
        self
    }

    pub fn timeout(&mut self, t: Duration) -> &mut Self {
        self.timeout = t;
        self
    }

    /// The command line, for messages.
    pub fn describe(&self) -> String {
        self.what.clone()
    }

    pub fn run(&mut self) -> Output {
        let cmd = std::mem::replace(&mut self.cmd, Command::new("/bin/false"));
        run_command(cmd, self.what.clone(), self.stdin.as_deref(), self.timeout)
    }

    /// Starts moat and returns at once, for tests that talk to it while it
    /// runs (signals, kill -9).
    pub fn spawn(&mut self) -> Running {
        let cmd = std::mem::replace(&mut self.cmd, Command::new("/bin/false"));
        Running::start(cmd, self.what.clone(), self.stdin.as_deref())
    }

    /// The underlying command, for tests that wire up stdio themselves
    /// (the pty test).
    pub fn into_command(self) -> (Command, String) {
        (self.cmd, self.what)
    }
}

/// What one run produced.
pub struct Output {
    pub what: String,
    pub status: ExitStatus,
    pub stdout_bytes: Vec<u8>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match (self.status.code(), self.status.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => format!("{:?}", self.status),
        };
        write!(
            f,
            "\n--- ran: {}\n--- status: {status}\n--- stdout:\n{}\n--- stderr:\n{}\n---",
            self.what, self.stdout, self.stderr
        )
    }
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    #[track_caller]
    pub fn assert_code(&self, want: i32) -> &Self {
        assert_eq!(self.code(), Some(want), "wrong exit status{self}");
        self
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        self.assert_code(0)
    }

    /// moat's own failure: exit 125 and a `moat: ` message on stderr.
    #[track_caller]
    pub fn assert_moat_error(&self) -> &Self {
        self.assert_code(125);
        assert!(
            self.stderr.lines().any(|l| l.starts_with("moat: ")),
            "moat's error message must start with `moat: `{self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}{self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}{self}"
        );
        self
    }

    /// `needle` appears nowhere in what the command printed.
    #[track_caller]
    pub fn assert_no_leak(&self, needle: &str) -> &Self {
        assert!(
            !self.stdout.contains(needle) && !self.stderr.contains(needle),
            "{needle:?} leaked into the sandbox{self}"
        );
        self
    }

    /// The value printed on a `KEY=VALUE` line of stdout.
    pub fn field(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
    }

    #[track_caller]
    pub fn assert_field(&self, key: &str, want: &str) -> &Self {
        assert_eq!(self.field(key), Some(want), "{key}{self}");
        self
    }
}

/// Runs `cmd` to completion with `stdin` (or /dev/null), killing it if it
/// outlives `timeout`.
pub fn run_command(cmd: Command, what: String, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    Running::start(cmd, what, stdin).finish(timeout)
}

type Buf = Arc<Mutex<Vec<u8>>>;

fn drain(mut r: impl Read + Send + 'static) -> (Buf, JoinHandle<()>) {
    let buf: Buf = Arc::default();
    let b = buf.clone();
    let h = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => b.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    (buf, h)
}

/// A moat process in flight. Dropping it kills moat's process group, so a
/// failing test leaves nothing behind.
pub struct Running {
    child: Option<Child>,
    _inputs: RwLockReadGuard<'static, ()>,
    pub what: String,
    out: Buf,
    err: Buf,
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    fn start(mut cmd: Command, what: String, stdin: Option<&[u8]>) -> Running {
        let inputs = moat_inputs_shared();
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can kill moat and anything it
        // left on the host side in one go.
        .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        if let Some(input) = stdin {
            let mut w = child.stdin.take().unwrap();
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = w.write_all(&input);
            });
        }
        let (out, ho) = drain(child.stdout.take().unwrap());
        let (err, he) = drain(child.stderr.take().unwrap());
        Running {
            child: Some(child),
            _inputs: inputs,
            what,
            out,
            err,
            readers: vec![ho, he],
        }
    }

    /// Host pid of moat.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Waits until stdout contains `needle`; fails the test (with what was
    /// printed) if it does not within `timeout` or moat exits first.
    #[track_caller]
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout_so_far().contains(needle) {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                // Give the readers a moment to catch the last output.
                std::thread::sleep(Duration::from_millis(100));
                if self.stdout_so_far().contains(needle) {
                    return;
                }
                panic!(
                    "waited for {needle:?} on stdout of `{}`: {}\n--- stdout:\n{}\n--- stderr:\n{}",
                    self.what,
                    match exited {
                        Some(s) => format!("moat exited first ({s})"),
                        None => format!("not seen within {timeout:?}"),
                    },
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to moat itself (not its process group).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}): {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
    }

    /// Waits for moat to exit and for its output to end.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                // SAFETY: kill has no memory-safety preconditions; the group id is moat's pid.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`{}` did not finish within {timeout:?}; killed it\n--- stdout:\n{}\n--- stderr:\n{}",
                    self.what,
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // Output ends when the last writer closes the pipes. If something
        // from the sandbox outlived moat and still holds them, that is a
        // bug in its own right; do not hang on it.
        let output_deadline = Instant::now() + Duration::from_secs(10);
        while self.readers.iter().any(|h| !h.is_finished()) {
            if Instant::now() > output_deadline {
                panic!(
                    "`{}` exited ({status}) but its stdout/stderr stayed open for 10 s: \
                     something started in the sandbox outlived moat\n--- stdout:\n{}\n--- stderr:\n{}",
                    self.what,
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        let stdout_bytes = std::mem::take(&mut *self.out.lock().unwrap());
        let stderr = String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned();
        Output {
            what: self.what.clone(),
            status,
            stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
            stdout_bytes,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill has no memory-safety preconditions; the group
            // id is moat's pid (process_group(0)).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One line of /proc/PID/stat, as much as the tests need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    /// Distinguishes a process from a later one that reused its pid.
    pub starttime: u64,
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let rest: Vec<&str> = s[close + 2..].split_whitespace().collect();
    // rest[0] is field 3 (state); starttime is field 22.
    Some(ProcStat {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        starttime: rest.get(19)?.parse().ok()?,
    })
}

pub fn all_processes() -> Vec<ProcStat> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// Every live descendant of `root` on the host, `root` excluded.
pub fn descendants(root: i32) -> Vec<ProcStat> {
    let procs = all_processes();
    let mut found: Vec<ProcStat> = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for c in procs.iter().filter(|c| c.ppid == p) {
            if !found.iter().any(|f| f.pid == c.pid) {
                frontier.push(c.pid);
                found.push(c.clone());
            }
        }
    }
    found
}

/// Whether the process is still running (not gone, not a zombie, not a
/// new process that reused the pid).
pub fn still_alive(p: &ProcStat) -> bool {
    match proc_stat(p.pid) {
        Some(now) => now.starttime == p.starttime && now.state != 'Z' && now.state != 'X',
        None => false,
    }
}

/// Writes a profile file owned by the runner into `dir` and returns its path.
pub fn write_profile(dir: &Dir, name: &str, toml: &str) -> PathBuf {
    dir.write(name, toml)
}
