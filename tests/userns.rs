//! When the kernel refuses a user namespace, moat says so and names the fix.

mod common;

use common::*;

/// Runs `script` (with `$0` = moat, `$1` = workspace) as the runner inside
/// a user namespace of its own, where the runner is root and so may set
/// that namespace's `user.max_user_namespaces` to 0: the kernel then
/// refuses any nested user namespace, as on a host where the sysctl is 0,
/// without touching the host's setting.
fn in_userns_without_userns(r: &Runner, ws: &Dir, script: &str) -> Output {
    let mut c = r.command("/usr/bin/unshare");
    c.args(["-Ur", "sh", "-c"])
        .arg(format!(
            "echo 0 > /proc/sys/user/max_user_namespaces || exit 99\n{script}"
        ))
        .arg(moat_bin(r.mode))
        .arg(ws.path())
        .current_dir(ws.path());
    run_command(
        c,
        format!("[{:?}] unshare -Ur ... {script}", r.mode),
        None,
        TIMEOUT,
    )
}

sandbox_test! {
    fn unavailable_userns_is_explained(r: &Runner) {
        let ws = r.workspace();
        // The premise: in there, creating a user namespace fails.
        let premise = in_userns_without_userns(r, &ws, "unshare -U true && echo CREATED");
        assert!(
            premise.code() != Some(99) && !premise.stdout.contains("CREATED"),
            "cannot provoke an unavailable user namespace this way{premise}"
        );

        let out = in_userns_without_userns(r, &ws, r#"exec "$0" exec --workspace "$1" -- touch "$1/ran""#);
        out.assert_moat_error()
            .assert_stderr_has("user namespace")
            .assert_stderr_has("max_user_namespaces")
            // The fix, not just the diagnosis.
            .assert_stderr_has("sysctl");
        assert!(!ws.join("ran").exists(), "the command ran anyway{out}");
    }
}
