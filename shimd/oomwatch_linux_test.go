package shimd_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/shimd"
)

// TestOOMMonitorSubCgroupKill: a container whose processes live in a
// sub-cgroup (systemd, a nested engine) OOM-killed at the container's
// limit gets exactly one TaskOOM (onOOM call), by the epoll loop or at the
// latest by Remove's final read. On cgroup v1 both used to read only the
// container cgroup's own oom_kill counter, which does not count kills in
// sub-cgroups, and the kill was never reported.
func TestOOMMonitorSubCgroupKill(t *testing.T) {
	mode, err := cgroups.DetectMode("")
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	var b [4]byte
	rand.Read(b[:])
	parent := "/edged-test-" + hex.EncodeToString(b[:])
	newCg := func(path string) cgroups.Manager {
		cg := newTestCgroup(t, mode, path)
		return cg
	}
	// Cleanups run last-registered first: c1/sub, c1, then the parent.
	newCg(parent)
	cg := newCg(parent + "/c1")
	limit := int64(16 << 20)
	if err := cg.Apply(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}); err != nil {
		t.Fatal(err)
	}
	sub := newCg(parent + "/c1/sub")

	// The container's init: on v1 it stays in c1; on v2 (no processes in
	// a cgroup that delegates controllers) it lives in c1/sub too.
	initCg := cg
	if mode == cgroups.Unified {
		initCg = sub
	}
	init, _ := startIn(t, initCg, "sleep", "60")

	mon, err := shimd.NewOOMMonitor("", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Close() })
	var mu sync.Mutex
	var got []uint64
	if err := mon.Add("c1", init.Process.Pid, shimd.OOMBaseline{}, func(n uint64) {
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}

	// dd's 64 MiB buffer does not fit in c1's 16 MiB.
	hog, hogIn := startIn(t, sub, "sh", "-c", "read x; exec dd if=/dev/zero of=/dev/null bs=64M count=1")
	hogIn.Write([]byte("go\n"))
	err = hog.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("hog ended with %v, want SIGKILL (OOM kill)", err)
	}
	// Give the loop its chance (v1 re-reads for up to ~1.5 s), then
	// the container exits and Remove makes its final read.
	time.Sleep(2 * time.Second)
	init.Process.Kill()
	init.Wait()
	mon.Remove("c1")
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != 1 {
		t.Fatalf("onOOM calls %v, want one with counter 1", got)
	}
}

// startIn starts name args with a stdin pipe (a shell waiting on it does
// nothing until written to) and moves it into cg.
func startIn(t *testing.T, cg cgroups.Manager, name string, args ...string) (*exec.Cmd, io.Writer) {
	t.Helper()
	cmd := exec.Command(name, args...)
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
	if err := cg.AddProc(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	return cmd, in
}

// TestOOMMonitorBaseline: Baseline of a cgroup runc is to create (or that
// has no memory directory yet) reads 0 with its path; of an unknown path
// it gives up (zero OOMBaseline: Add counts from its own call). (How the
// shim resolves a bundle's cgroupsPath: TestBundleCgroup.)
func TestOOMMonitorBaseline(t *testing.T) {
	if _, err := cgroups.DetectMode(""); err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	mon, err := shimd.NewOOMMonitor("", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Close() })
	path := "/edged-shim-test/" + randID("base")
	for _, tc := range []struct {
		path    string
		existed bool
		want    shimd.OOMBaseline
	}{
		{path, false, shimd.OOMBaseline{Path: path}},
		{path, true, shimd.OOMBaseline{Path: path}}, // no memory directory
		{"", false, shimd.OOMBaseline{}},
		{"relative/" + path, false, shimd.OOMBaseline{}},
	} {
		if got := mon.Baseline(tc.path, tc.existed); got != tc.want {
			t.Errorf("Baseline(%q, %v): %+v, want %+v", tc.path, tc.existed, got, tc.want)
		}
	}
}

// TestOOMMonitorExitedInitNotReaped: the init of a container created and
// started at once may have exited, and not been reaped yet, when the shim
// starts watching its cgroup. On cgroup v1 the kernel shows such a zombie
// in the root cgroup: the watch used to follow it there, summing the
// oom_kill counters of every cgroup on the host (a walk of the whole
// memory hierarchy, on the path of every short container's start) and
// reporting other cgroups' kills as the container's. The watch is on the
// bundle's cgroup: a kill in a sibling cgroup is not reported, one in the
// container's cgroup is, once, counted from the baseline.
func TestOOMMonitorExitedInitNotReaped(t *testing.T) {
	mode, err := cgroups.DetectMode("")
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	var b [4]byte
	rand.Read(b[:])
	parent := "/edged-test-" + hex.EncodeToString(b[:])
	limit := int64(16 << 20)
	newCg := func(path string, limited bool) cgroups.Manager {
		cg := newTestCgroup(t, mode, path)
		if limited {
			if err := cg.Apply(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}); err != nil {
				t.Fatal(err)
			}
		}
		return cg
	}
	newCg(parent, false)
	ctr := newCg(parent+"/c1", true)
	other := newCg(parent+"/other", true)

	mon, err := shimd.NewOOMMonitor("", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Close() })
	base := mon.Baseline(ctr.Path(), false)

	// The init exits at once and is left unreaped (a zombie).
	init, initIn := startIn(t, ctr, "sh", "-c", "read x")
	initIn.Write([]byte("go\n"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", init.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(string(st)); len(f) > 2 && f[2] == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("init did not exit")
		}
		time.Sleep(5 * time.Millisecond)
	}

	var mu sync.Mutex
	var got []uint64
	if err := mon.Add("c1", init.Process.Pid, base, func(n uint64) {
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	oomKill := func(cg cgroups.Manager) {
		t.Helper()
		hog, hogIn := startIn(t, cg, "sh", "-c", "read x; exec dd if=/dev/zero of=/dev/null bs=64M count=1")
		hogIn.Write([]byte("go\n"))
		err := hog.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("hog ended with %v, want SIGKILL (OOM kill)", err)
		}
	}
	oomKill(other)
	oomKill(ctr)
	time.Sleep(2 * time.Second) // the loop's chance, as above
	mon.Remove("c1")
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != 1 {
		t.Fatalf("onOOM calls %v, want one with counter 1 (the kill in the container's cgroup only)", got)
	}
}
