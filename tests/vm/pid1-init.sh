#!/bin/sh
# /init of the VM tier's second boot (installed by scripts/vm-test): mounts
# what reeve needs, then execs reeve, which runs as PID 1 for the rest of
# the boot. reeve supervises /etc/reeve-pid1.json's jobs; the `check` job
# (tests/vm/pid1-job.sh) leaves orphans for reeve to reap, counts zombies,
# and sends SIGTERM to PID 1. reeve stops its jobs and exits; the kernel
# then panics with "Attempted to kill init! exitcode=0x0000XX00", XX being
# reeve's exit status, which scripts/vm-test reads from the console.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
echo "VMTEST PID1 BOOT kernel=$(uname -r)"
exec /bin/reeve watch --config /etc/reeve-pid1.json --log-format json --log-level info
