//! Namespaces: processes, network, hostname, IPC, cgroups.

mod common;

use common::*;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

sandbox_test! {
    /// Every namespace the issue lists is a new one.
    fn all_namespaces_are_new(r: &Runner) {
        let ws = r.workspace();
        let kinds = ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"];
        let script: String = kinds
            .iter()
            .map(|k| format!("echo \"{k}=$(readlink /proc/self/ns/{k})\"\n"))
            .collect();
        let out = r.sh(&ws, &script);
        out.assert_ok();
        for k in kinds {
            let host = std::fs::read_link(format!("/proc/self/ns/{k}")).unwrap();
            let inside = out.field(k).unwrap_or_else(|| panic!("no {k} line{out}"));
            assert!(inside.starts_with(&format!("{k}:[")), "{k}: {inside}{out}");
            assert_ne!(inside, host.to_str().unwrap(), "{k} namespace is the host's{out}");
        }
    }
}

sandbox_test! {
    /// Only the sandbox's own processes exist: init as pid 1, the command as
    /// pid 2, and what the command starts.
    fn only_own_processes_visible(r: &Runner) {
        let ws = r.workspace();
        let out = r.sh(
            &ws,
            r#"
            echo "SELF=$$"
            set -- /proc/[0-9]*
            echo "PROCS=$*"
            ps -eo pid=,ppid=,comm= > /tmp/ps.txt
            sed 's/^ */PS /' /tmp/ps.txt
            "#,
        );
        out.assert_ok().assert_field("SELF", "2");
        // Only builtins ran before the glob, so nothing else existed.
        assert_eq!(out.field("PROCS"), Some("/proc/1 /proc/2"), "{out}");
        let ps: Vec<Vec<&str>> = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("PS "))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(ps.len() >= 3, "ps saw too little{out}");
        for p in &ps {
            let (pid, ppid, comm) = (p[0], p[1], p.get(2).copied().unwrap_or(""));
            match pid {
                "1" => assert_eq!(ppid, "0", "{out}"),
                "2" => assert_eq!((ppid, comm), ("1", "sh"), "{out}"),
                _ => assert_eq!((ppid, comm), ("2", "ps"), "unexpected process {p:?}{out}"),
            }
        }
        // The test process itself is on the host.
        let host_pid = std::process::id();
        assert!(!out.stdout.contains(&format!("/proc/{host_pid} ")), "{out}");
    }
}

sandbox_test! {
    /// Orphans are reparented to the sandbox's init, which reaps them.
    fn init_reaps_orphans(r: &Runner) {
        let ws = r.workspace();
        let out = r.sh(
            &ws,
            r#"
            sh -c 'sleep 0.2 & sleep 0.2 & exit 0'
            sleep 1.5
            ps -eo pid=,ppid=,stat=,comm= | sed 's/^ */PS /'
            true
            "#,
        );
        out.assert_ok();
        let zombies: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("PS ") && l.split_whitespace().nth(3).is_some_and(|s| s.starts_with('Z')))
            .collect();
        assert!(zombies.is_empty(), "unreaped orphans: {zombies:?}{out}");
        assert!(!out.stdout.contains(" sleep"), "the orphans should have exited and be gone{out}");
    }
}

sandbox_test! {
    /// The network namespace has loopback only, up, and no routes out.
    fn network_is_loopback_only(r: &Runner) {
        let ws = r.workspace();
        let out = r.sh(
            &ws,
            r#"
            ip -o link show | sed 's/^/LINK /'
            tail -n +3 /proc/net/dev | sed 's/^ */DEV /'
            ip -o -4 addr show | sed 's/^/ADDR /'
            echo "ROUTES=$(ip route show | tr '\n' ';')"
            echo DONE
            "#,
        );
        out.assert_ok().assert_stdout_has("DONE").assert_field("ROUTES", "");
        let links: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("LINK ")).collect();
        assert_eq!(links.len(), 1, "{out}");
        assert!(links[0].contains(": lo:") && links[0].contains("UP"), "lo must be up{out}");
        let devs: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("DEV ")).collect();
        assert_eq!(devs.len(), 1, "{out}");
        assert!(devs[0].starts_with("DEV lo:"), "{out}");
        assert!(out.stdout.contains("inet 127.0.0.1/8"), "{out}");
    }
}

