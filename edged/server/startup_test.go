package server

import (
	"io"
	"log/slog"
	"net"
	"path/filepath"
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

// While edged starts, systemd is told the phase and asked, again every
// interval, for startupExtension more; after finish nothing is sent.
func TestStartupExtendsSystemdTimeout(t *testing.T) {
	msgs := notifySocket(t)
	st := notifyStartup(slog.New(slog.NewTextHandler(io.Discard, nil)), 20*time.Millisecond)
	if m := next(t, msgs); m != "STATUS=starting\nEXTEND_TIMEOUT_USEC=30000000" {
		t.Fatalf("first notice %q", m)
	}
	for i := 0; i < 3; i++ {
		if m := next(t, msgs); m != "EXTEND_TIMEOUT_USEC=30000000" {
			t.Fatalf("periodic notice %d: %q", i, m)
		}
	}
	st.status("importing the archives of /x")
	for {
		m := next(t, msgs)
		if m == "STATUS=importing the archives of /x\nEXTEND_TIMEOUT_USEC=30000000" {
			break
		}
		if m != "EXTEND_TIMEOUT_USEC=30000000" {
			t.Fatalf("notice %q", m)
		}
	}
	st.finish()
	st.status("after")
	st.finish()
	// Drain what was sent before finish returned, then expect silence.
	for {
		select {
		case m := <-msgs:
			if m != "EXTEND_TIMEOUT_USEC=30000000" {
				t.Fatalf("notice %q", m)
			}
			continue
		case <-time.After(100 * time.Millisecond):
		}
		break
	}
	select {
	case m := <-msgs:
		t.Fatalf("notice %q after finish", m)
	case <-time.After(200 * time.Millisecond):
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
