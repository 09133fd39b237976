#!/usr/bin/env bash
# The main job of edged, end to end, on the embedded defaults: start the
# daemon (root /var/lib/edged, state /run/edged, socket
# /run/edged/edged.sock), talk to it with edgectl, stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (edged manages mounts and cgroups)"; exit 1; }
bin=$PWD/bin
sock=/run/edged/edged.sock
log=$(mktemp /tmp/edged-demo.XXXXXX.log)

echo "== starting edged with its embedded defaults (log: $log)"
"$bin/edged" >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
	[ -S "$sock" ] && "$bin/edgectl" version >/dev/null 2>&1 && break
	kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
	sleep 0.05
done

run() { echo "\$ edgectl $*"; "$bin/edgectl" "$@"; }
image=docker.io/library/busybox:edged-demo
tar=$(mktemp /tmp/edged-demo-image.XXXXXX.tar)
echo "== building a busybox image from Debian's busybox-static ($tar)"
go run ./hack/mkimage -o "$tar" -name "$image"

run version
run namespaces create demo --label owner=readme
run namespaces ls
run -n demo images import "$tar"
run -n demo images ls
run -n demo run --rm "$image" hello sh -c 'echo "hello from a container on $(hostname), running as $(id -u)"; uname -a'
run -n demo run -d "$image" ticker sh -c 'for i in 1 2 3; do echo tick $i; sleep 0.2; done; sleep 30'
sleep 1
run -n demo task ls
run -n demo logs ticker
run -n demo task rm -f ticker
run -n demo containers rm ticker
run -n demo images rm "$image"
run namespaces rm demo
rm -f "$tar"

echo "== stopping edged"
kill -TERM $pid
wait $pid
trap - EXIT
echo "== done"
