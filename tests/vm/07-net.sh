#!/bin/sh
# net_tx and net_rx are enforced by reeve's cgroup BPF token buckets: a TCP
# transfer over loopback from a job limited to net_tx 2M moves 2 MiB/s
# (within 15%), the same transfer without a limit is at least ten times
# faster, and the counters `reeve status` shows agree with what the
# receiver counted; a second run in the same job adopts the program (its
# counters carry on); a receiver limited to net_rx 2M is policed to that
# rate (within 15%).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /scenarios/lib.sh

LIMIT=2097152
tx=
rx=
sinkpid=
trap 'stop "$sinkpid"; kill_group "$tx"; kill_group "$rx"' EXIT

ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up ||
    fail "cannot bring the loopback interface up"

# Unlimited, for the comparison.
start_sink 9100 /tmp/free.sink
netpump send 9100 2 2>/tmp/free.send || fail_with "unlimited sender failed" /tmp/free.send
finish_sink /tmp/free.sink 20
free=$sink_rate
echo "unlimited: $(cat /tmp/free.sink)"

# Egress limited to 2M: the sender in a job group.
start_sink 9101 /tmp/tx.sink
reeve run --detach --job nettx --net-tx 2M -- /bin/netpump send 9101 5 >/tmp/tx.out 2>/tmp/tx.err ||
    fail_with "reeve run --detach --net-tx exited $?" /tmp/tx.out /tmp/tx.err
tx=$(job_dir /tmp/tx.out) || fail_with "no cgroup= in reeve's output" /tmp/tx.out
finish_sink /tmp/tx.sink 20
limited=$sink_rate
bytes=$sink_bytes
echo "net_tx 2M: $(cat /tmp/tx.sink)"
reeve status >/tmp/status.out 2>&1 || fail_with "reeve status exited $?" /tmp/status.out
grep 'net:' /tmp/status.out
counters=$(sed -n 's/.*net_tx passed=\([0-9]*\) dropped=\([0-9]*\).*/\1 \2/p' /tmp/status.out)
passed=${counters% *}
dropped=${counters#* }
[ -n "$passed" ] || fail_with "reeve status shows no net_tx counters" /tmp/status.out

within 15 "$limited" "$LIMIT" ||
    fail "limited transfer moved $limited B/s, not within 15% of $LIMIT"
[ "$free" -ge $((limited * 10)) ] ||
    fail "unlimited transfer moved $free B/s, less than 10x the limited $limited B/s"
# Every byte the receiver got passed the program, with headers on top;
# segments sent again after a loss add a little more.
if ! { [ "$passed" -ge "$bytes" ] && [ $((passed * 100)) -le $((bytes * 110)) ]; }; then
    fail "reeve status shows passed=$passed bytes, the receiver counted $bytes"
fi
[ "$dropped" -gt 0 ] || fail "reeve status shows no dropped bytes for a sender over its budget"

# A second run in the same job with the same limit adopts the attached
# program instead of loading a new one: the counters carry on.
reeve run --detach --job nettx --net-tx 2M -- /bin/true >/tmp/tx2.out 2>/tmp/tx2.err ||
    fail_with "second reeve run --net-tx in the same job exited $?" /tmp/tx2.out /tmp/tx2.err
reeve status >/tmp/status2.out 2>&1 || fail_with "reeve status exited $?" /tmp/status2.out
again=$(sed -n 's/.*net_tx passed=\([0-9]*\) dropped=.*/\1/p' /tmp/status2.out)
if ! { [ -n "$again" ] && [ "$again" -ge "$passed" ]; }; then
    fail_with "after a second run the counters read passed=$again, not >= $passed: the program was reloaded" /tmp/status2.out
fi
kill_group "$tx"
tx=

# Ingress limited to 2M: the receiver in a job group, policed.
reeve run --detach --job netrx --net-rx 2M -- /bin/netpump sink 9102 >/tmp/rx.out 2>/tmp/rx.err ||
    fail_with "reeve run --detach --net-rx exited $?" /tmp/rx.out /tmp/rx.err
rx=$(job_dir /tmp/rx.out) || fail_with "no cgroup= in reeve's output" /tmp/rx.out
wait_until 5000 grep -q listening /tmp/rx.err || fail_with "the policed receiver did not start" /tmp/rx.err
netpump send 9102 4 2>/tmp/rx.send || fail_with "sender to the policed receiver failed" /tmp/rx.send
wait_until 20000 grep -q '^bytes=' /tmp/rx.err || fail_with "the policed transfer did not end" /tmp/rx.err /tmp/rx.out
echo "net_rx 2M: $(grep '^bytes=' /tmp/rx.err)"
grep '^bytes=' /tmp/rx.err >/tmp/rx.line
policed=$(field /tmp/rx.line rate)
[ -n "$policed" ] || fail_with "no rate from the policed receiver" /tmp/rx.err
within 15 "$policed" "$LIMIT" ||
    fail "policed receiver got $policed B/s, not within 15% of $LIMIT"

pass "limit=$LIMIT limited=$limited unlimited=$free passed=$passed dropped=$dropped received=$bytes adopted_passed=$again policed_rx=$policed"
