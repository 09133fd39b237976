// Package testutil builds edged's binaries for tests and runs a real edged
// daemon in temporary directories.
package testutil

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RepoRoot returns the repository root (the directory with go.mod).
func RepoRoot() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above %s", file)
		}
		dir = parent
	}
}

// Binaries builds the named commands (edged, edgectl, edged-shim) into dir
// with the Go toolchain, once per call.
func Binaries(dir string, names ...string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-o", dir + "/"}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// Daemon is a running edged.
type Daemon struct {
	Root, State, Address string
	Cmd                  *exec.Cmd
	log                  *SyncBuffer
	done                 chan struct{}
	exitErr              error
}

// SyncBuffer is an output buffer a test reads while a process writes it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// DaemonConfig configures StartDaemon.
type DaemonConfig struct {
	Bin    string // directory with the edged binary
	Dir    string // base directory for root and state; t.TempDir() if empty
	Args   []string
	Env    []string
	Wrap   []string // command prefix, e.g. systemd-socket-activate -l SOCK
	NoWait bool     // do not wait for the socket
}

// StartDaemon starts edged with its own root, state and socket and waits
// until the API answers. The daemon is stopped at the end of the test.
func StartDaemon(t testing.TB, cfg DaemonConfig) *Daemon {
	t.Helper()
	dir := cfg.Dir
	if dir == "" {
		dir = ShortTempDir(t)
	}
	d := &Daemon{Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state"), log: &SyncBuffer{}, done: make(chan struct{})}
	d.Address = filepath.Join(d.State, "edged.sock")
	args := append([]string{filepath.Join(cfg.Bin, "edged"), "--root", d.Root, "--state", d.State, "--address", d.Address, "--log-level", "debug"}, cfg.Args...)
	args = append(append([]string{}, cfg.Wrap...), args...)
	d.Cmd = exec.Command(args[0], args[1:]...)
	d.Cmd.Env = append(os.Environ(), cfg.Env...)
	d.Cmd.Stdout = d.log
	d.Cmd.Stderr = d.log
	d.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.Cmd.Start(); err != nil {
		t.Fatalf("start edged: %v", err)
	}
	go func() {
		d.exitErr = d.Cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.Stop(t)
		if t.Failed() {
			t.Logf("edged log:\n%s", d.Log())
		}
	})
	if !cfg.NoWait {
		d.WaitReady(t)
	}
	return d
}

// WaitReady waits until the socket accepts connections.
func (d *Daemon) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			t.Fatalf("edged exited early: %v\n%s", d.exitErr, d.Log())
		default:
		}
		if c, err := net.Dial("unix", d.Address); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("edged did not listen on %s\n%s", d.Address, d.Log())
}

// Log returns what edged logged so far.
func (d *Daemon) Log() string { return d.log.String() }

// Pid returns edged's process ID.
func (d *Daemon) Pid() int { return d.Cmd.Process.Pid }

// Signal sends sig to edged.
func (d *Daemon) Signal(sig syscall.Signal) error { return d.Cmd.Process.Signal(sig) }

// Wait waits for edged to exit and returns its exit error.
func (d *Daemon) Wait(timeout time.Duration) (error, bool) {
	select {
	case <-d.done:
		return d.exitErr, true
	case <-time.After(timeout):
		return nil, false
	}
}

// Stop terminates edged (SIGTERM, then SIGKILL after 10 s).
func (d *Daemon) Stop(t testing.TB) {
	select {
	case <-d.done:
		return
	default:
	}
	d.Cmd.Process.Signal(syscall.SIGTERM)
	if _, ok := d.Wait(10 * time.Second); !ok {
		t.Errorf("edged did not stop on SIGTERM; killing it")
		syscall.Kill(-d.Cmd.Process.Pid, syscall.SIGKILL)
		d.Wait(5 * time.Second)
	}
}

// Kill kills edged with SIGKILL, as a crash would.
func (d *Daemon) Kill() {
	d.Cmd.Process.Signal(syscall.SIGKILL)
	d.Wait(10 * time.Second)
}

// ShortTempDir returns a temporary directory with a short path, since unix
// socket paths are limited to 107 bytes and t.TempDir() paths can be long.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "edged-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// RunCLI runs a binary and returns stdout, stderr and the exit code.
func RunCLI(ctx context.Context, env []string, bin string, args ...string) (string, string, int) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			code = -1
			stderr.WriteString(err.Error())
		}
	}
	return stdout.String(), stderr.String(), code
}

// Lines splits output into non-empty lines.
func Lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// ForbidDeps fails t for every package in the import graph of pkg (go list
// -deps) that is one of forbidden or below one ("a/b" also forbids "a/b/c";
// a trailing slash forbids only the packages below).
func ForbidDeps(t testing.TB, pkg string, forbidden []string) {
	t.Helper()
	cmd := exec.Command(goTool(), "list", "-deps", pkg)
	cmd.Env = append(cmd.Environ(), "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list returned %d packages", len(deps))
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("%s imports %s (forbidden: %s)", pkg, d, f)
			}
		}
	}
}
