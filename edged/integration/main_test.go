// Package integration tests edged end to end: the real daemon binary over
// its real unix socket, driven by the client package and by edgectl.
package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/internal/testutil"
)

var binDir string

func TestMain(m *testing.M) {
	// EDGED_TEST_BIN names a directory with prebuilt edged, edgectl,
	// edged-shim and edged-remote (make test-vm: the VM has no writable Go cache).
	if dir := os.Getenv("EDGED_TEST_BIN"); dir != "" {
		binDir = dir
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "edged-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := testutil.Binaries(dir, "edged", "edgectl", "edged-shim", "edged-remote"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startDaemon(t *testing.T) *testutil.Daemon {
	t.Helper()
	return testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir})
}

// startDaemonAt starts a new edged on the directories of a stopped one.
func startDaemonAt(t *testing.T, old *testutil.Daemon) *testutil.Daemon {
	t.Helper()
	return testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: filepath.Dir(old.Root)})
}

func newClient(t *testing.T, d *testutil.Daemon, opts ...client.Opt) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.New(ctx, d.Address, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mkdirAll(p string) error { return os.MkdirAll(p, 0o711) }

func isSocket(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

func waitPath(t *testing.T, p string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(p); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", p)
}
