#!/bin/sh
# reeve detach returns a job's processes to the cgroup they came from and
# removes the empty job group.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /scenarios/lib.sh

pid=
g=
trap 'stop "$pid"; echo $$ >"$CG/cgroup.procs"; kill_group "$g"; rmdir "$CG/orig" 2>/dev/null' EXIT

mkdir -p "$CG/orig"
echo $$ >"$CG/orig/cgroup.procs"

reeve run --detach --job det -- /bin/sleeper >/tmp/det.out 2>/tmp/det.err ||
    fail_with "reeve run --detach from /orig exited $?" /tmp/det.out /tmp/det.err
pid=$(field /tmp/det.out pid)
g=$(job_dir /tmp/det.out) || fail_with "no cgroup= in reeve's output" /tmp/det.out
before=$(cgroup_of "$pid")
[ "$before" = "${g#"$CG"}" ] || fail "sleeper $pid is in '$before', not ${g#"$CG"}"

timeout -k 5 10 reeve detach --job det >/tmp/detach.out 2>/tmp/detach.err ||
    fail_with "reeve detach --job det exited $?" /tmp/detach.out /tmp/detach.err
after=$(cgroup_of "$pid")
kill -0 "$pid" 2>/dev/null || fail "the sleeper died on detach"
[ "$after" = /orig ] || fail_with "sleeper $pid is in '$after' after detach, expected /orig" /tmp/detach.out
[ ! -d "$g" ] || fail "job group $g still exists after detach"
g=

pass "before=$before after=$after job_group_removed=yes"
