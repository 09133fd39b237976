package runtime

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

// runTask creates and starts a task running `sh -c script`, waits for it
// and deletes it, checking its exit status; it returns the pid of the shim
// that ran it.
func runTask(t *testing.T, m *Manager, id, script string, want uint32) int {
	t.Helper()
	ctx := context.Background()
	if _, err := m.Create(ctx, "default", id, CreateOpts{Start: true, Spec: specFor(t, id, "/bin/sh", "-c", script)}); err != nil {
		t.Fatal(err)
	}
	shim := m.ShimPid("default", id)
	w, err := m.Wait(ctx, "default", id, "")
	if err != nil || w.ExitStatus != want {
		t.Fatalf("wait: %+v %v; want exit status %d", w, err, want)
	}
	if _, err := m.Delete(ctx, "default", id, ""); err != nil {
		t.Fatal(err)
	}
	return shim
}

// With spare shims on, the shim of a deleted task becomes the spare (its
// socket renamed to a spare name), and the next task runs in it: a run-and-
// remove sequence starts no shim after the first.
func TestReleasedShimBecomesTheSpare(t *testing.T) {
	requireRunc(t)
	state := t.TempDir()
	m := newSpareManager(t, state)
	defer m.Close()
	first := runTask(t, m, "r1", "exit 0", 0)
	sp := waitSpare(t, m, "default")
	if sp.pid != first {
		t.Fatalf("spare is shim %d, want the released shim %d", sp.pid, first)
	}
	if !strings.HasPrefix(filepath.Base(sp.address), sparePrefix) {
		t.Fatalf("recycled shim's socket %s lacks the spare prefix", sp.address)
	}
	group := socketPath(filepath.Join(state, "s"), m.cfg.Address, "default", "r1")
	for _, p := range []string{group, group + ".log"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s left after the shim was recycled: %v", p, err)
		}
	}
	if second := runTask(t, m, "r2", "exit 5", 5); second != first {
		t.Fatalf("second task ran in shim %d, want the recycled %d", second, first)
	}
	// The same ID again, at once: the same group socket path while the
	// released shim is being recycled in the background. The task must
	// run and report its own exit; whether it got the recycled shim or a
	// new one depends on whether the recycling finished first (under load
	// it may not have), so the shim is not compared here.
	runTask(t, m, "r2", "exit 6", 6)
}

// Without spares, Delete does not wait for the shim to exit; a task of
// the same ID created at once gets a new shim at the same socket path,
// which the old shim, exiting meanwhile, must not remove. Close waits for
// the old shim.
func TestReleasedShimLeavesTheNewSocket(t *testing.T) {
	requireRunc(t)
	m := newTestManager(t)
	ctx := context.Background()
	old := runTask(t, m, "same", "exit 0", 0)
	if _, err := m.Create(ctx, "default", "same", CreateOpts{Start: true, Spec: specFor(t, "same", "/bin/sh", "-c", "sleep 0.5; exit 2")}); err != nil {
		t.Fatal(err)
	}
	if now := m.ShimPid("default", "same"); now == old {
		t.Fatalf("new task in the released shim %d", old)
	}
	// Give the old shim time to exit, then check the new one still
	// answers at its path.
	deadline := time.Now().Add(10 * time.Second)
	for unix.Kill(old, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if unix.Kill(old, 0) == nil {
		t.Fatalf("released shim %d still runs", old)
	}
	path := socketPath(filepath.Join(m.cfg.State, "s"), m.cfg.Address, "default", "same")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the new shim's socket is gone: %v", err)
	}
	c, task, err := dialShim(ctx, "default", path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	_ = task
	if st, err := m.State(ctx, "default", "same", ""); err != nil || st.Pid == 0 {
		t.Fatalf("state of the new task: %+v %v", st, err)
	}
	if w, err := m.Wait(ctx, "default", "same", ""); err != nil || w.ExitStatus != 2 {
		t.Fatalf("wait: %+v %v", w, err)
	}
	if _, err := m.Delete(ctx, "default", "same", ""); err != nil {
		t.Fatal(err)
	}
}

// A bundle whose rootfs is still a mount (the shim could not unmount it)
// is removed without deleting what the mount shows; a rootfs that is a
// non-empty directory keeps the bundle.
func TestRemoveBundleNeverDeletesThroughRootfs(t *testing.T) {
	m := newTestManager(t)
	src := t.TempDir()
	keep := filepath.Join(src, "precious")
	if err := os.WriteFile(keep, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(m.cfg.State, "bundles", "default", "mounted")
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(rootfs, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, rootfs, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(rootfs, unix.MNT_DETACH) })
	m.removeBundle(bundle)
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("file under the mounted rootfs deleted: %v", err)
	}
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Fatalf("bundle left: %v", err)
	}

	full := filepath.Join(m.cfg.State, "bundles", "default", "full")
	if err := os.MkdirAll(filepath.Join(full, "rootfs", "etc"), 0o711); err != nil {
		t.Fatal(err)
	}
	m.removeBundle(full)
	if _, err := os.Stat(filepath.Join(full, "rootfs", "etc")); err != nil {
		t.Fatalf("non-empty rootfs removed: %v", err)
	}
}

