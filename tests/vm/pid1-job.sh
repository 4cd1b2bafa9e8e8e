#!/bin/sh
# The `check` job of the PID-1 boot (see tests/vm/pid1-init.sh). Its own
# children double-fork, so three sleepers are reparented to PID 1 (reeve)
# and end there; once they have, no zombie may remain. Then it asks PID 1
# to stop, and waits for reeve to forward the stop.
for _ in 1 2 3; do
    (sleep 0.5 &)
done
sleep 3
zombies=0
for stat in /proc/[0-9]*/stat; do
    # The state is the first field after the last ')'.
    state=$(sed 's/.*) //' "$stat" 2>/dev/null | cut -d' ' -f1)
    [ "$state" = Z ] && zombies=$((zombies + 1))
done
echo "VMTEST PID1 CHECK zombies=$zombies"
kill -TERM 1
exec sleep 300
