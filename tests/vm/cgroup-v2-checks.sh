#!/bin/sh
# moat's cgroup limits on a pure cgroup v2 kernel. The host this project is
# developed on has a hybrid hierarchy, so the cargo tests only reach moat's
# v1 code; scripts/test-cgroup-v2 boots a Debian cloud kernel under qemu with
# this script (as root, busybox only, no network) to reach the v2 code.
#
# Output: one `PASS: name` or `FAIL: name` line per check, then the end
# marker as the very last line. The host counts those lines; everything else
# printed here is context for reading a failing run.

CG=/sys/fs/cgroup
WS=/work/ws
OUT=/tmp/out
ERR=/tmp/err

check() { # NAME COMMAND...: PASS if COMMAND succeeds
    name=$1
    shift
    if "$@"; then echo "PASS: $name"; else echo "FAIL: $name"; fi
}
section() { echo "--- $*"; }
has() { grep -qF "$1" "$2"; }
gone() { [ -n "$1" ] && [ ! -e "$1" ]; }
# Run groups are named `<supervisor pid>-<nonce>`; none may outlive its run.
run_groups() { # PARENT [PID]: the run groups in PARENT (of supervisor PID)
    if [ -n "${2:-}" ]; then set -- "$1/$2"-*; else set -- "$1"/*-*; fi
    for d in "$@"; do [ -d "$d" ] && echo "$d"; done
}
no_run_groups() { [ -z "$(run_groups "$1")" ]; }
subdirs() { for d in "$1"/*/; do [ -d "$d" ] && printf '%s ' "$(basename "$d")"; done; }

profile() { # NAME LINES: /work/NAME.toml, the default profile plus [limits]
    printf 'extends = "default"\n[limits]\n%s\n' "$2" >"/work/$1.toml"
    chmod 644 "/work/$1.toml"
}

# moat exec as root with workspace $WS; the status is left in $rc.
run() {
    p=$1
    shift
    moat exec --profile "/work/$p.toml" --workspace "$WS" -- "$@" >"$OUT" 2>"$ERR"
    rc=$?
}

# CGROUP COMMAND...: runs COMMAND as the unprivileged user u (uid 1000) in
# /home/u/ws, started from the cgroup directory CGROUP ("" = stay in ours).
# Root moves the process first, as a login manager would for a user session;
# writing 0 to cgroup.procs moves the writer itself.
as_u() {
    cg=$1
    shift
    (
        if [ -n "$cg" ]; then echo 0 >"$cg/cgroup.procs" || exit 99; fi
        # busybox su would take options among the arguments for its own
        # (getopt permutes them) up to the `--`.
        exec su -s /bin/sh -c 'cd /home/u/ws && exec "$@"' u -- sh "$@"
    )
}

# The same as run, for u: moat exec with the workspace /home/u/ws.
urun() {
    cg=$1 p=$2
    shift 2
    as_u "$cg" moat exec --profile "/work/$p.toml" -- "$@" >"$OUT" 2>"$ERR"
    rc=$?
}

# A shell that starts 100 sleeps; with pids = 32 the kernel refuses a fork.
# shellcheck disable=SC2016 # expanded by the sandbox's shell
FORK_BOMBLET='i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done'

section "the VM: $(uname -r)"
echo "controllers: $(cat $CG/cgroup.controllers); self: $(cat /proc/self/cgroup)"
# Without this, everything below would test some other setup.
v2_only() {
    [ "$(cat /proc/self/cgroup)" = 0::/ ] || return 1
    ! grep -q ' cgroup ' /proc/mounts || return 1 # a v1 hierarchy
    for c in memory pids cpu; do grep -qw $c $CG/cgroup.controllers || return 1; done
}
check "kernel: cgroup v2 only, with memory, pids and cpu" v2_only

section "root: doctor"
moat doctor >"$OUT" 2>&1
grep cgroups "$OUT"
check "doctor: cgroups ok, run groups under $CG/moat" \
    grep -Eq "^ok +cgroups +cgroup v2.*run groups go under $CG/moat\$" "$OUT"

section "root: memory"
profile mem 'memory = "64M"'
run mem dd if=/dev/zero of=/dev/null bs=200M count=1
grep moat "$ERR"
check "memory: a 200M buffer under 64M is killed, exit 137 (got $rc)" [ "$rc" = 137 ]
check "memory: moat says why" \
    has "the memory limit (64 MiB) was reached: the kernel killed the command" "$ERR"
# The limit must not kill what fits: the 137 above is the limit, not the VM.
run mem dd if=/dev/zero of=/dev/null bs=16M count=1
check "memory: a 16M buffer runs, exit 0 (got $rc)" [ "$rc" = 0 ]

section "root: pids"
profile pids 'pids = 32'
run pids sh -c "$FORK_BOMBLET"
grep moat "$ERR"
check "pids: moat reports the refused fork" has "the pids limit (32) refused" "$ERR"

section "root: cpu and timeout"
profile cpu 'cpu = 0.5
timeout = "5s"'
moat exec --profile /work/cpu.toml --workspace "$WS" -- sh -c 'while :; do :; done' \
    >"$OUT" 2>"$ERR" &
