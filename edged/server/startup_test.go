package server

import (
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// notifySocket listens on a real datagram socket named by NOTIFY_SOCKET and
// returns what is sent to it.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", p)
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return msgs
}

func next(t *testing.T, msgs <-chan string) string {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no notice within 5s")
		return ""
	}
}

// While edged starts, systemd is told each phase with an extension, and
// asked for one again every interval only if edged read or wrote since the
// last notice (io, a counter the test moves: a hung start-up is not
// extended for ever); after finish nothing is sent.
func TestStartupExtendsSystemdTimeout(t *testing.T) {
	msgs := notifySocket(t)
	var mu sync.Mutex
	var chars uint64 = 1000
	counter := func() (uint64, bool) {
		mu.Lock()
		defer mu.Unlock()
		return chars, true
	}
	moved := func() {
		mu.Lock()
		chars += 4096
		mu.Unlock()
	}
	silent := func(what string) {
		t.Helper()
		select {
		case m := <-msgs:
			t.Fatalf("%s: notice %q", what, m)
		case <-time.After(150 * time.Millisecond): // several intervals
		}
	}
	st := newStartup(slog.New(slog.NewTextHandler(io.Discard, nil)), 20*time.Millisecond, counter)
	if m := next(t, msgs); m != "STATUS=starting\nEXTEND_TIMEOUT_USEC=30000000" {
		t.Fatalf("first notice %q", m)
	}
	silent("no progress")
	for i := 0; i < 3; i++ {
		moved()
		if m := next(t, msgs); m != "EXTEND_TIMEOUT_USEC=30000000" {
			t.Fatalf("notice after progress %d: %q", i, m)
		}
		silent("no progress since the last notice")
	}
	st.status("importing the archives of /x")
	if m := next(t, msgs); m != "STATUS=importing the archives of /x\nEXTEND_TIMEOUT_USEC=30000000" {
		t.Fatalf("phase notice %q", m)
	}
	moved()
	st.finish()
	st.status("after")
	st.finish()
	// What a tick sent before finish returned may still be on its way.
	select {
	case m := <-msgs:
		if m != "EXTEND_TIMEOUT_USEC=30000000" {
			t.Fatalf("notice %q", m)
		}
	case <-time.After(50 * time.Millisecond):
	}
	moved()
	silent("after finish")
}

// ioChars counts what the process reads.
func TestIOChars(t *testing.T) {
	before, ok := ioChars()
	if !ok {
		t.Fatal("/proc/self/io unreadable")
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(p); err != nil {
		t.Fatal(err)
	}
	after, _ := ioChars()
	if after-before < 2<<20 {
		t.Fatalf("ioChars grew by %d after writing and reading 1 MiB; want at least 2 MiB", after-before)
	}
}

// Without NOTIFY_SOCKET nothing runs and every call is a no-op.
func TestStartupWithoutNotifySocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	st := notifyStartup(slog.New(slog.NewTextHandler(io.Discard, nil)), time.Millisecond)
	if st.stop != nil {
		t.Fatal("notices started without NOTIFY_SOCKET")
	}
	st.status("x")
	st.finish()
}
