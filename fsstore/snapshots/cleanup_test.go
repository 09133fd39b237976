package snapshots

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/fsstore/snapshots/mount"
)

func snapEntries(t *testing.T, e *env) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.root, "snapshots"))
	must(t, err)
	var out []string
	for _, en := range ents {
		out = append(out, en.Name())
	}
	sort.Strings(out)
	return out
}

func idOf(t *testing.T, e *env, ns, key string) int64 {
	t.Helper()
	var id int64
	must(t, e.db.QueryRow(`SELECT id FROM snapshots WHERE namespace = ? AND key = ?`, ns, key).Scan(&id))
	return id
}

func TestCleanupRepairs(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, BackendOverlay)
	const ns = "default"
	snapDir := filepath.Join(e.root, "snapshots")

	_, err := e.s.Prepare(ctx, ns, "ok", "", nil)
	must(t, err)
	layer(t, e, ns, "parent", "", func(root string) { writeFile(t, filepath.Join(root, "f"), "x") })
	_, err = e.s.Prepare(ctx, ns, "child", "parent", nil)
	must(t, err)
	_, err = e.s.Prepare(ctx, ns, "lost", "", map[string]string{"l": "v"})
	must(t, err)
	layer(t, e, ns, "lost-parent", "", func(string) {})
	_, err = e.s.View(ctx, ns, "lost-parent-child", "lost-parent", nil)
	must(t, err)

	// The states a crash can leave (see the package comment):
	// a temporary directory of an unfinished Prepare or Remove,
	writeFile(t, filepath.Join(snapDir, "tmp-0123456789abcdef", "fs", "file"), "half-copied")
	writeFile(t, filepath.Join(snapDir, "tmp-rm-0123456789abcdef", "fs", "file"), "half-removed")
	// a renamed directory whose transaction never committed,
	writeFile(t, filepath.Join(snapDir, "9999", "fs", "file"), "orphan")
	// a mount left behind under the root,
	stale := filepath.Join(snapDir, "tmp-overlaycheck-stale", "m")
	must(t, os.MkdirAll(stale, 0o700))
	must(t, unix.Mount("tmpfs", stale, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { mount.UnmountAll(stale) })
	writeFile(t, filepath.Join(stale, "inside-mount"), "x")
	// and rows whose data vanished (filesystem damage).
	must(t, os.RemoveAll(filepath.Join(snapDir, fmt.Sprint(idOf(t, e, ns, "lost")))))
	must(t, os.RemoveAll(filepath.Join(snapDir, fmt.Sprint(idOf(t, e, ns, "lost-parent")))))
	// Something that is not ours is left alone.
	writeFile(t, filepath.Join(snapDir, "README"), "not ours")

	err = e.s.Cleanup(ctx)
	// The committed parent with a child cannot be repaired automatically.
	wantErr(t, err, errdefs.ErrDataLoss, `"lost-parent"`, "has lost its data but has 1 children")

	if mps, _ := mount.MountPoints(snapDir); len(mps) != 0 {
		t.Fatalf("stale mounts left: %v", mps)
	}
	want := []string{
		fmt.Sprint(idOf(t, e, ns, "ok")),
		fmt.Sprint(idOf(t, e, ns, "parent")),
		fmt.Sprint(idOf(t, e, ns, "child")),
		fmt.Sprint(idOf(t, e, ns, "lost-parent-child")),
		"README",
	}
	sort.Strings(want)
	if got := snapEntries(t, e); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("after cleanup: %v, want %v", got, want)
	}
	_, err = e.s.Stat(ctx, ns, "lost")
	wantErr(t, err, errdefs.ErrNotFound)
	var labels int
	must(t, e.db.QueryRow(`SELECT count(*) FROM snapshot_labels`).Scan(&labels))
	if labels != 0 {
		t.Fatalf("%d labels of removed rows left", labels)
	}
	if _, err := e.s.Stat(ctx, ns, "lost-parent"); err != nil {
		t.Fatalf("row with children must be kept: %v", err)
	}
	// The good snapshots still work.
	ms, err := e.s.Mounts(ctx, ns, "child")
	must(t, err)
	root, _ := mountAt(t, ms)
	if readFile(t, filepath.Join(root, "f")) != "x" {
		t.Fatal("child lost its parent's data")
	}
}

