package cgroups

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
)

// want checks cgroup files of m against expected contents.
func want(t *testing.T, m Manager, ctrl string, files map[string]string) {
	t.Helper()
	for name, v := range files {
		if got := readFile(t, m, ctrl, name); got != v {
			t.Errorf("%s: %q, want %q", name, got, v)
		}
	}
}

func TestApplyV1(t *testing.T) {
	mode := needV1(t)
	m := newCgroup(t, mode, "apply")
	major, minor, haveDev := blockDevice(t)
	r := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{
			Limit: ptr(int64(64 << 20)), Reservation: ptr(int64(32 << 20)), Swap: ptr(int64(96 << 20)),
			Swappiness: ptr(uint64(10)), DisableOOMKiller: ptr(false),
		},
		CPU: &specs.LinuxCPU{
			Shares: ptr(uint64(512)), Quota: ptr(int64(50000)), Period: ptr(uint64(100000)),
			Cpus: "0", Mems: "0",
		},
		Pids: &specs.LinuxPids{Limit: ptr(int64(42))},
	}
	if haveDev {
		r.BlockIO = &specs.LinuxBlockIO{
			ThrottleReadBpsDevice:   []specs.LinuxThrottleDevice{throttle(major, minor, 1<<20)},
			ThrottleWriteIOPSDevice: []specs.LinuxThrottleDevice{throttle(major, minor, 100)},
		}
	}
	if err := m.Apply(r); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	memsw := exists(filepath.Join(m.Dir("memory"), "memory.memsw.limit_in_bytes"))
	want(t, m, "memory", map[string]string{
		"memory.limit_in_bytes":      "67108864",
		"memory.soft_limit_in_bytes": "33554432",
		"memory.swappiness":          "10",
	})
	if memsw {
		want(t, m, "memory", map[string]string{"memory.memsw.limit_in_bytes": "100663296"})
	}
	want(t, m, "cpu", map[string]string{"cpu.shares": "512", "cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"})
	want(t, m, "cpuset", map[string]string{"cpuset.cpus": "0", "cpuset.mems": "0"})
	want(t, m, "pids", map[string]string{"pids.max": "42"})
	if haveDev {
		dev := fmt.Sprintf("%d:%d", major, minor)
		want(t, m, "blkio", map[string]string{
			"blkio.throttle.read_bps_device":   dev + " 1048576",
			"blkio.throttle.write_iops_device": dev + " 100",
		})
	} else {
		t.Log("no block device: blkio throttling not checked")
	}

	var s Stats
	if err := m.Stat(&s); err != nil {
		t.Fatal(err)
	}
	if s.Memory.Limit != 64<<20 || s.Memory.Low != 32<<20 || s.Pids.Limit != 42 {
		t.Errorf("stats limits: %+v %+v", s.Memory, s.Pids)
	}
	if memsw && s.Memory.SwapLimit != 32<<20 {
		t.Errorf("swap limit %d, want 32 MiB", s.Memory.SwapLimit)
	}

	// Lowering both limits writes memory before memsw; raising both memsw
	// first; the kernel refuses any other order.
	if err := m.Apply(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(16 << 20)), Swap: ptr(int64(20 << 20))}}); err != nil {
		t.Fatalf("lower: %v", err)
	}
	want(t, m, "memory", map[string]string{"memory.limit_in_bytes": "16777216"})
	if err := m.Apply(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(200 << 20)), Swap: ptr(int64(300 << 20))}}); err != nil {
		t.Fatalf("raise: %v", err)
	}
	want(t, m, "memory", map[string]string{"memory.limit_in_bytes": "209715200"})
	if memsw {
		want(t, m, "memory", map[string]string{"memory.memsw.limit_in_bytes": "314572800"})
	}
	// -1 is unlimited, for memory and (implicitly) memsw; quota -1 too.
	if err := m.Apply(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: ptr(int64(-1))},
		CPU:    &specs.LinuxCPU{Quota: ptr(int64(-1))},
		Pids:   &specs.LinuxPids{Limit: ptr(int64(0))},
	}); err != nil {
		t.Fatalf("unlimited: %v", err)
	}
	if err := m.Stat(&s); err != nil {
		t.Fatal(err)
	}
	if s.Memory.Limit != Unlimited || s.Memory.SwapLimit != Unlimited || s.Pids.Limit != Unlimited {
		t.Errorf("after unlimited: memory %d swap %d pids %d", s.Memory.Limit, s.Memory.SwapLimit, s.Pids.Limit)
	}
	want(t, m, "cpu", map[string]string{"cpu.cfs_quota_us": "-1"})
	want(t, m, "pids", map[string]string{"pids.max": "max"})

	// Unified resources are v2-only.
	err := m.Apply(&specs.LinuxResources{Unified: map[string]string{"memory.high": "1000000"}})
	if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "cgroup v2") {
		t.Errorf("unified on v1: %v", err)
	}
	// Proportional blkio weight needs a kernel with blkio.weight or
	// blkio.bfq.weight.
	err = m.Apply(&specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{Weight: ptr(uint16(500))}})
	switch {
	case exists(filepath.Join(m.Dir("blkio"), "blkio.weight")):
		if err != nil {
			t.Errorf("blkio weight: %v", err)
		}
		want(t, m, "blkio", map[string]string{"blkio.weight": "500"})
	case exists(filepath.Join(m.Dir("blkio"), "blkio.bfq.weight")):
		if err != nil {
			t.Errorf("blkio bfq weight: %v", err)
		}
	default:
		if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "blkio.weight") {
			t.Errorf("blkio weight on a kernel without it: %v", err)
		}
	}
	// hugetlb: limited when the v1 hierarchy exists, a clear error when not.
	err = m.Apply(&specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}}})
	if m.Dir("hugetlb") == "" {
		if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "hugetlb is not mounted") {
			t.Errorf("hugetlb without the controller: %v", err)
		}
	} else if err != nil {
		t.Errorf("hugetlb: %v", err)
	} else {
		want(t, m, "hugetlb", map[string]string{"hugetlb.2MB.limit_in_bytes": "4194304"})
	}
}