// Recover empties the trash a previous edged left (bundles it had moved
// away but not removed yet).
func TestRecoverEmptiesTrash(t *testing.T) {
	m := newTestManager(t)
	left := filepath.Join(m.cfg.State, "trash", "0123456789abcdef")
	if err := os.MkdirAll(filepath.Join(left, "rootfs"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(left, "config.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Fatalf("trash left after Recover: %v", err)
	}
}

// Recover removes a bundle without bootstrap data: a Create that did not
// finish, whose config.json and hosts (written in place) may be torn.
func TestRecoverRemovesUnfinishedBundle(t *testing.T) {
	m := newTestManager(t)
	torn := filepath.Join(m.cfg.State, "bundles", "default", "torn")
	if err := os.MkdirAll(filepath.Join(torn, "rootfs"), 0o711); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"config.json": `{"ociVersion":"1.`, "hosts": "127.0.0.1\tloc"} {
		if err := os.WriteFile(filepath.Join(torn, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(torn); !os.IsNotExist(err) {
		t.Fatalf("unfinished bundle left after Recover: %v", err)
	}
	if m.Has("default", "torn") {
		t.Fatal("Recover made a task of an unfinished bundle")
	}
}

// A deleted task is gone at once: its ID is free, its bundle and bootstrap
// are no longer at their paths.
func TestDeleteFreesTheIDAtOnce(t *testing.T) {
	requireRunc(t)
	m := newTestManager(t)
	runTask(t, m, "gone", "exit 0", 0)
	if _, err := os.Stat(m.BundleDir("default", "gone")); !os.IsNotExist(err) {
		t.Fatalf("bundle still at its path: %v", err)
	}
	if _, err := os.Stat(m.bootstrapPath("default", "gone")); !os.IsNotExist(err) {
		t.Fatalf("bootstrap still at its path: %v", err)
	}
	if _, err := m.State(context.Background(), "default", "gone", ""); !errdefs.IsNotFound(err) {
		t.Fatalf("state of a deleted task: %v; want not found", err)
	}
}

// Work handed to the background after Close (a request finishing during
// shutdown) runs at once instead of racing Close's wait.
func TestBackgroundAfterCloseRunsAtOnce(t *testing.T) {
	m := newTestManager(t)
	m.Close()
	bundle := filepath.Join(m.cfg.State, "bundles", "default", "late")
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o711); err != nil {
		t.Fatal(err)
	}
	m.discardBundle(bundle)
	ents, _ := os.ReadDir(filepath.Join(m.cfg.State, "trash"))
	if _, err := os.Stat(bundle); !os.IsNotExist(err) || len(ents) != 0 {
		t.Fatalf("after discardBundle on a closed manager: bundle %v, trash %d entries", err, len(ents))
	}
}
