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

	"github.com/gogo/protobuf/types"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
	runcopts "github.com/edged/edged/proto/runtime/runc/v1"
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

// Calls for a task in Create are answered Unavailable "being created" by
// the runtime itself: before its shim registered the container, the shim
// said NotFound, which Delete took for a task deleted in its shim and
// released the task being created (bundle, bootstrap, ID).
func TestDeleteDuringCreateRefused(t *testing.T) {
	requireRunc(t)
	m := newTestManager(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		id := "racing" + string(rune('a'+i))
		done := make(chan struct{})
		var released atomic.Int32
		go func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				_, err := m.Delete(ctx, "default", id, "")
				switch {
				case err == nil:
					released.Add(1)
				case errdefs.IsNotFound(err):
				case errdefs.IsUnavailable(err) && strings.Contains(err.Error(), "being created"):
				case errdefs.IsFailedPrecondition(err): // created: running
				default:
					t.Errorf("delete during create: %v", err)
				}
			}
		}()
		_, err := m.Create(ctx, "default", id, CreateOpts{Start: true, Spec: specFor(t, id, "sleep", "300")})
		close(done)
		if err != nil {
			t.Fatalf("create %s with deletes racing it: %v", id, err)
		}
		if n := released.Load(); n != 0 {
			t.Fatalf("%d deletes released the task being created", n)
		}
		if !m.Has("default", id) {
			t.Fatal("task gone after its create")
		}
		if _, err := os.Stat(filepath.Join(m.BundleDir("default", id), "config.json")); err != nil {
			t.Fatalf("bundle of the created task: %v", err)
		}
		if err := m.Kill(ctx, "default", id, "", 9, false); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Wait(ctx, "default", id, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Delete(ctx, "default", id, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// A shim that dies in the Start of a create-then-start (a shim without the
// fused call) leaves the task to Create's own undo: no OnDead or OnGone
// (no exit events for a task whose Create failed), Undo once, nothing left.
func TestShimDiesInStartOfCreate(t *testing.T) {
	requireRunc(t)
	state := t.TempDir()
	cleanupState(t, state)
	var onDead, onGone atomic.Int32
	m, err := New(Config{State: state, Address: filepath.Join(state, "edged.sock"), ShimBinary: filepath.Join(shimBin, "edged-shim"),
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnDead: func(string, string) { onDead.Add(1) }, OnGone: func(string, string, uint32) { onGone.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	ctx := context.Background()
	sc, err := m.spawnNativeShim(ctx, "default", "g", filepath.Join(state, "s", "g"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killIfRunning(sc) })
	sc.key, sc.group = "default/g", "g"
	sc.noFuse.Store(true) // create, then start
	m.mu.Lock()
	m.shims[sc.key] = sc
	m.mu.Unlock()
	id := "diesinstart"
	// The shim's runc: a wrapper that, for `runc start`, kills the shim
	// (its parent) first.
	wrapper := filepath.Join(t.TempDir(), "runc-kills-shim")
	script := "#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = start ]; then kill -9 $PPID; sleep 1; fi; done\nexec runc \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ro, err := (&runcopts.Options{BinaryName: wrapper}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	spec := specFor(t, id, "sleep", "300")
	var undos atomic.Int32
	_, err = m.Create(ctx, "default", id, CreateOpts{Group: "g", Start: true,
		Options: &types.Any{TypeUrl: "containerd.runc.v1.Options", Value: ro},
		Prepare: func(context.Context) ([]byte, error) { return spec, nil },
		Undo: func(context.Context) {
			undos.Add(1)
			// Long enough for the dead shim's background clean-up to
			// look at its tasks while Create undoes this one.
			time.Sleep(300 * time.Millisecond)
		}})
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "before answering start") {
		t.Fatalf("create whose shim died in start: %v; want unavailable, before answering start", err)
	}
	time.Sleep(300 * time.Millisecond) // the background clean-up of the dead shim
	if u, d, g := undos.Load(), onDead.Load(), onGone.Load(); u != 1 || d != 0 || g != 0 {
		t.Fatalf("undo %d, OnDead %d, OnGone %d; want 1, 0, 0", u, d, g)
	}
	if ids := runcList(state); slices.Contains(ids, id) {
		t.Fatalf("runc still has the container: %v", ids)
	}
	if _, err := os.Stat(m.BundleDir("default", id)); !os.IsNotExist(err) {
		t.Fatalf("bundle: %v; want it removed", err)
	}
	runTask(t, m, id, "exit 5", 5)
}
