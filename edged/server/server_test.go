package server

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBoundDeadline(t *testing.T) {
	ctx, cancel := boundDeadline(context.Background(), time.Second, time.Hour)
	defer cancel()
	dl, ok := ctx.Deadline()
	if !ok || time.Until(dl) > time.Second {
		t.Fatalf("no default deadline: %v %v", dl, ok)
	}
	far, cancelFar := context.WithTimeout(context.Background(), 48*time.Hour)
	defer cancelFar()
	ctx, cancel = boundDeadline(far, time.Second, time.Hour)
	defer cancel()
	if dl, _ := ctx.Deadline(); time.Until(dl) > time.Hour {
		t.Fatalf("deadline not capped: %v", time.Until(dl))
	}
	near, cancelNear := context.WithTimeout(context.Background(), time.Minute)
	defer cancelNear()
	ctx, cancel = boundDeadline(near, time.Second, time.Hour)
	defer cancel()
	if dl, _ := ctx.Deadline(); time.Until(dl) < 50*time.Second {
		t.Fatalf("client deadline not kept: %v", time.Until(dl))
	}
}

func TestListenUnixModesAndStaleSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "edged-srv-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	addr := filepath.Join(dir, "run", "edged.sock")

	// A stale socket from a crashed edged is replaced.
	os.MkdirAll(filepath.Dir(addr), 0o755)
	stale, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	l, err := listenUnix(addr, 0)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer l.Close()
	fi, _ := os.Stat(addr)
	if fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v", fi.Mode())
	}
	// The existing directory keeps its mode (see listener_test.go).
	di, _ := os.Stat(filepath.Dir(addr))
	if di.Mode().Perm() != 0o755 {
		t.Fatalf("socket dir mode %v", di.Mode())
	}
	// A live socket is not taken over.
	if _, err := listenUnix(addr, 0); err == nil || !strings.Contains(err.Error(), "another edged is running") {
		t.Fatalf("live socket: %v", err)
	}
	// A regular file at the address is never removed.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := listenUnix(file, 0); err == nil || !strings.Contains(err.Error(), "is not a socket; refusing to replace it") {
		t.Fatalf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatal("regular file was touched")
	}
}

func TestListenRejectsNonUnixActivation(t *testing.T) {
	// A TCP socket passed as fd 3 is refused with a clear error.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Move it to fd 3 for go-systemd's activation.Listeners.
	if err := dup3(int(f.Fd()), 3); err != nil {
		t.Skipf("cannot place fd 3: %v", err)
	}
	t.Setenv("LISTEN_PID", itoa(os.Getpid()))
	t.Setenv("LISTEN_FDS", "1")
	_, _, err = Listen(filepath.Join(t.TempDir(), "x.sock"), 0)
	if err == nil || !strings.Contains(err.Error(), "edged needs a unix stream socket") {
		t.Fatalf("tcp activation socket: %v", err)
	}
}
