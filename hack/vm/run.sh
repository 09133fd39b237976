#!/bin/bash
# run.sh — run a command inside a throw-away QEMU VM with a real cgroup v2 kernel.
#
# Usage:
#   hack/vm/run.sh [OPTIONS] -- CMD [ARGS...]
#
# The VM boots the host's Debian kernel (/boot/vmlinuz-*) under TCG (no KVM)
# with a tiny busybox initramfs, mounts the host's / READ-ONLY over virtio-9p
# and chroots into it, so CMD sees the host's files and binaries (runc, the Go
# test binary, ...). Inside the chroot:
#   - cgroup2 only, at /sys/fs/cgroup, every controller enabled in the root's
#     cgroup.subtree_control (cpuset cpu io memory hugetlb pids rdma misc);
#   - proc, sysfs, devtmpfs /dev, devpts /dev/pts, tmpfs /dev/shm, mqueue;
#   - WRITABLE only: tmpfs on /tmp, /var/tmp and /run (empty at start), plus
#     the --share directories. Put scratch data (bundles, overlay upper/work
#     dirs, SQLite files) under /tmp: overlayfs works there, not on 9p;
#   - the loopback interface is up, there is no other network;
#   - modules missing from the initramfs (veth, bridge, ...) are auto-loaded
#     from the host's /lib/modules.
# CMD runs as root with stdin /dev/null and this environment:
#   PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
#   HOME=/tmp TMPDIR=/tmp EDGED_IN_VM=1 LANG=C.UTF-8, plus the --env values.
# Its stdout and stderr stream to this script's stdout (the VM's first serial
# port); kernel messages go to a second serial port, see EDGED_VM_KLOG.
#
# Options:
#   --mem MB        guest RAM in MiB (default 2048; env EDGED_VM_MEM)
#   --cpus N        vCPUs (default 2; env EDGED_VM_CPUS)
#   --timeout SECS  hard limit for the whole run including boot; qemu is
#                   killed when it expires (default 600; env EDGED_VM_TIMEOUT)
#   --share DIR     make host directory DIR visible READ-WRITE at the same path
#                   in the VM (repeatable). Use it for `go test -c` binaries
#                   and for results the host must read, e.g. under /tmp.
#   --share-ro DIR  the same, read-only
#   --env NAME=VAL  set an environment variable for CMD (repeatable)
#   --cwd DIR       working directory of CMD (default: the current directory
#                   when it is visible in the VM, else /)
#
# Exit status: CMD's exit status; 124 when the timeout expired; 125 when the
# VM could not be started or set up (message on stderr / "EDGED-VM-ERROR:" on
# stdout). The last console line of a completed run is "EDGED-VM-EXIT=<code>".
#
# Environment:
#   EDGED_VM_KERNEL  kernel image named vmlinuz-<version> (default: the newest
#                    /boot/vmlinuz-*); its modules must be in /lib/modules/<version>
#   EDGED_VM_CACHE   cache directory for the initramfs and per-run job dirs
#                    (default ${TMPDIR:-/tmp}/edged-vm); the initramfs is
#                    rebuilt when the kernel version or the scripts change
#   EDGED_VM_QEMU    qemu binary (default qemu-system-x86_64)
#   EDGED_VM_CPU     qemu -cpu model (default max)
#   EDGED_VM_APPEND  extra kernel command line arguments
#   EDGED_VM_ACCEL   qemu accelerator (default tcg; KVM hung on the dev host)
#   EDGED_VM_KLOG    copy the VM's kernel log (console, level <= notice) to
#                    this file; on a timeout or VM failure its last 40 lines
#                    are printed to stderr anyway
#
# Example (what `make test-vm` does):
#   go test -c -o /tmp/edged-vmtest/cgroups.test ./cgroups
#   hack/vm/run.sh --share /tmp/edged-vmtest -- /tmp/edged-vmtest/cgroups.test -test.v
#
# Requires (Debian): qemu-system-x86 linux-image-amd64 busybox-static cpio kmod
# xz-utils (to unpack the kernel image and compressed modules), runc for tests
# that start containers.
set -uo pipefail

prog=edged-vm
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

