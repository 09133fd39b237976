package metadata

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A COMMIT that fails leaves SQLite's transaction open; the connection
// must still come back clean: the failed transaction's rows are gone and
// the next transactions begin and commit. The failure is real: a deferred
// foreign key violation, which SQLite reports at COMMIT.
func TestFailedCommitRollsBack(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	err := db.Update(ctx, func(tx *Tx) error {
		if _, err := tx.SQL().ExecContext(ctx, `PRAGMA defer_foreign_keys = ON`); err != nil {
			return err
		}
		// A container in a namespace that does not exist: accepted now,
		// refused at COMMIT.
		_, err := tx.SQL().ExecContext(ctx, `INSERT INTO containers (namespace, id, image, runtime, spec, spec_type, snapshotter, snapshot_key, created, updated)
			VALUES ('missing', 'orphan', 'img', 'rt', x'00', 't', 'overlayfs', 'orphan', 0, 0)`)
		return err
	})
	if err == nil {
		t.Fatal("commit of a foreign key violation succeeded")
	}
	if !strings.Contains(err.Error(), "metadata: commit:") || !strings.Contains(err.Error(), "FOREIGN KEY") {
		t.Fatalf("error %q: want the commit's foreign key error", err)
	}
	// The connection is usable, outside any transaction.
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateContainer(ctx, "default", testContainer(t, "after"))
		return err
	}); err != nil {
		t.Fatalf("Update after the failed commit: %v", err)
	}
	if err := db.View(ctx, func(tx *Tx) error {
		var n int
		if err := tx.SQL().QueryRowContext(ctx, `SELECT count(*) FROM containers WHERE id = 'orphan'`).Scan(&n); err != nil {
			return err
		}
		if n != 0 {
			t.Errorf("the failed transaction's row is in the database")
		}
		_, err := tx.GetContainer(ctx, "default", "after")
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// A View whose context is done before it begins fails with the context's
// error and leaves the connection usable.
func TestCanceledViewLeavesConnectionClean(t *testing.T) {
	db, _ := openTest(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := db.View(ctx, func(tx *Tx) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("View with a canceled context: %v, want context.Canceled", err)
	}
	for i := 0; i < 2; i++ {
		if err := db.Update(context.Background(), func(tx *Tx) error {
			_, err := tx.CreateContainer(context.Background(), "default", testContainer(t, "c"+string(rune('0'+i))))
			return err
		}); err != nil {
			t.Fatalf("Update after the canceled View: %v", err)
		}
	}
}

// Update begins with BEGIN IMMEDIATE: it holds the write lock from its
// start, before it has written anything, so another connection cannot
// begin a write meanwhile. A View begins a read transaction, which takes
// no write lock.
func TestUpdateTakesWriteLockAtBegin(t *testing.T) {
	ctx := context.Background()
	// Shared locking mode (ReadConns > 0), so that another connection can
	// open the file at all.
	db, path := openTest(t, Options{ReadConns: 1})
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.SetMaxOpenConns(1)
	tryWrite := func() error {
		c, err := other.Conn(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
			return err
		}
		_, err = c.ExecContext(ctx, "ROLLBACK")
		return err
	}
	if err := db.View(ctx, func(tx *Tx) error { return tryWrite() }); err != nil {
		t.Fatalf("a write lock taken by another connection during a View: %v, want success", err)
	}
	var during error
	if err := db.Update(ctx, func(tx *Tx) error {
		during = tryWrite()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if during == nil || !strings.Contains(during.Error(), "database is locked") {
		t.Fatalf("another connection's BEGIN IMMEDIATE during an Update: %v, want \"database is locked\"", during)
	}
	// And the lock is released at the end of the Update.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := tryWrite()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("write lock after the Update: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// failAfterExec runs a statement, then reports err as if it had failed:
// a BEGIN that took effect but whose caller got an error (its context
// ended as it ran). That cannot be caused on purpose with a real
// connection, so the statement is wrapped; the connection and the BEGIN
// are real.
type failAfterExec struct {
	driver.StmtExecContext
	err error
}

func (f failAfterExec) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if _, err := f.StmtExecContext.ExecContext(ctx, args); err != nil {
		return nil, err
	}
	return nil, f.err
}

// A BEGIN that took effect and then failed is rolled back: the connection
// goes back to the pool outside any transaction, so the next BEGIN works
// (without the rollback it fails with "cannot start a transaction within
// a transaction").
func TestFailedBeginRollsBack(t *testing.T) {
	ctx := context.Background()
	c, err := newConnector("file:"+filepath.Join(t.TempDir(), FileName), nil, "IMMEDIATE")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := conn.(*txConn)
	realBegin := tc.begin
	tc.begin = failAfterExec{realBegin, context.DeadlineExceeded}
	if _, err := tc.BeginTx(ctx, driver.TxOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("BeginTx: %v, want the BEGIN's error", err)
	}
	tc.begin = realBegin
	tx, err := tc.BeginTx(ctx, driver.TxOptions{})
	if err != nil {
		t.Fatalf("BEGIN after the failed one: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}
