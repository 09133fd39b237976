package snapshots

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/fsstore/snapshots/mount"
)

const overlayMagic = 0x794c7630

// backingDir returns a fresh directory on a filesystem that can hold overlay
// upper layers: the test's TempDir unless that is itself on overlayfs (as in
// some containers), then /var/tmp.
func backingDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != overlayMagic {
		return dir
	}
	dir, err := os.MkdirTemp("/var/tmp", "edged-snapshots-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func openDBPath(path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

func openDB(t testing.TB, dir string) *sql.DB {
	t.Helper()
	db, err := openDBPath(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type env struct {
	s    Snapshotter
	db   *sql.DB
	root string
	base string
}

func newEnv(t testing.TB, backend Backend) *env {
	t.Helper()
	base := backingDir(t)
	db := openDB(t, base)
	root := filepath.Join(base, "root")
	s, err := New(context.Background(), db, root, Options{Backend: backend, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if backend != BackendAuto && s.Backend() != backend {
		t.Fatalf("backend %s, want %s", s.Backend(), backend)
	}
	return &env{s: s, db: db, root: root, base: base}
}

// mountAt mounts ms on a fresh directory and unmounts it at the end of the
// test (or earlier through the returned function).
func mountAt(t testing.TB, ms []mount.Mount) (string, func()) {
	t.Helper()
	target, err := os.MkdirTemp(t.TempDir(), "mnt-")
	if err != nil {
		t.Fatal(err)
	}
	if err := mount.MountAll(ms, target); err != nil {
		t.Fatal(err)
	}
	done := false
	unmount := func() {
		if done {
			return
		}
		done = true
		if err := mount.UnmountAll(target); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(unmount)
	return target, unmount
}

func wantErr(t testing.TB, err, kind error, substrs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected %v error, got nil", kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("expected errors.Is(%v), got %v", kind, err)
	}
	for _, s := range substrs {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not contain %q", err, s)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, []byte(data), 0o644))
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// layer prepares key on parent, runs fill on its mounted filesystem, and
// commits it as name.
func layer(t testing.TB, e *env, ns, name, parent string, fill func(root string)) {
	t.Helper()
	ctx := context.Background()
	key := "extract-" + name
	ms, err := e.s.Prepare(ctx, ns, key, parent, nil)
	if err != nil {
		t.Fatal(err)
	}
	target, unmount := mountAt(t, ms)
	fill(target)
	unmount()
	must(t, e.s.Commit(ctx, ns, name, key, nil))
}

func option(m mount.Mount, prefix string) string {
	for _, o := range m.Options {
		if v, ok := strings.CutPrefix(o, prefix); ok {
			return v
		}
	}
	return ""
}
