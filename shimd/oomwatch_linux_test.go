package shimd_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
		cg, err := cgroups.New("", mode, path)
		if err != nil {
			t.Fatal(err)
		}
		if err := cg.Create(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if pids, err := cg.Procs(); err == nil {
				for _, p := range pids {
					syscall.Kill(p, syscall.SIGKILL)
				}
			}
			if err := cg.Delete(ctx); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
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

// TestOOMMonitorBaselinePaths: Baseline resolves the bundle's cgroupsPath
// as runc does for an absolute path and a systemd slice:prefix:name (a
// cgroup not created yet reads 0), and gives up (zero OOMBaseline: Add
// counts from its own call) for a relative or missing path, which runc
// resolves against its own cgroup.
func TestOOMMonitorBaselinePaths(t *testing.T) {
	if _, err := cgroups.DetectMode(""); err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	mon, err := shimd.NewOOMMonitor("", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Close() })
	id := randID("base")
	for _, tc := range []struct {
		config string
		want   shimd.OOMBaseline
	}{
		{`{"linux":{"cgroupsPath":"/edged-shim-test/` + id + `"}}`, shimd.OOMBaseline{Path: "/edged-shim-test/" + id}},
		{`{"linux":{"cgroupsPath":"edged-t.slice:edged:` + id + `"}}`, shimd.OOMBaseline{Path: "/edged.slice/edged-t.slice/edged-" + id + ".scope"}},
		{`{"linux":{"cgroupsPath":"edged-shim-test/` + id + `"}}`, shimd.OOMBaseline{}},
		{`{"linux":{}}`, shimd.OOMBaseline{}},
		{`{}`, shimd.OOMBaseline{}},
		{`{`, shimd.OOMBaseline{}},
	} {
		b := t.TempDir()
		if err := os.WriteFile(filepath.Join(b, "config.json"), []byte(tc.config), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := mon.Baseline(b); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.config, got, tc.want)
		}
	}
	if got := mon.Baseline(t.TempDir()); got != (shimd.OOMBaseline{}) {
		t.Errorf("no config.json: %+v", got)
	}
}
