#!/bin/sh
# pids.max is enforced: a fork bomb in a job limited to 16 tasks stays at 16
# or fewer, the kernel counts the refused forks, the machine stays responsive,
# and cgroup.kill ends the bomb.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /scenarios/lib.sh

g=
trap 'kill_group "$g"' EXIT

# shellcheck disable=SC2016 # the bomb is for the inner shell to expand
reeve run --detach --job bomb --pids 16 -- sh -c 'f(){ f|f& }; f' >/tmp/bomb.out 2>/tmp/bomb.err ||
    fail_with "reeve run --detach exited $?" /tmp/bomb.out /tmp/bomb.err
g=$(job_dir /tmp/bomb.out) || fail_with "no cgroup= in reeve's output" /tmp/bomb.out
pids_max=$(cat "$g/pids.max")
[ "$pids_max" = 16 ] || fail "pids.max is '$pids_max', expected 16"

# The bomb may burn itself out (a shell that cannot fork gives up), so the
# peak over the two seconds is what shows the limit holding.
peak=0
end=$(($(now_ms) + 2000))
while [ "$(now_ms)" -lt "$end" ]; do
    n=$(cat "$g/pids.current")
    [ "$n" -gt "$peak" ] && peak=$n
    sleep 0.1
done
current=$(cat "$g/pids.current")
refused=$(kv "$g/pids.events" max)
t0=$(now_ms)
timeout 1 date >/dev/null
date_rc=$?
date_ms=$(($(now_ms) - t0))

t0=$(now_ms)
echo 1 >"$g/cgroup.kill"
wait_until 5000 is_empty "$g" || fail "cgroup.kill left $g populated after 5 s: $(wc -l <"$g/cgroup.procs") processes"
kill_ms=$(($(now_ms) - t0))

figures="pids_peak=$peak pids_current=$current pids_max=$pids_max pids_events_max=$refused date_ms=$date_ms kill_ms=$kill_ms"
[ "$peak" -gt 0 ] || fail "the bomb never ran: $figures"
if [ "$peak" -gt 16 ] || [ "$current" -gt 16 ]; then
    fail "pids.current above the limit: $figures"
fi
[ "$refused" -gt 0 ] || fail "pids.events shows no refused fork: $figures"
if [ "$date_rc" -ne 0 ] || [ "$date_ms" -ge 1000 ]; then
    fail "the VM did not answer within a second (date exited $date_rc): $figures"
fi
pass "$figures"
