package integration

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/internal/testutil"
)

// TestRunWithTerminal runs `edgectl run -t -i` on a real pseudo-terminal:
// the container gets a terminal of its own with edgectl's window size,
// input typed on the terminal reaches it, and edgectl exits with its code.
func TestRunWithTerminal(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	master, slave, err := testutil.OpenPty()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 101}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "edgectl"), "--address", d.Address, "run", "--rm", "-t", "-i", "--rootfs", rootfs, "tty1",
		"sh", "-c", `tty; stty -a | head -1; read line; echo "got:$line"; exit 5`)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				close(done)
				return
			}
		}
	}()
	// Type a line once the container asks for it.
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), "rows 33; columns 101") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	master.Write([]byte("hello tty\r"))
	err = cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 5 {
		t.Fatalf("edgectl run -t: %v, want exit 5; output %q", err, out.String())
	}
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	o := out.String()
	for _, want := range []string{"/dev/pts/", "rows 33; columns 101", "got:hello tty"} {
		if !strings.Contains(o, want) {
			t.Fatalf("terminal output %q lacks %q", o, want)
		}
	}
}
