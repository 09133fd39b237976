package runtime

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/oci"
	"github.com/edged/edged/internal/testutil"
	"github.com/edged/edged/proto/rpc"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
)

func requireRunc(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("runc is not installed")
	}
}

// newTestManager returns a manager running a freshly built edged-shim, no
// spare shims. No edged serves Address: the shim's events are dropped.
func newTestManager(t *testing.T) *Manager {
	t.Helper()
	state := t.TempDir()
	m, err := New(Config{State: state, Address: filepath.Join(state, "edged.sock"), ShimBinary: filepath.Join(shimBin, "edged-shim"),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// specFor returns the OCI spec JSON of a busybox container running args.
func specFor(t *testing.T, id string, args ...string) []byte {
	t.Helper()
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := testutil.BusyboxRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	spec, err := oci.Generate(context.Background(), "default", id, rootfs, nil, oci.WithArgs(args...))
	if err != nil {
		t.Fatal(err)
	}
	spec.Root.Path = rootfs // no snapshot mounted on the bundle's rootfs
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// runStarted checks a task that Create started: Start is refused as the
// process already started, Wait returns its exit status and Delete frees
// the ID.
func runStarted(t *testing.T, m *Manager, id string, want uint32) {
	t.Helper()
	ctx := context.Background()
	_, err := m.Start(ctx, "default", id, "")
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "already started") {
		t.Fatalf("start after create with Start: %v; want failed precondition, already started", err)
	}
	w, err := m.Wait(ctx, "default", id, "")
	if err != nil || w.ExitStatus != want {
		t.Fatalf("wait: %+v %v; want exit status %d", w, err, want)
	}
	d, err := m.Delete(ctx, "default", id, "")
	if err != nil || d.ExitStatus != want {
		t.Fatalf("delete: %+v %v", d, err)
	}
	if m.Has("default", id) {
		t.Fatal("task still listed after delete")
	}
}

func TestCreateWithStart(t *testing.T) {
	requireRunc(t)
	m := newTestManager(t)
	id := "withstart"
	prepared := false
	pid, err := m.Create(context.Background(), "default", id, CreateOpts{Start: true,
		Prepare: func(context.Context) ([]byte, error) {
			prepared = true
			return specFor(t, id, "/bin/sh", "-c", "exit 3"), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if pid == 0 || !prepared {
		t.Fatalf("create: pid %d, prepared %v", pid, prepared)
	}
	runStarted(t, m, id, 3)
}

// A Prepare that fails fails Create and leaves nothing: no task, no
// bundle, and the shim started meanwhile is let go.
func TestCreatePrepareFails(t *testing.T) {
	requireRunc(t)
	m := newTestManager(t)
	_, err := m.Create(context.Background(), "default", "prepfail", CreateOpts{Start: true,
		Prepare: func(context.Context) ([]byte, error) {
			return nil, errdefs.InvalidArgument("network", "no such network %q", "nowhere")
		}})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "nowhere") {
		t.Fatalf("create: %v; want the prepare error", err)
	}
	if m.Has("default", "prepfail") {
		t.Fatal("task listed after a failed create")
	}
	if _, err := exec.Command("test", "-e", m.BundleDir("default", "prepfail")).CombinedOutput(); err == nil {
		t.Fatal("bundle left after a failed create")
	}
	m.mu.Lock()
	n := len(m.shims)
	m.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d shims kept after a failed create", n)
	}
}

// olderShim stands for an edged-shim built before CreateAndStart existed,
// which cannot be built here: it forwards every call to a real edged-shim
// but answers a CreateAndStart create as that shim's option parsing did.
type olderShim struct{ taskapi.TaskService }

func (o olderShim) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (*taskapi.CreateTaskResponse, error) {
	if r.Options != nil && r.Options.TypeUrl == createAndStartType {
		return nil, errdefs.ToStatus(errdefs.InvalidArgument("options", "unsupported type %q (want containerd.runc.v1.Options or edged.shim.v1.Options)", r.Options.TypeUrl))
	}
	return o.TaskService.Create(ctx, r)
}

// An edged-shim that does not know CreateAndStart gets Create then Start,
// and is not asked again.
func TestCreateWithStartOlderShim(t *testing.T) {
	requireRunc(t)
	m := newTestManager(t)
	ctx := context.Background()
	real, err := m.spawnNativeShim(ctx, "default", "real", filepath.Join(m.cfg.State, "s", "real"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killIfRunning(real) })
	srv := rpc.NewServer(rpc.ServerConfig{})
	taskapi.RegisterTaskService(srv, olderShim{real.task})
	path := filepath.Join(m.cfg.State, "s", "older")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, l)
	t.Cleanup(func() { srv.Close() })
	c, task, err := dialShim(ctx, "default", path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The group's shim is the older one.
	m.shims["default/g"] = &shimConn{key: "default/g", ns: "default", group: "g", address: path, native: true,
		binary: m.cfg.ShimBinary, client: c, task: task, refs: map[string]bool{"keep": true}}
	for _, id := range []string{"old1", "old2"} {
		if _, err := m.Create(ctx, "default", id, CreateOpts{Group: "g", Start: true, Spec: specFor(t, id, "/bin/sh", "-c", "exit 3")}); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		if !m.shims["default/g"].noFuse.Load() {
			t.Fatal("the shim is still asked to create and start in one call")
		}
		runStarted(t, m, id, 3)
	}
	// The real shim is killed by the cleanup: without an edged to take
	// its events it would wait for them to be delivered before it exits.
}

// Containers created at the same time in a new group share one shim: only
// one is started, and it serves the group's socket path.
func TestConcurrentCreatesStartOneGroupShim(t *testing.T) {
	requireRunc(t)
	m := newTestManager(t)
	ctx := context.Background()
	ids := []string{"c1", "c2", "c3"}
	specs := map[string][]byte{}
	for _, id := range ids {
		specs[id] = specFor(t, id, "/bin/sh", "-c", "exit 0")
	}
	errs := make(chan error, len(ids))
	for _, id := range ids {
		go func() {
			_, err := m.Create(ctx, "default", id, CreateOpts{Group: "g", Spec: specs[id]})
			errs <- err
		}()
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	pid := m.ShimPid("default", "c1")
	for _, id := range ids {
		if p := m.ShimPid("default", id); p != pid || p == 0 {
			t.Errorf("%s runs in shim %d, c1 in %d", id, p, pid)
		}
	}
	// The shim at the group's socket is that one.
	path := socketPath(filepath.Join(m.cfg.State, "s"), m.cfg.Address, "default", "g")
	c, task, err := dialShim(ctx, "default", path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := task.Connect(ctx, &taskapi.ConnectRequest{Id: "c2"})
	if err != nil || int(resp.ShimPid) != pid {
		t.Fatalf("the group socket is served by shim %v (%v), want %d", resp, err, pid)
	}
	for _, id := range ids {
		if _, err := m.Delete(ctx, "default", id, ""); err != nil {
			t.Errorf("delete %s: %v", id, err)
		}
	}
}