/// Python that tries the host's listener on `port`, then a server of its
/// own on the sandbox's loopback; prints HOST=... and LOCAL=....
fn loopback_probe(port: u16) -> String {
    format!(
        r#"python3 - <<'EOF'
import errno, socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5)
    print("HOST=CONNECTED")
except ConnectionRefusedError:
    print("HOST=REFUSED")
except OSError as e:
    print("HOST=" + errno.errorcode.get(e.errno, str(e)))
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
try:
    c = socket.create_connection(srv.getsockname(), timeout=5)
    a, _ = srv.accept()
    c.sendall(b"ping")
    print("LOCAL=" + a.recv(4).decode())
except OSError as e:
    print("LOCAL=" + errno.errorcode.get(e.errno, str(e)))
EOF"#
    )
}

fn host_listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[track_caller]
fn assert_no_connection(listener: &TcpListener, out: &Output) {
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the host listener saw something: {other:?}{out}"),
    }
}

sandbox_test! {
    /// A service listening on the host's 127.0.0.1 cannot be reached with
    /// the default profile. (Its Landlock rules may refuse the connect
    /// before the network namespace does; either way it must fail.)
    fn host_loopback_unreachable(r: &Runner) {
        let ws = r.workspace();
        let (listener, port) = host_listener();
        let out = r.sh(&ws, &loopback_probe(port));
        out.assert_ok();
        let host = out.field("HOST").unwrap_or_else(|| panic!("no HOST line{out}"));
        assert!(
            host == "REFUSED" || host == "EACCES" || host == "EPERM",
            "connecting to the host's 127.0.0.1:{port} must fail, got {host}{out}"
        );
        assert_no_connection(&listener, &out);
    }
}

sandbox_test! {
    /// The network namespace on its own, with connects allowed by the
    /// profile: the sandbox's lo is up and works, and it is not the host's,
    /// so the host's listener is simply not there (connection refused).
    fn loopback_is_the_sandboxs_own(r: &Runner) {
        let ws = r.workspace();
        let profile = ws.write(
            "net.toml",
            "extends = \"default\"\n[landlock]\nconnect_tcp = \"any\"\n",
        );
        let (listener, port) = host_listener();
        let out = r
            .exec(&ws)
            .arg("--profile")
            .arg(&profile)
            .cmd(["sh", "-c", &loopback_probe(port)])
            .run();
        out.assert_ok()
            .assert_field("HOST", "REFUSED")
            .assert_field("LOCAL", "ping");
        assert_no_connection(&listener, &out);
    }
}

sandbox_test! {
    /// Abstract unix sockets (X11, D-Bus, some agents) belong to the network
    /// namespace; a host one must be unreachable.
    fn host_abstract_socket_unreachable(r: &Runner) {
        let ws = r.workspace();
        let name = unique("moat-test-abstract-");
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixListener::bind_addr(&addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        // Control: the runner reaches it from the host.
        let probe = format!(
            r#"python3 -c '
import socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("\0{name}"); print("ABSTRACT=CONNECTED")
except OSError as e:
    print("ABSTRACT=FAILED", e.errno)
'"#
        );
        r.host_sh(ws.path(), &probe).assert_ok().assert_field("ABSTRACT", "CONNECTED");
        let _ = listener.accept();
        let out = r.sh(&ws, &probe);
        out.assert_ok();
        assert!(out.field("ABSTRACT").is_some_and(|v| v.starts_with("FAILED")), "{out}");
        match listener.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the host socket saw a connection from the sandbox: {other:?}{out}"),
        }
    }
}

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

