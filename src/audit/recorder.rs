//! A run's connection to the audit log: events from the supervisor and the
//! proxy, a checkpoint every [`TICK`] while the run is active, and failing
//! closed: the first write that fails kills the sandbox (through a pidfd
//! on its init) so that nothing the agent does goes unrecorded.

use super::writer::Log;
use anyhow::Result;
use serde_json::Value;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often an active run's chain is signed.
pub const TICK: Duration = Duration::from_secs(5);

pub struct Recorder {
    run: String,
    log: Mutex<Log>,
    failure: Mutex<Option<String>>,
    /// pidfd of the sandbox's init, once it exists.
    target: Mutex<Option<OwnedFd>>,
    ticker: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    /// Set when the run's last checkpoint is written.
    finished: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recorder {
    /// Opens the log for run `run`. An error here means the run must not
    /// start.
    pub fn open(data_dir: &Path, run: &str) -> Result<Arc<Recorder>> {
        let log = Log::open(data_dir)?;
        Ok(Arc::new(Recorder {
            run: run.to_owned(),
            log: Mutex::new(log),
            failure: Mutex::new(None),
            target: Mutex::new(None),
            ticker: Mutex::new(None),
            finished: AtomicBool::new(false),
        }))
    }

    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// Records one event. `data` is any JSON; non-integer numbers are kept
    /// as strings. On failure the run is stopped and the error returned.
    pub fn event(&self, kind: &str, data: Value) -> Result<(), String> {
        self.append(&[(kind, data)], false)
    }

    /// Records several events of one kind in one locked write.
    pub fn events(&self, kind: &str, data: Vec<Value>) -> Result<(), String> {
        if data.is_empty() {
            return Ok(());
        }
        let batch: Vec<(&str, Value)> = data.into_iter().map(|d| (kind, d)).collect();
        self.append(&batch, false)
    }

    /// Signs the chain's head now (unless it already ends with a
    /// checkpoint).
    pub fn checkpoint(&self) -> Result<(), String> {
        self.append(&[], true)
    }

    fn append(&self, batch: &[(&str, Value)], checkpoint: bool) -> Result<(), String> {
        self.append_to(&mut lock(&self.log), batch, checkpoint)
    }

    /// The ticker's checkpoint: none once the run's last one is signed.
    /// Checked under the log's lock, so none can follow the last.
    fn tick(&self) -> Result<(), String> {
        let mut log = lock(&self.log);
        if self.finished.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.append_to(&mut log, &[], true)
    }

    fn append_to(
        &self,
        log: &mut Log,
        batch: &[(&str, Value)],
        checkpoint: bool,
    ) -> Result<(), String> {
        if let Some(f) = lock(&self.failure).clone() {
            return Err(f);
        }
        let r = log.append(&self.run, batch, checkpoint);
        r.map(|_| ()).map_err(|e| {
            let path = log.path().display().to_string();
            let msg = format!(
                "the audit log {path} cannot be written ({e:#}); the run was stopped so that nothing goes unrecorded (free space or fix the permissions of {path}, then run again)"
            );
            self.fail(msg.clone());
            msg
        })
    }

    /// Marks the recorder failed and kills the sandbox, once.
    fn fail(&self, msg: String) {
        let mut f = lock(&self.failure);
        if f.is_none() {
            *f = Some(msg);
            if let Some(fd) = lock(&self.target).as_ref() {
                // SAFETY: pidfd_send_signal on a pidfd we own, with no
                // siginfo; a pidfd always names the process it was opened
                // for, so a reused pid is never hit.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
            }
        }
    }

    /// Why recording failed, if it did: the run must then end with 125.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Called by the supervisor once init exists (after the clone, so
    /// threads may start): remembers init to kill on failure and starts
    /// the periodic checkpoints.
    pub fn attach(self: &Arc<Self>, init_pid: i32) -> Result<(), String> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor we then own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, init_pid, 0) };
        if fd < 0 {
            return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned to us and is owned by nothing else.
        *lock(&self.target) = Some(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        // Init exists: the signing key no longer needs wiping between
        // checkpoints.
        lock(&self.log)
            .keep_signing_key()
            .map_err(|e| format!("{e:#}"))?;
        let (tx, rx) = mpsc::channel::<()>();
        let me = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("moat-audit".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(TICK) {
                    let Some(r) = me.upgrade() else { break };
                    if r.tick().is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("starting the audit thread: {e}"))?;
        *lock(&self.ticker) = Some((tx, thread));
        Ok(())
    }

    /// Stops the periodic checkpoints and signs the end of the run.
    pub fn finish(&self) -> Result<(), String> {
        self.finish_with(&[])
    }

    /// [`Recorder::finish`], recording `batch` in the same write as the
    /// last checkpoint.
    pub fn finish_with(&self, batch: &[(&str, Value)]) -> Result<(), String> {
        // The ticker ends by itself once its channel closes, and is not
        // waited for: from here on it writes nothing (see `tick`).
        if let Some((tx, _thread)) = lock(&self.ticker).take() {
            drop(tx);
        }
        let mut log = lock(&self.log);
        self.finished.store(true, Ordering::SeqCst);
        *lock(&self.target) = None;
        self.append_to(&mut log, batch, true)?;
        drop(log);
        match self.failure() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some((tx, _)) = lock(&self.ticker).take() {
            drop(tx);
        }
    }
}