func throttle(major, minor int64, rate uint64) specs.LinuxThrottleDevice {
	var d specs.LinuxThrottleDevice
	d.Major, d.Minor, d.Rate = major, minor, rate
	return d
}

func TestApplyV2(t *testing.T) {
	mode := needV2(t)
	m := newCgroup(t, mode, "apply")
	major, minor, haveDev := blockDevice(t)
	r := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: ptr(int64(64 << 20)), Reservation: ptr(int64(32 << 20)), Swap: ptr(int64(96 << 20))},
		CPU: &specs.LinuxCPU{
			Shares: ptr(uint64(1024)), Quota: ptr(int64(50000)), Period: ptr(uint64(100000)),
			Cpus: "0", Mems: "0",
		},
		Pids:    &specs.LinuxPids{Limit: ptr(int64(42))},
		Unified: map[string]string{"memory.high": "50331648"},
	}
	if haveDev {
		r.BlockIO = &specs.LinuxBlockIO{
			ThrottleReadBpsDevice:   []specs.LinuxThrottleDevice{throttle(major, minor, 1<<20)},
			ThrottleWriteIOPSDevice: []specs.LinuxThrottleDevice{throttle(major, minor, 100)},
		}
	}
	if err := m.Apply(r); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want(t, m, "", map[string]string{
		"memory.max":  "67108864",
		"memory.low":  "33554432",
		"memory.high": "50331648",
		"cpu.weight":  "39",
		"cpu.max":     "50000 100000",
		"cpuset.cpus": "0",
		"cpuset.mems": "0",
		"pids.max":    "42",
	})
	swap := exists(filepath.Join(m.Dir(""), "memory.swap.max"))
	if swap {
		want(t, m, "", map[string]string{"memory.swap.max": "33554432"})
	}
	if haveDev {
		got := readFile(t, m, "", "io.max")
		wantLine := fmt.Sprintf("%d:%d rbps=1048576 wbps=max riops=max wiops=100", major, minor)
		if !strings.Contains(got, wantLine) {
			t.Errorf("io.max %q, want %q", got, wantLine)
		}
	} else {
		t.Log("no block device: io.max not checked")
	}
	var s Stats
	if err := m.Stat(&s); err != nil {
		t.Fatal(err)
	}
	if s.Memory.Limit != 64<<20 || s.Memory.High != 48<<20 || s.Memory.Low != 32<<20 || s.Pids.Limit != 42 {
		t.Errorf("stats limits: %+v %+v", s.Memory, s.Pids)
	}
	if swap && s.Memory.SwapLimit != 32<<20 {
		t.Errorf("swap limit %d", s.Memory.SwapLimit)
	}

	// Unlimited values.
	if err := m.Apply(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: ptr(int64(-1))},
		CPU:    &specs.LinuxCPU{Quota: ptr(int64(-1))},
		Pids:   &specs.LinuxPids{Limit: ptr(int64(-1))},
	}); err != nil {
		t.Fatalf("unlimited: %v", err)
	}
	want(t, m, "", map[string]string{"memory.max": "max", "pids.max": "max", "cpu.max": "max 100000"})
	if swap {
		want(t, m, "", map[string]string{"memory.swap.max": "max"})
	}

	// io.weight (or io.bfq.weight) when the kernel has a proportional
	// scheduler; otherwise a clear error.
	err := m.Apply(&specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{Weight: ptr(uint16(500))}})
	switch {
	case exists(filepath.Join(m.Dir(""), "io.weight")):
		if err != nil {
			t.Errorf("io.weight: %v", err)
		} else if got := readFile(t, m, "", "io.weight"); !strings.Contains(got, "default 4950") {
			t.Errorf("io.weight %q", got)
		}
	case exists(filepath.Join(m.Dir(""), "io.bfq.weight")):
		if err != nil {
			t.Errorf("io.bfq.weight: %v", err)
		}
	default:
		if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "io.weight") {
			t.Errorf("io weight without a scheduler: %v", err)
		}
	}
	// hugetlb.
	err = m.Apply(&specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}}})
	if exists(filepath.Join(m.Dir(""), "hugetlb.2MB.max")) {
		if err != nil {
			t.Errorf("hugetlb: %v", err)
		}
		want(t, m, "", map[string]string{"hugetlb.2MB.max": "4194304"})
	} else if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "hugetlb.2MB.max") {
		t.Errorf("hugetlb without the file: %v", err)
	}
	// Realtime limits do not exist in v2.
	err = m.Apply(&specs.LinuxResources{CPU: &specs.LinuxCPU{RealtimeRuntime: ptr(int64(1000))}})
	if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "realtime") {
		t.Errorf("realtime on v2: %v", err)
	}
	// Unified keys must be controller files.
	for _, k := range []string{"cgroup.procs", "../memory.max", "memory", "memory."} {
		err := m.Apply(&specs.LinuxResources{Unified: map[string]string{k: "1"}})
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "unified") {
			t.Errorf("unified key %q: %v", k, err)
		}
	}
	// A unified file the kernel does not have.
	err = m.Apply(&specs.LinuxResources{Unified: map[string]string{"memory.nonexistent": "1"}})
	if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "memory.nonexistent") {
		t.Errorf("unknown unified file: %v", err)
	}
}

