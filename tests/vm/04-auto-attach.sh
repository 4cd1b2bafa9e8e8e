#!/bin/sh
# reeve watch discovers a matching process and fences it: within 5 s the
# process sits in a job group under the reeve root with every configured limit
# in force (memory.max, pids.max and cpu.max read back from the kernel).
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2317 # predicates run through wait_until
. /scenarios/lib.sh

watch=
target=
trap 'stop "$target" "$watch"; kill_group "$CG$cg"' EXIT

cat >/tmp/watch.json <<'JSON'
{"targets":[{"name":"vmtarget","match":{"exe":["vmtarget"]},"limits":{"memory":"64M","pids":32,"cpu":"50%"}}],"discovery":{"mode":"auto","scan_interval":"200ms"}}
JSON

reeve watch --config /tmp/watch.json >/tmp/watch.log 2>&1 &
watch=$!
sleep 0.5
kill -0 "$watch" 2>/dev/null || fail_with "reeve watch exited at start" /tmp/watch.log

/bin/vmtarget &
target=$!
t0=$(now_ms)

cg=
fenced() {
    cg=$(cgroup_of "$target")
    case $cg in
    /reeve/*job.*) ;;
    *) return 1 ;;
    esac
    [ "$(cat "$CG$cg/memory.max" 2>/dev/null)" = 67108864 ] &&
        [ "$(cat "$CG$cg/pids.max" 2>/dev/null)" = 32 ] &&
        [ "$(cat "$CG$cg/cpu.max" 2>/dev/null)" = "50000 100000" ]
}
if ! wait_until 5000 fenced; then
    echo "vmtarget ($target) is in '$cg'"
    [ -d "$CG$cg" ] && echo "memory.max=$(cat "$CG$cg/memory.max" 2>&1) pids.max=$(cat "$CG$cg/pids.max" 2>&1) cpu.max=$(cat "$CG$cg/cpu.max" 2>&1)"
    fail_with "vmtarget was not fenced within 5 s (cgroup '$cg')" /tmp/watch.log
fi
attach_ms=$(($(now_ms) - t0))

pass "cgroup=$cg attach_ms=$attach_ms memory_max=$(cat "$CG$cg/memory.max") pids_max=$(cat "$CG$cg/pids.max") cpu_max=\"$(cat "$CG$cg/cpu.max")\" cpu_max_pct=$(cpu_max_pct "$CG$cg/cpu.max")"