fail() { echo "$prog: $*" >&2; exit 125; }
need() { [ $# -ge 2 ] || fail "$1 needs a value"; }
usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; exit 125; }

mem=${EDGED_VM_MEM:-2048}
cpus=${EDGED_VM_CPUS:-2}
tmo=${EDGED_VM_TIMEOUT:-600}
cwd=
shares=() share_modes=() envs=()

while [ $# -gt 0 ]; do
	case $1 in
	--mem) need "$@"; mem=$2; shift 2 ;;
	--cpus) need "$@"; cpus=$2; shift 2 ;;
	--timeout) need "$@"; tmo=$2; shift 2 ;;
	--share | --share-ro)
		need "$@"
		[ -d "$2" ] || fail "$1 $2: not a directory"
		shares+=("$(realpath "$2")")
		if [ "$1" = --share ]; then share_modes+=(rw); else share_modes+=(ro); fi
		shift 2 ;;
	--env)
		need "$@"
		[[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || fail "--env $2: want NAME=VALUE"
		envs+=("$2"); shift 2 ;;
	--cwd) need "$@"; cwd=$2; shift 2 ;;
	-h | --help) usage ;;
	--) shift; break ;;
	*) echo "$prog: unknown option $1" >&2; usage ;;
	esac
done
[ $# -gt 0 ] || { echo "$prog: no command given" >&2; usage; }
[[ $mem =~ ^[0-9]+$ ]] && [ "$mem" -ge 128 ] || fail "--mem $mem: want MiB >= 128"
[[ $cpus =~ ^[0-9]+$ ]] && [ "$cpus" -ge 1 ] || fail "--cpus $cpus: want a positive number"
[[ $tmo =~ ^[0-9]+$ ]] && [ "$tmo" -ge 1 ] || fail "--timeout $tmo: want seconds >= 1"

qemu=${EDGED_VM_QEMU:-qemu-system-x86_64}
command -v "$qemu" >/dev/null || fail "$qemu not found (apt-get install qemu-system-x86)"

kernel=${EDGED_VM_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n1)}
[ -n "$kernel" ] && [ -r "$kernel" ] || fail "no kernel in /boot (apt-get install linux-image-amd64)"
kver=${kernel##*/vmlinuz-}
[ -d "/lib/modules/$kver" ] || fail "/lib/modules/$kver missing for $kernel"

cache=${EDGED_VM_CACHE:-${TMPDIR:-/tmp}/edged-vm}
mkdir -p "$cache" || fail "cannot create $cache"
cache=$(realpath "$cache")

# elf_complete FILE: FILE is a 64-bit ELF whose section headers (at its end)
# are all there, i.e. the decompression was not cut short.
elf_complete() {
	local magic shoff shentsize shnum
	magic=$(od -An -tx1 -N4 "$1" | tr -d ' \n')
	[ "$magic" = 7f454c46 ] || return 1
	shoff=$(od -An -tu8 -j40 -N8 "$1" | tr -d ' ')
	shentsize=$(od -An -tu2 -j58 -N2 "$1" | tr -d ' ')
	shnum=$(od -An -tu2 -j60 -N2 "$1" | tr -d ' ')
	[ $((shoff + shentsize * shnum)) -le "$(stat -c %s "$1")" ] && [ "$shnum" -gt 0 ]
}

# Boot an uncompressed vmlinux through its PVH entry when the kernel has one:
# decompressing the bzImage under TCG costs ~3 s per boot.
boot_kernel=$kernel
if grep -qx 'CONFIG_PVH=y' "/boot/config-$kver" 2>/dev/null; then
	kkey=$(stat -L -c '%s-%Y' "$kernel")
	vmlinux=$cache/vmlinux-$kver-$kkey
	if [ ! -s "$vmlinux" ]; then
		tmpk=$(mktemp "$cache/.vmlinux.XXXXXX") || fail "cannot write to $cache"
		for fmt in xz:'\xfd7zXZ\x00' zstd:'\x28\xb5\x2f\xfd' gzip:'\x1f\x8b\x08\x00'; do
			off=$(LC_ALL=C grep -obUaP "${fmt#*:}" "$kernel" 2>/dev/null | head -n1 | cut -d: -f1)
			[ -n "$off" ] || continue
			# The payload is followed by other data: ignore the trailing-garbage error.
			tail -c +$((off + 1)) "$kernel" | "${fmt%%:*}" -dc >"$tmpk" 2>/dev/null
			elf_complete "$tmpk" && break
			: >"$tmpk"
		done
		if [ -s "$tmpk" ]; then
			mv -f "$tmpk" "$vmlinux"
			find "$cache" -maxdepth 1 -name "vmlinux-$kver-*" ! -name "${vmlinux##*/}" -delete 2>/dev/null
		else
			rm -f "$tmpk"
		fi
	fi
	[ -s "$vmlinux" ] && boot_kernel=$vmlinux
fi

# The initramfs depends on the kernel version, the scripts and busybox.
key=$( { cat "$here/init.sh" "$here/mkinitramfs.sh"; stat -L -c '%s %Y' /bin/busybox; } | sha256sum | cut -c1-16)
initrd=$cache/initramfs-$kver-$key.cpio
if [ ! -s "$initrd" ]; then
	"$here/mkinitramfs.sh" "$kver" "$initrd" || fail "building the initramfs failed"
	# Drop initramfs images of older script versions, and job directories
	# left by runs that were killed.
	find "$cache" -maxdepth 1 -name "initramfs-$kver-*.cpio" ! -name "${initrd##*/}" -mmin +60 -delete 2>/dev/null
	find "$cache" -maxdepth 1 -name 'job.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null
fi

# A virtfs path may not contain a newline; commas are escaped by doubling.
vpath() {
	[[ $1 != *$'\n'* ]] || fail "path with a newline: $1"
	printf '%s' "${1//,/,,}"
}
# Quote for /bin/sh.
q() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }

job=$(mktemp -d "$cache/job.XXXXXX") || fail "cannot create a job directory in $cache"
trap 'rm -rf "$job"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

virtfs=(-virtfs "local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap"
	-virtfs "local,path=$(vpath "$job"),mount_tag=edgedjob,security_model=passthrough,multidevs=remap")
share_cfg=
for i in "${!shares[@]}"; do
	ro=
	[ "${share_modes[$i]}" = ro ] && ro=,readonly=on
	virtfs+=(-virtfs "local,path=$(vpath "${shares[$i]}"),mount_tag=share$i,security_model=passthrough,multidevs=remap$ro")
	share_cfg+="share$i ${share_modes[$i]} ${shares[$i]}"$'\n'
done
printf 'EDGED_VM_SHARES=%s\n' "$(q "$share_cfg")" >"$job/config"

# Is a path visible in the VM? Everything is, except what the tmpfs mounts
# hide and that no share brings back.
visible() {
	local p=$1 s
	for s in "${shares[@]}"; do
		[[ $p == "$s" || $p == "$s"/* ]] && return 0
	done
	case $p in
	/tmp | /tmp/* | /run | /run/* | /var/tmp | /var/tmp/* | /proc* | /sys* | /dev*) return 1 ;;
	esac
	return 0
}
if [ -z "$cwd" ]; then
	cwd=$PWD
	visible "$cwd" || cwd=/
fi

{
	echo "cd $(q "$cwd") || exit 125"
	echo "export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	echo "export HOME=/tmp TMPDIR=/tmp EDGED_IN_VM=1 LANG=C.UTF-8"
	for e in "${envs[@]}"; do echo "export $(q "$e")"; done
	printf 'exec'
	for a in "$@"; do printf ' %s' "$(q "$a")"; done
	echo
} >"$job/cmd.sh"

append="console=ttyS1 loglevel=5 panic=-1 rdinit=/init cgroup_no_v1=all mitigations=off ${EDGED_VM_APPEND:-}"

start=$(date +%s.%N)
timeout --foreground -k 10 "$tmo" "$qemu" \
	-nodefaults -no-user-config -no-reboot -display none \
	-accel "${EDGED_VM_ACCEL:-tcg}" -cpu "${EDGED_VM_CPU:-max}" -smp "$cpus" -m "$mem" \
	-chardev stdio,id=con,signal=on -serial chardev:con \
	-chardev file,id=klog,path="$(vpath "$job/kernel.log")" -serial chardev:klog \
	-nic none \
	-kernel "$boot_kernel" -initrd "$initrd" -append "$append" \
	"${virtfs[@]}" </dev/null
qrc=$?
elapsed=$(echo "$start $(date +%s.%N)" | awk '{printf "%.1f", $2 - $1}')

[ -n "${EDGED_VM_KLOG:-}" ] && cp "$job/kernel.log" "$EDGED_VM_KLOG" 2>/dev/null
klog_tail() {
	[ -s "$job/kernel.log" ] || return 0
	echo "$prog: last kernel messages:" >&2
	tail -n 40 "$job/kernel.log" >&2 2>/dev/null
}
if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
	klog_tail
	echo "$prog: TIMEOUT: the VM was killed after ${tmo}s (--timeout)" >&2
	exit 124
fi
if [ -s "$job/error" ]; then
	klog_tail
	echo "$prog: VM setup failed: $(cat "$job/error")" >&2
	exit 125
fi
if [ ! -s "$job/exit" ]; then
	klog_tail
	echo "$prog: the VM stopped without reporting an exit status (qemu exit $qrc, ${elapsed}s)" >&2
	exit 125
fi
rc=$(cat "$job/exit")
[[ $rc =~ ^[0-9]+$ ]] || fail "bad exit status from the VM: $rc"
[ -n "${EDGED_VM_VERBOSE:-}" ] && echo "$prog: exit $rc after ${elapsed}s" >&2
exit "$rc"