// TestCreateV2EnablesControllers: every level down to the container has the
// controllers delegated.
func TestCreateV2EnablesControllers(t *testing.T) {
	mode := needV2(t)
	m := newCgroup(t, mode, "ctrl")
	parent := filepath.Dir(m.Dir(""))
	got := readFile(t, m, "", "cgroup.controllers")
	for _, c := range []string{"memory", "pids", "cpu"} {
		if !strings.Contains(got, c) {
			t.Errorf("%s/cgroup.controllers %q lacks %s", m.Dir(""), got, c)
		}
	}
	sub, _ := readString(parent, "cgroup.subtree_control")
	if !strings.Contains(sub, "memory") {
		t.Errorf("parent subtree_control %q", sub)
	}
}

// TestV2Writes checks the v2 conversion without a kernel (the VM has no
// block device for io.max).
func TestV2Writes(t *testing.T) {
	r := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: ptr(int64(100)), Swap: ptr(int64(300)), Reservation: ptr(int64(-1))},
		CPU:    &specs.LinuxCPU{Period: ptr(uint64(20000)), Shares: ptr(uint64(2)), Burst: ptr(uint64(5)), Idle: ptr(int64(1))},
		BlockIO: &specs.LinuxBlockIO{
			Weight: ptr(uint16(1000)),
			WeightDevice: []specs.LinuxWeightDevice{func() specs.LinuxWeightDevice {
				var d specs.LinuxWeightDevice
				d.Major, d.Minor, d.Weight = 8, 16, ptr(uint16(10))
				return d
			}()},
			ThrottleReadBpsDevice:   []specs.LinuxThrottleDevice{throttle(8, 0, 0)},
			ThrottleWriteBpsDevice:  []specs.LinuxThrottleDevice{throttle(8, 0, 7)},
			ThrottleReadIOPSDevice:  []specs.LinuxThrottleDevice{throttle(8, 0, 8)},
			ThrottleWriteIOPSDevice: []specs.LinuxThrottleDevice{throttle(8, 0, 9)},
		},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "1GB", Limit: 1 << 30}},
	}
	got, err := v2Writes(r, false, fixedQuota("30000"))
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{
		{"memory.swap.max", "200"}, {"memory.max", "100"}, {"memory.low", "max"},
		{"cpu.weight", "1"}, {"cpu.max", "30000 20000"}, {"cpu.max.burst", "5"}, {"cpu.idle", "1"},
		{"io.weight", "default 10000"}, {"io.weight", "8:16 1"},
		{"io.max", "8:0 rbps=max"}, {"io.max", "8:0 wbps=7"}, {"io.max", "8:0 riops=8"}, {"io.max", "8:0 wiops=9"},
		{"hugetlb.1GB.max", "1073741824"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("writes\n%v\nwant\n%v", got, want)
	}
	got, _ = v2Writes(&specs.LinuxResources{BlockIO: r.BlockIO}, true, fixedQuota("30000"))
	if fmt.Sprint(got[:2]) != "[[io.bfq.weight default 1000] [io.bfq.weight 8:16 10]]" {
		t.Fatalf("bfq writes %v", got[:2])
	}
}

