//! moatd, the system service for shared machines, is not built yet: this
//! binary exists so packaging and the systemd unit have a target.

fn main() {
    eprintln!("moatd: the daemon is not built yet. Use `moat exec` directly; see README.md.");
    std::process::exit(2);
}
