package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/proto/rpc"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
)

// shimConn is a connection to one shim process, which may host several
// containers (a shim group).
type shimConn struct {
	key     string // namespace/group
	ns      string
	group   string
	address string // socket path
	pid     int
	native  bool   // edged-shim started with an inherited socket
	binary  string // the shim binary
	client  *rpc.Conn
	task    taskapi.TaskService

	// noFuse is set when the edged-shim rejected CreateAndStart options
	// (an older binary): it gets Create then Start from then on.
	noFuse atomic.Bool

	mu    sync.Mutex
	refs  map[string]bool // container IDs served
	dead  bool
	close sync.Once
	// cmd is the shim process when this edged started it. It is reaped
	// when the shim is let go or found dead, not by a goroutine blocked in
	// wait4 for the shim's whole life (each such goroutine pins an OS
	// thread: 50 containers cost 50 threads).
	cmd      *exec.Cmd
	reapOnce sync.Once
	reaped   chan struct{} // closed once cmd's exit is collected
}

// reap collects the shim process's exit once it is gone. It may be called
// more than once (a released shim is also found dead when its connection
// closes); the process is waited for once.
func (s *shimConn) reap() {
	if s.cmd == nil {
		return
	}
	s.reapOnce.Do(func() {
		go func() {
			s.cmd.Wait()
			close(s.reaped)
		}()
	})
}

func (s *shimConn) closeClient() {
	s.close.Do(func() { s.client.Close() })
}

// lost reports whether the connection to the shim has ended (for a shim
// this edged started: the shim is gone).
func (s *shimConn) lost() bool {
	select {
	case <-s.client.Done():
		return true
	default:
		return false
	}
}

// dialShim connects to a shim's socket with a deadline. Every call on the
// returned client carries the namespace in its metadata.
func dialShim(ctx context.Context, ns, address string, timeout time.Duration) (*rpc.Conn, taskapi.TaskService, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "unix", strings.TrimPrefix(address, "unix://"))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to shim at %s: %v: %w", address, err, errdefs.ErrUnavailable)
	}
	c := rpc.NewConn(conn)
	return c, taskapi.NewTaskClient(nsCaller{c: c, md: rpc.MD{namespaces.TTRPCHeader: {ns}}}), nil
}

// nsCaller makes calls on a shim connection with the namespace's
// metadata (and no other: a request's incoming metadata is not passed on).
type nsCaller struct {
	c  *rpc.Conn
	md rpc.MD
}

func (n nsCaller) Call(ctx context.Context, service, method string, req, resp rpc.Message) error {
	return n.c.Call(rpc.WithMetadata(ctx, n.md), service, method, req, resp)
}

func (n nsCaller) NewStream(ctx context.Context, desc *rpc.StreamDesc, service, method string, req rpc.Message) (rpc.ClientStream, error) {
	return n.c.NewStream(rpc.WithMetadata(ctx, n.md), desc, service, method, req)
}

// startNativeShim starts edged-shim for a group the edged way: edged
// creates the listening path socket (directory 0700) and hands it over as
// fd 3 with LISTEN_FDS=1, so it can connect at once without a race. With
// SpareShim set it adopts the namespace's idle spare shim instead of
// starting one, when there is a live one.
func (m *Manager) startNativeShim(ctx context.Context, ns, group string) (*shimConn, error) {
	path := socketPath(filepath.Join(m.cfg.State, "s"), m.cfg.Address, ns, group)
	// A shim of this group may already run (edged restarted).
	if c, task, err := dialShim(ctx, ns, path, 200*time.Millisecond); err == nil {
		return &shimConn{key: ns + "/" + group, ns: ns, group: group, address: path, native: true, binary: m.cfg.ShimBinary, client: c, task: task, refs: map[string]bool{}}, nil
	}
	if sc := m.adoptSpare(ns, group, path); sc != nil {
		return sc, nil
	}
	sc, err := m.spawnNativeShim(ctx, ns, group, path)
	if err != nil {
		return nil, err
	}
	sc.key, sc.group = ns+"/"+group, group
	return sc, nil
}

// spawnNativeShim starts an edged-shim named name serving the socket path,
// logging to path.log. The returned shimConn's lost reports true once the
// connection to it has ended (the shim is gone).
func (m *Manager) spawnNativeShim(ctx context.Context, ns, name, path string) (*shimConn, error) {
	os.Remove(path)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("shim socket directory: %w", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("shim socket: %w", err)
	}
	l.SetUnlinkOnClose(false)
	f, err := l.File()
	l.Close()
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("shim socket: %w", err)
	}
	defer f.Close()
	logPath := path + ".log"
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("shim log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(m.cfg.ShimBinary, "-namespace", ns, "-id", name, "-address", m.cfg.Address, "-state-dir", m.cfg.State)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(shimEnv(os.Environ()), "LISTEN_FDS=1", "TTRPC_ADDRESS="+m.cfg.Address)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		os.Remove(path)
		os.Remove(logPath)
		return nil, fmt.Errorf("start shim %s: %w", m.cfg.ShimBinary, err)
	}
	sc := &shimConn{ns: ns, address: path, pid: cmd.Process.Pid, native: true, binary: m.cfg.ShimBinary, refs: map[string]bool{}, cmd: cmd, reaped: make(chan struct{})}
	c, task, err := dialShim(ctx, ns, path, m.cfg.CallTimeout)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		os.Remove(path)
		os.Remove(logPath)
		return nil, err
	}
	sc.client, sc.task = c, task
	return sc, nil
}

