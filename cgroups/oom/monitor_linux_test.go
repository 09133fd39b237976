package oom

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/edged/errdefs"
)

// childEnv makes the test binary a process that, once told on stdin,
// allocates and touches 64 MiB: in a 16 MiB cgroup the kernel OOM-kills it.
const childEnv = "EDGED_OOM_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		bufio.NewReader(os.Stdin).ReadString('\n')
		mem := make([]byte, 64<<20)
		for i := 0; i < len(mem); i += 4096 {
			mem[i] = 1
		}
		fmt.Println("survived", len(mem))
		os.Exit(3)
	}
	os.Exit(m.Run())
}

func hostMode(t *testing.T) cgroups.Mode {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	mode, err := cgroups.DetectMode("")
	if err != nil {
		t.Skipf("no cgroups on this host: %v", err)
	}
	return mode
}

func randHex(t *testing.T) string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newParent returns a fresh parent cgroup path, removed at the end.
func newParent(t *testing.T, mode cgroups.Mode) string {
	t.Helper()
	p := "/edged-test-" + randHex(t)
	t.Cleanup(func() {
		m, _ := cgroups.New("", mode, p)
		if err := m.Delete(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return p
}

// newCgroup creates parent/name limited to 16 MiB without swap.
func newCgroup(t *testing.T, mode cgroups.Mode, parent, name string) cgroups.Manager {
	t.Helper()
	m, err := cgroups.New("", mode, parent+"/"+name)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if pids, _ := m.Procs(); len(pids) > 0 {
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Delete(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	limit := int64(16 << 20)
	if err := m.Apply(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}); err != nil {
		t.Fatal(err)
	}
	return m
}

// startHog starts the allocating child in cg; write a line to the returned
// pipe to let it allocate.
func startHog(t *testing.T, cg cgroups.Manager) (*exec.Cmd, *os.File) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
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
	return cmd, in.(*os.File)
}

// waitKilled waits for cmd and checks that SIGKILL ended it.
func waitKilled(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("hog ended with %v, want SIGKILL (OOM kill)", err)
	}
}

// startMonitor runs a monitor whose events go to the returned channel.
func startMonitor(t *testing.T, onEvent func(*Monitor, Event)) (*Monitor, chan Event) {
	t.Helper()
	ch := make(chan Event, 1000)
	var mon *Monitor
	var ready sync.WaitGroup
	ready.Add(1)
	mon, err := New(func(e Event) {
		ready.Wait()
		if onEvent != nil {
			onEvent(mon, e)
		}
		ch <- e
	})
	ready.Done()
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- mon.Run(context.Background()) }()
	t.Cleanup(func() {
		mon.Close()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return mon, ch
}

// collect reads events until n arrived and then quiet more time passes,
// or until timeout.
func collect(t *testing.T, ch chan Event, n int, timeout, quiet time.Duration) []Event {
	t.Helper()
	var got []Event
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case e := <-ch:
			got = append(got, e)
		case <-deadline:
			t.Fatalf("got %d events in %v, want %d: %+v", len(got), timeout, n, got)
		}
	}
	// v1 re-reads for up to ~1.5 s after a notification: wait longer
	// than that for duplicates.
	q := time.After(quiet)
	for {
		select {
		case e := <-ch:
			got = append(got, e)
		case <-q:
			return got
		}
	}
}

func waitLen(t *testing.T, mon *Monitor, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); mon.Len() != n; {
		if time.Now().After(deadline) {
			t.Fatalf("monitor watches %d containers, want %d", mon.Len(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOOMKill(t *testing.T) {
	mode := hostMode(t)
	mon, ch := startMonitor(t, nil)
	parent := newParent(t, mode)
	cg := newCgroup(t, mode, parent, "c1")
	if err := mon.Add("c1", cg); err != nil {
		t.Fatalf("Add: %v", err)
	}
	cmd, in := startHog(t, cg)
	in.Write([]byte("go\n"))
	waitKilled(t, cmd)
	got := collect(t, ch, 1, 15*time.Second, 2*time.Second)
	if len(got) != 1 || got[0].ID != "c1" || got[0].OOMKills != 1 || got[0].Total != 1 {
		t.Fatalf("events %+v, want one {c1 1 1}", got)
	}
	if mode == cgroups.Unified {
		// populated 1 -> 0: the watch drops itself after a final read.
		waitLen(t, mon, 0)
	} else {
		// v1: the watch ends when the cgroup is removed.
		if err := cg.Delete(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitLen(t, mon, 0)
	}
	mon.Remove("c1") // no-op now
}

// TestOOMKillConcurrent: ten containers OOM at once, exactly ten events,
// one per container. The handler removes the watch it reports on, which
// also checks that it runs outside the monitor's lock.
func TestOOMKillConcurrent(t *testing.T) {
	mode := hostMode(t)
	mon, ch := startMonitor(t, func(m *Monitor, e Event) { m.Remove(e.ID) })
	parent := newParent(t, mode)
	var cmds []*exec.Cmd
	var ins []*os.File
	for i := range 10 {
		id := fmt.Sprintf("c%d", i)
		cg := newCgroup(t, mode, parent, id)
		if err := mon.Add(id, cg); err != nil {
			t.Fatal(err)
		}
		cmd, in := startHog(t, cg)
		cmds, ins = append(cmds, cmd), append(ins, in)
	}
	for _, in := range ins {
		in.Write([]byte("go\n"))
	}
	for _, cmd := range cmds {
		waitKilled(t, cmd)
	}
	got := collect(t, ch, 10, 30*time.Second, 2*time.Second)
	seen := map[string]int{}
	for _, e := range got {
		if e.OOMKills != 1 {
			t.Errorf("event %+v: want 1 kill", e)
		}
		seen[e.ID]++
	}
	if len(got) != 10 || len(seen) != 10 {
		t.Fatalf("events %+v, want one for each of c0..c9", got)
	}
	for i := range 10 {
		if seen[fmt.Sprintf("c%d", i)] != 1 {
			t.Fatalf("c%d: %d events", i, seen[fmt.Sprintf("c%d", i)])
		}
	}
	waitLen(t, mon, 0)
}

// TestNoEventWithoutKill: a container that exits normally, or allocates
// within its limit, gives no event.
func TestNoEventWithoutKill(t *testing.T) {
	mode := hostMode(t)
	mon, ch := startMonitor(t, nil)
	parent := newParent(t, mode)
	cg := newCgroup(t, mode, parent, "calm")
	if err := cg.Apply(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(512 << 20)), Swap: ptr(int64(512 << 20))}}); err != nil {
		t.Fatal(err)
	}
	if err := mon.Add("calm", cg); err != nil {
		t.Fatal(err)
	}
	cmd, in := startHog(t, cg)
	in.Write([]byte("go\n"))
	if err := cmd.Wait(); err == nil || cmd.ProcessState.ExitCode() != 3 {
		t.Fatalf("hog: %v, want exit 3", err)
	}
	select {
	case e := <-ch:
		t.Fatalf("unexpected event %+v", e)
	case <-time.After(500 * time.Millisecond):
	}
}

func ptr[T any](v T) *T { return &v }

// fdCount counts this process's open file descriptors.
func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // ReadDir's own fd
}

// TestFdsReleased: 100 cgroups watched and released (half by Remove, half
// by deleting the cgroup) leave the fd count where it was.
func TestFdsReleased(t *testing.T) {
	mode := hostMode(t)
	parent := newParent(t, mode)
	cgs := make([]cgroups.Manager, 100)
	for i := range cgs {
		m, err := cgroups.New("", mode, fmt.Sprintf("%s/fd%d", parent, i))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Create(); err != nil {
			t.Fatal(err)
		}
		cgs[i] = m
	}
	t.Cleanup(func() {
		for _, m := range cgs {
			m.Delete(context.Background())
		}
	})
	start := fdCount(t)
	mon, err := New(func(Event) {})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- mon.Run(context.Background()) }()
	if n := fdCount(t); n != start+3 {
		t.Fatalf("new monitor: %d fds, want %d", n, start+3)
	}
	for i, m := range cgs {
		if err := mon.Add(fmt.Sprint(i), m); err != nil {
			t.Fatal(err)
		}
	}
	perWatch := 0
	if mode != cgroups.Unified {
		perWatch = 1 // the eventfd; v2 watches are inotify watches, not fds
	}
	if n := fdCount(t); n != start+3+100*perWatch {
		t.Fatalf("100 watches: %d fds, want %d", n, start+3+100*perWatch)
	}
	for i := range 50 {
		mon.Remove(fmt.Sprint(i))
	}
	for _, m := range cgs[50:] {
		if err := m.Delete(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if mode == cgroups.Unified {
		// A removed cgroup without processes gives no populated change;
		// the owner removes the watch.
		for i := 50; i < 100; i++ {
			mon.Remove(fmt.Sprint(i))
		}
	}
	waitLen(t, mon, 0)
	if n := fdCount(t); n != start+3 {
		t.Fatalf("after release: %d fds, want %d", n, start+3)
	}
	mon.Close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n := fdCount(t); n != start {
		t.Fatalf("after Close: %d fds, want %d", n, start)
	}
}

// TestIdle: with 20 watches and nothing happening, the loop does not wake.
func TestIdle(t *testing.T) {
	mode := hostMode(t)
	mon, _ := startMonitor(t, nil)
	parent := newParent(t, mode)
	for i := range 20 {
		m, err := cgroups.New("", mode, fmt.Sprintf("%s/idle%d", parent, i))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Create(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Delete(context.Background()) })
		if err := mon.Add(fmt.Sprint(i), m); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	before := mon.wakeups.Load()
	time.Sleep(time.Second)
	if n := mon.wakeups.Load() - before; n != 0 {
		t.Fatalf("idle loop woke %d times in 1s", n)
	}
	// While idle, Run waits in the runtime's poller ("IO wait"), not in a
	// blocking epoll_wait that holds an OS thread ("syscall").
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	found := false
	for _, g := range strings.Split(stacks, "\n\n") {
		if !strings.Contains(g, "oom.(*Monitor).Run") {
			continue
		}
		found = true
		header, _, _ := strings.Cut(g, "\n")
		if !strings.Contains(header, "[IO wait") {
			t.Fatalf("idle Run goroutine is %q, want IO wait:\n%s", header, g)
		}
	}
	if !found {
		t.Fatalf("no Run goroutine in:\n%s", stacks)
	}
}

func TestErrors(t *testing.T) {
	mode := hostMode(t)
	if _, err := New(nil); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "handler") {
		t.Errorf("New(nil): %v", err)
	}
	mon, err := New(func(Event) {})
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	parent := newParent(t, mode)
	cg := newCgroup(t, mode, parent, "e")
	if err := mon.Add("", cg); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty id: %v", err)
	}
	if err := mon.Add("a", cg); err != nil {
		t.Fatal(err)
	}
	if err := mon.Add("a", cg); !errors.Is(err, errdefs.ErrAlreadyExists) || !strings.Contains(err.Error(), "oom watch a") {
		t.Errorf("duplicate id: %v", err)
	}
	if mode == cgroups.Unified {
		if err := mon.Add("b", cg); !errors.Is(err, errdefs.ErrAlreadyExists) || !strings.Contains(err.Error(), "already watched as a") {
			t.Errorf("same cgroup twice: %v", err)
		}
	}
	missing, _ := cgroups.New("", mode, parent+"/missing")
	if err := mon.Add("m", missing); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing cgroup: %v", err)
	}
	if mon.Len() != 1 {
		t.Errorf("Len %d after failed Adds", mon.Len())
	}

	// Run ends with the context.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- mon.Run(ctx) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err := mon.Run(context.Background()); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("second Run: %v", err)
	}
	mon.Close()
	if err := mon.Add("z", cg); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Add after Close: %v", err)
	}
	if err := mon.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// newSubCgroup creates the cgroup parent/name below a container's cgroup,
