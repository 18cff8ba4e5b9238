#!/bin/sh
# /init of the initramfs that scripts/test-cgroup-v2 boots: a busybox system
# on a pure cgroup v2 kernel, which runs /checks.sh and powers off. Nothing
# here is a check; if this script goes wrong the end marker never comes and
# the host reports the run as failed.

# Stage 1, on the initramfs's rootfs: moat pivot_roots into each sandbox and
# the kernel refuses pivot_root while / is rootfs, so copy everything into a
# tmpfs and make that the root.
if [ ! -e /.on-tmpfs ]; then
    mount -t tmpfs -o size=700m,mode=0755 tmpfs /newroot
    for f in /*; do
        case "$f" in
        /newroot | /proc | /sys | /dev) ;;
        *) cp -a "$f" /newroot/ ;;
        esac
    done
    mkdir -p /newroot/proc /newroot/sys /newroot/dev
    touch /newroot/.on-tmpfs
    exec switch_root /newroot /init
fi

# Stage 2, on the tmpfs.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Only the unified hierarchy: that is what this VM exists to test.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# Kernel messages (the OOM killer's report, for one) would land on the same
# serial console as the checks' lines, possibly in the middle of one.
dmesg -n 1

export PATH=/usr/local/bin:/usr/bin:/bin HOME=/root
cd /
/checks.sh 2>&1
# No reboot: qemu runs with -no-reboot, so power off ends it.
poweroff -f
