package integration

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/internal/testutil"
)

// TestSocketActivationFirstRPC starts edged the way systemd does: the
// socket exists before edged, and the very first connection starts it.
// The first RPC, sent at once, must succeed (containerd lost it: containerd
// issue 4888), and so must 20 clients connecting during start-up.
func TestSocketActivationFirstRPC(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatalf("systemd-socket-activate (Debian package systemd) is required: %v", err)
	}
	for round := 0; round < 3; round++ {
		dir := testutil.ShortTempDir(t)
		sock := filepath.Join(dir, "state", "edged.sock")
		if err := mkdirAll(filepath.Dir(sock)); err != nil {
			t.Fatal(err)
		}
		d := testutil.StartDaemon(t, testutil.DaemonConfig{
			Bin: binDir, Dir: dir, NoWait: true,
			Wrap: []string{activate, "-l", sock},
		})
		waitPath(t, sock)
		if strings.Contains(d.Log(), "edged serving") {
			t.Fatal("edged started before the first connection; not socket-activated")
		}

		const clients = 20
		var wg sync.WaitGroup
		errs := make(chan error, clients+1)
		// The first RPC, at once.
		c, err := client.New(context.Background(), sock)
		if err != nil {
			t.Fatalf("round %d: connect: %v", round, err)
		}
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				cc, err := client.New(ctx, sock)
				if err != nil {
					errs <- err
					return
				}
				defer cc.Close()
				if _, err := cc.ListNamespaces(ctx); err != nil {
					errs <- err
				}
			}()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if _, err := c.Version(ctx); err != nil {
			errs <- err
		}
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: request during start-up failed: %v", round, err)
		}
		c.Close()
		waitLog(t, d, "socket_activated=true")
		// Stopping edged leaves systemd's socket in place.
		d.Stop(t)
		if !isSocket(sock) {
			t.Fatalf("round %d: edged removed the socket systemd owns", round)
		}
	}
}

// TestNotifyAndWatchdog checks the start-up notices (STATUS= with
// EXTEND_TIMEOUT_USEC=), READY=1, WATCHDOG=1 pets and STOPPING=1 on a real
// notify socket, and a clean exit on SIGTERM.
func TestNotifyAndWatchdog(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	nsock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	d := testutil.StartDaemon(t, testutil.DaemonConfig{
		Bin: binDir, Dir: dir,
		Env: []string{"NOTIFY_SOCKET=" + nsock, "WATCHDOG_USEC=200000"},
	})
	next := func(t *testing.T, msgs <-chan string) string {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no notice within 10s")
			return ""
		}
	}
	want := func(s string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, s) {
					return
				}
			case <-timeout:
				t.Fatalf("did not receive %q", s)
			}
		}
	}
	// Before READY=1: the start-up phases, each with an extension of
	// systemd's start timeout.
	var before []string
	for {
		m := next(t, msgs)
		if m == "READY=1\nSTATUS=serving" {
			break
		}
		before = append(before, m)
	}
	joined := strings.Join(before, "|")
	for _, s := range []string{"STATUS=starting\nEXTEND_TIMEOUT_USEC=30000000", "STATUS=recovering tasks\nEXTEND_TIMEOUT_USEC=30000000",
		"STATUS=importing the archives of " + filepath.Join(d.Root, "import") + "\nEXTEND_TIMEOUT_USEC=30000000"} {
		if !strings.Contains(joined, s) {
			t.Errorf("notices before READY=1: %q; want %q among them", before, s)
		}
	}
	for i := 0; i < 3; i++ {
		if m := next(t, msgs); m != "WATCHDOG=1" {
			t.Fatalf("notice after READY=1: %q; want WATCHDOG=1 only", m)
		}
	}
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	want("STOPPING=1")
	exitErr, ok := d.Wait(15 * time.Second)
	if !ok || exitErr != nil {
		t.Fatalf("edged did not exit cleanly on SIGTERM: %v (exited %v)", exitErr, ok)
	}
	if isSocket(d.Address) {
		t.Fatal("edged left its own socket behind")
	}
	waitLog(t, d, "edged stopped")
}

func TestSecondDaemonRefusesSocketInUse(t *testing.T) {
	d := startDaemon(t)
	out, err := exec.Command(filepath.Join(binDir, "edged"), "--root", d.Root+"2", "--state", d.State, "--address", d.Address).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is in use: another edged is running") {
		t.Fatalf("second edged on the same socket: %v\n%s", err, out)
	}
	// The first keeps serving.
	if _, err := newClient(t, d).Version(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}
