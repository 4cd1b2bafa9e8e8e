#!/bin/sh
# reeve watch at rest on a quiet kernel (nothing else runs in the VM): with
# 300 other processes on the host and one governed target, over a 10 s
# window it wakes at most once a second and writes nothing. The VM's kernel
# is the only place here where "nothing happens" holds; on the shared
# build host every other process's exec reaches every connector listener.
# CPU time is printed too, but under software emulation it is many times
# what the same work costs on hardware: a figure, not a goal.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /scenarios/lib.sh

watch=
target=
sleepers=
trap 'stop "$target" "$watch" $sleepers; kill_group "$CG$cg"' EXIT

i=0
while [ $i -lt 300 ]; do
    /bin/sleeper &
    sleepers="$sleepers $!"
    i=$((i + 1))
done

cat >/tmp/idle.json <<'JSON'
{"targets":[{"name":"vmtarget","match":{"exe":["vmtarget"]},"pool":"idle","limits":{"pids":32}}],"discovery":{"mode":"netlink"}}
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
# Let start-up's writes (state, audit commit) land before the window.
sleep 2

# sample: wakeups (voluntary + involuntary context switches of the loop's
# thread), bytes written (wchar: every write(2)), CPU ns (schedstat).
sample() {
    w=$(awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { n += $2 } END { print n }' "/proc/$watch/status")
    b=$(awk '$1 == "wchar:" { print $2 }' "/proc/$watch/io")
    c=$(awk '{ print $1 + 0 }' "/proc/$watch/task/$watch/schedstat")
    echo "$w $b $c"
}
sample >/tmp/idle.before
t0=$(now_ms)
sleep 10
sample >/tmp/idle.after
ms=$(($(now_ms) - t0))
read -r w0 b0 c0 </tmp/idle.before
read -r w1 b1 c1 </tmp/idle.after
wakeups=$((w1 - w0))
bytes=$((b1 - b0))
cpu_us=$(((c1 - c0) / 1000))
set -- /proc/[0-9]*
tracked=$#
per_s_x100=$((wakeups * 100000 / ms))
echo "window ${ms} ms, ${tracked} processes on the host: ${wakeups} wakeups, ${bytes} bytes written, ${cpu_us} us CPU (emulated)"
[ "$wakeups" -le $((ms / 1000)) ] || fail_with "idle wakeups ${wakeups} in ${ms} ms: more than one a second" /tmp/idle.log
[ "$bytes" -eq 0 ] || fail_with "idle reeve wrote ${bytes} bytes in ${ms} ms" /tmp/idle.log
placed || fail "vmtarget left pool.idle"
pass "window_ms=$ms processes=$tracked wakeups=$wakeups wakeups_per_s=$((per_s_x100 / 100)).$((per_s_x100 % 100 / 10))$((per_s_x100 % 10)) bytes_written=$bytes cpu_us=$cpu_us"
