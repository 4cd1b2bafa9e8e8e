#!/bin/sh
# memory.max is enforced: a 64M allocation under a 32M limit is OOM-killed
# inside the job group, both in a detached job (whose memory.events is read
# here) and in a foreground job (whose exit status and message reeve reports).
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2317 # predicates run through wait_until
. /scenarios/lib.sh

g=
trap 'kill_group "$g"' EXIT

oom_killed() {
    [ "$(kv "$g/memory.events" oom_kill)" -ge 1 ] 2>/dev/null
}

# Detached: the group stays, so its memory.events can be read.
reeve run --detach --job oomd --memory 32M -- /bin/alloc 64 >/tmp/oomd.out 2>/tmp/oomd.err ||
    fail_with "reeve run --detach exited $?" /tmp/oomd.out /tmp/oomd.err
g=$(job_dir /tmp/oomd.out) || fail_with "no cgroup= in reeve's output" /tmp/oomd.out
memory_max=$(cat "$g/memory.max") || fail "cannot read $g/memory.max"
[ "$memory_max" = 33554432 ] || fail "memory.max is $memory_max, expected 33554432"
wait_until 10000 oom_killed ||
    fail_with "no oom_kill in $g/memory.events within 10 s" "$g/memory.events" /tmp/oomd.out
wait_until 5000 is_empty "$g" || fail "the OOM-killed job group $g is still populated"
oom_kill=$(kv "$g/memory.events" oom_kill)
kill_group "$g"
g=

# Foreground: reeve reports the OOM kill and exits 128+9.
timeout -k 5 20 reeve run --job oom --memory 32M -- /bin/alloc 64 >/tmp/oom.out 2>/tmp/oom.err
rc=$?
echo "foreground stderr: $(cat /tmp/oom.err)"
[ "$rc" -eq 137 ] || fail_with "foreground reeve run exited $rc, expected 137" /tmp/oom.out /tmp/oom.err
grep -qi 'oom' /tmp/oom.err || fail_with "reeve's stderr does not mention the OOM kill" /tmp/oom.err
[ ! -d "$REEVE_ROOT/job.oom" ] || fail "foreground job group $REEVE_ROOT/job.oom was not removed"

pass "detached_oom_kill=$oom_kill memory_max=$memory_max foreground_exit=$rc foreground_oom_message=yes group_removed=yes"
