package runtime

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/internal/testutil"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
)

// shimBin holds the edged-shim the tests run, built by TestMain.
var shimBin string

func TestMain(m *testing.M) {
	if os.Getenv(crashHelperEnv) != "" {
		os.Exit(crashHelper())
	}
	dir, err := os.MkdirTemp("", "edged-runtime-test-")
	if err != nil {
		panic(err)
	}
	if err := testutil.Binaries(dir, "edged-shim"); err != nil {
		os.RemoveAll(dir)
		panic(err)
	}
	shimBin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newSpareManager returns a manager with spare shims on, running a freshly
// built edged-shim. No edged serves Address: an idle shim publishes nothing.
func newSpareManager(t *testing.T, state string) *Manager {
	t.Helper()
	m, err := New(Config{State: state, Address: filepath.Join(state, "edged.sock"), ShimBinary: filepath.Join(shimBin, "edged-shim"),
		SpareShim: true, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func waitSpare(t *testing.T, m *Manager, ns string) *shimConn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m.mu.Lock()
		sp := m.spares[ns]
		m.mu.Unlock()
		if sp != nil {
			return sp.sc
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no spare shim started")
	return nil
}

// killIfRunning kills a shim a failed test left running.
func killIfRunning(sc *shimConn) {
	select {
	case <-sc.reaped:
	default:
		syscall.Kill(sc.pid, syscall.SIGKILL)
	}
}

// waitExit waits until the manager has reaped the shim.
func waitExit(t *testing.T, sc *shimConn) {
	t.Helper()
	sc.reap() // a no-op when the manager already reaps it
	select {
	case <-sc.reaped:
	case <-time.After(10 * time.Second):
		syscall.Kill(sc.pid, syscall.SIGKILL)
		t.Fatalf("shim %d still runs", sc.pid)
	}
}

func TestSpareShimAdoptedThenReplaced(t *testing.T) {
	state := t.TempDir()
	m := newSpareManager(t, state)
	defer m.Close()
	m.fillSpare("ns1")
	sp := waitSpare(t, m, "ns1")
	if !strings.HasPrefix(filepath.Base(sp.address), sparePrefix) {
		t.Fatalf("spare socket %s lacks the %s prefix", sp.address, sparePrefix)
	}
	old := sp.address

	sc, err := m.startNativeShim(context.Background(), "ns1", "g1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killIfRunning(sc) })
	if sc.pid != sp.pid {
		t.Fatalf("started shim %d, want the spare %d", sc.pid, sp.pid)
	}
	want := socketPath(filepath.Join(state, "s"), m.cfg.Address, "ns1", "g1")
	if sc.address != want || sc.key != "ns1/g1" || sc.group != "g1" {
		t.Fatalf("adopted shim: address %s key %s group %s, want %s ns1/g1 g1", sc.address, sc.key, sc.group, want)
	}
	for _, p := range []string{old, old + ".log"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s still exists after adoption: %v", p, err)
		}
	}
	// The adopted shim answers at the group's socket path.
	c, task, err := dialShim(context.Background(), "ns1", want, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// It serves no container yet: it answers NotFound.
	_, err = task.Connect(context.Background(), &taskapi.ConnectRequest{Id: "x"})
	c.Close()
	if err = errdefs.FromStatus(err); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), `container "x"`) {
		t.Fatalf("connect at the group socket: %v; want the shim's not found", err)
	}
	// No spare left: the next one is started after a Create; here by hand.
	m.mu.Lock()
	left := m.spares["ns1"]
	m.mu.Unlock()
	if left != nil {
		t.Fatal("spare still listed after adoption")
	}
	m.fillSpare("ns1")
	next := waitSpare(t, m, "ns1")
	if next.pid == sp.pid || next.address == old {
		t.Fatalf("replacement spare reuses pid %d / socket %s", next.pid, next.address)
	}
	sc.task.Shutdown(context.Background(), &taskapi.ShutdownRequest{Now: true})
	waitExit(t, sc)
}

func TestSpareShimStoppedByClose(t *testing.T) {
	m := newSpareManager(t, t.TempDir())
	m.fillSpare("default")
	sp := waitSpare(t, m, "default")
	m.Close()
	waitExit(t, sp)
	for _, p := range []string{sp.address, sp.address + ".log"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s left after Close: %v", p, err)
		}
	}
	// A closed manager starts no spares.
	m.fillSpare("default")
	m.fills.Wait()
	if len(m.spares) != 0 {
		t.Fatal("spare started after Close")
	}
}

// An edged that dies (no Close) leaves its spare running; the next edged's
// Recover shuts it down and removes its files.
func TestSpareShimOfCrashedEdgedRemovedByRecover(t *testing.T) {
	state := t.TempDir()
	m1 := newSpareManager(t, state)
	m1.fillSpare("default")
	sp := waitSpare(t, m1, "default")
	sp.closeClient() // edged is gone: only the shim and its files remain

	m2 := newSpareManager(t, state)
	defer m2.Close()
	if _, err := m2.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitExit(t, sp)
	ents, _ := os.ReadDir(filepath.Join(state, "s"))
	for _, e := range ents {
		t.Errorf("left in the socket directory after Recover: %s", e.Name())
	}
}

func TestSpareShimDeadIsNotAdopted(t *testing.T) {
	state := t.TempDir()
	m := newSpareManager(t, state)
	defer m.Close()
	m.fillSpare("default")
	sp := waitSpare(t, m, "default")
	syscall.Kill(sp.pid, syscall.SIGKILL)
	waitExit(t, sp)
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		lost := m.spares["default"].sc.lost()
		m.mu.Unlock()
		if lost || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	sc, err := m.startNativeShim(context.Background(), "default", "g")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killIfRunning(sc) })
	defer func() {
		sc.task.Shutdown(context.Background(), &taskapi.ShutdownRequest{Now: true})
		waitExit(t, sc)
	}()
	if sc.pid == sp.pid {
		t.Fatal("the dead spare was adopted")
	}
	if _, err := os.Stat(sp.address); !os.IsNotExist(err) {
		t.Fatalf("dead spare's socket left: %v", err)
	}
}