func TestStaleDirectoryWithNextID(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, BackendOverlay)
	_, err := e.s.Prepare(ctx, "default", "first", "", nil)
	must(t, err)
	next := idOf(t, e, "default", "first") + 1
	// A crash between the rename and the commit of a Prepare leaves the
	// directory of an ID that the next insert will get again.
	writeFile(t, filepath.Join(e.root, "snapshots", fmt.Sprint(next), "fs", "stale"), "x")
	ms, err := e.s.Prepare(ctx, "default", "second", "", nil)
	must(t, err)
	if idOf(t, e, "default", "second") != next {
		t.Skip("sqlite did not reuse the ID; nothing to test")
	}
	if exists(filepath.Join(ms[0].Source, "stale")) {
		t.Fatal("new snapshot contains stale data")
	}
}

const crashEnv = "EDGED_SNAPSHOTS_TEST_CRASH_ROOT"

func TestMain(m *testing.M) {
	if base := os.Getenv(crashEnv); base != "" {
		crashChild(base)
		return
	}
	os.Exit(m.Run())
}

// crashChild runs in a re-executed test binary: it prepares a snapshot whose
// parent is large, so the native copy takes a while; the parent test kills
// it with SIGKILL halfway.
func crashChild(base string) {
	db, err := openDBPath(filepath.Join(base, "meta.db"))
	if err != nil {
		panic(err)
	}
	s, err := New(context.Background(), db, filepath.Join(base, "root"), Options{Backend: BackendNative})
	if err != nil {
		panic(err)
	}
	_, err = s.Prepare(context.Background(), "default", "victim", "big", nil)
	fmt.Fprintln(os.Stderr, "child: prepare finished before the kill:", err)
	os.Exit(3)
}

func TestCrashDuringPrepare(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, BackendNative)
	const ns = "default"
	layer(t, e, ns, "big", "", func(root string) {
		buf := []byte(strings.Repeat("x", 1<<20))
		must(t, os.Mkdir(filepath.Join(root, "d"), 0o755))
		for f := range 64 {
			must(t, os.WriteFile(filepath.Join(root, "d", fmt.Sprint(f)), buf, 0o644))
		}
	})
	before := snapEntries(t, e)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+e.base)
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())
	// Kill the child once its copy is under way.
	deadline := time.Now().Add(30 * time.Second)
	killed := false
	for time.Now().Before(deadline) && !killed {
		for _, name := range snapEntries(t, e) {
			if !strings.HasPrefix(name, "tmp-") {
				continue
			}
			ents, _ := os.ReadDir(filepath.Join(e.root, "snapshots", name, "fs", "d"))
			if len(ents) >= 2 {
				must(t, cmd.Process.Signal(syscall.SIGKILL))
				killed = true
				break
			}
		}
		time.Sleep(time.Millisecond)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !killed || !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed mid-copy (killed=%v): %v", killed, err)
	}
	if len(snapEntries(t, e)) <= len(before) {
		t.Fatal("the kill left nothing to repair; the test proves nothing")
	}

	// Restart: a new snapshotter on the same database and root.
	s2, err := New(ctx, e.db, e.root, Options{})
	must(t, err)
	must(t, s2.Cleanup(ctx))
	if got := snapEntries(t, e); strings.Join(got, " ") != strings.Join(before, " ") {
		t.Fatalf("after cleanup: %v, want %v", got, before)
	}
	_, err = s2.Stat(ctx, ns, "victim")
	wantErr(t, err, errdefs.ErrNotFound)
	// The operation can simply be repeated.
	ms, err := s2.Prepare(ctx, ns, "victim", "big", nil)
	must(t, err)
	root, _ := mountAt(t, ms)
	if got := readFile(t, filepath.Join(root, "d", "63")); len(got) != 1<<20 {
		t.Fatalf("copied file has %d bytes", len(got))
	}
}
