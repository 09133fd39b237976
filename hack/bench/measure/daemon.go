// Package measure starts edged (and other daemons) for benchmarks and
// reads what they cost: memory, disk writes, binary sizes, latency and
// throughput of the API.
package measure

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Daemon is a server process started for a measurement.
type Daemon struct {
	Name    string
	Socket  string
	Dir     string // its private temp directory
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

// StartEdged starts the edged binary with its own root, state and socket
// under dir, extra environment variables env (e.g. "GOGC=100") and extra
// flags args, and waits until its socket accepts connections.
func StartEdged(ctx context.Context, edged, dir string, env []string, args ...string) (*Daemon, error) {
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	sock := filepath.Join(state, "edged.sock")
	args = append([]string{"--root", root, "--state", state, "--address", sock}, args...)
	return StartDaemon(ctx, "edged", dir, sock, env, edged, args...)
}

// StartDaemon runs bin with args and extra environment env, logging to
// dir/<name>.log, and waits up to 20 s for sock to accept connections.
func StartDaemon(ctx context.Context, name, dir, sock string, env []string, bin string, args ...string) (*Daemon, error) {
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	// Its own process group, so a Ctrl-C of the harness does not race our
	// SIGTERM; and SIGKILL if the harness dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &Daemon{Name: name, Socket: sock, Dir: dir, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return d, nil
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("%s exited before serving (%v); log:\n%s", name, d.waitErr, d.LogTail())
		case <-ctx.Done():
			d.Stop()
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.Stop()
			return nil, fmt.Errorf("%s: socket %s not ready after 20s; log:\n%s", name, sock, d.LogTail())
		}
	}
}

// PID returns the daemon's process id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Alive returns an error when the daemon has exited.
func (d *Daemon) Alive() error {
	select {
	case <-d.exited:
		return fmt.Errorf("%s exited (%v); log:\n%s", d.Name, d.waitErr, d.LogTail())
	default:
		return nil
	}
}

// Stop sends SIGTERM and waits up to 10 s, then kills the daemon.
func (d *Daemon) Stop() error {
	select {
	case <-d.exited:
		return nil
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		var ee *exec.ExitError
		if errors.As(d.waitErr, &ee) && !ee.Exited() {
			return nil // ended by the signal: fine for a daemon without a handler
		}
		return d.waitErr
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("%s did not stop within 10s of SIGTERM", d.Name)
	}
}

// LogSize returns the current size of the daemon's log, an offset for
// LogFrom.
func (d *Daemon) LogSize() int64 {
	fi, err := os.Stat(d.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// LogFrom returns the daemon's log from offset off on.
func (d *Daemon) LogFrom(off int64) string {
	data, _ := os.ReadFile(d.logPath)
	if off > int64(len(data)) {
		return ""
	}
	return string(data[off:])
}

// LogTail returns the end of the daemon's log.
func (d *Daemon) LogTail() string {
	data, _ := os.ReadFile(d.logPath)
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return string(data)
}
