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
run version
run namespaces create demo --label owner=readme
run namespaces ls
run namespaces label demo owner=ops
run -n demo containers ls
run namespaces rm demo

echo "== stopping edged"
kill -TERM $pid
wait $pid
trap - EXIT
echo "== done"
