#!/bin/sh
# PID 1 of the VM tier's initramfs (installed as /init by scripts/vm-test).
#
# Mounts the pseudo file systems and cgroup2, enables no controller by hand
# (reeve enables what it needs), then runs every /scenarios/NN-name.sh in
# order, each under a timeout. For each scenario the console gets the
# scenario's own lines prefixed with "[name] ", then exactly one result line
# ("VMTEST PASS name k=v..." or "VMTEST FAIL name reason"), then
# "VMTEST END name rc=N secs=S". "VMTEST DONE" marks a complete run; the VM
# then powers off.
#
# Settings arrive as environment variables from the kernel command line:
#   vmtest_timeout=SECS   per-scenario limit (default 30)

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

# Kernel messages (the OOM killer's report among them) would otherwise land
# in the middle of result lines on the shared serial console.
dmesg -n 1
hostname vmtest

per=${vmtest_timeout:-30}
ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

# Kill every process a scenario left behind (kill -1 spares only PID 1) and
# remove the job groups it left, deepest first, so that every scenario starts
# from an empty reeve root and an idle machine.
sweep() {
    kill -9 -1 2>/dev/null
    [ -d /sys/fs/cgroup/reeve ] || return 0
    find /sys/fs/cgroup/reeve -mindepth 1 -depth -type d | while read -r g; do
        echo 1 >"$g/cgroup.kill" 2>/dev/null
        i=0
        while [ $i -lt 50 ] && grep -q '^populated 1' "$g/cgroup.events" 2>/dev/null; do
            sleep 0.1
            i=$((i + 1))
        done
        rmdir "$g" 2>/dev/null && echo "[$1] init: removed leftover cgroup ${g#/sys/fs/cgroup}"
    done
}

echo "VMTEST BOOT kernel=$(uname -r) cpus=$(nproc) boot_ms=$(ms) controllers=\"$(cat /sys/fs/cgroup/cgroup.controllers)\""

passed=0
failed=0
for s in /scenarios/[0-9][0-9]-*.sh; do
    [ -e "$s" ] || continue
    name=${s##*/}
    name=${name%.sh}
    name=${name#[0-9][0-9]-}
    out=/tmp/vmtest-$name.out
    t0=$(ms)
    timeout -k 5 "$per" sh "$s" >"$out" 2>&1 </dev/null
    rc=$?
    t1=$(ms)
    secs=$(((t1 - t0) / 1000)).$(((t1 - t0) % 1000 / 100))

    grep -v '^VMTEST ' "$out" | sed "s/^/[$name] /"
    results=$(grep -c '^VMTEST ' "$out")
    line=$(grep '^VMTEST ' "$out")
    timed_out=0
    [ $((t1 - t0)) -ge $((per * 1000)) ] && timed_out=1
    if [ "$results" -eq 0 ]; then
        if [ $timed_out -eq 1 ]; then
            line="VMTEST FAIL $name timed out after ${per}s without a result"
        else
            line="VMTEST FAIL $name exited $rc without a result line"
        fi
    elif [ "$results" -gt 1 ]; then
        line="VMTEST FAIL $name printed $results result lines, expected one"
    else
        case $line in
        "VMTEST PASS $name" | "VMTEST PASS $name "*)
            if [ $timed_out -eq 1 ]; then
                line="VMTEST FAIL $name passed but its cleanup ran past ${per}s"
            elif [ $rc -ne 0 ]; then
                line="VMTEST FAIL $name printed PASS but exited $rc"
            fi
            ;;
        "VMTEST FAIL $name "*) ;;
        *) line="VMTEST FAIL $name malformed result line: $line" ;;
        esac
    fi
    echo "$line"
    case $line in
    "VMTEST PASS "*) passed=$((passed + 1)) ;;
    *) failed=$((failed + 1)) ;;
    esac
    echo "VMTEST END $name rc=$rc secs=$secs"
    sweep "$name"
done

echo "VMTEST DONE passed=$passed failed=$failed uptime_ms=$(ms)"
sync
poweroff -f
# poweroff -f does not return; if it ever does, ending PID 1 panics the
# kernel, and panic=-1 with qemu's -no-reboot stops the VM all the same.
exit 1
