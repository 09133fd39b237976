package runtime

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

// A dead shim's task keeps its ID reserved until the daemon's OnDead hook
// (the network teardown) returns: a Create of the same ID meanwhile fails
// with AlreadyExists and a message saying why, instead of creating a task
// whose fresh bundle and network the clean-up would remove. OnGone (the
// exit events) comes after the ID is free, so a client recreating the task
// on it succeeds.
func TestDeadShimHoldsIDUntilCleanedUp(t *testing.T) {
	requireRunc(t)
	state := t.TempDir()
	inDead := make(chan string, 1)
	release := make(chan struct{})
	gone := make(chan string, 1)
	var m *Manager
	m, err := New(Config{State: state, Address: filepath.Join(state, "edged.sock"), ShimBinary: filepath.Join(shimBin, "edged-shim"),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnDead: func(ns, id string) {
			inDead <- id
			<-release
		},
		OnGone: func(ns, id string, pid uint32) {
			gone <- id
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	ctx := context.Background()
	id := "deadshim"
	if _, err := m.Create(ctx, "default", id, CreateOpts{Start: true, Spec: specFor(t, id, "sleep", "300")}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(m.ShimPid("default", id), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The next call finds the connection closed and starts the clean-up.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := m.State(ctx, "default", id, "")
		if err != nil && !errdefs.IsUnavailable(err) && !errdefs.IsNotFound(err) {
			t.Fatalf("state of a task whose shim was killed: %v; want unavailable or not found", err)
		}
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed shim still answers")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case got := <-inDead:
		if got != id {
			t.Fatalf("OnDead for %q; want %q", got, id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("OnDead not called for the task of the killed shim")
	}
	// Inside OnDead: the task is gone for every call, its ID still held.
	if m.Has("default", id) {
		t.Fatal("Has reports the dead shim's task")
	}
	_, err = m.Create(ctx, "default", id, CreateOpts{Start: true, Spec: specFor(t, id, "true")})
	if !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), "its shim died and edged is cleaning up after it") {
		t.Fatalf("create during the dead task's clean-up: %v; want already exists, cleaning up", err)
	}
	select {
	case <-gone:
		t.Fatal("OnGone called before OnDead returned")
	default:
	}
	close(release)
	select {
	case got := <-gone:
		if got != id {
			t.Fatalf("OnGone for %q; want %q", got, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnGone not called")
	}
	runTask(t, m, id, "exit 7", 7)
}
