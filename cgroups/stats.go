package cgroups

import "math"

// Unlimited is the value of a limit that is not set ("max" in v2 files, the
// page-counter maximum in v1 files).
const Unlimited = math.MaxUint64

// Stats is the accounting of one cgroup. Fields a kernel or a cgroup version
// does not provide are zero. Times are in microseconds, sizes in bytes.
type Stats struct {
	// Version is 1 or 2, the cgroup version the numbers come from.
	Version int
	Memory  MemoryStats
	CPU     CPUStats
	Pids    PidsStats
	// IO has one entry per block device with I/O in the cgroup. Stat reuses
	// the slice's backing array.
	IO  []IOStats
	PSI PSIStats
}

// MemoryStats is memory accounting.
//
// v1 mapping: Usage is memory.usage_in_bytes, Peak memory.max_usage_in_bytes,
// Limit memory.limit_in_bytes, SwapUsage memsw usage minus usage, Anon is
// total_rss, File total_cache, FileMapped total_mapped_file, Kernel
// memory.kmem.usage_in_bytes, Events.Max memory.failcnt, Events.UnderOOM
// memory.oom_control, Events.OOMKill the oom_kill of memory.oom_control
// summed over the cgroup and its sub-cgroups (see V1OOMKills); Events.Low,
// High and OOM stay 0.
type MemoryStats struct {
	Usage uint64
	// Peak is the high-water mark (v2 memory.peak, kernels >= 5.19).
	Peak uint64
	// Limit is the hard limit, Unlimited when unset.
	Limit uint64
	// High is the v2 throttling limit (memory.high), Unlimited when unset.
	High uint64
	// Low is the v2 protection (memory.low) or the v1 soft limit.
	Low uint64
	// WorkingSet is Usage minus InactiveFile (floored at zero), the number
	// kubelet uses for eviction.
	WorkingSet uint64
	SwapUsage  uint64
	// SwapLimit is the swap-only limit (v2 memory.swap.max; v1 memsw limit
	// minus memory limit), Unlimited when unset.
	SwapLimit uint64

	Anon          uint64
	File          uint64
	Kernel        uint64
	KernelStack   uint64
	Slab          uint64
	Sock          uint64
	Shmem         uint64
	FileMapped    uint64
	FileDirty     uint64
	FileWriteback uint64
	ActiveAnon    uint64
	InactiveAnon  uint64
	ActiveFile    uint64
	InactiveFile  uint64
	Unevictable   uint64
	Pgfault       uint64
	Pgmajfault    uint64

	Events MemoryEvents
}

// MemoryEvents are the counters of memory.events (v2) or
// memory.oom_control (v1: only OOMKill and UnderOOM).
type MemoryEvents struct {
	Low  uint64
	High uint64
	Max  uint64
	OOM  uint64
	// OOMKill is the number of processes of the cgroup and of its
	// sub-cgroups killed by the OOM killer: hierarchical on v1 too, where
	// it is summed over the sub-cgroups that exist at the time of the read
	// (see V1OOMKills).
	OOMKill uint64
	// UnderOOM is the v1 under_oom flag.
	UnderOOM bool
}

// CPUStats is CPU accounting.
type CPUStats struct {
	UsageUsec     uint64
	UserUsec      uint64
	SystemUsec    uint64
	NrPeriods     uint64
	NrThrottled   uint64
	ThrottledUsec uint64
}

// PidsStats is the pids controller.
type PidsStats struct {
	Current uint64
	// Limit is Unlimited when unset.
	Limit uint64
}

// IOStats is the I/O of one block device (v2 io.stat; v1
// blkio.throttle.io_service_bytes_recursive and io_serviced_recursive).
type IOStats struct {
	Major, Minor uint64
	ReadBytes    uint64
	WriteBytes   uint64
	ReadIOs      uint64
	WriteIOs     uint64
	DiscardBytes uint64
	DiscardIOs   uint64
}

// PSIStats is pressure stall information of the cgroup (v2 only).
type PSIStats struct {
	// Available is false when the kernel has no per-cgroup PSI (v1, or v2
	// built or booted without PSI); the pressures are then zero.
	Available bool
	CPU       Pressure
	Memory    Pressure
	IO        Pressure
}

// Pressure is one *.pressure file.
type Pressure struct {
	Some PSIData
	Full PSIData
}

// PSIData is one line of a pressure file: averages in percent, total stall
// time in microseconds.
type PSIData struct {
	Avg10  float64
	Avg60  float64
	Avg300 float64
	Total  uint64
}
