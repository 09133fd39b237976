#!/bin/bash
# mkinitramfs.sh KVER OUT — build the tiny initramfs of the edged test VM.
#
# Contents: a static busybox (/bin/busybox, Debian busybox-static), init.sh as
# /init, and the kernel modules needed to mount the host over virtio-9p plus
# overlayfs, taken from /lib/modules/KVER with their dependencies (modules.dep)
# in load order (/modules.order). Compressed modules (.ko.xz/.ko.zst/.ko.gz) are
# decompressed because busybox insmod loads plain ELF only. The archive is an
# uncompressed newc cpio (no decompression cost under TCG), written atomically
# to OUT.
#
# Normally called by run.sh, which caches OUT per kernel version and init.sh.
set -euo pipefail

MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
	9pnet 9pnet_virtio netfs fscache 9p overlay)

die() { echo "mkinitramfs: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 KVER OUT"
kver=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
moddir=/lib/modules/$kver
busybox=${EDGED_VM_BUSYBOX:-/bin/busybox}

[ -f "$moddir/modules.dep" ] || die "$moddir/modules.dep missing (apt-get install linux-image-amd64)"
[ -x "$busybox" ] || die "$busybox missing (apt-get install busybox-static)"
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || ldd "$busybox" 2>&1 | grep -q 'not a dynamic' ||
	die "$busybox is not statically linked (apt-get install busybox-static)"
command -v cpio >/dev/null || die "cpio missing (apt-get install cpio)"

work=$(mktemp -d "${out%/*}/.mkinitramfs.XXXXXX")
trap 'rm -rf "$work" "$work.cpio"' EXIT
mkdir -p "$work"/{bin,dev,proc,sys,modules,host,job}
cp "$busybox" "$work/bin/busybox"
ln -s busybox "$work/bin/sh"
cp "$here/init.sh" "$work/init"
chmod 755 "$work/init"

# Resolve the modules and their dependencies from modules.dep, deps first.
declare -A dep_of=() path_of=() seen=()
while IFS= read -r line; do
	mod=${line%%:*}
	name=${mod##*/}
	name=${name%%.ko*}
	name=${name//-/_}
	path_of[$name]=$mod
	dep_of[$name]=${line#*:}
done <"$moddir/modules.dep"

order=()
add() {
	local name=${1//-/_} d dn
	[ -n "${seen[$name]:-}" ] && return
	seen[$name]=1
	if [ -z "${path_of[$name]:-}" ]; then
		grep -q "/$name.ko" "$moddir/modules.builtin" 2>/dev/null && return
		die "module $name not found in $moddir"
	fi
	for d in ${dep_of[$name]}; do
		dn=${d##*/}
		add "${dn%%.ko*}"
	done
	order+=("$name")
}
for m in "${MODULES[@]}"; do add "$m"; done

: >"$work/modules.order"
for name in "${order[@]}"; do
	src=$moddir/${path_of[$name]}
	dst=$work/modules/$name.ko
	case $src in
	*.ko) cp "$src" "$dst" ;;
	*.ko.xz) xz -dc "$src" >"$dst" ;;
	*.ko.zst) zstd -dcq "$src" >"$dst" ;;
	*.ko.gz) gzip -dc "$src" >"$dst" ;;
	*) die "unknown module format: $src" ;;
	esac
	echo "$name.ko" >>"$work/modules.order"
done

(cd "$work" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$work.cpio"
mv -f "$work.cpio" "$out"
