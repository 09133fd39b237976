package metadata

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

// TestUpdatePanicValue checks that a panic in fn reaches the caller with its
// own value although fn ran on the writer goroutine.
func TestUpdatePanicValue(t *testing.T) {
	db, _ := openTest(t, Options{})
	type marker struct{ n int }
	var got any
	func() {
		defer func() { got = recover() }()
		_ = db.Update(context.Background(), func(*Tx) error { panic(marker{42}) })
	}()
	if got != (marker{42}) {
		t.Fatalf("recovered %#v, want marker{42}", got)
	}
}

// TestUpdateWaitsForWriterAndHonoursCancel holds the writer in one Update;
// a second Update whose context ends while it waits fails with the
// context's error and never runs, and a third one runs once the first ends.
func TestUpdateWaitsForWriterAndHonoursCancel(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	inside, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- db.Update(ctx, func(tx *Tx) error {
			close(inside)
			<-release
			_, err := tx.CreateContainer(ctx, "ns", testContainer(t, "first"))
			return err
		})
	}()
	<-inside

	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	ran := false
	err := db.Update(wctx, func(*Tx) error { ran = true; return nil })
	if !errors.Is(err, context.DeadlineExceeded) || ran {
		t.Fatalf("Update while the writer is busy: err %v, ran %v; want DeadlineExceeded, not run", err, ran)
	}

	third := make(chan error, 1)
	go func() {
		third <- db.Update(ctx, func(tx *Tx) error {
			_, err := tx.CreateContainer(ctx, "ns", testContainer(t, "third"))
			return err
		})
	}()
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-third; err != nil {
		t.Fatal(err)
	}
	if err := db.View(ctx, func(tx *Tx) error {
		cs, err := tx.ListContainers(ctx, "ns")
		if err != nil {
			return err
		}
		if len(cs) != 2 || cs[0].ID != "first" || cs[1].ID != "third" {
			t.Errorf("containers %+v, want first and third", cs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestUpdateAfterClose(t *testing.T) {
	db, _ := openTest(t, Options{})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	err := db.Update(context.Background(), func(*Tx) error {
		t.Error("fn ran on a closed database")
		return nil
	})
	wantErr(t, err, errdefs.ErrUnavailable, "metadata: update: database is closed")
}

// TestReaderOpenedByFirstView checks (in shared mode) that writes alone never open a reader
// connection (its memory is only spent when something reads) and that the
// first View prepares the readers' statements and sees the writes.
func TestReaderOpenedByFirstView(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{ReadConns: 1})
	for _, id := range []string{"a", "b"} {
		if err := db.Update(ctx, func(tx *Tx) error {
			_, err := tx.CreateContainer(ctx, "ns", testContainer(t, id))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if n := db.r.Stats().OpenConnections; n != 0 {
		t.Fatalf("%d reader connections open after writes only, want 0", n)
	}
	for range 2 {
		if err := db.View(ctx, func(tx *Tx) error {
			c, err := tx.GetContainer(ctx, "ns", "b")
			if err != nil {
				return err
			}
			if c.ID != "b" || len(c.Spec) == 0 {
				t.Errorf("got %+v", c)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if n := db.r.Stats().OpenConnections; n != 1 {
		t.Fatalf("%d reader connections open after View, want 1", n)
	}
	for q := range db.rstmts.m {
		if q[:6] != "SELECT" {
			t.Errorf("reader prepared a write statement: %s", q)
		}
	}
	if _, ok := db.rstmts.m[qContainerGet]; !ok {
		t.Error("reader did not prepare qContainerGet")
	}
}
