//! Drops every capability and sets no_new_privs, so nothing the command
//! runs (setuid binaries included) can gain privileges.
//!
//! Init runs this in its user namespace, where it still holds every
//! capability (it never exec'd since the namespace was made), including the
//! `CAP_SETPCAP` that emptying the bounding set and setting securebits
//! need. Afterwards the command starts with nothing, and nothing it execs
//! can bring anything back:
//!
//! - bounding, inheritable and ambient sets empty: an exec (even as uid 0,
//!   even of a file with file capabilities) computes an empty permitted set;
//! - `no_new_privs`: setuid/setgid bits and file capabilities are ignored
//!   (the mounts are `nosuid` as well);
//! - securebits `NOROOT` and `NO_CAP_AMBIENT_RAISE`, locked: uid 0 inside
//!   (the root caller's sandbox) is not special on exec, independently of
//!   the bounding set, and the ambient set cannot be refilled. Locked so
//!   that no process in the sandbox can undo them. A user namespace the
//!   command creates starts with default securebits and a full set inside
//!   it, as always; these bits do not get in the way of that.

use caps::CapSet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// All five sets (effective, permitted, inheritable, ambient, bounding)
    /// are empty.
    pub all_dropped: bool,
    pub no_new_privs: bool,
    /// The securebits read back after setting them.
    #[serde(default)]
    pub securebits: u32,
    /// What did not go as planned, one line each.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The securebits init sets (see the module documentation). `KEEP_CAPS`
/// stays off and is locked off.
const SECUREBITS: u32 = (libc::SECBIT_NOROOT
    | libc::SECBIT_NOROOT_LOCKED
    | libc::SECBIT_KEEP_CAPS_LOCKED
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED) as u32;

/// The five capability sets as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub bounding: u64,
}

impl Sets {
    pub fn is_empty(&self) -> bool {
        self.effective == 0
            && self.permitted == 0
            && self.inheritable == 0
            && self.ambient == 0
            && self.bounding == 0
    }

    /// In /proc/PID/status spelling, for messages.
    pub fn describe(&self) -> String {
        format!(
            "CapInh={:016x} CapPrm={:016x} CapEff={:016x} CapBnd={:016x} CapAmb={:016x}",
            self.inheritable, self.permitted, self.effective, self.bounding, self.ambient
        )
    }
}

