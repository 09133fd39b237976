package oci

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultPath is the PATH given to a process whose image and options set none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// DefaultCgroupParent is the cgroup directory under which Generate places
// containers when no WithCgroupsPath option is given: "/edged/<ns>/<id>".
const DefaultCgroupParent = "/edged"

// The default resource limits, matching containerd's.
const (
	// DefaultNofile is the soft and hard RLIMIT_NOFILE of a container process.
	DefaultNofile = 1024
	// MinMemoryLimit is the smallest memory limit WithMemoryLimit accepts.
	MinMemoryLimit = 4 << 20
	// cpuPeriod is the CFS period used for WithCPUs, in microseconds.
	cpuPeriod = 100000
	// maxCPUs bounds WithCPUs to a sane number.
	maxCPUs = 1024
	// maxHostname is the kernel's HOST_NAME_MAX.
	maxHostname = 64
)

// numCaps is the number of capabilities knownCaps lists.
const numCaps = 41

// knownCaps lists every capability up to CAP_CHECKPOINT_RESTORE, indexed by
// capability number. It returns an array (a value) so nobody can change it.
func knownCaps() [numCaps]string {
	return [numCaps]string{
		"CAP_CHOWN",
		"CAP_DAC_OVERRIDE",
		"CAP_DAC_READ_SEARCH",
		"CAP_FOWNER",
		"CAP_FSETID",
		"CAP_KILL",
		"CAP_SETGID",
		"CAP_SETUID",
		"CAP_SETPCAP",
		"CAP_LINUX_IMMUTABLE",
		"CAP_NET_BIND_SERVICE",
		"CAP_NET_BROADCAST",
		"CAP_NET_ADMIN",
		"CAP_NET_RAW",
		"CAP_IPC_LOCK",
		"CAP_IPC_OWNER",
		"CAP_SYS_MODULE",
		"CAP_SYS_RAWIO",
		"CAP_SYS_CHROOT",
		"CAP_SYS_PTRACE",
		"CAP_SYS_PACCT",
		"CAP_SYS_ADMIN",
		"CAP_SYS_BOOT",
		"CAP_SYS_NICE",
		"CAP_SYS_RESOURCE",
		"CAP_SYS_TIME",
		"CAP_SYS_TTY_CONFIG",
		"CAP_MKNOD",
		"CAP_LEASE",
		"CAP_AUDIT_WRITE",
		"CAP_AUDIT_CONTROL",
		"CAP_SETFCAP",
		"CAP_MAC_OVERRIDE",
		"CAP_MAC_ADMIN",
		"CAP_SYSLOG",
		"CAP_WAKE_ALARM",
		"CAP_BLOCK_SUSPEND",
		"CAP_AUDIT_READ",
		"CAP_PERFMON",
		"CAP_BPF",
		"CAP_CHECKPOINT_RESTORE",
	}
}

// DefaultCapabilities returns the capability set of an unprivileged container,
// the same as containerd's and Docker's defaults.
func DefaultCapabilities() []string {
	return []string{
		"CAP_CHOWN",
		"CAP_DAC_OVERRIDE",
		"CAP_FSETID",
		"CAP_FOWNER",
		"CAP_MKNOD",
		"CAP_NET_RAW",
		"CAP_SETGID",
		"CAP_SETUID",
		"CAP_SETFCAP",
		"CAP_SETPCAP",
		"CAP_NET_BIND_SERVICE",
		"CAP_SYS_CHROOT",
		"CAP_KILL",
		"CAP_AUDIT_WRITE",
	}
}

// defaultMaskedPaths are hidden from unprivileged containers (they leak host
// information or allow attacks on the host kernel).
func defaultMaskedPaths() []string {
	return []string{
		"/proc/acpi",
		"/proc/asound",
		"/proc/kcore",
		"/proc/keys",
		"/proc/latency_stats",
		"/proc/timer_list",
		"/proc/timer_stats",
		"/proc/sched_debug",
		"/proc/scsi",
		"/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
}

// defaultReadonlyPaths are made read-only in unprivileged containers.
func defaultReadonlyPaths() []string {
	return []string{
		"/proc/bus",
		"/proc/fs",
		"/proc/irq",
		"/proc/sys",
		"/proc/sysrq-trigger",
	}
}

// defaultMounts returns the mounts every container gets. privileged makes
// /sys and /sys/fs/cgroup writable.
func defaultMounts(privileged bool) []specs.Mount {
	sysRO := "ro"
	if privileged {
		sysRO = "rw"
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", sysRO}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", sysRO}},
	}
}

func ptr[T any](v T) *T { return &v }

// defaultDeviceRules denies every device and then allows the standard ones:
// mknod of any device (the node is useless without access), /dev/null, zero,
// full, random, urandom, tty, console, ptmx and the devpts ptys.
func defaultDeviceRules() []specs.LinuxDeviceCgroup {
	c := func(major, minor int64, access string) specs.LinuxDeviceCgroup {
		d := specs.LinuxDeviceCgroup{Allow: true, Type: "c", Access: access}
		if major >= 0 {
			d.Major = ptr(major)
		}
		if minor >= 0 {
			d.Minor = ptr(minor)
		}
		return d
	}
	return []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		c(-1, -1, "m"),                        // c *:* m
		{Allow: true, Type: "b", Access: "m"}, // b *:* m
		c(1, 3, "rwm"),                        // /dev/null
		c(1, 5, "rwm"),                        // /dev/zero
		c(1, 7, "rwm"),                        // /dev/full
		c(1, 8, "rwm"),                        // /dev/random
		c(1, 9, "rwm"),                        // /dev/urandom
		c(5, 0, "rwm"),                        // /dev/tty
		c(5, 1, "rwm"),                        // /dev/console
		c(5, 2, "rwm"),                        // /dev/ptmx
		c(136, -1, "rwm"),                     // /dev/pts/*
	}
}

// validRlimit reports whether runc accepts the rlimit type t.
func validRlimit(t string) bool {
	switch t {
	case "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE",
		"RLIMIT_LOCKS", "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE",
		"RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_RSS", "RLIMIT_RTPRIO",
		"RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK":
		return true
	}
	return false
}
