//! `[limits]`: memory, pids and cpu through cgroups, and the wall-clock
//! timeout. As root moat makes its own group per run and removes it; the
//! rootless caller on this machine has no delegated cgroup (hybrid host, v1
//! controllers), so it gets a one-line warning, or a refusal when the
//! profile requires its limits.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A test profile on top of the default one.
fn profile(ws: &Dir, limits: &str) -> PathBuf {
    write_profile(
        ws,
        "limits.toml",
        &format!("extends = \"default\"\n\n[limits]\n{limits}\n"),
    )
}

/// Where moat's parent groups can be: `moat/` under each v1 hierarchy and
/// under the cgroup2 root.
fn moat_parents() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = e.path().join("moat");
        if p.is_dir() {
            out.push(p);
        }
    }
    let v2 = Path::new("/sys/fs/cgroup/moat");
    if v2.is_dir() && !out.iter().any(|p| p == v2) {
        out.push(v2.to_path_buf());
    }
    out
}

/// The run groups of the moat process `pid` (named `PID-NONCE`).
fn run_groups(pid: i32) -> Vec<PathBuf> {
    let prefix = format!("{pid}-");
    moat_parents()
        .into_iter()
        .flat_map(|parent| fs::read_dir(parent).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Waits until moat `pid` has a group for each of `ctrls` (its v1
/// hierarchy names); returns them in that order.
#[track_caller]
fn wait_for_groups(run: &Running, ctrls: &[&str]) -> Vec<PathBuf> {
    for c in ctrls {
        assert!(
            Path::new(&format!("/sys/fs/cgroup/{c}/tasks")).exists(),
            "these tests read the v1 files of a hybrid host like the CI machines, but \
             /sys/fs/cgroup/{c} is no v1 hierarchy here (pure cgroup v2?)"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let groups = run_groups(run.pid());
        let found: Vec<PathBuf> = ctrls
            .iter()
            .filter_map(|c| {
                groups
                    .iter()
                    .find(|g| g.starts_with(format!("/sys/fs/cgroup/{c}/")))
                    .cloned()
            })
            .collect();
        if found.len() == ctrls.len() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "moat (pid {}) made no run group for {ctrls:?} within 10 s (found {groups:?})\n--- stderr:\n{}",
            run.pid(),
            run.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[track_caller]
fn assert_no_groups_left(pid: i32, out: &Output) {
    let left = run_groups(pid);
    assert!(
        left.is_empty(),
        "moat's run groups are still there after it exited: {left:?}{out}"
    );
}

/// The moat lines on stderr (the command's own output excluded).
fn moat_lines(out: &Output) -> Vec<&str> {
    out.stderr
        .lines()
        .filter(|l| l.starts_with("moat: "))
        .collect()
}

/// A program allocating (and touching) 512 MiB in 8 MiB steps.
const ALLOCATE_512M: &str = "
import sys
chunks = []
for i in range(64):
    chunks.append(b'x' * (8 << 20))
    print('allocated', (i + 1) * 8, 'MiB', flush=True)
print('survived', flush=True)
";

#[test]
fn memory_limit_ooms_the_command_and_says_so() {
    let r = Runner::root();
    let ws = r.workspace();
    let p = profile(&ws, "memory = \"64M\"");
    let run = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd(["python3", "-c", ALLOCATE_512M])
        .spawn();
    let pid = run.pid();
    let groups = wait_for_groups(&run, &["memory"]);
    let limit = read(&groups[0].join("memory.limit_in_bytes"));
    let out = run.finish(TIMEOUT);
    assert_eq!(
        limit.trim(),
        (64u64 << 20).to_string(),
        "memory.limit_in_bytes{out}"
    );
    out.assert_code(137);
    assert!(
        !out.stdout.contains("survived"),
        "the allocation went through{out}"
    );
    assert!(
        out.stdout.contains("allocated 8 MiB"),
        "python did not even start{out}"
    );
    out.assert_stderr_has(
        "moat: the memory limit (64 MiB) was reached: the kernel killed the command",
    );
    assert_no_groups_left(pid, &out);
}

#[test]
fn memory_limit_leaves_a_small_command_alone() {
    let r = Runner::root();
    let ws = r.workspace();
    let p = profile(&ws, "memory = \"64M\"");
    let out = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd([
            "python3",
            "-c",
            "b = b'x' * (16 << 20); print('ok', len(b))",
        ])
        .run();
    out.assert_ok().assert_stdout_has("ok 16777216");
    assert!(
        moat_lines(&out).is_empty(),
        "moat had something to say{out}"
    );
}

/// Forks sleepers until the kernel refuses, within its own time bound, and
/// prints how many it got.
const FORK_UNTIL_REFUSED: &str = "
import os, time
kids = fails = 0
end = time.time() + 10
while time.time() < end and fails < 20:
    try:
        pid = os.fork()
    except OSError:
        fails += 1
        time.sleep(0.01)
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids += 1
print(f'kids={kids}', flush=True)
print(f'fails={fails}', flush=True)
";

#[test]
fn pids_limit_refuses_forks_past_it() {
    let r = Runner::root();
    let ws = r.workspace();
    let p = profile(&ws, "pids = 64");
    let run = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd(["python3", "-c", FORK_UNTIL_REFUSED])
        .spawn();
    let pid = run.pid();
    let groups = wait_for_groups(&run, &["pids"]);
    let max = read(&groups[0].join("pids.max"));
    let out = run.finish(TIMEOUT);
    assert_eq!(max.trim(), "64", "pids.max{out}");
    out.assert_ok();
    let kids: u64 = out.field("kids").expect("kids=").parse().unwrap();
    let fails: u64 = out.field("fails").expect("fails=").parse().unwrap();
    // 64 in all: init and python are two of them.
    assert!(kids <= 62, "{kids} forks went through a limit of 64{out}");
    assert!(kids >= 50, "only {kids} forks before the limit of 64{out}");
    assert_eq!(fails, 20, "{out}");
    let line = moat_lines(&out)
        .into_iter()
        .find(|l| l.starts_with("moat: the pids limit (64) refused "))
        .unwrap_or_else(|| panic!("moat did not name the pids limit{out}"));
    let n: u64 = line
        .trim_start_matches("moat: the pids limit (64) refused ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 20, "pids.events says {n} refusals, python saw 20{out}");
    assert_no_groups_left(pid, &out);
}

#[test]
fn fork_bomb_is_contained_and_the_host_stays_responsive() {
    let r = Runner::root();
    let ws = r.workspace();
    let p = profile(&ws, "pids = 64\ntimeout = \"5s\"");
    // The classic bomb, in the background; the command itself then waits
    // (exec: no fork needed) until the timeout ends the run.
    let script = "bash -c 'bomb() { bomb | bomb & }; bomb' 2>/dev/null; exec sleep 60";
    let started = Instant::now();
    let run = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd(["sh", "-c", script])
        .spawn();
    let pid = run.pid();
    let groups = wait_for_groups(&run, &["pids"]);
    // While it rages: the host still starts processes at once, and the
    // sandbox stays at its limit.
    std::thread::sleep(Duration::from_millis(1500));
    let mut slowest = Duration::ZERO;
    let mut peak = 0u64;
    for _ in 0..10 {
        let t = Instant::now();
        let st = Command::new("/bin/sh")
            .args(["-c", "/bin/true && /bin/true"])
            .status()
            .unwrap();
        assert!(st.success());
        slowest = slowest.max(t.elapsed());
        if let Ok(cur) = fs::read_to_string(groups[0].join("pids.current")) {
            peak = peak.max(cur.trim().parse().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run.finish(TIMEOUT);
    let took = started.elapsed();
    assert!(
        slowest < Duration::from_secs(2),
        "a host command took {slowest:?} during the fork bomb{out}"
    );
    assert!(
        peak <= 64,
        "the sandbox held {peak} tasks with pids = 64{out}"
    );
    assert!(
        peak >= 32,
        "the bomb never came near the limit ({peak} tasks); did it run?{out}"
    );
    out.assert_code(124);
    out.assert_stderr_has("moat: the timeout (5s) ended the run");
    out.assert_stderr_has("moat: the pids limit (64) refused ");
    assert!(
        took < Duration::from_secs(20),
        "the run took {took:?} with a 5 s timeout{out}"
    );
    assert_no_groups_left(pid, &out);
}

sandbox_test! {
    /// The timeout needs no cgroup: it holds rootless too, and ends the
    /// run with 124 like timeout(1).
    fn timeout_ends_the_run(r: &Runner) {
        let ws = r.workspace();
        let p = profile(&ws, "timeout = \"2s\"");
        let started = Instant::now();
        let mut run = r.exec(&ws).arg("--profile").arg(&p).cmd(["sh", "-c", "echo started; sleep 60; echo woke"]).spawn();
        let pid = run.pid();
        run.wait_for_stdout("started", Duration::from_secs(10));
        let out = run.finish(TIMEOUT);
        let took = started.elapsed();
        out.assert_code(124);
        assert!(!out.stdout.contains("woke"), "{out}");
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
            "a 2 s timeout ended the run after {took:?}{out}"
        );
        out.assert_stderr_has("moat: the timeout (2s) ended the run");
        out.assert_stderr_has("exit status 124");
        assert_no_groups_left(pid, &out);
    }
}

sandbox_test! {
    /// A command that finishes in time is not reported.
    fn timeout_not_reached_is_silent(r: &Runner) {
        let ws = r.workspace();
        let p = profile(&ws, "timeout = \"20s\"");
        let out = r.exec(&ws).arg("--profile").arg(&p).cmd(["sh", "-c", "exit 3"]).run();
        out.assert_code(3);
        assert!(!out.stderr.contains("timeout"), "{out}");
    }
}

/// A CPU-bound loop for 2 s of wall time; prints the CPU seconds it got.
const BUSY_2S: &str = "
import time
t = time.time()
while time.time() - t < 2.0:
    pass
print(f'cpu={time.process_time():.3f}', flush=True)
";

#[test]
fn cpu_limit_throttles_to_its_share() {
    let r = Runner::root();
    let ws = r.workspace();
    let p = profile(&ws, "cpu = 0.5");
    let run = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd(["python3", "-c", BUSY_2S])
        .spawn();
    let pid = run.pid();
    let groups = wait_for_groups(&run, &["cpu"]);
    let quota = read(&groups[0].join("cpu.cfs_quota_us"));
    let period = read(&groups[0].join("cpu.cfs_period_us"));
    std::thread::sleep(Duration::from_millis(1200));
    let stat = fs::read_to_string(groups[0].join("cpu.stat")).unwrap_or_default();
    let out = run.finish(TIMEOUT);
    assert_eq!(
        (quota.trim(), period.trim()),
        ("50000", "100000"),
        "cfs quota/period{out}"
    );
    out.assert_ok();
    let cpu: f64 = out.field("cpu").expect("cpu=").parse().unwrap();
    // Half a core for 2 s is 1 s; unlimited it would be 2 s.
    assert!(
        (0.3..=1.4).contains(&cpu),
        "the busy loop got {cpu} s of CPU in 2 s with cpu = 0.5{out}"
    );
    let throttled: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        throttled > 0,
        "the group was never throttled: cpu.stat:\n{stat}{out}"
    );
    assert_no_groups_left(pid, &out);
}

#[test]
fn inside_the_run_group_is_the_cgroup_root() {
    let r = Runner::root();
    let ws = r.workspace();
    let p = profile(&ws, "memory = \"256M\"\npids = 128\ncpu = 1");
    let out = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd(["cat", "/proc/self/cgroup"])
        .run();
    out.assert_ok();
    // Rooted before init moved, memory would read `/../moat/PID-NONCE`.
    for line in out.stdout.lines() {
        assert!(
            line.ends_with(":/"),
            "the sandbox sees a cgroup path outside its own: {line:?}{out}"
        );
    }
    assert!(out.stdout.contains(":memory:/"), "{out}");
}

sandbox_test! {
    /// Without a run group (rootless here) the namespace is still the
    /// sandbox's own: rooted where init started.
    fn cgroup_namespace_is_private(r: &Runner) {
        let ws = r.workspace();
        let out = r.exec(&ws).cmd(["cat", "/proc/self/cgroup"]).run();
        out.assert_ok();
        for line in out.stdout.lines() {
            assert!(line.ends_with(":/"), "{line:?}{out}");
        }
    }
}

#[test]
fn group_holds_the_sandbox_and_goes_with_it() {
    let r = Runner::root();
    let ws = r.workspace();
    let p = profile(&ws, "memory = \"256M\"\npids = 100\ncpu = 1.5");
    let mut run = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd(["sh", "-c", "echo ready; exec sleep 60"])
        .spawn();
    let pid = run.pid();
    run.wait_for_stdout("ready", Duration::from_secs(10));
    let groups = wait_for_groups(&run, &["memory", "pids", "cpu"]);
    // Every process of the sandbox is in each group, moat itself in none.
    let sandbox: Vec<i32> = descendants(pid).iter().map(|p| p.pid).collect();
    assert!(sandbox.len() >= 2, "init and the command: {sandbox:?}");
    for g in &groups {
        let procs: Vec<i32> = read(&g.join("cgroup.procs"))
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let mut a = procs.clone();
        let mut b = sandbox.clone();
        a.sort();
        b.sort();
        assert_eq!(
            a,
            b,
            "{} holds other processes than the sandbox's",
            g.display()
        );
        assert!(!procs.contains(&pid));
    }
    assert_eq!(read(&groups[1].join("pids.max")).trim(), "100");
    assert_eq!(read(&groups[2].join("cpu.cfs_quota_us")).trim(), "150000");
    run.signal(libc::SIGTERM);
    let out = run.finish(TIMEOUT);
    out.assert_code(128 + libc::SIGTERM);
    assert_no_groups_left(pid, &out);
}

#[test]
fn group_of_a_killed_moat_is_swept_by_the_next_run() {
    let r = Runner::root();
    let ws = r.workspace();
    let p = profile(&ws, "pids = 100");
    let mut run = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd(["sh", "-c", "echo ready; exec sleep 60"])
        .spawn();
    let pid = run.pid();
    run.wait_for_stdout("ready", Duration::from_secs(10));
    let stale = wait_for_groups(&run, &["pids"]).remove(0);
    run.signal(libc::SIGKILL);
    let killed = run.finish(TIMEOUT);
    assert_eq!(killed.status.code(), None, "{killed}");
    // Init died with moat (PDEATHSIG), which leaves the group empty.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stale.exists() && !read(&stale.join("cgroup.procs")).trim().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the sandbox outlived moat in {}",
            stale.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = r.exec(&ws).arg("--profile").arg(&p).cmd(["true"]).run();
    out.assert_ok();
    assert!(!stale.exists(), "{} was left behind{out}", stale.display());
    assert_no_groups_left(pid, &out);
}

#[test]
fn setup_error_removes_the_group() {
    let r = Runner::root();
    let ws = r.workspace();
    // A command missing inside fails after init is in its group, on a path
    // out of the supervisor that returns early.
    let p = profile(&ws, "pids = 100\nmemory = \"128M\"");
    let run = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd(["/no/such/command"])
        .spawn();
    let pid = run.pid();
    let out = run.finish(TIMEOUT);
    out.assert_code(127);
    assert_no_groups_left(pid, &out);
}

#[test]
fn required_limits_run_as_root() {
    let r = Runner::root();
    let ws = r.workspace();
    let p = profile(&ws, "pids = 64\nrequired = true");
    let out = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd(["sh", "-c", "echo ran"])
        .run();
    out.assert_ok().assert_stdout_has("ran");
    assert!(moat_lines(&out).is_empty(), "{out}");
}

#[test]
fn rootless_without_delegation_warns_once_and_runs() {
    let r = Runner::rootless();
    let ws = r.workspace();
    let p = profile(&ws, "pids = 64\nmemory = \"256M\"");
    let out = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd(["sh", "-c", "echo ran"])
        .run();
    out.assert_ok().assert_stdout_has("ran");
    let lines = moat_lines(&out);
    assert_eq!(lines.len(), 1, "one warning line, nothing else{out}");
    let w = lines[0];
    assert!(
        w.starts_with("moat: warning: cgroup limits are not available to this user (")
            && w.contains("); running without them. Fix: "),
        "{out}"
    );
    // The reason names the caller's group and the fix says what works.
    assert!(w.contains("not delegated to you"), "{out}");
    assert!(w.contains("as root"), "{out}");
}

#[test]
fn rootless_required_limits_refuse_to_run() {
    let r = Runner::rootless();
    let ws = r.workspace();
    let p = profile(&ws, "pids = 64\nrequired = true");
    let out = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd(["sh", "-c", "echo ran > ran.txt; echo ran"])
        .run();
    out.assert_moat_error();
    assert!(!out.stdout.contains("ran"), "{out}");
    assert!(!ws.join("ran.txt").exists(), "the command ran{out}");
    out.assert_stderr_has("limits.required = true");
    out.assert_stderr_has("cgroup limits are not available to this user");
    out.assert_stderr_has("Fix: ");
}

#[test]
fn rootless_without_cgroup_limits_has_no_warning() {
    let r = Runner::rootless();
    let ws = r.workspace();
    // Not on top of the default profile, which sets pids.
    let p = write_profile(
        &ws,
        "bare.toml",
        "[filesystem]\nread_only = [\"/usr\", \"-/bin\", \"-/sbin\", \"-/lib\", \"-/lib64\", \"/etc\"]\n\
         tmpfs = [\"/tmp\"]\n\n[limits]\ntimeout = \"30s\"\n",
    );
    let out = r
        .exec(&ws)
        .arg("--profile")
        .arg(&p)
        .cmd(["sh", "-c", "echo ran"])
        .run();
    out.assert_ok().assert_stdout_has("ran");
    assert!(moat_lines(&out).is_empty(), "{out}");
}
