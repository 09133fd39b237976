// Package metrics reads the cgroup statistics of edged's tasks and converts
// them into the API's Metrics message (Tasks.Metrics).
package metrics

import (
	"time"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/edged/protoconv"
	types "github.com/edged/edged/proto/types"
)

// CPULimits are the CPU settings of a cgroup, reported beside its usage.
type CPULimits struct {
	// Quota is the CFS quota in microseconds per Period, -1 when unlimited.
	Quota  int64
	Period uint64
	// Weight is cpu.weight (v2) or cpu.shares (v1); 0 when unknown.
	Weight uint64
}

// FromStats converts the statistics of container id, read on a host whose
// cgroup layout is mode ("unified", "hybrid" or "legacy") at time at. Limits
// that are not set (cgroups.Unlimited) become 0.
func FromStats(id, mode string, at time.Time, s *cgroups.Stats, cpu CPULimits) *types.Metrics {
	limit := func(v uint64) uint64 {
		if v == cgroups.Unlimited {
			return 0
		}
		return v
	}
	mem := &s.Memory
	m := &types.Metrics{
		Id:         id,
		Timestamp:  protoconv.Timestamp(at),
		CgroupMode: mode,
		Memory: &types.MemoryStat{
			Usage:         mem.Usage,
			Peak:          mem.Peak,
			Limit:         limit(mem.Limit),
			High:          limit(mem.High),
			Low:           limit(mem.Low),
			SwapUsage:     mem.SwapUsage,
			SwapLimit:     limit(mem.SwapLimit),
			Anon:          mem.Anon,
			File:          mem.File,
			Kernel:        mem.Kernel,
			Shmem:         mem.Shmem,
			FileDirty:     mem.FileDirty,
			Pgfault:       mem.Pgfault,
			Pgmajfault:    mem.Pgmajfault,
			EventsLow:     mem.Events.Low,
			EventsHigh:    mem.Events.High,
			EventsMax:     mem.Events.Max,
			EventsOom:     mem.Events.OOM,
			EventsOomKill: mem.Events.OOMKill,
			Stat:          memoryStatMap(mem),
		},
		Cpu: &types.CPUStat{
			UsageUsec:     s.CPU.UsageUsec,
			UserUsec:      s.CPU.UserUsec,
			SystemUsec:    s.CPU.SystemUsec,
			NrPeriods:     s.CPU.NrPeriods,
			NrThrottled:   s.CPU.NrThrottled,
			ThrottledUsec: s.CPU.ThrottledUsec,
			Quota:         cpu.Quota,
			Period:        cpu.Period,
			Weight:        cpu.Weight,
		},
		Pids: &types.PidsStat{Current: s.Pids.Current, Limit: limit(s.Pids.Limit)},
		Psi:  &types.PSIStats{Present: s.PSI.Available},
	}
	if s.PSI.Available {
		m.Psi.Cpu = pressure(&s.PSI.CPU)
		m.Psi.Memory = pressure(&s.PSI.Memory)
		m.Psi.Io = pressure(&s.PSI.IO)
	}
	if len(s.IO) > 0 {
		m.Io = make([]*types.IOEntry, len(s.IO))
		for i, d := range s.IO {
			m.Io[i] = &types.IOEntry{Major: d.Major, Minor: d.Minor, Rbytes: d.ReadBytes, Wbytes: d.WriteBytes, Rios: d.ReadIOs, Wios: d.WriteIOs}
		}
	}
	return m
}

// memoryStatMap names the memory.stat counters with their cgroup v2 keys
// (v1 counters are mapped onto them, see cgroups.MemoryStats).
func memoryStatMap(m *cgroups.MemoryStats) map[string]uint64 {
	return map[string]uint64{
		"anon": m.Anon, "file": m.File, "kernel": m.Kernel, "kernel_stack": m.KernelStack,
		"slab": m.Slab, "sock": m.Sock, "shmem": m.Shmem, "file_mapped": m.FileMapped,
		"file_dirty": m.FileDirty, "file_writeback": m.FileWriteback,
		"active_anon": m.ActiveAnon, "inactive_anon": m.InactiveAnon,
		"active_file": m.ActiveFile, "inactive_file": m.InactiveFile,
		"unevictable": m.Unevictable, "pgfault": m.Pgfault, "pgmajfault": m.Pgmajfault,
		"working_set": m.WorkingSet,
	}
}

func pressure(p *cgroups.Pressure) *types.PSIStat {
	d := func(x cgroups.PSIData) *types.PSIData {
		return &types.PSIData{Avg10: x.Avg10, Avg60: x.Avg60, Avg300: x.Avg300, Total: x.Total}
	}
	return &types.PSIStat{Some: d(p.Some), Full: d(p.Full)}
}
