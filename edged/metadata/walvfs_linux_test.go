package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// syscw returns the process's count of write system calls so far
// (/proc/self/io syscw).
func syscw(tb testing.TB) int64 {
	tb.Helper()
	n, ok := procIOFields(tb)["syscw"]
	if !ok {
		tb.Fatal("no syscw in /proc/self/io")
	}
	return n
}

// A commit's WAL frames reach the file in one write(2): a container create
// changes several pages (row, spec overflow pages, index, free list), which
// the default VFS writes with two calls per page.
func TestWALVFSOneWritePerCommit(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		plain bool
	}{{"walVFS", false}, {"default VFS", true}} {
		t.Run(tc.name, func(t *testing.T) {
			// No checkpoint during the measurement.
			db, _ := openTest(t, Options{checkpoint: 100000, plainVFS: tc.plain})
			for i := 0; i < 5; i++ { // warm up: pages allocated, statements prepared
				createDelete(t, ctx, db, testContainer(t, "warm"+strconv.Itoa(i)))
			}
			c := testContainer(t, "c1")
			before := syscw(t)
			if err := db.Update(ctx, func(tx *Tx) error {
				_, err := tx.CreateContainer(ctx, "default", c)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			writes := syscw(t) - before
			t.Logf("write calls for one container create: %d", writes)
			if tc.plain {
				// The comparison that shows what is measured: two calls
				// per frame, and a create changes several pages.
				if writes < 6 {
					t.Fatalf("default VFS: %d write calls for a create, want at least 6 (two per page)", writes)
				}
				return
			}
			if writes != 1 {
				t.Fatalf("%d write calls for one commit, want 1", writes)
			}
		})
	}
}

// What a commit wrote is in the files (the kernel's page cache) when the
// commit returns, whatever the transaction's size, across WAL restarts
// after checkpoints, after a rolled-back transaction that spilled pages
// into the WAL, and with both synchronous levels: a copy of the database
// and WAL files taken right after each commit (what a kill -9 of edged
// leaves) opens with exactly the committed containers and passes
// SQLite's integrity check.
//
// Both ways of writing are covered: raw writes (a slow write threshold of
// an hour keeps them on), and the ordinary path they fall back to after a
// slow write (a threshold of 1 ns, on time alone, makes the first write
// slow: a write that really waits in the kernel, which is what turns raw
// writes off in edged, cannot be caused on demand).
func TestWALVFSCommitsAreInTheFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		slow time.Duration
	}{{"raw", time.Hour}, {"ordinary", time.Nanosecond}} {
		for _, sync := range []string{"NORMAL", "FULL"} {
			t.Run(tc.name+"/"+sync, func(t *testing.T) { testCommitsInFile(t, sync, tc.slow) })
		}
	}
}

func testCommitsInFile(t *testing.T, sync string, slow time.Duration) {
	ctx := context.Background()
	// A small cache makes large transactions spill pages into the
	// WAL before their commit; frequent checkpoints restart the log.
	db, path := openTest(t, Options{Synchronous: sync, CacheSizeKiB: 16, checkpoint: 40,
		walSlowWrite: slow, walSlowTimeOnly: slow == time.Nanosecond})
	want := map[string]bool{}
	seq := 0
	create := func(tx *Tx, n int) ([]string, error) {
		var ids []string
		for i := 0; i < n; i++ {
			seq++
			id := fmt.Sprintf("c%d", seq)
			if _, err := tx.CreateContainer(ctx, "default", testContainer(t, id)); err != nil {
				return nil, err
			}
			ids = append(ids, id)
		}
		return ids, nil
	}
	errRollback := errors.New("roll back")
	for round := 0; round < 60; round++ {
		var added, removed []string
		var err error
		switch round % 6 {
		case 0, 1, 2: // one container: a commit of a few frames
			err = db.Update(ctx, func(tx *Tx) error { added, err = create(tx, 1); return err })
		case 3: // 40 containers: more frames than the buffer holds, and a spill
			err = db.Update(ctx, func(tx *Tx) error { added, err = create(tx, 40); return err })
		case 4: // a spilled transaction rolled back, then a small commit
			err = db.Update(ctx, func(tx *Tx) error {
				if _, err := create(tx, 40); err != nil {
					return err
				}
				return errRollback
			})
			if !errors.Is(err, errRollback) {
				t.Fatalf("round %d: %v, want the rollback", round, err)
			}
			err = db.Update(ctx, func(tx *Tx) error { added, err = create(tx, 1); return err })
		case 5: // deletes, and pages a spill wrote changed again before the commit
			err = db.Update(ctx, func(tx *Tx) error {
				for id := range want {
					if err := tx.DeleteContainer(ctx, "default", id); err != nil {
						return err
					}
					removed = append(removed, id)
					if len(removed) == 20 {
						break
					}
				}
				more, err := create(tx, 30)
				if err != nil {
					return err
				}
				for _, id := range more[:15] {
					if err := tx.DeleteContainer(ctx, "default", id); err != nil {
						return err
					}
				}
				added = more[15:]
				return nil
			})
		}
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, id := range added {
			want[id] = true
		}
		for _, id := range removed {
			delete(want, id)
		}
		checkCopy(t, path, round, want)
	}
	raw, slowN := db.vfs.rawWrites.Load(), db.vfs.slowWrites.Load()
	t.Logf("raw writes %d, slow %d", raw, slowN)
	if want := rawPwriteWorks; (raw > 0) != want {
		t.Fatalf("%d raw writes; raw writes work here: %v", raw, want)
	}
	if slow == time.Nanosecond && (raw != 1 || slowN != 1) {
		t.Fatalf("%d raw writes, %d slow: want 1 and 1 (after the first, slow, write the ordinary path for %v)", raw, slowN, walSlowPause)
	}
	if slow == time.Hour && slowN != 0 {
		t.Fatalf("%d slow writes with a threshold of an hour", slowN)
	}
}

