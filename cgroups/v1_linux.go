package cgroups

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

// v1Controllers are the v1 hierarchies a v1 Manager uses.
const v1Controllers = "memory cpu cpuacct cpuset pids blkio hugetlb freezer"

// v1files are the prebuilt paths of the files Stat reads; nil when the
// controller is not mounted.
type v1files struct {
	memUsage, memMaxUsage, memLimit, memSoft, memswLimit, kmemUsage, memFailcnt, memStat, oomControl cfile
	memDir                                                                                           cfile // the memory cgroup directory itself
	cpuacctUsage, cpuacctUser, cpuacctSys, cpuacctStat, cpuStat                                      cfile
	pidsCurrent, pidsMax, blkioBytes, blkioIOs                                                       cfile
}

// v1 is a cgroup in the per-controller v1 hierarchies.
type v1 struct {
	path string
	dirs map[string]string // controller -> absolute directory, mounted ones only
	pdir string            // the directory Procs reads
	f    v1files

	mu  sync.Mutex // guards buf
	buf []byte
}

// newV1 builds a v1 manager from controller -> cgroup path; controllers not
// mounted under root are left out.
func newV1(root, mainPath string, paths map[string]string) *v1 {
	m := &v1{path: mainPath, dirs: map[string]string{}}
	for ctrl, p := range paths {
		base := filepath.Join(root, ctrl)
		if magic, err := fsMagic(base); err != nil || magic != cgroupSuperMagic {
			continue
		}
		m.dirs[ctrl] = filepath.Join(base, p)
	}
	for _, c := range strings.Fields(v1Controllers) {
		if d := m.dirs[c]; d != "" {
			m.pdir = d
			break
		}
	}
	c := func(ctrl, name string) cfile {
		d := m.dirs[ctrl]
		if d == "" {
			return nil
		}
		return newCfile(d, name)
	}
	m.f = v1files{
		memUsage: c("memory", "memory.usage_in_bytes"), memMaxUsage: c("memory", "memory.max_usage_in_bytes"),
		memLimit: c("memory", "memory.limit_in_bytes"), memSoft: c("memory", "memory.soft_limit_in_bytes"),
		memswLimit: c("memory", "memory.memsw.limit_in_bytes"), kmemUsage: c("memory", "memory.kmem.usage_in_bytes"),
		memFailcnt: c("memory", "memory.failcnt"), memStat: c("memory", "memory.stat"), oomControl: c("memory", "memory.oom_control"),
		memDir:       c("memory", "."),
		cpuacctUsage: c("cpuacct", "cpuacct.usage"), cpuacctUser: c("cpuacct", "cpuacct.usage_user"),
		cpuacctSys: c("cpuacct", "cpuacct.usage_sys"), cpuacctStat: c("cpuacct", "cpuacct.stat"), cpuStat: c("cpu", "cpu.stat"),
		pidsCurrent: c("pids", "pids.current"), pidsMax: c("pids", "pids.max"),
		blkioBytes: c("blkio", "blkio.throttle.io_service_bytes_recursive"), blkioIOs: c("blkio", "blkio.throttle.io_serviced_recursive"),
	}
	return m
}

func (m *v1) Version() int                 { return 1 }
func (m *v1) Path() string                 { return m.path }
func (m *v1) Dir(controller string) string { return m.dirs[controller] }

// dir returns the directory of ctrl or an ErrNotImplemented error.
func (m *v1) dir(ctrl string) (string, error) {
	d := m.dirs[ctrl]
	if d == "" {
		return "", fmt.Errorf("cgroup v1 controller %s is not mounted: %w", ctrl, errdefs.ErrNotImplemented)
	}
	return d, nil
}

// procsDir is the hierarchy Procs reads: the first mounted one of
// v1Controllers (memory first).
func (m *v1) procsDir() string { return m.pdir }

func (m *v1) Procs() ([]int, error) {
	d := m.procsDir()
	if d == "" {
		return nil, fmt.Errorf("no cgroup v1 controller mounted: %w", errdefs.ErrNotImplemented)
	}
	return readPids(d)
}

