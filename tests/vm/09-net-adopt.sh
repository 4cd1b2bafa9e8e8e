#!/bin/sh
# A network limit outlives the daemon that set it: reeve watch auto-attaches
# a sender under a rule with net_tx 2M (loading and attaching the program);
# after kill -9 of reeve watch the transfer still moves 2 MiB/s (within
# 15%, from the program's own counters over the time no daemon ran, and at
# the receiver over the whole transfer); a restarted reeve watch adopts the
# process (an `adopted` event from the group) and leaves the program as it
# is (the same program id in BPF_PROG_QUERY, read by tests/vm/progq.c, not
# by reeve); `reeve status` and the restarted daemon's metrics endpoint
# show its counters growing.
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2317 # predicates run through wait_until
. /scenarios/lib.sh

LIMIT=2097152
PORT=9301
SECS=10
watch=
sender=
sinkpid=
cg=
trap 'stop "$sender" "$sinkpid" "$watch"; kill_group "$CG$cg"' EXIT

ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up ||
    fail "cannot bring the loopback interface up"

# The sender under a name only this scenario's rule matches.
cp /bin/netpump /tmp/adoptpump
cat >/tmp/watch.json <<'JSON'
{"targets":[{"name":"adoptpump","match":{"exe":["adoptpump"]},"limits":{"net_tx":"2M"}}],"discovery":{"mode":"auto","scan_interval":"200ms"},"metrics":{"listen":"127.0.0.1:9188"}}
JSON

reeve watch --config /tmp/watch.json >/tmp/watch1.log 2>&1 &
watch=$!
sleep 0.5
kill -0 "$watch" 2>/dev/null || fail_with "reeve watch exited at start" /tmp/watch1.log

start_sink $PORT /tmp/adopt.sink
# The sender opens its socket only once /tmp/go exists: a socket is charged
# to the group it was opened in, so it must be placed first.
/tmp/adoptpump send $PORT $SECS /tmp/go 2>/tmp/adopt.send &
sender=$!

# progq_tx: the egress programs of the sender's group, from the kernel.
progq_tx() {
    progq "$CG$cg" egress
}
fenced() {
    cg=$(cgroup_of "$sender")
    case $cg in
    /reeve/job.*) ;;
    *) return 1 ;;
    esac
    progq_tx >/tmp/progq.before 2>&1 && grep -q '^count=1 .*names=reeve_net_tx$' /tmp/progq.before
}
if ! wait_until 10000 fenced; then
    echo "sender ($sender) is in '$cg'; progq: $(cat /tmp/progq.before 2>/dev/null)"
    fail_with "reeve watch did not attach the sender with its net_tx program within 10 s" /tmp/watch1.log
fi
grep -q ' attached .*rule=adoptpump' /tmp/watch1.log ||
    fail_with "reeve watch logged no attached event for the sender" /tmp/watch1.log
before=$(field /tmp/progq.before ids)
echo "attached: $cg programs $(cat /tmp/progq.before)"
touch /tmp/go

# passed_now FILE: the net_tx passed counter reeve status shows, into FILE.
passed_now() {
    reeve status >"$1" 2>&1 || fail_with "reeve status exited $?" "$1"
    sed -n 's/.*net_tx passed=\([0-9]*\) dropped=.*/\1/p' "$1" | head -n 1
}

sleep 1.5
kill -9 "$watch"
wait "$watch" 2>/dev/null
watch=
kill -0 "$sender" 2>/dev/null || fail_with "the sender died with reeve" /tmp/adopt.send
t1=$(now_ms)
p1=$(passed_now /tmp/status1.out)
[ -n "$p1" ] || fail_with "reeve status shows no net_tx counters after kill -9 of reeve watch" /tmp/status1.out

# No daemon for 4 s, then a new one.
sleep 4
t2=$(now_ms)
p2=$(passed_now /tmp/status2.out)
[ -n "$p2" ] || fail_with "reeve status shows no net_tx counters" /tmp/status2.out
reeve watch --config /tmp/watch.json >/tmp/watch2.log 2>&1 &
watch=$!
adopted() {
    grep -q " adopted .*job=${cg##*/}.*source=cgroup" /tmp/watch2.log
}
wait_until 5000 adopted || fail_with "the restarted reeve watch did not adopt ${cg##*/}" /tmp/watch2.log
kill -0 "$sender" 2>/dev/null || fail_with "the sender ended before the restarted daemon adopted it" /tmp/adopt.send
progq_tx >/tmp/progq.after 2>&1 || fail_with "progq failed" /tmp/progq.after
after=$(field /tmp/progq.after ids)
echo "after restart: programs $(cat /tmp/progq.after)"
[ "$after" = "$before" ] ||
    fail_with "the restarted reeve changed the group's programs: ids $before before, $after after" /tmp/watch2.log
if grep -Eq ' (limit_failed|attached) ' /tmp/watch2.log; then
    fail_with "the restarted reeve applied limits again instead of adopting" /tmp/watch2.log
fi
p3=$(passed_now /tmp/status3.out)
grep 'net:' /tmp/status3.out
if ! { [ -n "$p3" ] && [ "$p3" -gt "$p2" ]; }; then
    fail_with "after the restart the counters read passed=$p3, not above $p2" /tmp/status3.out
fi

# The restarted daemon exports the program's counters.
series="reeve_job_net_passed_bytes_total{group=\"${cg##*/}\",direction=\"tx\"}"
exported() {
    wget -q -O /tmp/metrics.out http://127.0.0.1:9188/metrics 2>/dev/null || return 1
    m=$(grep -F "$series " /tmp/metrics.out | sed 's/.* //')
    [ -n "$m" ] && [ "$m" -ge "$p2" ] 2>/dev/null
}
wait_until 5000 exported || {
    grep '^reeve_job_net' /tmp/metrics.out
    fail_with "the restarted daemon's /metrics has no $series at or above $p2" /tmp/watch2.log
}
echo "metrics: $(grep -F "$series " /tmp/metrics.out)"

finish_sink /tmp/adopt.sink 20
wait "$sender" 2>/dev/null
sender=

# The rate while no daemon ran, from the program's counters (IP headers
# included: about 0.1% on loopback's 64K segments).
headless=$(((p2 - p1) * 1000 / (t2 - t1)))
within 15 "$headless" "$LIMIT" ||
    fail "with reeve killed the program passed $headless B/s, not within 15% of $LIMIT"
within 15 "$sink_rate" "$LIMIT" ||
    fail "the receiver got $sink_rate B/s over the whole transfer, not within 15% of $LIMIT"

pass "limit=$LIMIT headless_rate=$headless received_rate=$sink_rate prog_ids=$before/$after passed=$p1,$p2,$p3 metrics_passed=$m"