mp=$!
# Look while the busy loop runs. Polling rather than sleeping a fixed time
# keeps this from depending on how fast the emulated CPU is.
g=
i=0
while [ -z "$g" ] && [ $i -lt 40 ]; do
    g=$(run_groups "$CG/moat" "$mp")
    i=$((i + 1))
    sleep 0.1
done
throttled=0
i=0
while [ -n "$g" ] && [ "${throttled:-0}" -eq 0 ] && [ $i -lt 40 ]; do
    throttled=$(awk '/^nr_throttled/ {print $2}' "$g/cpu.stat" 2>/dev/null)
    i=$((i + 1))
    sleep 0.1
done
echo "group: $g; cpu.max: $(cat "$g/cpu.max" 2>&1); nr_throttled: $throttled"
echo "subtree_control: $CG: $(cat $CG/cgroup.subtree_control); $CG/moat: $(cat $CG/moat/cgroup.subtree_control)"
check "cpu: the run has its group in $CG/moat" [ -n "$g" ]
check "cpu: cpu.max is 50ms per 100ms" [ "$(cat "$g/cpu.max" 2>/dev/null)" = "50000 100000" ]
check "cpu: the busy loop was throttled" [ "${throttled:-0}" -gt 0 ]
check "cpu: the sandbox is in the group" [ -n "$(cat "$g/cgroup.procs" 2>/dev/null)" ]
wait $mp
rc=$?
grep moat "$ERR"
check "timeout: exit 124 (got $rc)" [ "$rc" = 124 ]
check "timeout: moat says why" has "the timeout (5s) ended the run" "$ERR"
check "timeout: the run's group is removed" gone "$g"

section "root: cgroup namespace"
run mem cat /proc/self/cgroup
cat "$OUT"
check "cgroupns: the sandbox sees itself at 0::/" [ "$(cat "$OUT")" = "0::/" ]
moat exec --verbose --profile /work/mem.toml --workspace "$WS" -- true 2>"$ERR"
grep 'moat: cgroup' "$ERR"
check "clone3: root's sandbox is born in its group, not moved" \
    has "born in (clone3 into cgroup2)" "$ERR"
check "root: no run groups left in $CG/moat" no_run_groups "$CG/moat"

section "rootless, no delegation (u is in the root cgroup, which is root's)"
profile upids 'pids = 32'
urun "" upids echo ran
cat "$ERR"
check "rootless: without required, the command runs (rc $rc)" has ran "$OUT"
check "rootless: the warning is printed once" \
    [ "$(grep -c 'moat: warning: cgroup limits are not available' "$ERR")" = 1 ]
profile ureq 'pids = 32
required = true'
urun "" ureq echo ran
cat "$ERR"
check "rootless: with required, moat refuses with 125 (got $rc)" [ "$rc" = 125 ]
check "rootless: with required, the command does not run" [ ! -s "$OUT" ]

section "rootless, delegated subtree"
# What systemd does for a delegated user unit: controllers enabled down to
# the delegated group, which (with the files the cgroup v2 docs list) belongs
# to the user; u's shell lives in a leaf below it.
D=$CG/deleg
echo "+cpu +memory +pids" >$CG/cgroup.subtree_control
mkdir $D $D/shell
chown 1000:1000 $D $D/cgroup.procs $D/cgroup.subtree_control $D/cgroup.threads
chown -R 1000:1000 $D/shell
profile umem 'memory = "64M"
pids = 32
cpu = 0.5
required = true'
as_u $D/shell moat doctor >"$OUT" 2>&1
grep cgroups "$OUT"
check "delegated: doctor says cgroups ok, run groups under $D/moat" \
    grep -Eq "^ok +cgroups +cgroup v2.*run groups go under $D/moat\$" "$OUT"
urun $D/shell umem dd if=/dev/zero of=/dev/null bs=200M count=1
grep moat "$ERR"
check "delegated memory: exit 137 (got $rc)" [ "$rc" = 137 ]
check "delegated memory: moat says why" has "the memory limit (64 MiB) was reached" "$ERR"
urun $D/shell umem cat /proc/self/cgroup
cat "$OUT" "$ERR"
check "delegated cgroupns: the sandbox sees itself at 0::/" [ "$(cat "$OUT")" = "0::/" ]
as_u $D/shell moat exec --verbose --profile /work/umem.toml -- true 2>"$ERR"
grep 'moat: cgroup' "$ERR"
check "delegated clone3: the sandbox is born in its group, not moved" \
    has "born in (clone3 into cgroup2)" "$ERR"
urun $D/shell umem sh -c "$FORK_BOMBLET"
grep moat "$ERR"
check "delegated pids: moat reports the refused fork" has "the pids limit (32) refused" "$ERR"
echo "in $D: $(subdirs $D); in $D/moat: $(subdirs $D/moat)"
check "delegated: no run groups left in $D/moat" no_run_groups "$D/moat"

# The host requires this line: without it the run did not finish.
echo "VM-CHECKS-DONE"