// fixedQuota is a v2Writes cpuQuota reading q from cpu.max.
func fixedQuota(q string) func() (string, error) {
	return func() (string, error) { return q, nil }
}

// TestV2WritesPeriodOnlyKeepsQuota: Apply leaves nil fields alone, so a
// CPU period without a quota keeps the quota in cpu.max; writing
// "max <period>" used to lift the CPU limit.
func TestV2WritesPeriodOnlyKeepsQuota(t *testing.T) {
	for _, tc := range []struct {
		quota *int64
		cur   string
		want  string
	}{
		{nil, "20000", "20000 50000"},
		{ptr(int64(0)), "20000", "20000 50000"}, // 0 is unset, as everywhere
		{nil, "max", "max 50000"},
		{ptr(int64(-1)), "20000", "max 50000"},
		{ptr(int64(10000)), "20000", "10000 50000"},
	} {
		read := false
		got, err := v2Writes(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: tc.quota, Period: ptr(uint64(50000))}}, false,
			func() (string, error) { read = true; return tc.cur, nil })
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint([][2]string{{"cpu.max", tc.want}}) {
			t.Errorf("quota %v, cpu.max quota %s: writes %v, want cpu.max %q", tc.quota, tc.cur, got, tc.want)
		}
		if wantRead := tc.quota == nil || *tc.quota == 0; read != wantRead {
			t.Errorf("quota %v: read cpu.max %v, want %v", tc.quota, read, wantRead)
		}
	}
	_, err := v2Writes(&specs.LinuxResources{CPU: &specs.LinuxCPU{Period: ptr(uint64(50000))}}, false,
		func() (string, error) { return "", fmt.Errorf("read cpu.max: %w", errdefs.ErrNotImplemented) })
	if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "cpu.period") {
		t.Errorf("unreadable cpu.max: %v", err)
	}
}

// TestApplyV2PeriodOnlyKeepsQuota is TestV2WritesPeriodOnlyKeepsQuota on a
// cgroup v2 kernel (make test-vm).
func TestApplyV2PeriodOnlyKeepsQuota(t *testing.T) {
	mode := needV2(t)
	m := newCgroup(t, mode, "period")
	if err := m.Apply(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr(int64(50000)), Period: ptr(uint64(100000))}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(&specs.LinuxResources{CPU: &specs.LinuxCPU{Period: ptr(uint64(50000))}}); err != nil {
		t.Fatalf("period only: %v", err)
	}
	want(t, m, "", map[string]string{"cpu.max": "50000 50000"})
	if err := m.Apply(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr(int64(-1))}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(&specs.LinuxResources{CPU: &specs.LinuxCPU{Period: ptr(uint64(20000))}}); err != nil {
		t.Fatalf("period only, no quota: %v", err)
	}
	want(t, m, "", map[string]string{"cpu.max": "max 20000"})
}

