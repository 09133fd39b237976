#!/bin/sh
# PID 1 of the edged test VM (runs from the initramfs built by mkinitramfs.sh,
# interpreted by busybox sh). Not meant to be run on a host.
#
# 1. loads the virtio/9p/overlay modules listed in /modules.order,
# 2. mounts the host's / (virtfs tag "host", read-only) at /host and the job
#    directory (tag "edgedjob", read-write) at /job,
# 3. prepares /host for a chroot: proc, sysfs, cgroup2 (all controllers enabled
#    in the root's cgroup.subtree_control), devtmpfs, devpts, /dev/shm, mqueue,
#    tmpfs on /tmp, /var/tmp and /run, plus the shares listed in /job/config,
# 4. runs /job/cmd.sh in the chroot, writes its exit status to /job/exit,
#    prints "EDGED-VM-EXIT=<code>" and powers the VM off.
# Its own output and the command's go to ttyS0; the kernel console is ttyS1.
#
# /job/config is a shell fragment written by run.sh that sets:
#   EDGED_VM_SHARES  newline-separated "<mount_tag> <ro|rw> <absolute path>"

export PATH=/bin
/bin/busybox --install -s /bin

die() {
	echo "EDGED-VM-ERROR: $*"
	echo "$*" >/job/error 2>/dev/null
	echo "EDGED-VM-EXIT=125"
	sync
	poweroff -f
	reboot -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The kernel logs to ttyS1 (a file on the host); our output and the
# command's go to ttyS0, the host's stdout, without "\n" -> "\r\n".
exec </dev/null >/dev/ttyS0 2>&1
stty -onlcr </dev/ttyS0

while read -r ko; do
	[ -n "$ko" ] || continue
	insmod "/modules/$ko" || die "insmod $ko failed"
done </modules.order

P9OPTS=trans=virtio,version=9p2000.L,msize=524288
mkdir -p /host /job
mount -t 9p -o "$P9OPTS,ro,cache=loose" host /host || die "cannot mount the host root (virtfs tag host)"
mount -t 9p -o "$P9OPTS,cache=mmap" edgedjob /job || die "cannot mount the job directory (virtfs tag edgedjob)"
[ -r /job/config ] && [ -r /job/cmd.sh ] || die "job directory has no config or cmd.sh"
. /job/config

# Let the kernel autoload further modules (veth, bridge, ...) from the host's
# /lib/modules with the host's modprobe.
printf '#!/bin/sh\nexec chroot /host /sbin/modprobe "$@"\n' >/bin/modprobe-host
chmod 755 /bin/modprobe-host
echo /bin/modprobe-host >/proc/sys/kernel/modprobe

R=/host
mount -t proc proc $R/proc || die "mount proc"
mount -t sysfs sysfs $R/sys || die "mount sysfs"
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $R/sys/fs/cgroup || die "mount cgroup2"
ctrls=""
for c in $(cat $R/sys/fs/cgroup/cgroup.controllers); do ctrls="$ctrls +$c"; done
echo "$ctrls" >$R/sys/fs/cgroup/cgroup.subtree_control || die "cannot enable controllers:$ctrls"
mount -t devtmpfs devtmpfs $R/dev || die "mount devtmpfs"
mkdir -p $R/dev/pts $R/dev/shm $R/dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts $R/dev/pts || die "mount devpts"
mount -t tmpfs -o mode=1777,nosuid,nodev shm $R/dev/shm || die "mount /dev/shm"
mount -t mqueue mqueue $R/dev/mqueue || die "mount mqueue"
mount -t tmpfs -o mode=1777 tmpfs $R/tmp || die "mount /tmp"
mount -t tmpfs -o mode=0755 tmpfs $R/run || die "mount /run"
[ -d $R/var/tmp ] && { mount -t tmpfs -o mode=1777 tmpfs $R/var/tmp || die "mount /var/tmp"; }

while read -r tag mode path; do
	[ -n "$tag" ] || continue
	mkdir -p "$R$path" 2>/dev/null
	o="$P9OPTS,cache=mmap"
	[ "$mode" = ro ] && o="$o,ro"
	mount -t 9p -o "$o" "$tag" "$R$path" || die "cannot mount share $path (tag $tag)"
done <<EOF
$EDGED_VM_SHARES
EOF

hostname edged-vm
ip link set lo up 2>/dev/null

cp /job/cmd.sh $R/run/edged-vm-cmd.sh || die "cannot copy the command"
chroot $R /bin/sh /run/edged-vm-cmd.sh </dev/null
rc=$?
echo "$rc" >/job/exit
sync
echo "EDGED-VM-EXIT=$rc"
poweroff -f
reboot -f
