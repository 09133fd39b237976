package cgroups

import (
	"context"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Manager is the cgroup of one container. There are two implementations:
// cgroup v2 (one directory) and v1 (one directory per controller hierarchy).
// Methods are safe for concurrent use.
type Manager interface {
	// Version is 2 for a unified (v2) cgroup and 1 for a v1 one.
	Version() int
	// Path is the cgroup path relative to the hierarchy root, e.g.
	// "/edged/default/c1" (v1 cgroups loaded from a pid: the memory
	// controller's path).
	Path() string
	// Dir returns the absolute directory of the cgroup for controller
	// ("memory", "cpu", ...). v2 ignores controller. It returns "" when a
	// v1 controller is not mounted.
	Dir(controller string) string
	// Create makes the cgroup directories (and parents), enabling the
	// controllers on the way down (v2) or inheriting cpuset.cpus/mems (v1).
	// An existing cgroup is not an error.
	Create() error
	// Delete removes the cgroup (and empty child cgroups). It retries on
	// EBUSY for a short while and then fails with ErrFailedPrecondition
	// naming the processes that remain. A missing cgroup is not an error.
	Delete(ctx context.Context) error
	// AddProc moves process pid into the cgroup.
	AddProc(pid int) error
	// Procs lists the processes in the cgroup.
	Procs() ([]int, error)
	// Freeze stops every process of the cgroup and waits until the kernel
	// reports it frozen or ctx ends.
	Freeze(ctx context.Context) error
	// Thaw resumes a frozen cgroup.
	Thaw(ctx context.Context) error
	// Apply writes the limits set in r (nil fields are left alone).
	// Devices, Network and Rdma are not handled (runc owns devices).
	// A memory limit without Swap keeps the swap allowance as it is: on
	// v1, where Swap is the memsw (memory+swap) limit, memsw moves with
	// the memory limit, as memory.swap.max stays on v2. A CPU period
	// without a quota keeps the quota.
	Apply(r *specs.LinuxResources) error
	// Stat fills s with the cgroup's accounting, reusing s.IO. Missing
	// optional files leave their fields zero; a missing cgroup is an
	// ErrNotFound error.
	Stat(s *Stats) error
	// OOMKills returns Stat's Memory.Events.OOMKill (the kills in the
	// cgroup and its sub-cgroups) reading only the files that counter
	// needs (v1: memory.oom_control, and those of the sub-cgroups when
	// there are any; v2: memory.events): for a caller that needs nothing
	// else, like the shim's OOM watch. A missing cgroup is an ErrNotFound
	// error.
	OOMKills() (uint64, error)
}
