//! The run's cgroup on the file system: create it from the steps
//! `crate::cgroup::run_steps` lists, put init in it, read its counters after
//! the run, remove it. What goes where is decided in `crate::cgroup`.

use crate::cgroup::{self, Events, Plan, Step};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The run's groups, one per hierarchy. Dropping it removes them, killing
/// whatever is still inside first, so no path out of the supervisor
/// (errors and panics included) leaves a group behind.
#[derive(Debug)]
pub struct RunGroup {
    plan: Plan,
    dirs: Vec<PathBuf>,
    /// The run directories made so far, removed on drop.
    created: Vec<PathBuf>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    // No O_CREAT: cgroupfs files exist or the kernel lacks the feature.
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

fn enable(file: &Path, controllers: &[cgroup::Controller]) -> Result<(), String> {
    let current = std::fs::read_to_string(file).map_err(|e| io_err("reading", file, e))?;
    let on: Vec<&str> = current.split_whitespace().collect();
    let add: Vec<String> = controllers
        .iter()
        .filter(|c| !on.contains(&c.name()))
        .map(|c| format!("+{}", c.name()))
        .collect();
    if add.is_empty() {
        return Ok(());
    }
    let value = add.join(" ");
    write_file(file, &value).map_err(|e| io_err(&format!("writing `{value}` to"), file, e))
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // EPERM: it exists but belongs to someone else.
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// Removes run groups in `parent` whose supervisor is gone (it was killed
/// before it could clean up; init died with it, so they are empty). A
/// group that still holds processes refuses rmdir and stays.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let me = std::process::id();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(cgroup::run_name_pid) else {
            continue;
        };
        if pid != me && !alive(pid) && e.path().is_dir() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

impl RunGroup {
    /// Creates the run's groups with their limits. On error, whatever was
    /// made is removed again.
    pub fn create(plan: &Plan) -> Result<RunGroup, String> {
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let name = cgroup::run_name(std::process::id(), nonce);
        let (steps, dirs) = cgroup::run_steps(plan, &name);
        let mut group = RunGroup {
            plan: plan.clone(),
            dirs,
            created: Vec::new(),
        };
        for step in steps {
            match step {
                Step::MkdirShared(p) => {
                    match std::fs::create_dir(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io_err("creating", &p, e)),
                    }
                    sweep_stale(&p);
                }
                Step::MkdirRun(p) => {
                    std::fs::create_dir(&p).map_err(|e| io_err("creating", &p, e))?;
                    group.created.push(p);
                }
                Step::Enable(file, cs) => enable(&file, &cs)?,
                Step::Write {
                    path,
                    value,
                    optional,
                } => match write_file(&path, &value) {
                    Ok(()) => {}
                    Err(e) if optional && e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&format!("writing {value} to"), &path, e)),
                },
            }
        }
        Ok(group)
    }

    /// The run's directories, one per hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Moves `pid` (init, before it runs anything of the sandbox) into every
    /// run group; its descendants inherit them.
    /// The run's directory on the cgroup2 hierarchy, open, for clone3's
    /// CLONE_INTO_CGROUP; `None` when the run has none (a v1 host) or it
    /// cannot be opened (the caller then moves init in the usual way).
    pub fn v2_dir(&self) -> Option<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let i = self
            .plan
            .sites
            .iter()
            .position(|s| s.version == cgroup::Version::V2)?;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(self.dirs.get(i)?)
            .ok()
    }

    /// Moves `pid` into the run's groups; with `v2_joined`, not into the
    /// cgroup2 one, which it was born in.
    pub fn attach(&self, pid: Pid, v2_joined: bool) -> Result<(), String> {
        for (site, dir) in self.plan.sites.iter().zip(&self.dirs) {
            if v2_joined && site.version == cgroup::Version::V2 {
                continue;
            }
            let procs = dir.join("cgroup.procs");
            write_file(&procs, &pid.to_string())
                .map_err(|e| io_err(&format!("moving pid {pid} into"), dir, e))?;
        }
        Ok(())
    }

    /// The counters the limits left behind.
    pub fn events(&self) -> Events {
        let mut ev = Events::default();
        for (probe, file) in cgroup::probes(&self.plan, &self.dirs) {
            if let Some(v) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| cgroup::read_probe(probe, &t))
            {
                ev.set(probe, v);
            }
        }
        ev
    }

    /// Removes the run's groups. Anything still inside is killed first
    /// (normally nothing is: init is reaped by now, and the pid namespace
    /// died with it). The `moat` parents stay for the next run.
    pub fn remove(mut self) -> Result<(), String> {
        self.remove_all()
    }

    fn remove_all(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        for dir in std::mem::take(&mut self.created).into_iter().rev() {
            if let Err(e) = remove_dir(&dir) {
                errors.push(io_err("removing", &dir, e));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl Drop for RunGroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove_all() {
            eprintln!("moat: warning: could not remove the run's cgroup: {e}");
        }
    }
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    // A task that has just exited can keep the group busy for a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                kill_members(dir);
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// SIGKILLs every process in the group. Only the run's own processes can
/// be there: the group is moat's and only init was ever put in it.
fn kill_members(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if pid > 0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
