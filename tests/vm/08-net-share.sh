#!/bin/sh
# A pool's net_tx is the pool's aggregate: two senders in one pool limited
# to 2M move 2 MiB/s together (within 15%). reeve detach of a limited job in
# the middle of a transfer frees that transfer: the programs go with the
# group, so the same connection then runs at full speed.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /scenarios/lib.sh

LIMIT=2097152
pool=$REEVE_ROOT/pool.netpool
det=
sinkpid=
sink2=
trap 'stop "$sinkpid" "$sink2"; kill_group "$det"; drop_pool' EXIT

# drop_pool: kill what is left in the test's pool group and remove it.
drop_pool() {
    [ -d "$pool" ] || return 0
    echo 1 >"$pool/cgroup.kill" 2>/dev/null
    wait_until 5000 is_empty "$pool"
    rmdir "$pool" 2>/dev/null
    return 0
}

ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up ||
    fail "cannot bring the loopback interface up"

# Two senders in one pool: the first sets the budget, the second joins
# without limits and so keeps it.
start_sink 9201 /tmp/p1.sink
p1=$sinkpid
start_sink 9202 /tmp/p2.sink
sink2=$sinkpid
sinkpid=$p1
reeve run --detach --pool netpool --net-tx 2M -- /bin/netpump send 9201 4 >/tmp/p1.out 2>/tmp/p1.err ||
    fail_with "reeve run --pool --net-tx exited $?" /tmp/p1.out /tmp/p1.err
reeve run --detach --pool netpool -- /bin/netpump send 9202 4 >/tmp/p2.out 2>/tmp/p2.err ||
    fail_with "second reeve run --pool exited $?" /tmp/p2.out /tmp/p2.err
finish_sink /tmp/p1.sink 20
b1=$sink_bytes
first1=$(field /tmp/p1.sink first)
last1=$(field /tmp/p1.sink last)
sinkpid=$sink2
sink2=
finish_sink /tmp/p2.sink 20
b2=$sink_bytes
first2=$(field /tmp/p2.sink first)
last2=$(field /tmp/p2.sink last)
echo "pool sender 1: $(grep bytes= /tmp/p1.sink)"
echo "pool sender 2: $(grep bytes= /tmp/p2.sink)"
# From the first byte either receiver got to the last.
first=$first1
[ "$first2" -lt "$first" ] && first=$first2
last=$last1
[ "$last2" -gt "$last" ] && last=$last2
span=$((last - first))
together=$(((b1 + b2) * 1000 / span))
within 15 "$together" "$LIMIT" ||
    fail "the pool's two senders moved $together B/s together, not within 15% of $LIMIT"
if ! { [ "$b1" -gt 0 ] && [ "$b2" -gt 0 ]; }; then
    fail "a pool sender moved nothing ($b1, $b2)"
fi
drop_pool

# Detach in the middle of a limited transfer.
start_sink 9203 /tmp/det.sink
reeve run --detach --job netdet --net-tx 2M -- /bin/netpump send 9203 4 >/tmp/det.out 2>/tmp/det.err ||
    fail_with "reeve run --net-tx exited $?" /tmp/det.out /tmp/det.err
det=$(job_dir /tmp/det.out) || fail_with "no cgroup= in reeve's output" /tmp/det.out
sleep 1
timeout -k 5 10 reeve detach --job netdet >/tmp/detach.out 2>/tmp/detach.err ||
    fail_with "reeve detach exited $?" /tmp/detach.out /tmp/detach.err
cat /tmp/detach.out
[ ! -d "$det" ] || fail_with "the detached job's group $det is still there" /tmp/detach.out
det=
finish_sink /tmp/det.sink 20
echo "detached after 1 s: $(grep bytes= /tmp/det.sink)"
[ "$sink_rate" -ge $((LIMIT * 10)) ] ||
    fail "after detach the transfer moved $sink_rate B/s overall, not 10x the limit $LIMIT"

pass "limit=$LIMIT pool_together=$together pool_bytes=$b1+$b2 detached_rate=$sink_rate"
