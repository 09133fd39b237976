package cgroups

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
)

// v2Controllers are the controllers Create enables on the way down.
const v2Controllers = "cpuset cpu io memory hugetlb pids rdma misc"

// v2files are the prebuilt paths of the files Stat reads.
type v2files struct {
	memCurrent, memPeak, memMax, memHigh, memLow, memStat, memEvents cfile
	swapCurrent, swapMax                                             cfile
	cpuStat, pidsCurrent, pidsMax, ioStat                            cfile
	cpuPressure, memPressure, ioPressure                             cfile
}

// v2 is a cgroup in a unified hierarchy.
type v2 struct {
	root, path, dir string
	f               v2files

	mu  sync.Mutex // guards buf
	buf []byte
}

func newV2(root, path string) *v2 {
	dir := filepath.Join(root, path)
	c := func(name string) cfile { return newCfile(dir, name) }
	return &v2{
		root: root, path: path, dir: dir,
		f: v2files{
			memCurrent: c("memory.current"), memPeak: c("memory.peak"), memMax: c("memory.max"),
			memHigh: c("memory.high"), memLow: c("memory.low"), memStat: c("memory.stat"),
			memEvents: c("memory.events"), swapCurrent: c("memory.swap.current"), swapMax: c("memory.swap.max"),
			cpuStat: c("cpu.stat"), pidsCurrent: c("pids.current"), pidsMax: c("pids.max"), ioStat: c("io.stat"),
			cpuPressure: c("cpu.pressure"), memPressure: c("memory.pressure"), ioPressure: c("io.pressure"),
		},
	}
}

func (m *v2) Version() int          { return 2 }
func (m *v2) Path() string          { return m.path }
func (m *v2) Dir(_ string) string   { return m.dir }
func (m *v2) Procs() ([]int, error) { return readPids(m.dir) }

func (m *v2) AddProc(pid int) error {
	return write(m.dir, "cgroup.procs", strconv.Itoa(pid))
}

func (m *v2) Create() error {
	// Walk from the root: each existing level must delegate the
	// controllers it has to the next one.
	cur := m.root
	comps := strings.Split(strings.TrimPrefix(m.path, "/"), "/")
	for _, c := range comps {
		if err := enableControllers(cur); err != nil {
			return err
		}
		cur = filepath.Join(cur, c)
		if err := mkdir(cur); err != nil {
			return err
		}
	}
	return nil
}

