#!/bin/sh
# SIGHUP with changed limits: reeve watch fences a process in its job group,
# the config's rule then asks for other limits, and after SIGHUP the kernel
# holds the new ones (memory.max, pids.max and cpu.max read back) while the
# process stays in the same group, running, never re-attached.
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2317 # predicates run through wait_until
. /scenarios/lib.sh

watch=
target=
cg=
trap 'stop "$target" "$watch"; kill_group "$CG$cg"' EXIT

config() {
    cat >/tmp/reload.json <<JSON
{"targets":[{"name":"vmtarget","match":{"exe":["vmtarget"]},"limits":{"memory":"$1","pids":$2,"cpu":"$3"}}],"discovery":{"mode":"auto","scan_interval":"200ms"},"log":{"format":"json","level":"info"}}
JSON
}

# limits MEMORY_MAX PIDS_MAX CPU_MAX: the target's group holds exactly these.
limits() {
    cg=$(cgroup_of "$target")
    case $cg in
    /reeve/*job.*) ;;
    *) return 1 ;;
    esac
    [ "$(cat "$CG$cg/memory.max" 2>/dev/null)" = "$1" ] &&
        [ "$(cat "$CG$cg/pids.max" 2>/dev/null)" = "$2" ] &&
        [ "$(cat "$CG$cg/cpu.max" 2>/dev/null)" = "$3" ]
}

config 64M 32 50%
reeve watch --config /tmp/reload.json >/tmp/reload.log 2>&1 &
watch=$!
sleep 0.5
kill -0 "$watch" 2>/dev/null || fail_with "reeve watch exited at start" /tmp/reload.log

/bin/vmtarget &
target=$!
wait_until 5000 limits 67108864 32 "50000 100000" ||
    fail_with "vmtarget was not fenced with the first limits within 5 s (cgroup '$cg')" /tmp/reload.log
before=$cg

config 32M 16 25%
kill -HUP "$watch"
t0=$(now_ms)
if ! wait_until 5000 limits 33554432 16 "25000 100000"; then
    echo "memory.max=$(cat "$CG$cg/memory.max" 2>&1) pids.max=$(cat "$CG$cg/pids.max" 2>&1) cpu.max=$(cat "$CG$cg/cpu.max" 2>&1)"
    fail_with "the changed limits were not in force within 5 s of SIGHUP" /tmp/reload.log
fi
reload_ms=$(($(now_ms) - t0))
[ "$cg" = "$before" ] || fail_with "the process moved from $before to $cg" /tmp/reload.log
kill -0 "$target" 2>/dev/null || fail_with "the governed process did not survive the reload" /tmp/reload.log
wait_until 2000 grep -q '"event":"limits_applied".*"in_force":true' /tmp/reload.log ||
    fail_with "no limits_applied with in_force true" /tmp/reload.log
attached=$(grep -c '"event":"attached"' /tmp/reload.log)
[ "$attached" -eq 1 ] || fail_with "attached $attached times, expected once" /tmp/reload.log

pass "cgroup=$cg reload_ms=$reload_ms memory_max=$(cat "$CG$cg/memory.max") pids_max=$(cat "$CG$cg/pids.max") cpu_max=\"$(cat "$CG$cg/cpu.max")\" attached=$attached"