// checkCopy copies the database and WAL files at path, as they are in the
// kernel now, opens the copy with SQLite's default VFS (which recovers the
// WAL) and compares its containers with want.
func checkCopy(t *testing.T, path string, round int, want map[string]bool) {
	t.Helper()
	dir := t.TempDir()
	cp := filepath.Join(dir, FileName)
	for _, suffix := range []string{"", "-wal"} {
		copyFile(t, path+suffix, cp+suffix)
	}
	db, err := sql.Open("sqlite", "file:"+cp)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var check string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil {
		t.Fatalf("round %d: integrity check of the copy: %v", round, err)
	}
	if check != "ok" {
		t.Fatalf("round %d: integrity check of the copy: %s", round, check)
	}
	rows, err := db.Query("SELECT id FROM containers WHERE namespace = 'default'")
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	defer rows.Close()
	got := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		got[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("round %d: the copy has %d containers, %d were committed", round, len(got), len(want))
	}
	for id := range want {
		if !got[id] {
			t.Fatalf("round %d: committed container %s is not in the copy", round, id)
		}
	}
}

// copyFile copies from to to; a missing from (no -wal file yet) is no
// error.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Each database registers its own VFS and removes it at Close.
func TestWALVFSUnregisteredAtClose(t *testing.T) {
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), FileName), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	name := db.vfsName
	if name == "" {
		t.Fatal("the database has no VFS of its own")
	}
	registered := func() bool {
		tls := libc.NewTLS()
		defer tls.Close()
		cname, err := libc.CString(name)
		if err != nil {
			t.Fatal(err)
		}
		defer libc.Xfree(tls, cname)
		return sqlite3.Xsqlite3_vfs_find(tls, cname) != 0
	}
	if !registered() {
		t.Fatalf("VFS %s is not registered while the database is open", name)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if registered() {
		t.Fatalf("VFS %s is still registered after Close", name)
	}
}

// A raw write that takes longer than the slow threshold without its
// thread sleeping is not slow: it was preempted (a busy host, a vCPU its
// hypervisor descheduled), which says nothing of the disk. Only a write
// that waited in the kernel is a slow disk. The threshold here is 1 ns,
// so every write takes longer, and the pause after a slow write is 1 ns,
// so every commit's write is raw and judged. On a tmpfs a write to the
// page cache seldom sleeps (it can, on a lock, on a loaded host), so few
// are slow; on time alone every one was.
func TestWALRawWriteSlowOnlyIfItSlept(t *testing.T) {
	if !rawPwriteWorks {
		t.Skip("no raw writes on this platform")
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	ctx := context.Background()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16m,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	db, err := Open(ctx, filepath.Join(dir, FileName), Options{Logger: slog.New(slog.DiscardHandler),
		walSlowWrite: time.Nanosecond, walSlowPause: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const commits = 200
	before := db.vfs.rawWrites.Load()
	for i := 0; i < commits; i++ {
		if err := db.Update(ctx, func(tx *Tx) error {
			_, err := tx.CreateContainer(ctx, "default", testContainer(t, fmt.Sprintf("c%d", i)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	raw, slowN := db.vfs.rawWrites.Load()-before, db.vfs.slowWrites.Load()
	t.Logf("%d commits: %d raw writes, %d slow", commits, raw, slowN)
	if raw < commits || slowN > raw/4 {
		t.Fatalf("%d commits made %d raw writes, %d of them slow: want a raw write per commit and only those whose thread slept slow (a few at most)", commits, raw, slowN)
	}
}

// threadSleeps counts the calling thread's sleeps and nothing else.
func TestThreadSleeps(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadSleeps()
	if before < 0 {
		t.Fatal("getrusage(RUSAGE_THREAD) failed")
	}
	// Busy for a millisecond: the thread may be preempted, but it does
	// not sleep. Something outside the test can still make it sleep once
	// in a while (a page fault that waits for I/O; under qemu-user, a lock
	// of the translator), so it only has to stay awake in one of a few
	// tries; a count that moved with preemption would move every time.
	x := uint64(1)
	awake := false
	for try := 0; try < 5 && !awake; try++ {
		b := threadSleeps()
		for start := time.Now(); time.Since(start) < time.Millisecond; {
			for i := 0; i < 1000; i++ {
				x = x*6364136223846793005 + 1442695040888963407
			}
		}
		awake = threadSleeps() == b
	}
	if !awake {
		t.Fatalf("a busy thread slept in each of 5 tries (%x)", x)
	}
	before = threadSleeps()
	ts := syscall.NsecToTimespec(int64(time.Millisecond))
	if err := syscall.Nanosleep(&ts, nil); err != nil {
		t.Fatal(err)
	}
	if after := threadSleeps(); after <= before {
		t.Fatalf("nanosleep(1 ms): %d sleeps before, %d after", before, after)
	}
}
