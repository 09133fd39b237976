package cgroups

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
)

// TestLifecycle runs on v1 and v2 hosts: a real process in a new cgroup,
// its accounting, freezing, and deletion rules.
func TestLifecycle(t *testing.T) {
	mode := hostMode(t)
	m := newCgroup(t, mode, "life")
	wantVersion := 1
	if mode == Unified {
		wantVersion = 2
	}
	if m.Version() != wantVersion {
		t.Fatalf("version %d on %v", m.Version(), mode)
	}
	if !strings.HasPrefix(m.Path(), "/edged-test-") || !strings.HasSuffix(m.Path(), "/life") {
		t.Fatalf("path %q", m.Path())
	}
	if err := m.Create(); err != nil { // idempotent
		t.Fatalf("second Create: %v", err)
	}
	if err := m.Apply(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: ptr(int64(256 << 20))},
		Pids:   &specs.LinuxPids{Limit: ptr(int64(50))},
	}); err != nil {
		t.Fatalf("Apply: %v", err)
	}

	c := startChild(t, m, "burn", 24)
	pid := c.cmd.Process.Pid
	pids, err := m.Procs()
	if err != nil || !slices.Equal(pids, []int{pid}) {
		t.Fatalf("Procs = %v, %v; want [%d]", pids, err, pid)
	}

	// Load finds the same cgroup from /proc/<pid>/cgroup.
	l, err := Load("", mode, pid)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if l.Path() != m.Path() || l.Dir("memory") != m.Dir("memory") || l.Dir("pids") != m.Dir("pids") {
		t.Fatalf("Load: path %q dir %q; want %q %q", l.Path(), l.Dir("memory"), m.Path(), m.Dir("memory"))
	}

	time.Sleep(100 * time.Millisecond) // let it burn some CPU
	var s Stats
	if err := l.Stat(&s); err != nil {
		t.Fatalf("Stat: %v", err)
	}
	t.Logf("stats: %+v", s)
	if s.Version != wantVersion {
		t.Errorf("stats version %d", s.Version)
	}
	if s.Memory.Usage < 24<<20 || s.Memory.Anon < 24<<20 || s.Memory.Limit != 256<<20 {
		t.Errorf("memory usage %d anon %d limit %d; want >= 24 MiB, >= 24 MiB, 256 MiB", s.Memory.Usage, s.Memory.Anon, s.Memory.Limit)
	}
	if s.Memory.Peak < s.Memory.Usage && (mode != Unified || exists(filepath.Join(m.Dir("memory"), "memory.peak"))) {
		t.Errorf("peak %d < usage %d", s.Memory.Peak, s.Memory.Usage)
	}
	if s.Memory.WorkingSet == 0 || s.Memory.WorkingSet > s.Memory.Usage {
		t.Errorf("working set %d, usage %d", s.Memory.WorkingSet, s.Memory.Usage)
	}
	if s.Memory.Pgfault == 0 { // few with transparent huge pages
		t.Errorf("pgfault 0 after touching 24 MiB")
	}
	if s.CPU.UsageUsec < 1000 || s.CPU.UserUsec+s.CPU.SystemUsec == 0 {
		t.Errorf("cpu %+v: want >= 1ms of usage", s.CPU)
	}
	if s.Pids.Current < 1 || s.Pids.Limit != 50 {
		t.Errorf("pids %+v", s.Pids)
	}
	if mode == Unified && !s.PSI.Available && exists(filepath.Join(m.Dir(""), "cpu.pressure")) {
		t.Errorf("cpu.pressure exists but PSI unavailable")
	}
	if mode != Unified && s.PSI.Available {
		t.Errorf("PSI on v1")
	}
	if s.PSI.Available && s.PSI.CPU.Some.Total == 0 && s.PSI.CPU.Full.Total == 0 && s.PSI.Memory.Some.Total == 0 {
		t.Logf("PSI available but all zero (idle machine)")
	}

	// Freeze: the burning child stops using CPU.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Freeze(ctx); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	u1 := cpuUsage(t, m)
	time.Sleep(200 * time.Millisecond)
	if u2 := cpuUsage(t, m); u2 != u1 {
		t.Errorf("frozen cgroup used CPU: %d -> %d usec", u1, u2)
	}
	if err := m.Thaw(ctx); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	// Thawed, it burns CPU again (polled: the machine may be busy).
	for deadline := time.Now().Add(5 * time.Second); ; {
		time.Sleep(50 * time.Millisecond)
		u3 := cpuUsage(t, m)
		if u3 >= u1+20000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("thawed cgroup used only %d usec in 5s", u3-u1)
		}
	}

	// Delete refuses while a process is in it, naming it.
	err = m.Delete(ctx)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "1 processes remain ["+strconv.Itoa(pid)+"]") {
		t.Fatalf("Delete with a process: %v", err)
	}
	c.cmd.Process.Kill()
	c.cmd.Wait()
	if err := m.Delete(ctx); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if exists(m.Dir("memory")) {
		t.Fatalf("%s still exists", m.Dir("memory"))
	}
	if err := m.Delete(ctx); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	err = m.Stat(&s)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), m.Dir("memory")) {
		t.Fatalf("Stat of a deleted cgroup: %v", err)
	}
	if err := m.AddProc(os.Getpid()); err == nil || !strings.Contains(err.Error(), "cgroup.procs") {
		t.Fatalf("AddProc to a deleted cgroup: %v", err)
	}
}

func cpuUsage(t *testing.T, m Manager) uint64 {
	t.Helper()
	var s Stats
	if err := m.Stat(&s); err != nil {
		t.Fatal(err)
	}
	return s.CPU.UsageUsec
}

