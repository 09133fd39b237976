package metrics

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/edged/errdefs"
)

// taskCgroup creates the cgroup /edged-metrics-test-<rand>/<ns>/<id> the way
// edged names a task's cgroup, runs `sleep` in it and returns its pid and a
// function that ends the task: kills sleep and removes the cgroups.
func taskCgroup(t testing.TB, r *Reader, ns, id string) (uint32, func()) {
	pid, _, end := taskCgroupManager(t, r, ns, id)
	return pid, end
}

// taskCgroupManager is taskCgroup that also returns the task's cgroup.
func taskCgroupManager(t testing.TB, r *Reader, ns, id string) (uint32, cgroups.Manager, func()) {
	t.Helper()
	var rnd [4]byte
	rand.Read(rnd[:])
	parent := "/edged-metrics-test-" + hex.EncodeToString(rnd[:])
	m, err := cgroups.New("", r.Mode(), parent+"/"+ns+"/"+id)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	end := func() {
		cmd.Process.Kill()
		cmd.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, p := range []string{parent + "/" + ns + "/" + id, parent + "/" + ns, parent} {
			if pm, err := cgroups.New("", r.Mode(), p); err == nil {
				if err := pm.Delete(ctx); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
	}
	t.Cleanup(end)
	if err := m.AddProc(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	return uint32(cmd.Process.Pid), m, end
}

func hostReader(t testing.TB) *Reader {
	t.Helper()
	r, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode() == cgroups.Unavailable {
		t.Skip("no cgroup file system")
	}
	return r
}

func TestReaderMetrics(t *testing.T) {
	r := hostReader(t)
	pid, end := taskCgroup(t, r, "ns1", "task1")
	m, err := r.Metrics(context.Background(), "ns1", "task1", pid)
	if err != nil {
		t.Fatal(err)
	}
	if m.Id != "task1" || m.CgroupMode != r.Mode().String() {
		t.Errorf("id %q mode %q", m.Id, m.CgroupMode)
	}
	// sleep was moved in after it started: on v1 its memory stays
	// charged to the old cgroup, so only the pid count is certain.
	if m.GetPids().GetCurrent() != 1 {
		t.Errorf("pids %d, want 1", m.GetPids().GetCurrent())
	}
	// The second read uses the cached cgroup.
	m2, err := r.Metrics(context.Background(), "ns1", "task1", pid)
	if err != nil || m2.GetPids().GetCurrent() != 1 {
		t.Fatalf("second read: %v, %d pids", err, m2.GetPids().GetCurrent())
	}
	if len(r.cache) != 1 {
		t.Errorf("%d cached cgroups, want 1", len(r.cache))
	}

	// The pid of another task's cgroup (a reused pid) is not this task's.
	_, err = r.Metrics(context.Background(), "ns1", "other", pid)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "not the task's") {
		t.Errorf("pid in another cgroup: %v, want ErrNotFound ... not the task's", err)
	}
	if _, err := r.Metrics(context.Background(), "ns1", "task1", 0); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "has no process") {
		t.Errorf("pid 0: %v, want ErrNotFound ... has no process", err)
	}

	// The init exits, its cgroup stays: the task has no metrics and the
	// cached cgroup is dropped.
	if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = r.Metrics(context.Background(), "ns1", "task1", pid)
		if err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), fmt.Sprintf(`task "task1": process %d exited`, pid)) {
		t.Errorf("exited init: %v, want ErrNotFound ... process exited", err)
	}
	if len(r.cache) != 0 {
		t.Errorf("%d cached cgroups after exit, want 0", len(r.cache))
	}
	end()
}

// TestReaderCgroupRemoved checks that a cached cgroup that was removed
// (with a process still running elsewhere) reads as not found.
func TestReaderCgroupRemoved(t *testing.T) {
	r := hostReader(t)
	pid, m, _ := taskCgroupManager(t, r, "ns1", "task1")
	if _, err := r.Metrics(context.Background(), "ns1", "task1", pid); err != nil {
		t.Fatal(err)
	}
	// Move the process to another cgroup and remove the task's.
	var rnd [4]byte
	rand.Read(rnd[:])
	holder, err := cgroups.New("", r.Mode(), "/edged-metrics-test-holder-"+hex.EncodeToString(rnd[:]))
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(int(pid), syscall.SIGKILL)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := holder.Delete(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := holder.AddProc(int(pid)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = r.Metrics(context.Background(), "ns1", "task1", pid)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `task "task1": cgroup `) {
		t.Errorf("removed cgroup: %v, want ErrNotFound ... cgroup ...", err)
	}
	if len(r.cache) != 0 {
		t.Errorf("%d cached cgroups after removal, want 0", len(r.cache))
	}
}

// TestReaderCacheIdle checks that cgroups not read for cacheIdle are
// dropped on a later read.
func TestReaderCacheIdle(t *testing.T) {
	r := hostReader(t)
	pid1, _ := taskCgroup(t, r, "ns1", "a")
	pid2, _ := taskCgroup(t, r, "ns1", "b")
	ctx := context.Background()
	for _, c := range []struct {
		id  string
		pid uint32
	}{{"a", pid1}, {"b", pid2}} {
		if _, err := r.Metrics(ctx, "ns1", c.id, c.pid); err != nil {
			t.Fatal(err)
		}
	}
	// Age "a" and the last sweep past cacheIdle, as if a minute passed.
	old := time.Now().Add(-2 * cacheIdle)
	r.cache[taskKey{"ns1", "a", pid1}].used = old
	r.swept = old
	if _, err := r.Metrics(ctx, "ns1", "b", pid2); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.cache[taskKey{"ns1", "a", pid1}]; ok || len(r.cache) != 1 {
		t.Errorf("cache after sweep: %v, want only b", r.cache)
	}
}

func TestReaderMetricsProcessGone(t *testing.T) {
	r := hostReader(t)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	if err := syscall.Kill(int(pid), 0); err == nil {
		t.Skip("pid was reused")
	}
	_, err := r.Metrics(context.Background(), "ns1", "gone", pid)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `task "gone"`) {
		t.Errorf("exited process: %v, want ErrNotFound naming the task", err)
	}
}

// BenchmarkMetrics reads the statistics of one task: one container's
// share of a Tasks.Metrics refresh (`edgectl stats` of 50 containers
// costs 50 of these).
func BenchmarkMetrics(b *testing.B) {
	r := hostReader(b)
	pid, _ := taskCgroup(b, r, "ns1", "task1")
	ctx := context.Background()
	b.ReportAllocs()
	// CPU time is steadier than wall time on a busy machine.
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	for b.Loop() {
		if _, err := r.Metrics(ctx, "ns1", "task1", pid); err != nil {
			b.Fatal(err)
		}
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
}
