#!/bin/sh
# reeve watch at rest on a quiet kernel (nothing else runs in the VM): with
# 300 other processes on the host and one governed target, over a 10 s
# window it wakes at most once a second and writes nothing. The VM's kernel
# is the only place here where "nothing happens" holds; on the shared
# build host every other process's exec reaches every connector listener.
# CPU time is printed too, but under software emulation it is many times
# what the same work costs on hardware: a figure, not a goal.
# The safety-net rescan is due every 2 s here, and with nothing created or
# ended on the kernel it is skipped (the fork and thread counts stand
# still): /metrics must show skipped rescans, and at most two steady scans
# made (after the scenario's own execs around the window).
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2317 # predicates run through wait_until
. /scenarios/lib.sh

watch=
target=
sleepers=
trap 'stop "$target" "$watch" $sleepers; kill_group "$CG$cg"' EXIT

# The scenario reads reeve's /metrics on loopback (only before and after
# the window).
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up ||
    fail "cannot bring loopback up"

i=0
while [ $i -lt 300 ]; do
    /bin/sleeper &
    sleepers="$sleepers $!"
    i=$((i + 1))
done

cat >/tmp/idle.json <<'JSON'
{"targets":[{"name":"vmtarget","match":{"exe":["vmtarget"]},"pool":"idle","limits":{"pids":32}}],"discovery":{"mode":"netlink","rescan_interval":"2s"},"metrics":{"listen":"127.0.0.1:9188"}}
JSON
reeve watch --config /tmp/idle.json >/tmp/idle.log 2>&1 &
watch=$!
/bin/vmtarget &
target=$!

cg=
placed() {
    cg=$(cgroup_of "$target")
    case $cg in
    /reeve/pool.idle) return 0 ;;
    *) return 1 ;;
    esac
}
wait_until 5000 placed || fail_with "vmtarget was not placed in pool.idle (in '$cg')" /tmp/idle.log
grep -q '"mode":"netlink"\|mode=netlink' /tmp/idle.log || fail_with "reeve is not in netlink mode" /tmp/idle.log
# scans KIND: the count of rescans of KIND (deep, steady, skipped) in
# /metrics, into n.
fetch_metrics() {
    wget -q -O /tmp/idle.metrics http://127.0.0.1:9188/metrics 2>/dev/null
}
scans() {
    # The first snapshot is published within 500 ms of the first scan.
    wait_until 5000 fetch_metrics || fail_with "cannot read reeve's /metrics" /tmp/idle.log
    case $1 in
    skipped) n=$(grep '^reeve_scans_skipped_total ' /tmp/idle.metrics | sed 's/.* //') ;;
    *) n=$(grep "^reeve_scans_total{kind=\"$1\"} " /tmp/idle.metrics | sed 's/.* //') ;;
    esac
    [ -n "$n" ] || fail_with "no $1 scan count in /metrics" /tmp/idle.metrics
}
scans steady
steady0=$n
scans skipped
skipped0=$n
# Let start-up's writes (state, audit commit) land before the window.
sleep 2

# The window runs shell builtins only: an exec of the scenario's own (a
# `sleep`, an `awk`) would be an event reeve is rightly woken for. Its
# subshell forks and their exits never reach reeve (the kernel filter
# drops them: nothing tracks the shell).
# sample: wakeups (voluntary + involuntary context switches of the loop's
# thread), bytes written (wchar: every write(2)), CPU ns (schedstat), and
# the time in ms, into w, b, c and t.
sample() {
    w=0
    while read -r key val; do
        case $key in
        voluntary_ctxt_switches: | nonvoluntary_ctxt_switches:) w=$((w + val)) ;;
        esac
    done <"/proc/$watch/status"
    while read -r key val; do
        [ "$key" = wchar: ] && b=$val
    done <"/proc/$watch/io"
    read -r c _ <"/proc/$watch/task/$watch/schedstat"
    read -r up _ </proc/uptime
    frac=${up#*.}
    frac=${frac#0} # "08" would read as octal
    t=$((${up%.*} * 1000 + frac * 10))
}
# A FIFO nobody writes, open for reading and writing so it never ends:
# `read -t` on it is a sleep without an exec.
mkfifo /tmp/idle.fifo
exec 3<>/tmp/idle.fifo
sample
w0=$w b0=$b c0=$c t0=$t
# shellcheck disable=SC3045 # busybox ash's read has -t
read -r -t 10 _ <&3
sample
ms=$((t - t0))
wakeups=$((w - w0))
bytes=$((b - b0))
cpu_us=$(((c - c0) / 1000))
exec 3<&-
scans steady
steady=$((n - steady0))
scans skipped
skipped=$((n - skipped0))
set -- /proc/[0-9]*
tracked=$#
per_s_x100=$((wakeups * 100000 / ms))
echo "window ${ms} ms, ${tracked} processes on the host: ${wakeups} wakeups, ${bytes} bytes written, ${cpu_us} us CPU (emulated)"
[ "$wakeups" -le $((ms / 1000)) ] || fail_with "idle wakeups ${wakeups} in ${ms} ms: more than one a second" /tmp/idle.log
[ "$bytes" -eq 0 ] || fail_with "idle reeve wrote ${bytes} bytes in ${ms} ms" /tmp/idle.log
echo "rescans from before the window to after it: ${steady} steady made, ${skipped} skipped"
[ "$skipped" -ge 2 ] || fail_with "only ${skipped} of the rescans due every 2 s were skipped on a still kernel" /tmp/idle.metrics
[ "$steady" -le 2 ] || fail_with "${steady} steady rescans ran on a still kernel" /tmp/idle.metrics
placed || fail "vmtarget left pool.idle"
pass "window_ms=$ms processes=$tracked rescans_skipped=$skipped steady_made=$steady wakeups=$wakeups wakeups_per_s=$((per_s_x100 / 100)).$((per_s_x100 % 100 / 10))$((per_s_x100 % 10)) bytes_written=$bytes cpu_us=$cpu_us"