sandbox_test! {
    /// The hostname is the profile's (default `moat`), and changing it
    /// inside does not touch the host's.
    fn hostname_is_own(r: &Runner) {
        let ws = r.workspace();
        let before = host_hostname();
        let out = r.sh(
            &ws,
            r#"echo "HOSTNAME=$(hostname)"; echo "UNAME=$(uname -n)"; hostname moat-changed-inside 2>/dev/null; echo DONE"#,
        );
        let after = host_hostname();
        if after != before {
            // Put the machine back before failing.
            std::fs::write("/proc/sys/kernel/hostname", &before).unwrap();
        }
        assert_eq!(after, before, "the sandbox changed the host's hostname{out}");
        out.assert_ok().assert_field("HOSTNAME", "moat").assert_field("UNAME", "moat");
    }
}

/// A SysV shared memory segment on the host, removed on drop.
struct HostShm(i32);

impl HostShm {
    fn new(key: i32) -> HostShm {
        // SAFETY: plain syscall; the id is checked.
        let id = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | libc::IPC_EXCL | 0o666) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        HostShm(id)
    }
}

impl Drop for HostShm {
    fn drop(&mut self) {
        // SAFETY: removes the segment this test created.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

sandbox_test! {
    /// SysV IPC objects of the host are not visible.
    fn ipc_is_own(r: &Runner) {
        let ws = r.workspace();
        // Root and rootless run at once in this process: keys must differ.
        let key = 0x6d6f_0000 | ((std::process::id() as i32 * 2 + r.is_root() as i32) & 0xffff);
        let _shm = HostShm::new(key);
        let hex = format!("0x{key:08x}");
        r.host_sh(ws.path(), "ipcs -m").assert_ok().assert_stdout_has(&hex);
        let out = r.sh(&ws, "ipcs -m; echo SEGMENTS=$(tail -n +2 /proc/sysvipc/shm | wc -l)");
        out.assert_ok().assert_field("SEGMENTS", "0");
        assert!(!out.stdout.contains(&hex), "host shm segment visible{out}");
    }
}

sandbox_test! {
    /// The cgroup namespace roots the command's view of every hierarchy
    /// (v2, and v1 where the host still mounts it) at its own cgroup.
    fn cgroup_view_is_rooted(r: &Runner) {
        let ws = r.workspace();
        let host = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let out = r.sh(&ws, "cat /proc/self/cgroup");
        out.assert_ok();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), host.lines().count(), "{out}");
        for l in lines {
            assert!(l.ends_with(":/"), "cgroup path is not the namespace root: {l}{out}");
        }
    }
}

sandbox_test! {
    /// The caller's uid and gid are the same inside, and only they are
    /// mapped.
    fn ids_map_to_themselves(r: &Runner) {
        let ws = r.workspace();
        let out = r.sh(
            &ws,
            r#"echo "ID=$(id -u):$(id -g)"
               sed 's/^/UIDMAP /' /proc/self/uid_map
               sed 's/^/GIDMAP /' /proc/self/gid_map"#,
        );
        out.assert_ok()
            .assert_field("ID", &format!("{}:{}", r.uid, r.gid));
        for (kind, id) in [("UIDMAP ", r.uid), ("GIDMAP ", r.gid)] {
            let maps: Vec<Vec<&str>> = out
                .stdout
                .lines()
                .filter_map(|l| l.strip_prefix(kind))
                .map(|l| l.split_whitespace().collect())
                .collect();
            // The middle column is relative to the parent namespace, which
            // need not be the host's; inside id and count are what matter.
            assert_eq!(maps.len(), 1, "{kind}: one range only{out}");
            assert_eq!(maps[0][0], id.to_string(), "{kind}{out}");
            assert_eq!(maps[0][2], "1", "{kind}: only the caller's id{out}");
        }
    }
}
