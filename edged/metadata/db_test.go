package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

func pragma(t *testing.T, q interface {
	QueryRow(string, ...any) *sql.Row
}, name string) string {
	t.Helper()
	var v string
	if err := q.QueryRow("PRAGMA " + name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestOpenSettings(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		sync      string
		want      string
		readConns int
	}{{"", "1", 0}, {"NORMAL", "1", 0}, {"full", "2", 0}, {"", "1", 1}, {"full", "2", 2}} {
		t.Run(fmt.Sprintf("synchronous=%s,readconns=%d", tc.sync, tc.readConns), func(t *testing.T) {
			db, path := openTest(t, Options{Synchronous: tc.sync, ReadConns: tc.readConns, Logger: slog.New(slog.DiscardHandler)})
			shared := tc.readConns > 0
			w := db.SQL()
			checks := map[string]string{
				"journal_mode":       "wal",
				"synchronous":        tc.want,
				"foreign_keys":       "1",
				"busy_timeout":       "5000",
				"page_size":          fmt.Sprint(PageSize),
				"cache_size":         "-256",
				"mmap_size":          "0",
				"temp_store":         "2",
				"wal_autocheckpoint": fmt.Sprint(walAutocheckpointPages),
				"journal_size_limit": fmt.Sprint(journalSizeLimit),
				"locking_mode":       "exclusive",
			}
			if shared {
				checks["locking_mode"] = "normal"
			}
			for name, want := range checks {
				if got := pragma(t, w, name); got != want {
					t.Errorf("writer PRAGMA %s = %s, want %s", name, got, want)
				}
			}
			// The reader connection has the same durability settings and is
			// read-only (in exclusive mode the reader is the writer, and
			// View's transactions refuse writes themselves:
			// TestViewIsReadOnly).
			readerChecks := map[string]string{"synchronous": tc.want, "foreign_keys": "1", "journal_mode": "wal"}
			if shared {
				readerChecks["query_only"] = "1"
			}
			if err := db.View(ctx, func(tx *Tx) error {
				for name, want := range readerChecks {
					var got string
					if err := tx.SQL().QueryRow("PRAGMA " + name).Scan(&got); err != nil {
						return err
					}
					if got != want {
						t.Errorf("reader PRAGMA %s = %s, want %s", name, got, want)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			// Directory 0700, file 0600, WAL and shm files as the database;
			// in exclusive mode the WAL index is in memory, no shm file.
			st, err := os.Stat(filepath.Dir(path))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o700 {
				t.Errorf("dir mode %v, want 0700", st.Mode().Perm())
			}
			files := []string{path, path + "-wal"}
			if shared {
				files = append(files, path+"-shm")
			} else if _, err := os.Stat(path + "-shm"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s-shm in exclusive mode: %v, want no such file", path, err)
			}
			for _, f := range files {
				st, err := os.Stat(f)
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != 0o600 {
					t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
				}
			}
			v, err := db.version(ctx)
			if err != nil || v != SchemaVersion() {
				t.Fatalf("schema version %d, %v; want %d", v, err, SchemaVersion())
			}
		})
	}
}

func TestOpenInvalidOptions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, err := Open(ctx, filepath.Join(dir, FileName), Options{Synchronous: "OFF"})
	wantErr(t, err, errdefs.ErrInvalidArgument, "synchronous", `"OFF" is not NORMAL or FULL`)
	_, err = Open(ctx, filepath.Join(dir, FileName), Options{CacheSizeKiB: -1})
	wantErr(t, err, errdefs.ErrInvalidArgument, "cache size", "negative")
	_, err = Open(ctx, "", Options{})
	wantErr(t, err, errdefs.ErrInvalidArgument, "path", "must not be empty")

	// A file that is not a database.
	bad := filepath.Join(dir, "bad.db")
	junk := make([]byte, 4096)
	for i := range junk {
		junk[i] = 'x'
	}
	if err := os.WriteFile(bad, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, bad, Options{})
	if err == nil {
		t.Fatal("opened a file that is not a database")
	}
}

func TestOpenNewerSchemaFails(t *testing.T) {
	ctx := context.Background()
	db, path := openTest(t, Options{})
	if _, err := db.SQL().Exec(`INSERT INTO schema_version (version, description, applied) VALUES (99, 'future', 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err := Open(ctx, path, Options{})
	wantErr(t, err, errdefs.ErrFailedPrecondition, "schema version 99", "newer")
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	db, path := openTest(t, Options{})
	c := testContainer(t, "keep")
	if err := db.Update(ctx, func(tx *Tx) error {
		if _, err := tx.CreateContainer(ctx, "default", c); err != nil {
			return err
		}
		_, err := tx.CreateImage(ctx, "default", testImage("docker.io/library/busybox:1.36"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db2, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if err := db2.View(ctx, func(tx *Tx) error {
		got, err := tx.GetContainer(ctx, "default", "keep")
		if err != nil {
			return err
		}
		if string(got.Spec) != string(c.Spec) || got.Labels["app"] != "web" {
			t.Errorf("container after reopen: %+v", got)
		}
		_, err = tx.GetImage(ctx, "default", "docker.io/library/busybox:1.36")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Migrations are recorded once.
	var n int
	if err := db2.SQL().QueryRow(`SELECT count(*) FROM schema_version`).Scan(&n); err != nil || n != SchemaVersion() {
		t.Fatalf("schema_version rows = %d, %v", n, err)
	}
}

func TestUpdateRollsBack(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	boom := errors.New("boom")
	err := db.Update(ctx, func(tx *Tx) error {
		if _, err := tx.CreateContainer(ctx, "ns1", testContainer(t, "a")); err != nil {
			return err
		}
		if _, err := tx.CreateImage(ctx, "ns1", testImage("example.com/a:1")); err != nil {
			return err
		}
		if _, err := tx.CreateLease(ctx, "ns1", "l1", nil, nil); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update returned %v, want boom", err)
	}
	// A panic rolls back too and propagates.
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic did not propagate")
			}
		}()
		_ = db.Update(ctx, func(tx *Tx) error {
			if _, err := tx.CreateContainer(ctx, "ns1", testContainer(t, "b")); err != nil {
				return err
			}
			panic("inside update")
		})
	}()
	if err := db.View(ctx, func(tx *Tx) error {
		ns, err := tx.ListNamespaces(ctx)
		if err != nil {
			return err
		}
		if len(ns) != 0 {
			t.Errorf("namespaces after rollback: %+v", ns)
		}
		_, err = tx.GetContainer(ctx, "ns1", "a")
		wantErr(t, err, errdefs.ErrNotFound, `container "a" in namespace "ns1": not found`)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The writer connection is usable after the panic.
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateContainer(ctx, "ns1", testContainer(t, "a"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestViewIsReadOnly(t *testing.T) {
	ctx := context.Background()
	for _, rc := range []int{1, -1} {
		t.Run(fmt.Sprint("readconns=", rc), func(t *testing.T) {
			db, _ := openTest(t, Options{ReadConns: rc})
			err := db.View(ctx, func(tx *Tx) error {
				if tx.Writable() {
					t.Error("View tx is writable")
				}
				_, err := tx.CreateContainer(ctx, "default", testContainer(t, "x"))
				return err
			})
			wantErr(t, err, errdefs.ErrFailedPrecondition, "create container", "read-only transaction")
			for _, f := range []func(tx *Tx) error{
				func(tx *Tx) error { _, err := tx.CreateNamespace(ctx, "n", nil); return err },
				func(tx *Tx) error { return tx.DeleteNamespace(ctx, "n") },
				func(tx *Tx) error { return tx.DeleteContainer(ctx, "n", "x") },
				func(tx *Tx) error { _, err := tx.CreateImage(ctx, "n", testImage("a")); return err },
				func(tx *Tx) error { _, err := tx.AddContent(ctx, "n", testDigest(1), 1, nil); return err },
				func(tx *Tx) error { _, err := tx.CreateLease(ctx, "n", "l", nil, nil); return err },
			} {
				wantErr(t, db.View(ctx, f), errdefs.ErrFailedPrecondition, "read-only transaction")
			}
			// Raw writes through the reader connection are refused by SQLite.
			if rc > 0 {
				err = db.View(ctx, func(tx *Tx) error {
					_, err := tx.SQL().Exec(`INSERT INTO namespaces (name, created, updated) VALUES ('x', 0, 0)`)
					return err
				})
				if err == nil {
					t.Fatal("write through the read-only connection succeeded")
				}
			}
		})
	}
}

func TestCanceledContext(t *testing.T) {
	db, _ := openTest(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := db.Update(ctx, func(tx *Tx) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Update with canceled context: %v", err)
	}
}

// TestConcurrentReadersWhileWriting runs writers and readers at once: the
// readers must always see complete containers (a consistent snapshot), and
// every write must land.
func TestConcurrentReadersWhileWriting(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{ReadConns: 2})
	const writers, perWriter = 4, 50
	var wg sync.WaitGroup
	errc := make(chan error, 100)
	stop := make(chan struct{})
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				c := testContainer(t, fmt.Sprintf("w%d-c%d", w, i))
				if err := db.Update(ctx, func(tx *Tx) error {
					_, err := tx.CreateContainer(ctx, "default", c)
					return err
				}); err != nil {
					errc <- err
					return
				}
			}
		}(w)
	}
	var rwg sync.WaitGroup
	for r := 0; r < 3; r++ {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := db.View(ctx, func(tx *Tx) error {
					cs, err := tx.ListContainers(ctx, "default")
					if err != nil {
						return err
					}
					for _, c := range cs {
						if len(c.Spec) == 0 || c.Labels["app"] != "web" || c.Runtime.Name == "" {
							return fmt.Errorf("incomplete container %+v", c)
						}
					}
					return nil
				}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	rwg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if err := db.View(ctx, func(tx *Tx) error {
		cs, err := tx.ListContainers(ctx, "default")
		if len(cs) != writers*perWriter {
			t.Errorf("%d containers, want %d", len(cs), writers*perWriter)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestExtraSchemaAndCountSnapshots(t *testing.T) {
	ctx := context.Background()
	calls := 0
	opts := Options{
		ExtraSchema: []func(context.Context, *sql.Tx) error{func(ctx context.Context, tx *sql.Tx) error {
			calls++
			_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS test_snapshots (namespace TEXT NOT NULL, key TEXT NOT NULL)`)
			return err
		}},
		CountSnapshots: func(ctx context.Context, tx *sql.Tx, ns string) (int, error) {
			var n int
			err := tx.QueryRowContext(ctx, `SELECT count(*) FROM test_snapshots WHERE namespace = ?`, ns).Scan(&n)
			return n, err
		},
	}
	db, path := openTest(t, opts)
	if calls != 1 {
		t.Fatalf("ExtraSchema called %d times", calls)
	}
	if err := db.Update(ctx, func(tx *Tx) error {
		if _, err := tx.CreateNamespace(ctx, "snaps", nil); err != nil {
			return err
		}
		// The snapshot store writes in the same transaction.
		_, err := tx.SQL().ExecContext(ctx, `INSERT INTO test_snapshots VALUES ('snaps', 'k1'), ('snaps', 'k2')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err := db.Update(ctx, func(tx *Tx) error { return tx.DeleteNamespace(ctx, "snaps") })
	wantErr(t, err, errdefs.ErrFailedPrecondition, `namespace "snaps" must be empty, but has 2 snapshots`)
	db.Close()

	// The hook runs at every open; a failing hook fails Open and rolls the
	// migration transaction back.
	db2, err := Open(ctx, path, opts)
	if err != nil {
		t.Fatal(err)
	}
	db2.Close()
	if calls != 2 {
		t.Fatalf("ExtraSchema called %d times after reopen", calls)
	}
	failing := Options{ExtraSchema: []func(context.Context, *sql.Tx) error{func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE half_done (x)`); err != nil {
			return err
		}
		return fmt.Errorf("snapshots schema: %w", errdefs.ErrDataLoss)
	}}}
	fresh := filepath.Join(t.TempDir(), FileName)
	_, err = Open(ctx, fresh, failing)
	wantErr(t, err, errdefs.ErrDataLoss, "extra schema 0", "snapshots schema")
	db3, err := Open(ctx, fresh, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db3.Close()
	var n int
	if err := db3.SQL().QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'half_done'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("half_done table exists (%d, %v): failed migration was not rolled back", n, err)
	}
}