func TestShimEnvOneP(t *testing.T) {
	got := shimEnv([]string{"PATH=/bin", "GOMAXPROCS=4", "EDGED_SHIM_ONEPROC=0", "HOME=/root"})
	want := []string{"PATH=/bin", "HOME=/root", "GOMAXPROCS=1", "EDGED_SHIM_ONEPROC=1"}
	if !slices.Equal(got, want) {
		t.Fatalf("shimEnv = %q, want %q", got, want)
	}
}

// TestSpareShimReusedAcrossSequence: containers created and removed one
// after another, a little less than spareFillDelay apart, all run in the
// same shim: each adopts the spare its predecessor's shim became (recycle)
// and no shim is started. The next spare used to be due spareFillDelay
// after the end of a Create: that timer fired while the next container,
// which had adopted the spare, was being created, so a new shim was started
// beside its start and the adopted one, let go, was stopped instead of
// recycled (a shim start and stop per container in such a sequence).
func TestSpareShimReusedAcrossSequence(t *testing.T) {
	requireRunc(t)
	m := newSpareManager(t, t.TempDir())
	defer m.Close()
	m.fillSpare("default")
	first := waitSpare(t, m, "default")
	const n = 5
	specs := make([][]byte, n)
	for i := range specs {
		specs[i] = specFor(t, "seq"+strconv.Itoa(i), "true")
	}
	ctx := context.Background()
	for i := range n {
		id := "seq" + strconv.Itoa(i)
		if _, err := m.Create(ctx, "default", id, CreateOpts{Start: true, Spec: specs[i]}); err != nil {
			t.Fatal(err)
		}
		if pid := m.ShimPid("default", id); pid != first.pid {
			t.Fatalf("container %d runs in shim %d, want the first spare %d: a shim was started meanwhile", i, pid, first.pid)
		}
		if _, err := m.Wait(ctx, "default", id, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Delete(ctx, "default", id, ""); err != nil {
			t.Fatal(err)
		}
		time.Sleep(spareFillDelay * 8 / 10)
	}
	if sp := waitSpare(t, m, "default"); sp.pid != first.pid {
		t.Fatalf("spare is shim %d, want the recycled %d", sp.pid, first.pid)
	}
}

// TestSpareShimNotStartedDuringCreate: no spare is started while a
// container of the namespace is being created, however long that takes
// (here a Prepare of three times spareFillDelay): its start-up would
// compete with the container's. The next spare comes once the Create is
// over.
func TestSpareShimNotStartedDuringCreate(t *testing.T) {
	requireRunc(t)
	m := newSpareManager(t, t.TempDir())
	defer m.Close()
	m.fillSpare("default")
	first := waitSpare(t, m, "default")
	spec := specFor(t, "slow", "sleep", "10")
	started := false
	_, err := m.Create(context.Background(), "default", "slow", CreateOpts{Start: true, Prepare: func(context.Context) ([]byte, error) {
		deadline := time.Now().Add(3 * spareFillDelay)
		for time.Now().Before(deadline) && !started {
			m.mu.Lock()
			sp := m.spares["default"] // first, until the Create adopts it
			started = sp != nil && sp.sc != first || m.filling["default"]
			m.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
		return spec, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { // before m.Close
		m.Kill(context.Background(), "default", "slow", "", 9, true)
		m.Wait(context.Background(), "default", "slow", "")
		m.Delete(context.Background(), "default", "slow", "")
	}()
	if started {
		t.Fatal("a spare shim was started while the container was being created")
	}
	if pid := m.ShimPid("default", "slow"); pid != first.pid {
		t.Fatalf("container runs in shim %d, want the spare %d", pid, first.pid)
	}
	// Once the Create is over, the namespace gets its next spare.
	if next := waitSpare(t, m, "default"); next.pid == first.pid {
		t.Fatal("the adopted shim is listed as the spare")
	}
}
