package metadata

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

// A full disk fails the write that does not fit with a clear error and
// loses nothing: what was committed before is intact and readable, the
// database works again once there is room, and a copy of the files (what
// a kill of edged would leave) passes SQLite's integrity check. The
// database lives on a small tmpfs, which fails writes beyond its size
// with ENOSPC: the WAL write of a commit is then the one that fails.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	ctx := context.Background()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	path := filepath.Join(dir, FileName)
	// No checkpoint: the WAL grows until the disk is full.
	db, err := Open(ctx, path, Options{Logger: slog.New(slog.DiscardHandler), checkpoint: 100000})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	var created []string
	var full error
	for i := 0; i < 1000 && full == nil; i++ {
		id := fmt.Sprintf("c%d", i)
		full = db.Update(ctx, func(tx *Tx) error {
			_, err := tx.CreateContainer(ctx, "default", testContainer(t, id))
			return err
		})
		if full == nil {
			created = append(created, id)
		}
	}
	if full == nil {
		t.Fatal("1000 containers fit in a 256 KiB file system")
	}
	t.Logf("%d containers created, then: %v", len(created), full)
	wantErr(t, full, errdefs.ErrResourceExhausted, "metadata: commit: database or disk is full")

	// What was committed is there.
	count := func() int {
		t.Helper()
		var n int
		if err := db.View(ctx, func(tx *Tx) error {
			cs, err := tx.ListContainers(ctx, "default")
			n = len(cs)
			return err
		}); err != nil {
			t.Fatalf("list after the disk filled up: %v", err)
		}
		return n
	}
	if n := count(); n != len(created) {
		t.Fatalf("%d containers after the disk filled up, %d were created", n, len(created))
	}
	// A copy of the files as they are now opens with exactly those.
	want := map[string]bool{}
	for _, id := range created {
		want[id] = true
	}
	checkCopy(t, path, 0, want)

	// Room again (the tmpfs grows): writes work again.
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT, "size=4m"); err != nil {
		t.Fatalf("remount tmpfs: %v", err)
	}
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateContainer(ctx, "default", testContainer(t, "after"))
		return err
	}); err != nil {
		t.Fatalf("create once there is room again: %v", err)
	}
	want["after"] = true
	if n := count(); n != len(want) {
		t.Fatalf("%d containers, want %d", n, len(want))
	}
	checkCopy(t, path, 1, want)
}
