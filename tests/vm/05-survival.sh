#!/bin/sh
# Workloads outlive reeve: after kill -9 of reeve watch and of a foreground
# reeve run, their workloads still run, in the same cgroups, under the same
# limits.
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2317 # predicates run through wait_until
. /scenarios/lib.sh

watch=
target=
run=
tcg=
trap 'stop "$target" "$run" "$watch"; kill_group "$REEVE_ROOT/job.survive"; [ -n "$tcg" ] && kill_group "$CG$tcg"' EXIT

cat >/tmp/watch.json <<'JSON'
{"targets":[{"name":"vmtarget","match":{"exe":["vmtarget"]},"limits":{"memory":"64M","pids":32,"cpu":"50%"}}],"discovery":{"mode":"auto","scan_interval":"200ms"}}
JSON

reeve watch --config /tmp/watch.json >/tmp/watch.log 2>&1 &
watch=$!
/bin/vmtarget &
target=$!

fenced() {
    tcg=$(cgroup_of "$target")
    case $tcg in
    /reeve/*job.*) [ "$(cat "$CG$tcg/pids.max" 2>/dev/null)" = 32 ] ;;
    *) return 1 ;;
    esac
}
wait_until 5000 fenced || fail_with "reeve watch did not fence vmtarget within 5 s (cgroup '$tcg')" /tmp/watch.log

reeve run --job survive --memory 64M -- /bin/sleeper >/tmp/survive.out 2>/tmp/survive.err &
run=$!
sg=$REEVE_ROOT/job.survive
started() {
    sleeper=$(head -n 1 "$sg/cgroup.procs" 2>/dev/null)
    [ -n "$sleeper" ]
}
wait_until 5000 started || fail_with "reeve run started nothing in $sg within 5 s" /tmp/survive.err
scg=$(cgroup_of "$sleeper")

kill -9 "$watch" "$run"
wait "$watch" 2>/dev/null
wait "$run" 2>/dev/null
sleep 1

# workload NAME PID CGROUP FILE VALUE: alive, in CGROUP, FILE still VALUE.
workload() {
    kill -0 "$2" 2>/dev/null || fail "$1 ($2) died with reeve"
    now=$(cgroup_of "$2")
    [ "$now" = "$3" ] || fail "$1 ($2) moved from $3 to '$now'"
    got=$(cat "$CG$3/$4" 2>&1)
    [ "$got" = "$5" ] || fail "$1's $4 is '$got', was $5"
}
workload vmtarget "$target" "$tcg" memory.max 67108864
workload vmtarget "$target" "$tcg" pids.max 32
workload sleeper "$sleeper" "$scg" memory.max 67108864

pass "watch_target_cgroup=$tcg watch_target_alive=yes run_cgroup=$scg run_workload_alive=yes memory_max=67108864 pids_max=32"
