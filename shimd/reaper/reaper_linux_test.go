package reaper

import (
	"context"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Exits of processes started through Start go to their caller; every other
// child's exit goes to the handler. (This test package starts no other
// children, so reaping all of them here is safe.)
func TestDispatch(t *testing.T) {
	others := make(chan Exit, 4)
	r := New(func(e Exit) { others <- e })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	attr := &os.ProcAttr{Files: []*os.File{null, null, null}}
	for i := 0; i < 20; i++ { // exits racing the registration
		_, ch, err := r.Start("/bin/sh", []string{"sh", "-c", "exit 7"}, attr)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-ch:
			if e.Status != 7 || e.At.IsZero() {
				t.Fatalf("exit %+v", e)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no exit")
		}
	}
	p, err := os.StartProcess("/bin/sleep", []string{"sleep", "100"}, attr)
	if err != nil {
		t.Fatal(err)
	}
	p.Signal(unix.SIGKILL)
	select {
	case e := <-others:
		if e.Pid != p.Pid || e.Status != 128+9 {
			t.Fatalf("other exit %+v (pid %d)", e, p.Pid)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called")
	}
	select {
	case e := <-others:
		t.Fatalf("a started process's exit reached the handler: %+v", e)
	default:
	}
}

// Run returns once its context is done and no child is left.
func TestRunReturns(t *testing.T) {
	r := New(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	_, ch, err := r.Start("/bin/true", []string{"true"}, &os.ProcAttr{Files: []*os.File{null, null, null}})
	if err != nil {
		t.Fatal(err)
	}
	if e := <-ch; e.Status != 0 {
		t.Fatalf("exit %+v", e)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
