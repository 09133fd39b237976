package cni

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Fake plugins: a plugin that leaves a child holding its stdout, or that
// floods its output, cannot be caused with the real
// containernetworking-plugins, so these tests use shell scripts.

// fakeChild's ADD starts a child that inherits stdout and then hangs.
const fakeChild = `#!/bin/sh
echo $$ >> "$(dirname "$0")/pids"
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}';;
ADD) cat >/dev/null; sleep 20 & echo $! >> "$(dirname "$0")/pids"; exec sleep 1000;;
esac
`

// fakeLoud's ADD writes 64 MiB to stderr and fails.
const fakeLoud = `#!/bin/sh
echo $$ >> "$(dirname "$0")/pids"
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}';;
ADD) cat >/dev/null; head -c 67108864 /dev/zero | tr '\0' x >&2; exit 1;;
DEL) ;;
esac
`

// fakeChatty's ADD writes 64 MiB to stdout.
const fakeChatty = `#!/bin/sh
echo $$ >> "$(dirname "$0")/pids"
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}';;
ADD) cat >/dev/null; head -c 67108864 /dev/zero | tr '\0' x;;
DEL) ;;
esac
`

// fakePluginNet returns a Network whose list runs only the plugin script,
// and the directory of the plugin (where it records its pids).
func fakePluginNet(t *testing.T, name, script string) (*Network, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(bin, "pids"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	n, err := New(context.Background(), Config{StateDir: filepath.Join(dir, "state"), PluginDirs: []string{bin},
		ConfList: []byte(`{"cniVersion":"1.0.0","name":"` + name + `","plugins":[{"type":"` + name + `"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	return n, bin
}

// TestPluginDeadlineWhenChildHoldsStdout: the context's deadline bounds a
// plugin call even when the plugin left a child holding its stdout.
func TestPluginDeadlineWhenChildHoldsStdout(t *testing.T) {
	n, bin := fakePluginNet(t, "fakechild", fakeChild)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := n.Setup(ctx, "c1", "/proc/self/ns/net", Options{})
	if took := time.Since(start); took > 6*time.Second || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Setup with a 2 s deadline took %v (%v), want it to end at the deadline with DeadlineExceeded", took, err)
	}
	// The plugin's child was killed with it (its process group).
	b, _ := os.ReadFile(filepath.Join(bin, "pids"))
	for _, f := range strings.Fields(string(b)) {
		if st, err := os.ReadFile("/proc/" + f + "/stat"); err == nil && !strings.Contains(string(st), ") Z ") {
			t.Errorf("plugin process %s still runs: %s", f, st)
		}
	}
}

// TestPluginStderrBounded: a plugin that floods stderr yields a short
// error, without edged holding all of it in memory.
func TestPluginStderrBounded(t *testing.T) {
	n, _ := fakePluginNet(t, "fakeloud", fakeLoud)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := n.Setup(ctx, "c1", "/proc/self/ns/net", Options{})
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("Setup succeeded")
	}
	grew := (after.TotalAlloc - before.TotalAlloc) >> 20
	t.Logf("error message: %d bytes; TotalAlloc grew by %d MiB", len(err.Error()), grew)
	if len(err.Error()) > 1<<20 || grew > 32 {
		t.Errorf("plugin stderr not bounded: error of %d bytes, %d MiB allocated", len(err.Error()), grew)
	}
}

// TestPluginStdoutBounded: a plugin whose result is larger than any real
// result fails rather than being read whole.
func TestPluginStdoutBounded(t *testing.T) {
	n, _ := fakePluginNet(t, "fakechatty", fakeChatty)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := n.Setup(ctx, "c1", "/proc/self/ns/net", Options{})
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("Setup succeeded")
	}
	grew := (after.TotalAlloc - before.TotalAlloc) >> 20
	t.Logf("error: %.200s; TotalAlloc grew by %d MiB", err, grew)
	if len(err.Error()) > 1<<20 || grew > 32 {
		t.Errorf("plugin stdout not bounded: error of %d bytes, %d MiB allocated", len(err.Error()), grew)
	}
}