fn prctl(op: libc::c_int, arg: libc::c_ulong) -> Result<libc::c_int, nix::errno::Errno> {
    // SAFETY: every operation used here (PR_CAPBSET_*, PR_CAP_AMBIENT,
    // PR_*_SECUREBITS, PR_*_NO_NEW_PRIVS) takes integers only, no pointers.
    let r = unsafe { libc::prctl(op, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
    nix::errno::Errno::result(r)
}

/// Bits 0..=63 for which `read(cap)` says yes, stopping at the first index
/// the kernel does not know (EINVAL).
fn probe_bits(read: impl Fn(libc::c_ulong) -> Result<libc::c_int, nix::errno::Errno>) -> u64 {
    let mut bits = 0u64;
    for cap in 0..64u64 {
        match read(cap as libc::c_ulong) {
            Ok(1) => bits |= 1 << cap,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    bits
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Reads the calling thread's sets straight from the kernel, every bit
/// included (the `caps` crate only reports capabilities it knows by name).
pub fn read_sets() -> Result<Sets, String> {
    let mut hdr = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 of capget writes two `__user_cap_data_struct`s,
    // which `data` provides with the kernel's layout; `hdr` is valid.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if r != 0 {
        return Err(format!("capget: {}", nix::errno::Errno::last().desc()));
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(Sets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
        ambient: probe_bits(|c| {
            // SAFETY: PR_CAP_AMBIENT_IS_SET takes integers only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_IS_SET as libc::c_ulong,
                    c,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            nix::errno::Errno::result(r)
        }),
        bounding: probe_bits(|c| prctl(libc::PR_CAPBSET_READ, c)),
    })
}

pub fn drop_all() -> Result<Report, String> {
    let mut notes = Vec::new();
    let caps_err = |what: &str, e: caps::errors::CapsError| format!("{what}: {e}");

    // Needs CAP_SETPCAP, so before the sets are emptied. Redundant with the
    // empty sets and no_new_privs, so a kernel refusing it is noted, not
    // fatal.
    if let Err(e) = prctl(libc::PR_SET_SECUREBITS, SECUREBITS as libc::c_ulong) {
        notes.push(format!("securebits not set: {}", e.desc()));
    }

    // The bounding set, also past the capabilities the `caps` crate knows,
    // up to the last one this kernel has.
    caps::clear(None, CapSet::Bounding).map_err(|e| caps_err("emptying the bounding set", e))?;
    for cap in 0..64u64 {
        match prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINVAL) => break,
            Err(e) => {
                return Err(format!(
                    "dropping capability {cap} from the bounding set: {}",
                    e.desc()
                ))
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| caps_err("emptying the ambient set", e))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| caps_err("emptying the inheritable set", e))?;
    // Clearing the permitted set clears the effective set with it.
    caps::clear(None, CapSet::Permitted)
        .map_err(|e| caps_err("emptying the permitted and effective sets", e))?;

    // Landlock sets it too, but not on a kernel without Landlock.
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|e| format!("no_new_privs: {}", e.desc()))?;

    // Until now init's capabilities kept the command (same uid, fewer
    // capabilities) out of /proc/1/environ, /proc/1/mem and /proc/1/fd:
    // ptrace access needs the target's permitted set to be a subset of the
    // caller's. With the sets equal (empty), only non-dumpability protects
    // init, whose environment is still the caller's full host environment.
    // The command gets a dumpable mm back at exec.
    prctl(libc::PR_SET_DUMPABLE, 0).map_err(|e| format!("PR_SET_DUMPABLE: {}", e.desc()))?;

    let sets = read_sets()?;
    let no_new_privs = prctl(libc::PR_GET_NO_NEW_PRIVS, 0) == Ok(1);
    let securebits = prctl(libc::PR_GET_SECUREBITS, 0).unwrap_or(0) as u32;
    if !sets.is_empty() {
        return Err(format!(
            "capabilities remain after dropping them all: {}",
            sets.describe()
        ));
    }
    if !no_new_privs {
        return Err("no_new_privs did not stick".into());
    }
    if securebits & SECUREBITS != SECUREBITS {
        notes.push(format!(
            "securebits are {securebits:#x}, wanted {SECUREBITS:#x}"
        ));
    }
    Ok(Report {
        all_dropped: true,
        no_new_privs,
        securebits,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_describe_like_proc_status() {
        let s = Sets {
            effective: 0,
            permitted: 0,
            inheritable: 0,
            ambient: 0,
            bounding: 0x1ff_ffff_ffff,
        };
        assert!(!s.is_empty());
        assert!(s.describe().contains("CapBnd=000001ffffffffff"));
    }

    #[test]
    fn read_sets_matches_proc_status() {
        // Compares the raw read-back with the kernel's own report for this
        // test process, whatever its privileges.
        let sets = read_sets().unwrap();
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let field = |k: &str| {
            let line = status
                .lines()
                .find(|l| l.starts_with(k))
                .unwrap_or_else(|| panic!("{k} missing"));
            u64::from_str_radix(line[k.len()..].trim(), 16).unwrap()
        };
        assert_eq!(sets.inheritable, field("CapInh:"));
        assert_eq!(sets.permitted, field("CapPrm:"));
        assert_eq!(sets.effective, field("CapEff:"));
        assert_eq!(sets.bounding, field("CapBnd:"));
        assert_eq!(sets.ambient, field("CapAmb:"));
    }
}