// enableControllers enables in dir's cgroup.subtree_control every known
// controller that dir has and has not yet delegated.
func enableControllers(dir string) error {
	avail, err := readString(dir, "cgroup.controllers")
	if err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	enabled, err := readString(dir, "cgroup.subtree_control")
	if err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	known, have := strings.Fields(v2Controllers), strings.Fields(enabled)
	for _, c := range strings.Fields(avail) {
		if !contains(known, c) || contains(have, c) {
			continue
		}
		if err := write(dir, "cgroup.subtree_control", "+"+c); err != nil {
			return fmt.Errorf("create cgroup: enable controller %s: %w", c, err)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (m *v2) Delete(ctx context.Context) error {
	return removeDirs(ctx, []string{m.dir}, m.Procs)
}

func (m *v2) Freeze(ctx context.Context) error { return m.freeze(ctx, true) }
func (m *v2) Thaw(ctx context.Context) error   { return m.freeze(ctx, false) }

func (m *v2) freeze(ctx context.Context, frozen bool) error {
	want := "0"
	if frozen {
		want = "1"
	}
	if err := write(m.dir, "cgroup.freeze", want); err != nil {
		return err
	}
	return waitFor(ctx, "freeze "+m.dir, func() (bool, error) {
		s, err := readString(m.dir, "cgroup.events")
		if err != nil {
			return false, err
		}
		for _, line := range strings.Split(s, "\n") {
			if k, v, _ := strings.Cut(line, " "); k == "frozen" {
				return v == want, nil
			}
		}
		// Kernels without the v2 freezer (< 5.2) have no "frozen" key.
		return false, fmt.Errorf("%s/cgroup.events has no frozen key: %w", m.dir, errdefs.ErrNotImplemented)
	})
}

func (m *v2) Apply(r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	// BFQ-only kernels have io.bfq.weight (v1 range) instead of io.weight.
	bfq := !exists(filepath.Join(m.dir, "io.weight")) && exists(filepath.Join(m.dir, "io.bfq.weight"))
	w, err := v2Writes(r, bfq, m.cpuQuota)
	if err != nil {
		return err
	}
	if mem := r.Memory; mem != nil && mem.CheckBeforeUpdate != nil && *mem.CheckBeforeUpdate && mem.Limit != nil && *mem.Limit > 0 {
		if err := checkUsage(m.f.memCurrent, *mem.Limit); err != nil {
			return err
		}
	}
	for _, kv := range w {
		if err := write(m.dir, kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// checkUsage refuses a memory limit below the current usage.
func checkUsage(usageFile cfile, limit int64) error {
	var buf []byte
	usage, err := usageFile.readUint(&buf)
	if err != nil {
		return err
	}
	if usage > uint64(limit) {
		return fmt.Errorf("memory limit %d is below the current usage %d: %w", limit, usage, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// cpuQuota returns the quota field of cpu.max ("max" or microseconds).
func (m *v2) cpuQuota() (string, error) {
	s, err := readString(m.dir, "cpu.max")
	if err != nil {
		return "", fmt.Errorf("read the current CPU quota: %w: %w", err, writeKind(err))
	}
	q, _, _ := strings.Cut(s, " ")
	if q != "max" {
		if _, ok := parseUint([]byte(q)); !ok {
			return "", fmt.Errorf("%s/cpu.max: unexpected content %q: %w", m.dir, s, errdefs.ErrDataLoss)
		}
	}
	return q, nil
}

// v2Writes converts r into the ordered list of {file, value} writes. bfq
// writes block I/O weights to io.bfq.weight, unconverted. cpuQuota returns
// the quota now in cpu.max; it is called only for a period without a quota.
func v2Writes(r *specs.LinuxResources, bfq bool, cpuQuota func() (string, error)) ([][2]string, error) {
	var w [][2]string
	add := func(k, v string) { w = append(w, [2]string{k, v}) }
	if mem := r.Memory; mem != nil {
		var limit int64
		if mem.Limit != nil {
			limit = *mem.Limit
			if err := checkLimit("memory.limit", limit); err != nil {
				return nil, err
			}
		}
		var swap int64
		if mem.Swap != nil {
			swap = *mem.Swap
		}
		sv, set, err := SwapMax(swap, limit)
		if err != nil {
			return nil, err
		}
		if set {
			add("memory.swap.max", limitString(sv))
		}
		if limit != 0 {
			add("memory.max", limitString(limit))
		}
		if mem.Reservation != nil && *mem.Reservation != 0 {
			if err := checkLimit("memory.reservation", *mem.Reservation); err != nil {
				return nil, err
			}
			add("memory.low", limitString(*mem.Reservation))
		}
		// Swappiness, DisableOOMKiller, Kernel and KernelTCP have no v2
		// equivalent and are ignored, as runc does.
	}
	if cpu := r.CPU; cpu != nil {
		if cpu.Shares != nil && *cpu.Shares != 0 {
			add("cpu.weight", strconv.FormatUint(SharesToWeight(*cpu.Shares), 10))
		}
		var quota int64
		var period uint64
		if cpu.Quota != nil {
			quota = *cpu.Quota
		}
		if cpu.Period != nil {
			period = *cpu.Period
		}
		if quota != 0 || period != 0 {
			v := "max"
			switch {
			case quota > 0:
				v = strconv.FormatInt(quota, 10)
			case quota == 0:
				// cpu.max takes the quota with the period, never the
				// period alone: a period without a quota rewrites
				// the current quota ("max" would lift the limit).
				cur, err := cpuQuota()
				if err != nil {
					return nil, fmt.Errorf("cpu.period: %w", err)
				}
				v = cur
			}
			if period != 0 {
				v += " " + strconv.FormatUint(period, 10)
			}
			add("cpu.max", v)
		}
		if cpu.Burst != nil {
			add("cpu.max.burst", strconv.FormatUint(*cpu.Burst, 10))
		}
		if cpu.Idle != nil {
			add("cpu.idle", strconv.FormatInt(*cpu.Idle, 10))
		}
		if (cpu.RealtimeRuntime != nil && *cpu.RealtimeRuntime != 0) || (cpu.RealtimePeriod != nil && *cpu.RealtimePeriod != 0) {
			return nil, fmt.Errorf("cpu.realtimeRuntime/realtimePeriod: cgroup v2 has no realtime CPU limits: %w", errdefs.ErrNotImplemented)
		}
		if cpu.Cpus != "" {
			add("cpuset.cpus", cpu.Cpus)
		}
		if cpu.Mems != "" {
			add("cpuset.mems", cpu.Mems)
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil {
		v := "max"
		if *p.Limit > 0 {
			v = strconv.FormatInt(*p.Limit, 10)
		}
		add("pids.max", v)
	}
	if b := r.BlockIO; b != nil {
		file, conv := "io.weight", BlkioWeightToIOWeight
		if bfq {
			file, conv = "io.bfq.weight", func(w uint64) uint64 { return w }
		}
		if b.Weight != nil && *b.Weight != 0 {
			add(file, "default "+strconv.FormatUint(conv(uint64(*b.Weight)), 10))
		}
		for _, d := range b.WeightDevice {
			if d.Weight != nil && *d.Weight != 0 {
				add(file, fmt.Sprintf("%d:%d %d", d.Major, d.Minor, conv(uint64(*d.Weight))))
			}
		}
		for _, t := range []struct {
			key  string
			devs []specs.LinuxThrottleDevice
		}{
			{"rbps", b.ThrottleReadBpsDevice}, {"wbps", b.ThrottleWriteBpsDevice},
			{"riops", b.ThrottleReadIOPSDevice}, {"wiops", b.ThrottleWriteIOPSDevice},
		} {
			for _, d := range t.devs {
				v := "max"
				if d.Rate != 0 {
					v = strconv.FormatUint(d.Rate, 10)
				}
				add("io.max", fmt.Sprintf("%d:%d %s=%s", d.Major, d.Minor, t.key, v))
			}
		}
	}
	for _, h := range r.HugepageLimits {
		if err := validPageSize(h.Pagesize); err != nil {
			return nil, err
		}
		add("hugetlb."+h.Pagesize+".max", strconv.FormatUint(h.Limit, 10))
	}
	for k, v := range r.Unified {
		if err := validUnifiedKey(k); err != nil {
			return nil, err
		}
		add(k, v)
	}
	return w, nil
}

// validUnifiedKey accepts "<controller>.<file>" names only: no paths and no
// cgroup core files (cgroup.procs, cgroup.subtree_control, ...).
func validUnifiedKey(k string) error {
	ctrl, _, ok := strings.Cut(k, ".")
	if !ok || ctrl == "" || ctrl == "cgroup" || strings.ContainsAny(k, "/\x00") || strings.HasSuffix(k, ".") {
		return errdefs.InvalidArgument("unified", "key %q is not a controller file name", k)
	}
	return nil
}

func (m *v2) Stat(s *Stats) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := reader{buf: &m.buf}
	io := s.IO[:0]
	*s = Stats{Version: 2}
	mem := &s.Memory
	mem.Usage = r.uint(m.f.memCurrent)
	mem.Peak = r.uint(m.f.memPeak)
	mem.Limit = r.uint(m.f.memMax)
	mem.High = r.uint(m.f.memHigh)
	mem.Low = r.uint(m.f.memLow)
	mem.SwapUsage = r.uint(m.f.swapCurrent)
	mem.SwapLimit = r.uint(m.f.swapMax)
	if b := r.read(m.f.memStat); b != nil {
		eachKV(b, func(k []byte, v uint64) {
			switch string(k) {
			case "anon":
				mem.Anon = v
			case "file":
				mem.File = v
			case "kernel":
				mem.Kernel = v
			case "kernel_stack":
				mem.KernelStack = v
			case "slab":
				mem.Slab = v
			case "sock":
				mem.Sock = v
			case "shmem":
				mem.Shmem = v
			case "file_mapped":
				mem.FileMapped = v
			case "file_dirty":
				mem.FileDirty = v
			case "file_writeback":
				mem.FileWriteback = v
			case "active_anon":
				mem.ActiveAnon = v
			case "inactive_anon":
				mem.InactiveAnon = v
			case "active_file":
				mem.ActiveFile = v
			case "inactive_file":
				mem.InactiveFile = v
			case "unevictable":
				mem.Unevictable = v
			case "pgfault":
				mem.Pgfault = v
			case "pgmajfault":
				mem.Pgmajfault = v
			}
		})
	}
	if mem.Usage > mem.InactiveFile {
		mem.WorkingSet = mem.Usage - mem.InactiveFile
	}
	if b := r.read(m.f.memEvents); b != nil {
		parseMemoryEvents(b, &mem.Events)
	}
	if b := r.read(m.f.cpuStat); b != nil {
		eachKV(b, func(k []byte, v uint64) {
			switch string(k) {
			case "usage_usec":
				s.CPU.UsageUsec = v
			case "user_usec":
				s.CPU.UserUsec = v
			case "system_usec":
				s.CPU.SystemUsec = v
			case "nr_periods":
				s.CPU.NrPeriods = v
			case "nr_throttled":
				s.CPU.NrThrottled = v
			case "throttled_usec":
				s.CPU.ThrottledUsec = v
			}
		})
	}
	s.Pids.Current = r.uint(m.f.pidsCurrent)
	s.Pids.Limit = r.uint(m.f.pidsMax)
	if b := r.read(m.f.ioStat); b != nil {
		parseIOStatV2(b, &io)
	}
	s.IO = io
	// PSI files may be absent or refuse reads (psi=0): that only clears
	// Available, it is not a Stat error.
	psi := reader{buf: &m.buf}
	ok := true
	for _, p := range [...]struct {
		f cfile
		d *Pressure
	}{{m.f.cpuPressure, &s.PSI.CPU}, {m.f.memPressure, &s.PSI.Memory}, {m.f.ioPressure, &s.PSI.IO}} {
		b := psi.read(p.f)
		ok = ok && b != nil && parsePSI(b, p.d)
	}
	s.PSI.Available = ok && psi.err == nil
	if !s.PSI.Available {
		s.PSI = PSIStats{}
	}
	return r.done(m.dir)
}

func (m *v2) OOMKills() (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := reader{buf: &m.buf}
	var e MemoryEvents
	if b := r.read(m.f.memEvents); b != nil {
		parseMemoryEvents(b, &e)
	}
	return e.OOMKill, r.done(m.dir)
}

// parseMemoryEvents parses memory.events.
func parseMemoryEvents(b []byte, e *MemoryEvents) {
	eachKV(b, func(k []byte, v uint64) {
		switch string(k) {
		case "low":
			e.Low = v
		case "high":
			e.High = v
		case "max":
			e.Max = v
		case "oom":
			e.OOM = v
		case "oom_kill":
			e.OOMKill = v
		}
	})
}