func TestTimestamps(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	before := time.Now()
	var created Container
	if err := db.Update(ctx, func(tx *Tx) error {
		var err error
		created, err = tx.CreateContainer(ctx, "default", testContainer(t, "ts"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if created.CreatedAt.Before(before.Add(-time.Second)) || created.CreatedAt.After(time.Now()) || !created.CreatedAt.Equal(created.UpdatedAt) {
		t.Fatalf("timestamps %v %v", created.CreatedAt, created.UpdatedAt)
	}
	if err := db.View(ctx, func(tx *Tx) error {
		got, err := tx.GetContainer(ctx, "default", "ts")
		if !got.CreatedAt.Equal(created.CreatedAt) || got.CreatedAt.Location() != time.UTC {
			t.Errorf("stored %v, returned %v", got.CreatedAt, created.CreatedAt)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestBusyDatabase: in shared locking mode (reader connections), another
// process (here another connection, as the sqlite3 CLI would be) holds the
// write lock longer than the busy timeout: Update fails with ErrUnavailable
// after waiting, and works once the lock is released. (In the default
// exclusive mode nobody else gets the file: TestExclusiveLocking.)
func TestBusyDatabase(t *testing.T) {
	ctx := context.Background()
	db, path := openTest(t, Options{BusyTimeout: 100 * time.Millisecond, ReadConns: 1})
	other, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateNamespace(ctx, "x", nil)
		return err
	})
	wantErr(t, err, errdefs.ErrUnavailable, "begin transaction", "locked")
	if waited := time.Since(start); waited < 90*time.Millisecond {
		t.Fatalf("gave up after %v, before the busy timeout", waited)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateNamespace(ctx, "x", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestExclusiveLocking: by default edged holds the database's lock while it
// runs, so a second opener (another edged on the same root) is refused with
// a clear error instead of sharing the file, and no -shm file exists.
func TestExclusiveLocking(t *testing.T) {
	ctx := context.Background()
	db, path := openTest(t, Options{})
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateNamespace(ctx, "n", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-shm"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s-shm: %v, want no such file (the WAL index is in memory)", path, err)
	}
	_, err := Open(ctx, path, Options{BusyTimeout: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	wantErr(t, err, errdefs.ErrUnavailable, path, "in use by another process")
	// Reads share the writer connection and see its commits.
	if err := db.View(ctx, func(tx *Tx) error {
		_, err := tx.GetNamespace(ctx, "n")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Once the first is closed the file opens again, with its data.
	db.Close()
	db2, err := Open(ctx, path, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if err := db2.View(ctx, func(tx *Tx) error {
		_, err := tx.GetNamespace(ctx, "n")
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
