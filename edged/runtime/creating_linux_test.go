package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
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

// These tests make `runc create` slow for real: an OCI createRuntime hook
// (run by runc while it creates the container) sleeps 2 s. The hook
// touches <dir>/in-hook when it begins and, at its end, <dir>/bundle-kept
// if the task's bundle (config.json) was still there: runc was not left
// without its bundle while it worked.

const hookSleep = 2 * time.Second

// slowSpec returns the spec of a busybox container running `sh -c script`
// whose createRuntime hook takes hookSleep and then exits hookExit (a
// non-zero exit fails the create).
func slowSpec(t *testing.T, state, id, dir string, hookExit int, script string) []byte {
	t.Helper()
	var sp specs.Spec
	if err := json.Unmarshal(specFor(t, id, "/bin/sh", "-c", script), &sp); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(state, "bundles", "default", id)
	hook := fmt.Sprintf("touch %s/in-hook; sleep %d; if [ -e %s/config.json ]; then touch %s/bundle-kept; fi; exit %d",
		dir, int(hookSleep.Seconds()), bundle, dir, hookExit)
	sp.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", hook}}}}
	b, err := json.Marshal(&sp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitFile waits until path exists.
func waitFile(t *testing.T, path string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not there after %v", path, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cleanupState kills, at the end of the test, the edged-shims serving
// state that a failed test left, and removes runc containers left under it.
func cleanupState(t *testing.T, state string) {
	t.Cleanup(func() {
		root := filepath.Join(state, "runc", "default")
		out, _ := exec.Command("runc", "--root", root, "list", "-q").Output()
		for _, id := range strings.Fields(string(out)) {
			exec.Command("runc", "--root", root, "delete", "--force", id).Run()
		}
		for _, pid := range shimsOf(state) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// shimsOf lists the live edged-shim processes serving state.
func shimsOf(state string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if !bytes.Contains(b, []byte(state)) || !bytes.Contains(b, []byte("edged-shim")) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err == nil && processLives(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// processLives reports whether pid runs (a zombie does not).
func processLives(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && !bytes.HasPrefix(stat[i+1:], []byte(" Z"))
}

func waitShimGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for processLives(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("shim %d still runs", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The crash helper is this test binary run as "edged": it creates one task
// through a Manager and is killed with SIGKILL by the test while the
// shim's `runc create` runs the slow hook.
const crashHelperEnv = "EDGED_RUNTIME_CRASH_HELPER"

// crashHelper runs in the helper process (see TestMain). Its environment
// names the state directory, the shim binary, the task ID and its spec.
func crashHelper() int {
	state := os.Getenv(crashHelperEnv)
	spec, err := os.ReadFile(os.Getenv("CRASH_SPEC"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	m, err := New(Config{State: state, Address: filepath.Join(state, "edged.sock"), ShimBinary: os.Getenv("CRASH_SHIM"),
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	_, err = m.Create(context.Background(), "default", os.Getenv("CRASH_ID"), CreateOpts{Start: true, Spec: spec})
	fmt.Fprintf(os.Stderr, "create returned before the kill: %v\n", err)
	return 3
}

// TestRecoverCreateInProgress: edged is killed (SIGKILL, a real process)
// while its task's shim runs `runc create`; the restarted edged recovers
// while the create still runs. Recover returns at once, the task in Create
// (not listed, calls answered "being created"), and the create is resolved
// in the background: created, the task is kept (its bundle untouched while runc used it), runs, is waited
// for and deleted, and its shim exits; failed (the hook exits 1), the task
// is dropped with nothing left (bundle, bootstrap, shim, runc container)
// and its ID can be used again. Before, the shim ended the create when
// edged's connection closed and answered NotFound meanwhile; Recover took
// that for a deleted task and removed its bundle under runc.
func TestRecoverCreateInProgress(t *testing.T) {
	requireRunc(t)
	for _, tc := range []struct {
		name     string
		hookExit int
		closed   bool // edged stops again before the create is resolved
	}{{"created", 0, false}, {"failed", 1, false}, {"closed", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			state := t.TempDir()
			dir := t.TempDir()
			cleanupState(t, state)
			id := "slow"
			specPath := filepath.Join(dir, "spec.json")
			if err := os.WriteFile(specPath, slowSpec(t, state, id, dir, tc.hookExit, "sleep 1; exit 7"), 0o600); err != nil {
				t.Fatal(err)
			}
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			helper := exec.Command(self)
			helper.Env = append(os.Environ(), crashHelperEnv+"="+state, "CRASH_SPEC="+specPath,
				"CRASH_SHIM="+filepath.Join(shimBin, "edged-shim"), "CRASH_ID="+id)
			var out bytes.Buffer
			helper.Stdout, helper.Stderr = &out, &out
			if err := helper.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { helper.Wait(); close(exited) }()
			defer func() {
				if t.Failed() {
					t.Logf("helper (the killed edged) output:\n%s", out.String())
				}
			}()
			waitFile(t, filepath.Join(dir, "in-hook"), 20*time.Second)
			select {
			case <-exited:
				t.Fatal("the helper edged exited before it was killed")
			default:
			}
			helper.Process.Signal(syscall.SIGKILL)
			<-exited
			if _, err := os.Stat(bootstrapOf(state, id)); err != nil {
				t.Fatalf("no bootstrap saved before the shim's create: %v", err)
			}

			m, err := New(Config{State: state, Address: filepath.Join(state, "edged.sock"), ShimBinary: filepath.Join(shimBin, "edged-shim"),
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.Close)
			ctx := context.Background()
			res, err := m.Recover(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Recover does not wait for the create: the task is in
			// Create (not listed, calls answered "being created") until
			// it is resolved in the background.
			if _, err := os.Stat(filepath.Join(dir, "bundle-kept")); err == nil {
				t.Fatalf("Recover (%+v) waited for the create's hook", res)
			}
			if res.Reconnected != 1 || res.Dead != 0 || slices.Contains(m.IDs("default"), id) {
				t.Fatalf("recover: %+v, IDs %v; want the task kept in Create, not listed", res, m.IDs("default"))
			}
			if _, err := m.State(ctx, "default", id, ""); !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "being created") {
				t.Fatalf("state of the recovered task in Create: %v; want unavailable, being created", err)
			}
			if tc.closed {
				// Stopped while resolving: the shim and its create are
				// left alone, for the next edged to resolve.
				m.Close()
				if len(shimsOf(state)) == 0 {
					t.Fatal("Close during the resolution ended the shim")
				}
				if _, err := os.Stat(bootstrapOf(state, id)); err != nil {
					t.Fatalf("Close during the resolution removed the bootstrap: %v", err)
				}
				if m, err = New(Config{State: state, Address: filepath.Join(state, "edged.sock"), ShimBinary: filepath.Join(shimBin, "edged-shim"),
					Log: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(m.Close)
				if res, err = m.Recover(ctx); err != nil || res.Reconnected != 1 {
					t.Fatalf("second recover: %+v %v", res, err)
				}
			}
			resolved := func(done func() bool) {
				t.Helper()
				deadline := time.Now().Add(20 * time.Second)
				for !done() {
					if time.Now().After(deadline) {
						t.Fatal("the recovered create was not resolved")
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			if tc.hookExit != 0 {
				resolved(func() bool { return !m.Has("default", id) })
			} else {
				resolved(func() bool { return slices.Contains(m.IDs("default"), id) })
			}
			if _, err := os.Stat(filepath.Join(dir, "bundle-kept")); err != nil {
				t.Fatalf("the bundle was removed while runc ran: %v", err)
			}
			if tc.hookExit != 0 {
				for _, p := range []string{m.BundleDir("default", id), bootstrapOf(state, id)} {
					if _, err := os.Stat(p); !os.IsNotExist(err) {
						t.Errorf("%s left after the failed create was dropped: %v", p, err)
					}
				}
				deadline := time.Now().Add(15 * time.Second)
				for len(shimsOf(state)) > 0 {
					if time.Now().After(deadline) {
						t.Fatalf("shims %v still run: the shim of the failed create was not shut down", shimsOf(state))
					}
					time.Sleep(20 * time.Millisecond)
				}
				if out, _ := exec.Command("runc", "--root", filepath.Join(state, "runc", "default"), "list", "-q").Output(); len(bytes.TrimSpace(out)) > 0 {
					t.Fatalf("runc containers left: %s", out)
				}
				// The ID is free.
				runTask(t, m, id, "exit 5", 5)
				return
			}
			if !m.Has("default", id) {
				t.Fatal("the task the shim created is not known")
			}
			if m.Pid("default", id) == 0 {
				t.Fatal("recovered task has no pid")
			}
			if !slices.Contains(m.IDs("default"), id) {
				t.Fatalf("IDs %v lack the recovered task", m.IDs("default"))
			}
			shim := m.ShimPid("default", id)
			w, err := m.Wait(ctx, "default", id, "")
			if err != nil || w.ExitStatus != 7 {
				t.Fatalf("wait: %+v %v; want exit status 7", w, err)
			}
			if _, err := m.Delete(ctx, "default", id, ""); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(bootstrapOf(state, id)); !os.IsNotExist(err) {
				t.Fatalf("bootstrap left after delete: %v", err)
			}
			waitShimGone(t, shim)
		})
	}
}

func bootstrapOf(state, id string) string {
	return filepath.Join(state, "tasks", "default", id+".json")
}

// A Delete, Kill or State of a task whose create is in progress in its shim
// is refused as Unavailable, "being created" (before, the shim's NotFound
// made Delete release the task: its bundle removed under runc, the shim let
// go with the container being made in it); the task is not listed yet; the
// create then completes and the task runs as usual.
func TestCallsDuringCreateRefused(t *testing.T) {
	requireRunc(t)
	m := newTestManager(t)
	dir := t.TempDir()
	id := "busy"
	ctx := context.Background()
	created := make(chan error, 1)
	spec := slowSpec(t, m.cfg.State, id, dir, 0, "exit 4")
	go func() {
		_, err := m.Create(ctx, "default", id, CreateOpts{Start: true, Spec: spec})
		created <- err
	}()
	waitFile(t, filepath.Join(dir, "in-hook"), 20*time.Second)
	calls := map[string]func() error{
		"delete": func() error { _, err := m.Delete(ctx, "default", id, ""); return err },
		"kill":   func() error { return m.Kill(ctx, "default", id, "", 9, true) },
		"state":  func() error { _, err := m.State(ctx, "default", id, ""); return err },
	}
	for _, name := range []string{"delete", "kill", "state"} {
		if err := calls[name](); !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "being created") {
			t.Fatalf("%s during the create: %v; want unavailable, being created", name, err)
		}
	}
	if ids := m.IDs("default"); len(ids) != 0 {
		t.Fatalf("IDs during the create: %v; want none", ids)
	}
	if err := <-created; err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bundle-kept")); err != nil {
		t.Fatalf("bundle removed while runc created the container: %v", err)
	}
	runStarted(t, m, id, 4)
}

// A caller that gives up (its context cancelled) while the shim runs
// `runc create` does not end the create in the shim: Create waits for the
// shim's answer and the task is created, known and deletable. Before,
// Create released the task at once (bundle removed under runc, shim let
// go while it made the container).
func TestCreateOutlivesCallerCancel(t *testing.T) {
	requireRunc(t)
	m := newTestManager(t)
	dir := t.TempDir()
	id := "gaveup"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		waitFile(t, filepath.Join(dir, "in-hook"), 20*time.Second)
		cancel()
	}()
	pid, err := m.Create(ctx, "default", id, CreateOpts{Start: true, Spec: slowSpec(t, m.cfg.State, id, dir, 0, "exit 6")})
	if ctx.Err() == nil {
		t.Fatal("the create ended before its caller gave up")
	}
	if err != nil || pid == 0 {
		t.Fatalf("create whose caller gave up: pid %d, %v; want the task created", pid, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bundle-kept")); err != nil {
		t.Fatalf("bundle removed while runc created the container: %v", err)
	}
	runStarted(t, m, id, 6)
}
