#!/bin/sh
# selftest-guest.sh RESULTDIR [VMCHECK_TEST_BINARY]
#
# Runs INSIDE the test VM (started by selftest.sh through run.sh); refuses to
# run elsewhere. Works with dash + coreutils, but selftest.sh runs it with
# /bin/busybox sh, whose built-in applets avoid slow process starts under TCG. Checks the kernel features edged's VM tests rely on and prints
# one "PASS name" / "FAIL name: why" line per check:
#   cgroup2        cgroup2 alone at /sys/fs/cgroup, all controllers enabled
#   rootfs         / is read-only, /tmp and /run are writable tmpfs
#   share          RESULTDIR (a --share) is writable and seen by the host
#   overlay        overlayfs on tmpfs: copy-up, whiteout, lower untouched
#   runc-hello     runc runs a busybox container that prints hello from
#                  its own cgroup v2 cgroup with the configured memory.max
#   runc-oom       a runc container over its memory limit is OOM-killed and
#                  memory.events oom_kill goes 0 -> >=1 (container and parent)
#   modules        a module missing from the initramfs (veth) is autoloaded
#   go-test        a `go test -c` binary runs from the share and passes
# Writes the same lines to RESULTDIR/guest-results; exits 1 if a check failed.
set -u

[ "${EDGED_IN_VM:-}" = 1 ] || { echo "selftest-guest.sh: run me through hack/vm/run.sh" >&2; exit 2; }
res=${1:?usage: selftest-guest.sh RESULTDIR [VMCHECK_TEST_BINARY]}
vmcheck=${2:-}
failed=0
: >"$res/guest-results" || { echo "FAIL share: cannot write $res/guest-results"; exit 1; }