// socketPath names the socket of a shim group: a hash keeps the path short
// (unix socket paths are limited to 107 bytes) and free of request data.
func socketPath(dir, address, ns, group string) string {
	d := sha256.Sum256([]byte(filepath.Join(address, ns, group)))
	return filepath.Join(dir, hex.EncodeToString(d[:16]))
}

// deleteNative runs `edged-shim delete` for a task whose shim is gone: it
// force-deletes the runc container and unmounts the rootfs.
func (m *Manager) deleteNative(ctx context.Context, log *slog.Logger, ns, id, bundle string) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.cfg.ShimBinary, "-namespace", ns, "-id", id, "-bundle", bundle, "-state-dir", m.cfg.State, "delete")
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		log.Warn("edged-shim delete failed", "namespace", ns, "id", id, "error", err, "output", string(out))
	}
}

// startV2Shim starts any containerd runtime v2 shim with its `start`
// subcommand (bundle as working directory, address printed on stdout).
func (m *Manager) startV2Shim(ctx context.Context, ns, id, bundle, binary string) (*shimConn, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	self, _ := os.Executable()
	// containerd's shims log to a fifo named "log" in the bundle and exit
	// when nobody reads it; edged drains it into the bundle's shim.log.
	if err := startLogFifo(bundle); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, binary, "-namespace", ns, "-address", m.cfg.Address, "-publish-binary", self, "-id", id, "start")
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(), "TTRPC_ADDRESS="+m.cfg.Address)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s start: %v: %s", binary, err, strings.TrimSpace(stderr.String()))
	}
	address := strings.TrimSpace(stdout.String())
	address = strings.TrimPrefix(strings.TrimPrefix(address, "ttrpc+"), "unix://")
	if address == "" || !filepath.IsAbs(address) {
		return nil, fmt.Errorf("%s start printed %q, not a unix socket address: %w", binary, stdout.String(), errdefs.ErrFailedPrecondition)
	}
	c, task, err := dialShim(ctx, ns, address, m.cfg.CallTimeout)
	if err != nil {
		return nil, err
	}
	return &shimConn{key: ns + "/" + id, ns: ns, group: id, address: address, binary: binary, client: c, task: task, refs: map[string]bool{}}, nil
}

// startLogFifo creates <bundle>/log and drains it to <bundle>/shim.log.
func startLogFifo(bundle string) error {
	p := filepath.Join(bundle, "log")
	if err := syscall.Mkfifo(p, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("shim log fifo: %w", err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0) // O_RDWR: open does not block
	if err != nil {
		return fmt.Errorf("shim log fifo: %w", err)
	}
	out, err := os.OpenFile(filepath.Join(bundle, "shim.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		f.Close()
		return err
	}
	go func() {
		io.Copy(out, f)
		out.Close()
		f.Close()
	}()
	return nil
}

// deleteV2 runs a v2 shim's `delete` subcommand for a shim that is gone.
func (m *Manager) deleteV2(ctx context.Context, log *slog.Logger, ns, id, bundle, binary string) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "-namespace", ns, "-address", m.cfg.Address, "-id", id, "-bundle", bundle, "delete")
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(), "TTRPC_ADDRESS="+m.cfg.Address)
	if out, err := cmd.CombinedOutput(); err != nil {
		log.Warn("shim delete failed", "namespace", ns, "id", id, "binary", binary, "error", err, "output", string(out))
	}
}

// shimEnv is env for a long-lived edged-shim: one P from its first
// instruction (GOMAXPROCS=1, whatever edged itself runs with), marked with
// EDGED_SHIM_ONEPROC (shimd.OneProcEnv) so that the shim removes both again
// before it starts runc, and need not execute itself once more to get a
// single P (see cmd/edged-shim).
func shimEnv(env []string) []string {
	out := make([]string, 0, len(env)+4)
	for _, kv := range env {
		if strings.HasPrefix(kv, "GOMAXPROCS=") || strings.HasPrefix(kv, "EDGED_SHIM_ONEPROC=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "GOMAXPROCS=1", "EDGED_SHIM_ONEPROC=1")
}
