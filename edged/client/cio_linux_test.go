package client

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFIFODirPrefersMemory: the default directory is a tmpfs when the host
// has one; a non-tmpfs $XDG_RUNTIME_DIR is not used.
func TestFIFODirPrefersMemory(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	d := FIFODir()
	var st unix.Statfs_t
	shm := unix.Statfs("/dev/shm", &st) == nil && st.Type == unix.TMPFS_MAGIC
	switch {
	case shm && d != "/dev/shm":
		t.Fatalf("FIFODir() = %q, want /dev/shm (a tmpfs)", d)
	case !shm && d != os.TempDir():
		t.Fatalf("FIFODir() = %q without a tmpfs, want %q", d, os.TempDir())
	}
	t.Setenv("XDG_RUNTIME_DIR", "/dev/shm")
	if shm && FIFODir() != "/dev/shm" {
		t.Fatalf("FIFODir() = %q with XDG_RUNTIME_DIR=/dev/shm", FIFODir())
	}
}

// TestFIFOsCopyAndClose: output written to the fifos arrives; Close removes
// the directory, also when nobody ever opened a fifo (its copy is still
// waiting in open and must be released, not hang).
func TestFIFOsCopyAndClose(t *testing.T) {
	ctx := context.Background()
	var out, errb bytes.Buffer
	f, err := NewFIFOs(ctx, "", nil, &out, &errb)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(f.Stdout, FIFODir()+"/edgectl-io-") || filepath.Dir(f.Stdout) != filepath.Dir(f.Stderr) {
		t.Fatalf("fifos %q %q not in a new directory under %q", f.Stdout, f.Stderr, FIFODir())
	}
	for p, data := range map[string]string{f.Stdout: "hello\n", f.Stderr: "oops\n"} {
		w, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		w.WriteString(data)
		w.Close()
	}
	f.Wait()
	if out.String() != "hello\n" || errb.String() != "oops\n" {
		t.Fatalf("copied stdout %q stderr %q", out.String(), errb.String())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(f.Stdout)); !os.IsNotExist(err) {
		t.Fatalf("fifo directory after Close: %v", err)
	}

	// Nobody opens the fifos: Close releases the copies waiting in open.
	f, err = NewFIFOs(ctx, "", nil, &out, &errb)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs on fifos nobody opened")
	}
	f.Wait()
	if _, err := os.Stat(filepath.Dir(f.Stdout)); !os.IsNotExist(err) {
		t.Fatalf("fifo directory after Close: %v", err)
	}
}
