#!/bin/sh
# cpu.max is enforced: a job limited to 20% of one CPU gets 15-25% of one CPU
# while it spins, and the kernel reports throttling.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /scenarios/lib.sh

g=
trap 'kill_group "$g"' EXIT

reeve run --detach --job burn --cpu 20% -- /bin/burn >/tmp/burn.out 2>/tmp/burn.err ||
    fail_with "reeve run --detach exited $?" /tmp/burn.out /tmp/burn.err
g=$(job_dir /tmp/burn.out) || fail_with "no cgroup= in reeve's output" /tmp/burn.out
[ -d "$g" ] || fail "job group $g does not exist"
pid=$(field /tmp/burn.out pid)
[ "$(cgroup_of "$pid")" = "${g#"$CG"}" ] || fail "burner $pid is in '$(cgroup_of "$pid")', not ${g#"$CG"}"
limit=$(cpu_max_pct "$g/cpu.max")
[ "$limit" = 20 ] || fail "cpu.max is '$(cat "$g/cpu.max")' ($limit%), expected 20%"

sleep 1
u0=$(kv "$g/cpu.stat" usage_usec)
t0=$(now_ms)
sleep 5
u1=$(kv "$g/cpu.stat" usage_usec)
t1=$(now_ms)
throttled=$(kv "$g/cpu.stat" nr_throttled)
throttled_usec=$(kv "$g/cpu.stat" throttled_usec)

# usage in tenths of a percent of one CPU: usec / (ms * 1000) * 1000
tenths=$(((u1 - u0) / (t1 - t0)))
figures="usage_pct=$((tenths / 10)).$((tenths % 10)) nr_throttled=$throttled throttled_usec=$throttled_usec cpu_max=\"$(cat "$g/cpu.max")\" window_ms=$((t1 - t0))"
if [ "$tenths" -lt 150 ] || [ "$tenths" -gt 250 ]; then
    fail "usage outside 15-25% of one CPU: $figures"
fi
[ "$throttled" -gt 0 ] || fail "never throttled: $figures"
pass "$figures"
