#!/bin/bash
# selftest.sh — end-to-end check of the edged test VM (hack/vm/run.sh).
#
# Usage: hack/vm/selftest.sh        (as root, from anywhere; ~20–40 s)
#
# Boots the VM four times and prints one "PASS name" / "FAIL name: why" line
# per check, exiting 1 if any failed:
#   exit-0, exit-7             the command's exit status comes out of run.sh
#   output                     the command's stdout reaches ours, with no "\r"
#   timeout                    --timeout kills a hung VM and run.sh exits 124
#   bad-option                 a bad option fails with 125 and a message
#   cgroup2 rootfs share overlay runc-hello runc-oom modules go-test
#                              the in-VM checks of selftest-guest.sh (one boot),
#                              including a `go test -c` binary of ./vmcheck run
#                              from a --share directory
#   share-host                 a file the VM wrote to the share is on the host
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
run=$here/run.sh
failed=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failed=1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1fs", b - a}'; }

t0=$(now)
work=$(mktemp -d /tmp/edged-vmselftest.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Build the Go test binary first, so its errors show before any VM boots.
export PATH=$PATH:/usr/local/go/bin
if ! (cd "$root" && GOFLAGS=${GOFLAGS:--mod=mod} go test -c -o "$work/vmcheck.test" ./hack/vm/vmcheck) >"$work/build.log" 2>&1; then
	fail go-build "$(cat "$work/build.log")"
	exit 1
fi

# 1. exit status and output.
t=$(now)
out=$("$run" --timeout 120 -- sh -c 'echo out-line; echo err-line >&2' 2>&1)
rc=$?
[ $rc -eq 0 ] && pass "exit-0 ($(since "$t") incl. boot)" || fail exit-0 "rc=$rc output: $out"
want=$'out-line\nerr-line\nEDGED-VM-EXIT=0'
[ "$out" = "$want" ] && pass output || fail output "got $(printf '%q' "$out")"

t=$(now)
out=$("$run" --timeout 120 -- sh -c 'exit 7' 2>&1)
rc=$?
[ $rc -eq 7 ] && pass "exit-7 ($(since "$t"))" || fail exit-7 "rc=$rc output: $out"

# 2. the hard timeout.
t=$(now)
out=$("$run" --timeout 4 -- sleep 600 2>&1)
rc=$?
if [ $rc -eq 124 ] && grep -q 'TIMEOUT' <<<"$out"; then
	pass "timeout ($(since "$t"))"
else
	fail timeout "rc=$rc output: $out"
fi

out=$("$run" --mem lots -- true 2>&1)
rc=$?
[ $rc -eq 125 ] && grep -q -- '--mem lots' <<<"$out" && pass bad-option || fail bad-option "rc=$rc output: $out"

# 3. kernel features, runc, overlayfs, OOM and the Go test binary: one boot.
t=$(now)
"$run" --timeout 300 --share "$work" -- /bin/busybox sh "$here/selftest-guest.sh" "$work" "$work/vmcheck.test" >"$work/guest.log" 2>&1
rc=$?
grep -E '^(PASS|FAIL) ' "$work/guest.log"
if [ $rc -ne 0 ]; then
	fail guest "in-VM checks exited $rc ($(since "$t")); log:"
	sed 's/^/    /' "$work/guest.log"
else
	n=$(grep -c '^PASS ' "$work/guest.log")
	[ "$n" -eq 8 ] && pass "guest ($n checks, $(since "$t") incl. boot)" || fail guest "only $n of 8 checks passed"
fi
[ "$(cat "$work/from-guest" 2>/dev/null)" = written-in-vm ] && pass share-host || fail share-host "file written in the VM not found in $work"

echo "selftest total $(since "$t0")"
exit $failed
