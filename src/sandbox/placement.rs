//! Keeps init off the supervisor's CPU while both get the sandbox ready.
//!
//! After the clone, init builds the file system while the supervisor opens
//! the audit log, joins the cgroup and starts the proxy: two busy threads.
//! The kernel often puts a new child on its parent's CPU, and then one of
//! them waits for the other (measured on a 2-CPU machine: in 38 of 100
//! runs, ~0.5 ms lost each time). So init leaves the supervisor's CPU for
//! the build, and takes back every CPU it was allowed before it starts the
//! command: the command runs with the same CPUs as the caller.

use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Where the supervisor ran when it cloned init, and what it was allowed.
#[derive(Clone)]
pub struct Placement {
    /// The caller's CPUs, given back to init before the command starts.
    allowed: CpuSet,
    /// The caller's CPUs but the supervisor's: init's while it builds.
    apart: CpuSet,
}

impl Placement {
    /// Read just before the clone; `None` when there is no other CPU to go
    /// to (or the kernel will not say), and then nothing is changed.
    pub fn here() -> Option<Placement> {
        let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let cpu = sched_getcpu().ok()?;
        let apart = apart(&allowed, cpu)?;
        Some(Placement { allowed, apart })
    }

    /// Moves `pid` (init; 0 for the calling thread) off the supervisor's
    /// CPU at once, if it is there. Both sides call it: whichever of them
    /// runs first on a shared CPU frees it for the other.
    pub fn move_apart(&self, pid: Pid) {
        // Best effort: a refusal only costs time.
        let _ = sched_setaffinity(pid, &self.apart);
    }

    /// In init, before the command: every CPU the caller had.
    pub fn restore(&self) -> Result<(), String> {
        sched_setaffinity(Pid::from_raw(0), &self.allowed)
            .map_err(|e| format!("giving the sandbox back its CPUs: {}", e.desc()))
    }
}

/// `allowed` without `cpu`, or `None` when that leaves nothing.
fn apart(allowed: &CpuSet, cpu: usize) -> Option<CpuSet> {
    let mut set = *allowed;
    set.unset(cpu).ok()?;
    (0..CpuSet::count())
        .any(|c| set.is_set(c).unwrap_or(false))
        .then_some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cpus: &[usize]) -> CpuSet {
        let mut s = CpuSet::new();
        for c in cpus {
            s.set(*c).unwrap();
        }
        s
    }

    fn members(s: &CpuSet) -> Vec<usize> {
        (0..CpuSet::count())
            .filter(|c| s.is_set(*c).unwrap())
            .collect()
    }

    #[test]
    fn init_builds_on_the_other_cpus() {
        assert_eq!(members(&apart(&set(&[0, 1]), 1).unwrap()), vec![0]);
        assert_eq!(members(&apart(&set(&[0, 2, 5]), 2).unwrap()), vec![0, 5]);
        // The supervisor on a CPU it may no longer use (the mask changed
        // under it): init may use them all.
        assert_eq!(members(&apart(&set(&[1, 3]), 0).unwrap()), vec![1, 3]);
    }

    #[test]
    fn one_cpu_leaves_nothing_to_move_to() {
        assert!(apart(&set(&[3]), 3).is_none());
    }
}
