package runtime

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
)

// hookSpec returns the spec of a busybox container running `sleep 300`
// whose createRuntime hook (run by runc create, a child of the shim) runs
// `sh -c hook`.
func hookSpec(t *testing.T, id, hook string) []byte {
	t.Helper()
	var sp specs.Spec
	if err := json.Unmarshal(specFor(t, id, "sleep", "300"), &sp); err != nil {
		t.Fatal(err)
	}
	sp.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", hook}}}}
	b, err := json.Marshal(&sp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func runcList(state string) []string {
	out, _ := exec.Command("runc", "--root", filepath.Join(state, "runc", "default"), "list", "-q").Output()
	return strings.Fields(string(out))
}

// A Create that fails undoes the daemon's set-up (Undo, after Prepare ran)
// and its own while the ID is still reserved: a Create of the same ID
// meanwhile gets AlreadyExists instead of having its new set-up undone.
// Two ways to fail: runc create fails (a hook exits 1); the shim dies
// inside the create (the hook kills it: the shim's parent of runc), which
// leaves a container in runc's state that edged force-deletes.
func TestFailedCreateUndoesWhileIDHeld(t *testing.T) {
	requireRunc(t)
	for _, c := range []struct {
		name, hook string
		shimDies   bool
	}{
		{"runc fails", "exit 1", false},
		{"shim dies", `kill -9 $(cut -d' ' -f4 /proc/$PPID/stat)`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			state := t.TempDir()
			cleanupState(t, state)
			m, err := New(Config{State: state, Address: filepath.Join(state, "edged.sock"), ShimBinary: filepath.Join(shimBin, "edged-shim"),
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.Close)
			ctx := context.Background()
			id := "failing"
			inUndo := make(chan struct{})
			release := make(chan struct{})
			var undos atomic.Int32
			errc := make(chan error, 1)
			go func() {
				_, err := m.Create(ctx, "default", id, CreateOpts{Start: true,
					Prepare: func(context.Context) ([]byte, error) { return hookSpec(t, id, c.hook), nil },
					Undo: func(context.Context) {
						undos.Add(1)
						close(inUndo)
						<-release
					}})
				errc <- err
			}()
			select {
			case <-inUndo:
			case err := <-errc:
				t.Fatalf("create returned before undoing: %v", err)
			case <-time.After(20 * time.Second):
				t.Fatal("Undo not called for the failed create")
			}
			_, err = m.Create(ctx, "default", id, CreateOpts{Spec: specFor(t, id, "true")})
			if !errdefs.IsAlreadyExists(err) {
				t.Fatalf("create of the same ID while the failed one is undone: %v; want already exists", err)
			}
			if slices.Contains(m.IDs("default"), id) {
				t.Fatal("the failing task is listed")
			}
			if _, err := os.Stat(m.BundleDir("default", id)); err != nil {
				t.Fatalf("bundle removed before Undo returned: %v", err)
			}
			if c.shimDies {
				// runc create goes on after its shim died: the container
				// is made, for the clean-up to remove.
				deadline := time.Now().Add(10 * time.Second)
				for !slices.Contains(runcList(state), id) {
					if time.Now().After(deadline) {
						t.Fatal("runc create left no container after the shim died")
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			close(release)
			err = <-errc
			want := err != nil && strings.Contains(err.Error(), "runc")
			if c.shimDies {
				want = errdefs.IsUnavailable(err)
			}
			if !want {
				t.Fatalf("failed create: %v", err)
			}
			if n := undos.Load(); n != 1 {
				t.Fatalf("Undo called %d times", n)
			}
			if ids := runcList(state); slices.Contains(ids, id) {
				t.Fatalf("runc still has the container of the failed create: %v", ids)
			}
			if _, err := os.Stat(m.BundleDir("default", id)); !os.IsNotExist(err) {
				t.Fatalf("bundle of the failed create: %v; want it removed", err)
			}
			runTask(t, m, id, "exit 3", 3)
		})
	}
}
