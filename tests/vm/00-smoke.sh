#!/bin/sh
# The VM itself: reeve runs, and the kernel offers the cgroup v2 controllers
# the other scenarios need.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /scenarios/lib.sh

version=$(reeve --version 2>&1) || fail "reeve --version exited $?: $version"
case $version in
"reeve "*) ;;
*) fail "reeve --version printed '$version'" ;;
esac

controllers=$(cat "$CG/cgroup.controllers")
for c in cpu memory pids io cpuset; do
    case " $controllers " in
    *" $c "*) ;;
    *) fail "controller $c missing from $CG/cgroup.controllers ($controllers)" ;;
    esac
done

pass "kernel=$(uname -r) version=${version#reeve } controllers=\"$controllers\""
