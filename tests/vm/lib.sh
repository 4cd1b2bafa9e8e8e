# Shared helpers for the VM tier's scenarios (busybox sh, sourced, not run).
#
# A scenario prints any number of diagnostic lines and exactly one result
# line through pass or fail; /init prefixes the diagnostics with the
# scenario's name and checks that the result line is there.
# shellcheck shell=sh

CG=/sys/fs/cgroup
# shellcheck disable=SC2034 # used by the scenarios
REEVE_ROOT=$CG/reeve

SCENARIO=${0##*/}
SCENARIO=${SCENARIO%.sh}
SCENARIO=${SCENARIO#[0-9][0-9]-}

# A timeout's SIGTERM still runs the scenario's EXIT trap (its cleanup).
trap 'exit 143' INT TERM

pass() {
    echo "VMTEST PASS $SCENARIO $*"
    exit 0
}

fail() {
    echo "VMTEST FAIL $SCENARIO $*"
    exit 1
}

# fail_with REASON FILE...: show the files (reeve's stderr, say), then fail.
fail_with() {
    reason=$1
    shift
    for f in "$@"; do
        [ -s "$f" ] && sed "s|^|${f##*/}: |" "$f" | tail -n 20
    done
    fail "$reason"
}

# Milliseconds since boot (10 ms resolution).
now_ms() {
    awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime
}

# kv FILE KEY: the value of KEY in a flat keyed file (cpu.stat, memory.events).
kv() {
    awk -v k="$2" '$1 == k { print $2; found = 1 } END { exit !found }' "$1"
}

# The cgroup v2 path of a process, relative to the mount ("/reeve/job.x").
cgroup_of() {
    sed -n 's/^0:://p' "/proc/$1/cgroup" 2>/dev/null
}

# field FILE NAME: NAME's value from "pid=1 job=x cgroup=/p" lines in FILE.
field() {
    tr ' ' '\n' <"$1" | sed -n "s/^$2=//p" | head -n 1
}

# job_dir FILE: the job group's directory from reeve run --detach's output,
# which may name it from the mount or from the file system root.
job_dir() {
    d=$(field "$1" cgroup)
    [ -n "$d" ] || return 1
    case $d in
    "$CG"/*) echo "$d" ;;
    *) echo "$CG$d" ;;
    esac
}

# wait_until MS CMD...: run CMD every 50 ms until it succeeds or MS pass.
wait_until() {
    limit=$(($(now_ms) + $1))
    shift
    until "$@"; do
        [ "$(now_ms)" -lt "$limit" ] || return 1
        sleep 0.05
    done
}

is_populated() {
    grep -q '^populated 1' "$1/cgroup.events" 2>/dev/null
}

is_empty() {
    ! is_populated "$1"
}

# kill_group DIR: kill everything in a job group, wait until it is empty and
# remove it. Quiet and harmless when DIR is empty, gone, or not a job group.
kill_group() {
    case $1 in
    "$CG"/*/job.* | "$CG"/job.*) ;;
    *) return 0 ;;
    esac
    [ -d "$1" ] || return 0
    echo 1 >"$1/cgroup.kill" 2>/dev/null
    wait_until 5000 is_empty "$1"
    rmdir "$1" 2>/dev/null
    return 0
}

# stop PID...: SIGKILL processes this shell started and reap them.
stop() {
    for p in "$@"; do
        [ -n "$p" ] || continue
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    return 0
}

# cpu_max_pct FILE: cpu.max ("quota period") as a whole percentage of one CPU.
cpu_max_pct() {
    read -r quota period <"$1"
    [ "$quota" = max ] && echo max && return 0
    echo $((quota * 100 / period))
}

# ---- network transfers (tests/vm/netpump.c)

# start_sink PORT OUT: a receiver on PORT in the background, its pid in
# $sinkpid, once it listens.
start_sink() {
    netpump sink "$1" >"$2" 2>&1 &
    sinkpid=$!
    wait_until 5000 grep -q listening "$2" || fail_with "netpump sink did not start" "$2"
}

# finish_sink OUT SECS: wait up to SECS for the receiver in $sinkpid to
# report and reap it; sets sink_bytes and sink_rate (bytes per second).
finish_sink() {
    wait_until $(($2 * 1000)) grep -q '^bytes=' "$1" || fail_with "the transfer did not end" "$1"
    wait "$sinkpid" 2>/dev/null
    sinkpid=
    # Read by the scenarios that source this file.
    # shellcheck disable=SC2034
    sink_bytes=$(field "$1" bytes)
    # shellcheck disable=SC2034
    sink_rate=$(field "$1" rate)
}

# within PCT VALUE TARGET: VALUE is within PCT percent of TARGET.
within() {
    [ $(($2 * 100)) -ge $(($3 * (100 - $1))) ] && [ $(($2 * 100)) -le $(($3 * (100 + $1))) ]
}