func TestNewErrors(t *testing.T) {
	for _, p := range []string{"", "rel", "/a/../b", "/", "/a//b"} {
		_, err := New("", Unified, p)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "cgroup path") {
			t.Errorf("New(%q): %v", p, err)
		}
	}
	_, err := New("", Unavailable, "/x")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("New unavailable: %v", err)
	}
	_, err = Load("", Unified, 1<<30)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "process") {
		t.Errorf("Load of a missing pid: %v", err)
	}
}

func TestLoadSelfMatchesHost(t *testing.T) {
	mode := hostMode(t)
	m, err := Load("", mode, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !exists(m.Dir("memory")) {
		t.Fatalf("own memory cgroup %s missing", m.Dir("memory"))
	}
	var s Stats
	if err := m.Stat(&s); err != nil {
		t.Fatal(err)
	}
	// The root cgroup (where a VM's test runs) has no memory.current.
	if (m.Path() != "/" && s.Memory.Usage == 0) || s.CPU.UsageUsec == 0 || s.Memory.Anon == 0 {
		t.Fatalf("own cgroup %s: stats empty: %+v", m.Path(), s)
	}
}

// TestDeleteNested removes empty child cgroups with the parent.
func TestDeleteNested(t *testing.T) {
	mode := hostMode(t)
	m := newCgroup(t, mode, "nested")
	sub, err := New("", mode, m.Path()+"/a/b")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Create(); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(context.Background()); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if exists(sub.Dir("memory")) || exists(m.Dir("memory")) {
		t.Fatal("nested cgroups left behind")
	}
}

// TestDeleteBusyHonoursContext gives up waiting when ctx ends.
func TestDeleteBusyHonoursContext(t *testing.T) {
	mode := hostMode(t)
	m := newCgroup(t, mode, "busy")
	startChild(t, m, "sleep", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := m.Delete(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Delete: %v", err)
	}
	if !strings.Contains(err.Error(), "busy") {
		t.Fatalf("Delete error does not say why: %v", err)
	}
}

// TestApplyInvalid checks errors found before any write, on both versions.
func TestApplyInvalid(t *testing.T) {
	mode := hostMode(t)
	m := newCgroup(t, mode, "invalid")
	for name, c := range map[string]struct {
		r   specs.LinuxResources
		msg string
	}{
		"swap below limit": {specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(100 << 20)), Swap: ptr(int64(50 << 20))}}, "below the memory limit"},
		"swap w/o limit":   {specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: ptr(int64(50 << 20))}}, "needs a memory limit"},
		"negative limit":   {specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(-7))}}, "negative"},
		"page size":        {specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2XB", Limit: 1}}}, "pageSize"},
		"page size number": {specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "../MB", Limit: 1}}}, "pageSize"},
	} {
		err := m.Apply(&c.r)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v; want invalid argument %q", name, err, c.msg)
		}
	}
	// The kernel refuses a CPU that does not exist; the error names the file.
	err := m.Apply(&specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "4095"}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "cpuset.cpus") {
		t.Errorf("cpuset 4095: %v", err)
	}
	if err := m.Apply(nil); err != nil {
		t.Errorf("Apply(nil): %v", err)
	}
	// A limit below the usage with CheckBeforeUpdate.
	startChild(t, m, "sleep", 8)
	err = m.Apply(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(1 << 20)), CheckBeforeUpdate: ptr(true)}})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "below the current usage") {
		t.Errorf("CheckBeforeUpdate: %v", err)
	}
}

// TestFreezeMissingProcessesOK: freezing an empty cgroup succeeds at once.
func TestFreezeEmpty(t *testing.T) {
	mode := hostMode(t)
	m := newCgroup(t, mode, "freeze")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Thaw(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestKillLeavesProcsEmpty checks Procs after the process is gone.
func TestProcsAfterExit(t *testing.T) {
	mode := hostMode(t)
	m := newCgroup(t, mode, "procs")
	c := startChild(t, m, "sleep", 0)
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := m.Procs()
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("procs %v after exit", pids)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOOMKills: OOMKills gives Stat's Memory.Events.OOMKill, the kills in
// the cgroup and its sub-cgroups (a process killed in a sub-cgroup at the
// cgroup's limit counts), reading only the counter's files; a removed
// cgroup is ErrNotFound.
func TestOOMKills(t *testing.T) {
	mode := hostMode(t)
	m := newCgroup(t, mode, "oomkills")
	limit := int64(16 << 20)
	if err := m.Apply(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}); err != nil {
		t.Fatal(err)
	}
	if n, err := m.OOMKills(); err != nil || n != 0 {
		t.Fatalf("OOMKills before any kill: %d, %v; want 0", n, err)
	}
	sub, err := New("", mode, m.Path()+"/sub")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Create(); err != nil {
		t.Fatal(err)
	}
	// The workload touches 64 MiB once moved into sub: more than m allows.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"=sleep", "EDGED_CHILD_MB=64")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if err := sub.AddProc(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	in.Write([]byte("go\n"))
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("workload ended with %v, want SIGKILL (OOM kill)", err)
	}
	var st Stats
	if err := m.Stat(&st); err != nil {
		t.Fatal(err)
	}
	n, err := m.OOMKills()
	if err != nil || n != 1 || n != st.Memory.Events.OOMKill {
		t.Fatalf("OOMKills: %d, %v; want 1, as Stat (%d)", n, err, st.Memory.Events.OOMKill)
	}
	if err := sub.Delete(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.OOMKills(); !errdefs.IsNotFound(err) {
		t.Fatalf("OOMKills of a removed cgroup: %v, want NotFound", err)
	}
}