// TestApplyV1ShrinkPeriodUnderParentQuota: the kernel checks each CFS write
// against the parent's bandwidth with the other value as it is; moving
// from 50000/100000 to 5000/10000 (0.5 CPU both) under a 1-CPU parent
// passes through 50000/10000 (5 CPUs) when the period is written first,
// which used to fail with EINVAL.
func TestApplyV1ShrinkPeriodUnderParentQuota(t *testing.T) {
	mode := needV1(t)
	m := newCgroup(t, mode, "cpuorder")
	parentDir := filepath.Dir(m.Dir("cpu"))
	if err := write(parentDir, "cpu.cfs_quota_us", "100000"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { write(parentDir, "cpu.cfs_quota_us", "-1") })
	for _, qp := range [][2]int64{{50000, 100000}, {5000, 10000}, {50000, 100000}} {
		if err := m.Apply(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr(qp[0]), Period: ptr(uint64(qp[1]))}}); err != nil {
			t.Fatalf("Apply %d/%d (0.5 CPU, parent 1 CPU): %v", qp[0], qp[1], err)
		}
		want(t, m, "cpu", map[string]string{"cpu.cfs_quota_us": fmt.Sprint(qp[0]), "cpu.cfs_period_us": fmt.Sprint(qp[1])})
	}
	// Beyond the parent the error stays.
	err := m.Apply(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr(int64(20000)), Period: ptr(uint64(10000))}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Apply 2 CPUs under a 1-CPU parent: %v, want invalid argument", err)
	}
}

// TestApplyV1LimitOnlyKeepsSwapAllowance: with swap accounting, a memory
// limit without a swap limit moves memsw with it, keeping memsw minus
// memory (the swap allowance) as it is, as v2's memory.swap.max stays.
// Raising the limit alone of a container without swap (memsw = limit)
// used to fail with EINVAL.
func TestApplyV1LimitOnlyKeepsSwapAllowance(t *testing.T) {
	mode := needV1(t)
	m := newCgroup(t, mode, "raise")
	if !exists(filepath.Join(m.Dir("memory"), "memory.memsw.limit_in_bytes")) {
		t.Skip("no swap accounting (swapaccount=0)")
	}
	const mb = 1 << 20
	apply := func(limit, swap int64) {
		t.Helper()
		mem := &specs.LinuxMemory{Limit: ptr(limit * mb)}
		if swap != 0 {
			mem.Swap = ptr(swap * mb)
		}
		if err := m.Apply(&specs.LinuxResources{Memory: mem}); err != nil {
			t.Fatalf("Apply limit %d MiB swap %d MiB: %v", limit, swap, err)
		}
	}
	check := func(limit, memsw int64) {
		t.Helper()
		want(t, m, "memory", map[string]string{
			"memory.limit_in_bytes":       fmt.Sprint(limit * mb),
			"memory.memsw.limit_in_bytes": fmt.Sprint(memsw * mb),
		})
	}
	apply(64, 64) // no swap
	apply(96, 0)
	check(96, 96)
	apply(32, 0)
	check(32, 32)
	apply(64, 96) // 32 MiB of swap
	apply(128, 0)
	check(128, 160)
	apply(16, 0)
	check(16, 48)
	// Unlimited memsw stays unlimited.
	if err := m.Apply(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(-1))}}); err != nil {
		t.Fatal(err)
	}
	apply(64, 0)
	var s Stats
	if err := m.Stat(&s); err != nil {
		t.Fatal(err)
	}
	if s.Memory.Limit != 64*mb || s.Memory.SwapLimit != Unlimited {
		t.Errorf("after limit 64 MiB with unlimited memsw: limit %d swap limit %d, want 64 MiB and unlimited", s.Memory.Limit, s.Memory.SwapLimit)
	}
}