func (m *v1) AddProc(pid int) error {
	for _, c := range strings.Fields(v1Controllers) {
		if d := m.dirs[c]; d != "" {
			if err := write(d, "cgroup.procs", strconv.Itoa(pid)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *v1) Create() error {
	for ctrl, d := range m.dirs {
		if ctrl == "cpuset" {
			if err := createCpuset(d); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create cgroup: %w", err)
		}
	}
	return nil
}

// createCpuset creates dir and its missing parents in the cpuset hierarchy,
// copying cpuset.cpus and cpuset.mems from the parent into each new level:
// an empty cpuset refuses processes.
func createCpuset(dir string) error {
	var missing []string
	for d := dir; !exists(d); d = filepath.Dir(d) {
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := mkdir(d); err != nil {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			cur, err := readString(d, f)
			if err != nil {
				return fmt.Errorf("create cgroup: %w", err)
			}
			if cur != "" {
				continue
			}
			pv, err := readString(filepath.Dir(d), f)
			if err != nil {
				return fmt.Errorf("create cgroup: %w", err)
			}
			if err := write(d, f, pv); err != nil {
				return fmt.Errorf("create cgroup: %w", err)
			}
		}
	}
	return nil
}

func (m *v1) Delete(ctx context.Context) error {
	dirs := make([]string, 0, len(m.dirs))
	for _, d := range m.dirs {
		dirs = append(dirs, d)
	}
	return removeDirs(ctx, dirs, m.Procs)
}

func (m *v1) Freeze(ctx context.Context) error { return m.freeze(ctx, "FROZEN") }
func (m *v1) Thaw(ctx context.Context) error   { return m.freeze(ctx, "THAWED") }

func (m *v1) freeze(ctx context.Context, state string) error {
	d, err := m.dir("freezer")
	if err != nil {
		return err
	}
	return waitFor(ctx, "freezer "+d, func() (bool, error) {
		// Writing again while FREEZING restarts a freeze that got stuck
		// on a task in an uninterruptible sleep.
		if err := write(d, "freezer.state", state); err != nil {
			return false, err
		}
		cur, err := readString(d, "freezer.state")
		return cur == state, err
	})
}

// write writes to a file of controller ctrl.
func (m *v1) write(ctrl, name, value string) error {
	d, err := m.dir(ctrl)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return write(d, name, value)
}

func (m *v1) Apply(r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	if len(r.Unified) > 0 {
		return fmt.Errorf("unified resources need cgroup v2: %w", errdefs.ErrNotImplemented)
	}
	for _, h := range r.HugepageLimits {
		if err := validPageSize(h.Pagesize); err != nil {
			return err
		}
	}
	if err := m.applyMemory(r.Memory); err != nil {
		return err
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil && *c.Shares != 0 {
			if err := m.write("cpu", "cpu.shares", strconv.FormatUint(*c.Shares, 10)); err != nil {
				return err
			}
		}
		if err := m.applyCFS(c); err != nil {
			return err
		}
		if c.Burst != nil {
			if err := m.write("cpu", "cpu.cfs_burst_us", strconv.FormatUint(*c.Burst, 10)); err != nil {
				return err
			}
		}
		if c.RealtimePeriod != nil && *c.RealtimePeriod != 0 {
			if err := m.write("cpu", "cpu.rt_period_us", strconv.FormatUint(*c.RealtimePeriod, 10)); err != nil {
				return err
			}
		}
		if c.RealtimeRuntime != nil && *c.RealtimeRuntime != 0 {
			if err := m.write("cpu", "cpu.rt_runtime_us", strconv.FormatInt(*c.RealtimeRuntime, 10)); err != nil {
				return err
			}
		}
		if c.Idle != nil {
			if err := m.write("cpu", "cpu.idle", strconv.FormatInt(*c.Idle, 10)); err != nil {
				return err
			}
		}
		if c.Cpus != "" {
			if err := m.write("cpuset", "cpuset.cpus", c.Cpus); err != nil {
				return err
			}
		}
		if c.Mems != "" {
			if err := m.write("cpuset", "cpuset.mems", c.Mems); err != nil {
				return err
			}
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil {
		v := "max"
		if *p.Limit > 0 {
			v = strconv.FormatInt(*p.Limit, 10)
		}
		if err := m.write("pids", "pids.max", v); err != nil {
			return err
		}
	}
	if err := m.applyBlkio(r.BlockIO); err != nil {
		return err
	}
	for _, h := range r.HugepageLimits {
		if err := m.write("hugetlb", "hugetlb."+h.Pagesize+".limit_in_bytes", strconv.FormatUint(h.Limit, 10)); err != nil {
			return err
		}
	}
	return nil
}

// applyCFS writes the CFS period and quota. The kernel checks every write
// against the parent's bandwidth, with the other value as it is: shrinking
// the period under the current quota can exceed the parent (50000/100000
// to 5000/10000 under a 1-CPU parent briefly asks for 5 CPUs) and fails
// with EINVAL. Then, as runc does, the quota is written first and the
// period retried.
func (m *v1) applyCFS(c *specs.LinuxCPU) error {
	var quota int64
	if c.Quota != nil {
		quota = *c.Quota
	}
	if quota < 0 {
		quota = -1
	}
	period := ""
	if c.Period != nil && *c.Period != 0 {
		period = strconv.FormatUint(*c.Period, 10)
		if err := m.write("cpu", "cpu.cfs_period_us", period); err != nil {
			if !errors.Is(err, unix.EINVAL) || quota == 0 {
				return err
			}
		} else {
			period = ""
		}
	}
	if quota != 0 {
		if err := m.write("cpu", "cpu.cfs_quota_us", strconv.FormatInt(quota, 10)); err != nil {
			return err
		}
	}
	if period != "" {
		return m.write("cpu", "cpu.cfs_period_us", period)
	}
	return nil
}

func (m *v1) applyMemory(mem *specs.LinuxMemory) error {
	if mem == nil {
		return nil
	}
	var limit, swap int64
	if mem.Limit != nil {
		limit = *mem.Limit
	}
	if mem.Swap != nil {
		swap = *mem.Swap
	}
	if err := checkLimit("memory.limit", limit); err != nil {
		return err
	}
	if err := checkLimit("memory.swap", swap); err != nil {
		return err
	}
	if limit > 0 && swap > 0 && swap < limit {
		return errdefs.InvalidArgument("memory.swap", "memory+swap limit %d is below the memory limit %d", swap, limit)
	}
	if swap > 0 && limit <= 0 {
		return errdefs.InvalidArgument("memory.swap", "a swap limit (%d) needs a memory limit", swap)
	}
	d, err := m.dir("memory")
	if err != nil {
		if limit == 0 && swap == 0 && mem.Reservation == nil && mem.Swappiness == nil && mem.DisableOOMKiller == nil {
			return nil
		}
		return err
	}
	if limit == -1 && swap == 0 {
		swap = -1
	}
	// memory.memsw.* exist only with swap accounting (swapaccount=1).
	hasMemsw := (swap != 0 || limit > 0) && exists(filepath.Join(d, "memory.memsw.limit_in_bytes"))
	if swap != 0 && !hasMemsw {
		if swap != -1 && swap != limit {
			return fmt.Errorf("memory.swap: swap accounting is disabled in this kernel (swapaccount=0): %w", errdefs.ErrNotImplemented)
		}
		swap = 0
	}
	if limit > 0 && mem.CheckBeforeUpdate != nil && *mem.CheckBeforeUpdate {
		if err := checkUsage(m.f.memUsage, limit); err != nil {
			return err
		}
	}
	if limit > 0 && swap == 0 && hasMemsw {
		// A memory limit without a swap limit keeps the swap allowance
		// (memsw minus memory) as it is, as v2's separate
		// memory.swap.max does: the kernel keeps memsw >= limit, so
		// raising the limit alone above memsw would fail (EINVAL, the
		// common case of a container without swap, memsw = limit), and
		// lowering it alone would let the container swap what it gave
		// up.
		var err error
		if swap, err = m.keepSwapAllowance(limit); err != nil {
			return err
		}
	}
	swapFirst := false
	if limit != 0 && swap != 0 {
		var buf []byte
		cur, err := m.f.memLimit.readUint(&buf)
		if err != nil {
			return err
		}
		// The kernel keeps memsw >= limit at every step: raise memsw
		// before the limit, lower it after.
		swapFirst = swap == -1 || cur < uint64(swap)
	}
	setSwap := func() error {
		if swap == 0 {
			return nil
		}
		return write(d, "memory.memsw.limit_in_bytes", strconv.FormatInt(swap, 10))
	}
	if swapFirst {
		if err := setSwap(); err != nil {
			return err
		}
	}
	if limit != 0 {
		if err := write(d, "memory.limit_in_bytes", strconv.FormatInt(limit, 10)); err != nil {
			return err
		}
	}
	if !swapFirst {
		if err := setSwap(); err != nil {
			return err
		}
	}
	if mem.Reservation != nil && *mem.Reservation != 0 {
		if err := checkLimit("memory.reservation", *mem.Reservation); err != nil {
			return err
		}
		if err := write(d, "memory.soft_limit_in_bytes", strconv.FormatInt(*mem.Reservation, 10)); err != nil {
			return err
		}
	}
	if mem.Swappiness != nil {
		if *mem.Swappiness > 100 {
			return errdefs.InvalidArgument("memory.swappiness", "%d is above 100", *mem.Swappiness)
		}
		if err := write(d, "memory.swappiness", strconv.FormatUint(*mem.Swappiness, 10)); err != nil {
			return err
		}
	}
	if mem.DisableOOMKiller != nil {
		v := "0"
		if *mem.DisableOOMKiller {
			v = "1"
		}
		if err := write(d, "memory.oom_control", v); err != nil {
			return err
		}
	}
	return nil
}

// keepSwapAllowance returns the memsw limit that keeps the current swap
// allowance with the new memory limit, or 0 (leave memsw alone) when swap
// is unlimited.
func (m *v1) keepSwapAllowance(limit int64) (int64, error) {
	var buf []byte
	curLimit, err := m.f.memLimit.readUint(&buf)
	if err != nil {
		return 0, err
	}
	curMemsw, err := m.f.memswLimit.readUint(&buf)
	if err != nil {
		return 0, err
	}
	curLimit, curMemsw = v1Unlimited(curLimit), v1Unlimited(curMemsw)
	if curMemsw == Unlimited || curLimit == Unlimited || curMemsw < curLimit {
		return 0, nil
	}
	allowance := curMemsw - curLimit
	if allowance > uint64(math.MaxInt64-limit) {
		return -1, nil
	}
	return limit + int64(allowance), nil
}

func (m *v1) applyBlkio(b *specs.LinuxBlockIO) error {
	if b == nil {
		return nil
	}
	weightFile := ""
	if (b.Weight != nil && *b.Weight != 0) || len(b.WeightDevice) > 0 {
		d, err := m.dir("blkio")
		if err != nil {
			return fmt.Errorf("blockIO.weight: %w", err)
		}
		for _, f := range []string{"blkio.weight", "blkio.bfq.weight"} {
			if exists(filepath.Join(d, f)) {
				weightFile = f
				break
			}
		}
		if weightFile == "" {
			return fmt.Errorf("blockIO.weight: %s has neither blkio.weight nor blkio.bfq.weight (no proportional I/O scheduler): %w", d, errdefs.ErrNotImplemented)
		}
	}
	if b.Weight != nil && *b.Weight != 0 {
		if err := m.write("blkio", weightFile, strconv.FormatUint(uint64(*b.Weight), 10)); err != nil {
			return err
		}
	}
	for _, wd := range b.WeightDevice {
		if wd.Weight == nil {
			continue
		}
		devFile := "blkio.weight_device"
		if weightFile == "blkio.bfq.weight" {
			devFile = weightFile
		}
		if err := m.write("blkio", devFile, fmt.Sprintf("%d:%d %d", wd.Major, wd.Minor, *wd.Weight)); err != nil {
			return err
		}
	}
	for _, t := range []struct {
		file string
		devs []specs.LinuxThrottleDevice
	}{
		{"blkio.throttle.read_bps_device", b.ThrottleReadBpsDevice}, {"blkio.throttle.write_bps_device", b.ThrottleWriteBpsDevice},
		{"blkio.throttle.read_iops_device", b.ThrottleReadIOPSDevice}, {"blkio.throttle.write_iops_device", b.ThrottleWriteIOPSDevice},
	} {
		for _, d := range t.devs {
			if err := m.write("blkio", t.file, fmt.Sprintf("%d:%d %d", d.Major, d.Minor, d.Rate)); err != nil {
				return err
			}
		}
	}
	return nil
}

// v1Unlimited normalises the v1 "no limit" value (the page counter maximum,
// 0x7ffffffffffff000 on 4 KiB pages) to Unlimited.
func v1Unlimited(v uint64) uint64 {
	if v >= 1<<62 {
		return Unlimited
	}
	return v
}

func (m *v1) Stat(s *Stats) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := reader{buf: &m.buf}
	io := s.IO[:0]
	*s = Stats{Version: 1}
	mem := &s.Memory
	mem.Usage = r.uint(m.f.memUsage)
	mem.Peak = r.uint(m.f.memMaxUsage)
	mem.Limit = v1Unlimited(r.uint(m.f.memLimit))
	mem.High = Unlimited
	mem.Low = v1Unlimited(r.uint(m.f.memSoft))
	mem.Kernel = r.uint(m.f.kmemUsage)
	mem.Events.Max = r.uint(m.f.memFailcnt)
	mem.SwapLimit = Unlimited
	if memsw := v1Unlimited(r.uint(m.f.memswLimit)); memsw != Unlimited && memsw != 0 && mem.Limit != Unlimited && memsw >= mem.Limit {
		mem.SwapLimit = memsw - mem.Limit
	}
	if b := r.read(m.f.memStat); b != nil {
		eachKV(b, func(k []byte, v uint64) {
			// total_* (hierarchical) lines follow the local ones and win.
			if len(k) > 6 && string(k[:6]) == "total_" {
				k = k[6:]
			}
			switch string(k) {
			case "rss":
				mem.Anon = v
			case "cache":
				mem.File = v
			case "shmem":
				mem.Shmem = v
			case "mapped_file":
				mem.FileMapped = v
			case "dirty":
				mem.FileDirty = v
			case "writeback":
				mem.FileWriteback = v
			case "swap":
				mem.SwapUsage = v
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
	if b := r.read(m.f.oomControl); b != nil && parseOOMControl(b, &mem.Events) {
		// Hierarchical, as v2's memory.events: kills in sub-cgroups are
		// the container's kills too (see V1OOMKills). b is not used
		// after this: the walk reuses the buffer.
		sub, err := m.subtreeOOMKills(r.buf)
		if err != nil && r.err == nil {
			r.err = err
		}
		mem.Events.OOMKill += sub
	}
	s.CPU.UsageUsec = r.uint(m.f.cpuacctUsage) / 1000
	if u := r.read(m.f.cpuacctUser); u != nil {
		v, _ := parseUint(trimSpace(u))
		s.CPU.UserUsec = v / 1000
		s.CPU.SystemUsec = r.uint(m.f.cpuacctSys) / 1000
	} else if b := r.read(m.f.cpuacctStat); b != nil {
		// USER_HZ ticks; USER_HZ is 100 on every Linux architecture.
		eachKV(b, func(k []byte, v uint64) {
			switch string(k) {
			case "user":
				s.CPU.UserUsec = v * 10000
			case "system":
				s.CPU.SystemUsec = v * 10000
			}
		})
	}
	if b := r.read(m.f.cpuStat); b != nil {
		eachKV(b, func(k []byte, v uint64) {
			switch string(k) {
			case "nr_periods":
				s.CPU.NrPeriods = v
			case "nr_throttled":
				s.CPU.NrThrottled = v
			case "throttled_time":
				s.CPU.ThrottledUsec = v / 1000
			}
		})
	}
	s.Pids.Current = r.uint(m.f.pidsCurrent)
	s.Pids.Limit = r.uint(m.f.pidsMax)
	if b := r.read(m.f.blkioBytes); b != nil {
		parseBlkioV1(b, &io, false)
	}
	if b := r.read(m.f.blkioIOs); b != nil {
		parseBlkioV1(b, &io, true)
	}
	s.IO = io
	d := m.procsDir()
	if d == "" {
		return fmt.Errorf("no cgroup v1 controller mounted: %w", errdefs.ErrNotImplemented)
	}
	return r.done(d)
}

func (m *v1) OOMKills() (uint64, error) {
	d := m.dirs["memory"]
	if d == "" {
		return 0, nil // no memory controller mounted: none counted, as Stat
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := reader{buf: &m.buf}
	var e MemoryEvents
	if b := r.read(m.f.oomControl); b != nil && parseOOMControl(b, &e) {
		// As Stat: the sub-cgroups' kills are the container's too.
		sub, err := m.subtreeOOMKills(r.buf)
		if err != nil && r.err == nil {
			r.err = err
		}
		e.OOMKill += sub
	}
	return e.OOMKill, r.done(d)
}

// parseOOMControl parses v1 memory.oom_control and reports whether it has
// the oom_kill counter (kernels >= 4.13):
//
//	oom_kill_disable 0
//	under_oom 0
//	oom_kill 0
func parseOOMControl(b []byte, e *MemoryEvents) (hasKill bool) {
	eachKV(b, func(k []byte, v uint64) {
		switch string(k) {
		case "under_oom":
			e.UnderOOM = v != 0
		case "oom_kill":
			e.OOMKill, hasKill = v, true
		}
	})
	return hasKill
}

// v1OOMWalkLimit bounds the number of cgroups below a container's cgroup
// whose oom_kill counters are added up, so that a container creating
// cgroups without end cannot make Stat or the OOM monitor's reads
// unbounded. Kills in cgroups past the limit are not counted.
const v1OOMWalkLimit = 1024

// V1OOMKills returns the OOM kills of the v1 memory cgroup dir and of every
// cgroup below it (at most v1OOMWalkLimit of them, depth first in name
// order), the number v2's memory.events oom_kill gives: v1's
// memory.oom_control counts a kill only in the victim's own memory cgroup
// (the kernel propagates memory events to the parents on v2 only), while a
// container's processes may live in sub-cgroups (systemd, a nested engine)
// and be killed at the container's limit. A sub-cgroup removed since takes
// its kills with it: the sum can go down.
//
// ok is false when dir's memory.oom_control has no oom_kill counter
// (kernel < 4.13). truncated is true when the walk stopped at the limit
// with cgroups left unread: which cgroups those are changes as cgroups come
// and go. each, when not nil, is called for every counter read (dir's
// first) with the inode number of its cgroup directory, so that a caller
// can tell a recreated sub-cgroup (new inode, counter from 0) from an
// unchanged one, and remember the counters of the cgroups a truncated walk
// did not reach. A sub-cgroup removed during the walk is skipped; an error
// reading dir's own file is returned as is (fs.ErrNotExist when dir is
// gone).
func V1OOMKills(dir string, each func(ino, kills uint64)) (total uint64, ok, truncated bool, err error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return 0, false, false, err
	}
	var buf []byte
	b, err := newCfile(dir, "memory.oom_control").readInto(&buf)
	if err != nil {
		return 0, false, false, err
	}
	var e MemoryEvents
	if !parseOOMControl(b, &e) {
		return 0, false, false, nil
	}
	st := fi.Sys().(*syscall.Stat_t)
	if each != nil {
		each(st.Ino, e.OOMKill)
	}
	w := v1OOMWalk{budget: v1OOMWalkLimit, buf: &buf, each: each}
	err = w.walk(dir, uint64(st.Nlink))
	return e.OOMKill + w.total, true, w.truncated, err
}

// v1OOMWalk adds up the oom_kill counters of the cgroups below a v1 memory
// cgroup.
type v1OOMWalk struct {
	budget    int  // cgroups still to read
	truncated bool // a cgroup was left unread for want of budget
	total     uint64
	buf       *[]byte // for reading memory.oom_control
	each      func(ino, kills uint64)
}

// walk reads the counters of the cgroups below dir (not dir's own), depth
// first in name order. nlink is dir's link count: cgroupfs (kernfs) gives
// a directory 2 + its number of subdirectories, so a cgroup without
// children (the common case) is not listed.
func (w *v1OOMWalk) walk(dir string, nlink uint64) error {
	if nlink <= 2 {
		return nil
	}
	if w.budget <= 0 {
		w.truncated = true
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ignoreGone(err)
	}
	for _, ent := range ents {
		if !ent.IsDir() {
			continue
		}
		if w.budget <= 0 {
			w.truncated = true
			return nil
		}
		w.budget--
		sub := filepath.Join(dir, ent.Name())
		fi, err := os.Lstat(sub)
		if err != nil {
			if err = ignoreGone(err); err != nil {
				return err
			}
			continue
		}
		b, err := newCfile(sub, "memory.oom_control").readInto(w.buf)
		if err != nil {
			if err = ignoreGone(err); err != nil {
				return err
			}
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		var e MemoryEvents
		if parseOOMControl(b, &e) {
			w.total += e.OOMKill
			if w.each != nil {
				w.each(st.Ino, e.OOMKill)
			}
		}
		if err := w.walk(sub, uint64(st.Nlink)); err != nil {
			return err
		}
	}
	return nil
}

// ignoreGone returns nil for the error of a cgroup removed meanwhile.
func ignoreGone(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

// subtreeOOMKills returns the oom_kill counters of the cgroups below the
// memory cgroup (see V1OOMKills), read with buf. Without sub-cgroups it
// costs one statx of the directory, and allocates nothing.
func (m *v1) subtreeOOMKills(buf *[]byte) (uint64, error) {
	if m.f.memDir == nil {
		return 0, nil
	}
	nlink, err := m.f.memDir.nlink()
	if err != nil || nlink <= 2 {
		return 0, ignoreGone(err)
	}
	w := v1OOMWalk{budget: v1OOMWalkLimit, buf: buf}
	err = w.walk(m.dirs["memory"], nlink)
	return w.total, err
}