# Elapsed time from /proc/uptime: no process to start (slow under TCG).
cs() { read -r up _ </proc/uptime; up=${up%.*}${up#*.}; echo "${up#0}"; }
t=0
ms() { echo "$(( ($(cs) - t) * 10 ))ms"; }
pass() { echo "PASS $1 ($(ms))" | tee -a "$res/guest-results"; }
fail() { echo "FAIL $1: $2" | tee -a "$res/guest-results"; failed=1; }

# --- cgroup2 ---------------------------------------------------------------
check_cgroup2() {
	cg=/sys/fs/cgroup
	[ "$(stat -f -c %t $cg)" = 63677270 ] || { fail cgroup2 "$cg has fs magic $(stat -f -c %t $cg), not cgroup2's 63677270"; return; }
	v1=$(awk '$3 == "cgroup"' /proc/mounts)
	[ -z "$v1" ] || { fail cgroup2 "cgroup v1 hierarchies mounted: $v1"; return; }
	for c in cpuset cpu io memory hugetlb pids rdma misc; do
		grep -qw "$c" $cg/cgroup.controllers || { fail cgroup2 "controller $c missing from cgroup.controllers: $(cat $cg/cgroup.controllers)"; return; }
		grep -qw "$c" $cg/cgroup.subtree_control || { fail cgroup2 "controller $c not enabled in cgroup.subtree_control: $(cat $cg/cgroup.subtree_control)"; return; }
	done
	pass cgroup2
}

# --- read-only root, writable tmpfs -----------------------------------------
check_rootfs() {
	if touch /edged-selftest-ro 2>/dev/null; then
		rm -f /edged-selftest-ro
		fail rootfs "/ is writable"
		return
	fi
	for d in /tmp /run; do
		[ "$(stat -f -c %t $d)" = 1021994 ] || { fail rootfs "$d has fs magic $(stat -f -c %t $d), not tmpfs's 1021994"; return; }
		echo x >"$d/edged-selftest-w" && rm "$d/edged-selftest-w" || { fail rootfs "$d not writable"; return; }
	done
	pass rootfs
}

# --- writable share ---------------------------------------------------------
check_share() {
	echo "written-in-vm" >"$res/from-guest" || { fail share "cannot write $res/from-guest"; return; }
	[ "$(cat "$res/from-guest")" = written-in-vm ] || { fail share "read back differs"; return; }
	pass share
}

# --- overlayfs on tmpfs -----------------------------------------------------
check_overlay() {
	o=/tmp/edged-selftest-ovl
	mkdir -p $o/lower/dir $o/upper $o/work $o/merged
	echo lower >$o/lower/keep
	echo lower >$o/lower/change
	echo lower >$o/lower/gone
	if ! mount -t overlay overlay -o "lowerdir=$o/lower,upperdir=$o/upper,workdir=$o/work" $o/merged; then
		fail overlay "mount failed"
		return
	fi
	echo new >$o/merged/new
	echo changed >$o/merged/change
	rm $o/merged/gone
	got="$(cat $o/merged/keep $o/merged/change $o/merged/new | tr '\n' ' ')$(ls $o/merged | tr '\n' ' ')"
	umount $o/merged || { fail overlay "umount failed"; return; }
	[ "$got" = "lower changed new change dir keep new " ] || { fail overlay "merged view wrong: $got"; return; }
	[ "$(cat $o/upper/new $o/upper/change | tr '\n' ' ')" = "new changed " ] || { fail overlay "upper lacks copy-up/new file"; return; }
	[ -c $o/upper/gone ] && [ "$(stat -c %t:%T $o/upper/gone)" = 0:0 ] || { fail overlay "no whiteout for a deleted lower file"; return; }
	[ "$(cat $o/lower/change $o/lower/gone | tr '\n' ' ')" = "lower lower " ] || { fail overlay "lower layer was modified"; return; }
	rm -rf $o
	pass overlay
}

# --- runc -------------------------------------------------------------------
# mkbundle DIR ID MEMORY_LIMIT_BYTES ARGS_JSON: a busybox bundle whose cgroup
# is /edged-selftest/ID with a memory limit, in its own cgroup namespace.
mkbundle() {
	b=$1 id=$2 limit=$3 args=$4
	mkdir -p "$b/rootfs/bin" "$b/rootfs/proc" "$b/rootfs/sys" "$b/rootfs/dev" "$b/rootfs/tmp"
	cp /bin/busybox "$b/rootfs/bin/busybox"
	for a in sh echo cat tail stat sleep; do ln -s busybox "$b/rootfs/bin/$a"; done
	(cd "$b" && runc spec) || return 1
	sed -i \
		-e 's/"terminal": true/"terminal": false/' \
		-e "s|^\t\t\t\"sh\"\$|\t\t\t$args|" \
		-e "s|^\t\"linux\": {|\t\"linux\": {\n\t\t\"cgroupsPath\": \"/edged-selftest/$id\",|" \
		-e "s|^\t\t\"resources\": {|\t\t\"resources\": {\n\t\t\t\"memory\": {\"limit\": $limit},|" \
		"$b/config.json"
	# runc spec adds a cgroup namespace on cgroup v2 hosts; make sure.
	grep -q '"type": "cgroup"' "$b/config.json" ||
		sed -i "s|^\t\t\"namespaces\": \[|\t\t\"namespaces\": [\n\t\t\t{\"type\": \"cgroup\"},|" "$b/config.json"
	grep -q "/edged-selftest/$id" "$b/config.json" && grep -q "\"limit\": $limit" "$b/config.json" &&
		grep -q '"type": "cgroup"' "$b/config.json" || { echo "config.json edit failed" >&2; return 1; }
}

check_runc_hello() {
	command -v runc >/dev/null || { fail runc-hello "runc not installed (apt-get install runc)"; return; }
	b=/tmp/edged-selftest-runc/hello
	mkbundle $b hello 67108864 \
		'"sh", "-c", "echo hello; cat /proc/self/cgroup; stat -f -c %t /sys/fs/cgroup; cat /sys/fs/cgroup/memory.max"' ||
		{ fail runc-hello "cannot build the bundle"; return; }
	out=$(runc run --bundle $b edged-hello 2>&1) || { fail runc-hello "runc run failed: $out"; return; }
	# 0::/ = only a v2 entry (own cgroup namespace); 63677270 = CGROUP2_SUPER_MAGIC.
	want="hello
0::/
63677270
67108864"
	[ "$out" = "$want" ] || { fail runc-hello "unexpected output: $(echo "$out" | tr '\n' '|')"; return; }
	[ ! -e /sys/fs/cgroup/edged-selftest/hello ] || { fail runc-hello "cgroup left behind after runc run"; return; }
	pass runc-hello
}

oom_kills() { awk '$1 == "oom_kill" {print $2}' "$1/memory.events"; }

check_runc_oom() {
	command -v runc >/dev/null || { fail runc-oom "runc not installed (apt-get install runc)"; return; }
	b=/tmp/edged-selftest-runc/oom
	cg=/sys/fs/cgroup/edged-selftest/oom
	# tail buffers its whole input when there is no newline: it grows until killed.
	mkbundle $b oom 33554432 '"tail", "/dev/zero"' || { fail runc-oom "cannot build the bundle"; return; }
	runc create --bundle $b edged-oom >/tmp/edged-selftest-runc/oom.out 2>&1 ||
		{ fail runc-oom "runc create failed: $(cat /tmp/edged-selftest-runc/oom.out)"; return; }
	before=$(oom_kills $cg)
	[ "$before" = 0 ] || { fail runc-oom "oom_kill is '$before' before start"; runc delete -f edged-oom; return; }
	[ "$(cat $cg/memory.max)" = 33554432 ] || { fail runc-oom "memory.max is $(cat $cg/memory.max)"; runc delete -f edged-oom; return; }
	runc start edged-oom || { fail runc-oom "runc start failed"; runc delete -f edged-oom; return; }
	i=0
	while ! runc state edged-oom | grep -q '"status": "stopped"'; do
		i=$((i + 1))
		[ $i -le 600 ] || { fail runc-oom "container still running after 60s"; runc delete -f edged-oom; return; }
		sleep 0.1
	done
	after=$(oom_kills $cg)
	parent=$(oom_kills /sys/fs/cgroup/edged-selftest)
	runc delete edged-oom || { fail runc-oom "runc delete failed"; return; }
	[ "${after:-0}" -ge 1 ] || { fail runc-oom "oom_kill in $cg is '$after' after the container stopped"; return; }
	[ "${parent:-0}" -ge 1 ] || { fail runc-oom "oom_kill of the parent cgroup is '$parent' (not hierarchical?)"; return; }
	[ ! -e $cg ] || { fail runc-oom "cgroup left behind after runc delete"; return; }
	pass runc-oom
}

# --- module autoloading from the host's /lib/modules -----------------------
check_modules() {
	ip link add edged-st0 type veth 2>/tmp/edged-selftest-ip.err ||
		{ fail modules "creating a veth pair (autoloads veth) failed: $(cat /tmp/edged-selftest-ip.err)"; return; }
	ip link del edged-st0 || { fail modules "deleting the veth pair failed"; return; }
	pass modules
}

# --- go test -c binary ------------------------------------------------------
check_go_test() {
	[ -n "$vmcheck" ] || { fail go-test "no vmcheck test binary given"; return; }
	out=$("$vmcheck" -test.v 2>&1)
	rc=$?
	[ $rc -eq 0 ] || { fail go-test "exit $rc: $out"; return; }
	echo "$out" | grep -q -- '--- PASS: TestCgroup2' || { fail go-test "TestCgroup2 did not pass: $out"; return; }
	echo "$out" | grep -q -- '--- SKIP' && { fail go-test "a test was skipped in the VM: $out"; return; }
	pass go-test
}

for c in cgroup2 rootfs share overlay runc_hello runc_oom modules go_test; do
	t=$(cs)
	check_$c
done
rmdir /sys/fs/cgroup/edged-selftest 2>/dev/null
rm -rf /tmp/edged-selftest-runc
exit $failed