// without limits of its own, and removes it at the end (before the
// container's cgroup: cleanups run last-registered first).
func newSubCgroup(t *testing.T, mode cgroups.Mode, path string) cgroups.Manager {
	t.Helper()
	sub, err := cgroups.New("", mode, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sub.Delete(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return sub
}

// TestOOMKillInSubCgroup: a container whose process lives in a sub-cgroup
// (systemd or an engine inside the container) is OOM-killed at the
// container's limit: one event. On v1 the kill is counted only in the
// sub-cgroup's memory.oom_control while the kernel signals the container's
// eventfd; the event used to be dropped as a false alarm.
func TestOOMKillInSubCgroup(t *testing.T) {
	mode := hostMode(t)
	mon, ch := startMonitor(t, nil)
	parent := newParent(t, mode)
	cg := newCgroup(t, mode, parent, "c1") // 16 MiB limit
	sub := newSubCgroup(t, mode, parent+"/c1/sub")
	if err := mon.Add("c1", cg); err != nil {
		t.Fatal(err)
	}
	cmd, in := startHog(t, sub)
	in.Write([]byte("go\n"))
	waitKilled(t, cmd)
	got := collect(t, ch, 1, 15*time.Second, 2*time.Second)
	if len(got) != 1 || got[0].ID != "c1" || got[0].OOMKills != 1 || got[0].Total != 1 {
		t.Fatalf("events %+v, want one {c1 1 1}", got)
	}
	// Stats count it too (the shim's baseline and final read use them).
	var st cgroups.Stats
	if err := cg.Stat(&st); err != nil {
		t.Fatal(err)
	}
	if st.Memory.Events.OOMKill != 1 {
		t.Fatalf("c1 Stats OOMKill %d, want 1 (the kill in c1/sub)", st.Memory.Events.OOMKill)
	}
}

// TestOOMKillRecreatedSubCgroupV1: on v1 the kills are counted per
// sub-cgroup; a sub-cgroup removed and recreated after a kill (systemd
// restarting a killed service) starts again from 0, and its next kill is
// reported although the sum of the counters did not change.
func TestOOMKillRecreatedSubCgroupV1(t *testing.T) {
	mode := hostMode(t)
	if mode == cgroups.Unified {
		// On v2 the counters are hierarchical in the kernel, and the
		// container's cgroup empties (the watch ends) with the kill.
		t.Skip("cgroup v1 test")
	}
	mon, ch := startMonitor(t, nil)
	parent := newParent(t, mode)
	cg := newCgroup(t, mode, parent, "c1")
	if err := mon.Add("c1", cg); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		sub := newSubCgroup(t, mode, parent+"/c1/svc")
		cmd, in := startHog(t, sub)
		in.Write([]byte("go\n"))
		waitKilled(t, cmd)
		got := collect(t, ch, 1, 15*time.Second, 2*time.Second)
		if len(got) != 1 || got[0].OOMKills != 1 || got[0].Total != uint64(i) {
			t.Fatalf("kill %d: events %+v, want one {c1 1 %d}", i, got, i)
		}
		if err := sub.Delete(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOOMKillTruncatedWalkV1: on v1 a read walks at most 1,024 of a
// container's sub-cgroups. A sub-cgroup with a kill that falls out of the
// walk's reach (1,024 sub-cgroups before it in name order) and comes back
// into it has its kill counted once: the walk that did not reach it used
// to forget its counter, and the next walk that reached it counted the
// kill again (a kill in another sub-cgroup was reported as 2, Total 4, or
// z's kill came as the new one and that kill later).
// Real cgroups: 1,024 empty memory cgroups made with mkdir.
func TestOOMKillTruncatedWalkV1(t *testing.T) {
	mode := hostMode(t)
	if mode == cgroups.Unified {
		t.Skip("cgroup v1 test: v2 counts kills hierarchically in the kernel, there is no walk")
	}
	mon, ch := startMonitor(t, nil)
	parent := newParent(t, mode)
	cg := newCgroup(t, mode, parent, "c1") // 16 MiB limit
	if err := mon.Add("c1", cg); err != nil {
		t.Fatal(err)
	}
	kill := func(sub string, want Event) {
		t.Helper()
		cmd, in := startHog(t, newSubCgroup(t, mode, parent+"/c1/"+sub))
		in.Write([]byte("go\n"))
		waitKilled(t, cmd)
		got := collect(t, ch, 1, 15*time.Second, 2*time.Second)
		if len(got) != 1 || got[0] != want {
			t.Fatalf("kill in c1/%s: events %+v, want one %+v", sub, got, want)
		}
	}
	// z is the only sub-cgroup: its kill is read.
	kill("z", Event{ID: "c1", OOMKills: 1, Total: 1})

	// 1,024 sub-cgroups before z: the walk stops before reaching z.
	mem := cg.Dir("memory")
	var fillers []string
	t.Cleanup(func() {
		for _, d := range fillers {
			if err := unix.Rmdir(d); err != nil && err != unix.ENOENT {
				t.Errorf("cleanup: rmdir %s: %v", d, err)
			}
		}
	})
	for i := range 1024 {
		d := filepath.Join(mem, fmt.Sprintf("a%04d", i))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		fillers = append(fillers, d)
	}
	kill("a0000", Event{ID: "c1", OOMKills: 1, Total: 2})

	// One fewer: z is in reach again, and only a0001's kill is new.
	if err := unix.Rmdir(fillers[1023]); err != nil {
		t.Fatal(err)
	}
	kill("a0001", Event{ID: "c1", OOMKills: 1, Total: 3})
	// Counting z again could also come alone, as a read before a0001's
	// kill was counted, and a0001's kill left for the next read.
	kill("a0002", Event{ID: "c1", OOMKills: 1, Total: 4})
}
