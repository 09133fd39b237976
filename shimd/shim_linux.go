package shimd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gogo/protobuf/types"
	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/proto/rpc"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	"github.com/edged/edged/shimd/publisher"
	"github.com/edged/edged/shimd/reaper"
	"github.com/edged/edged/shimd/runc"
)

// The OCI spec annotations, in order of precedence, whose value names the
// shim group of a container: containers of one group share one shim.
const (
	GroupAnnotation     = "io.edged.shim.group"
	RuncGroupAnnotation = "io.containerd.runc.v2.group"
	SandboxIDAnnotation = "io.kubernetes.cri.sandbox-id"
)

// DefaultSocketDir is where the start subcommand creates shim sockets when
// no state directory is given (containerd's choice).
const DefaultSocketDir = "/run/containerd/s"

// ServeOptions configure the long-lived shim process.
type ServeOptions struct {
	Namespace string
	ID        string
	// TTRPCAddress is the daemon's ttrpc socket for events.
	TTRPCAddress string
	// StateDir holds runc's root (StateDir/runc/<ns>); empty: derived from
	// the listening socket, whose path is <state>/s/<name>.
	StateDir string
	// Listener serves the task API (InheritedListener or Listen).
	Listener net.Listener
	// OOM, if set, reports OOM kills.
	OOM OOMWatcher
	Log *slog.Logger
	// PublisherOptions tune event delivery (zero: defaults).
	PublisherOptions publisher.Options
}

// Serve prepares the process (own session, child subreaper), then serves the
// task API on opts.Listener until a Shutdown request ends it or ctx is done.
// It removes the socket file on the way out.
//
// Serve installs no signal handlers: a Go program dies of SIGPIPE only when
// a write to fd 1 or 2 finds the pipe's reader gone, so opts.Log should write
// to a duplicate of stderr (see cmd/edged-shim) when its reader may vanish.
func Serve(ctx context.Context, opts ServeOptions) error {
	if err := identifiers.Validate("namespace", opts.Namespace); err != nil {
		return err
	}
	if _, err := unix.Setsid(); err != nil && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("setsid: %w", err)
	}
	if err := reaper.SetSubreaper(); err != nil {
		return fmt.Errorf("set child subreaper: %w", err)
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	sockPath := ""
	if a, ok := opts.Listener.Addr().(*net.UnixAddr); ok && a.Name != "" && a.Name[0] == '/' {
		sockPath = a.Name
	}
	// The socket file as it is now: edged may unlink the path when it lets
	// the shim go and bind a new shim's socket there before this one exits.
	var sockStat os.FileInfo
	if sockPath != "" {
		sockStat, _ = os.Lstat(sockPath)
	}
	stateDir := opts.StateDir
	if stateDir == "" {
		if sockPath == "" {
			return fmt.Errorf("no state directory and no socket path to derive it from: %w", errdefs.ErrInvalidArgument)
		}
		stateDir = filepath.Dir(filepath.Dir(sockPath))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pub := publisher.New(opts.TTRPCAddress, opts.Namespace, opts.PublisherOptions, log)
	pubDone := make(chan struct{})
	pubCtx, pubCancel := context.WithCancel(context.Background())
	go func() { pub.Run(pubCtx); close(pubDone) }()
	var srv *rpc.Server
	svc := New(Config{
		Namespace: opts.Namespace,
		StateDir:  stateDir,
		Publisher: pub,
		OOM:       opts.OOM,
		Log:       log,
		Shutdown:  func() { srv.Stop() },
	})
	// The os package checks once, with a short-lived clone, whether pidfds
	// work; the first runc start would wait for that check (≈0.5 ms). It is
	// done now, while edged still writes the bundle, and before the reaper
	// runs (which could collect the probe before the os package does).
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		p.Release()
	}
	srv = NewServer(svc)
	go svc.Reaper().Run(ctx)
	// The task API is served from this goroutine: a Shutdown request or the
	// end of ctx stops the accept loop.
	stopOnDone := context.AfterFunc(ctx, srv.Stop)
	log.Debug("shim serving", "namespace", opts.Namespace, "id", opts.ID, "socket", sockPath, "state", stateDir)
	err := srv.Serve(ctx, opts.Listener)
	stopOnDone()
	if errors.Is(err, rpc.ErrServerClosed) {
		err = ctx.Err()
	}
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = srv.Shutdown(sctx)
	scancel()
	if sockPath != "" {
		removeOwnSocket(sockPath, sockStat)
	}
	fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
	if ferr := pub.Flush(fctx); ferr != nil {
		log.Warn("events not delivered before exit", "error", ferr)
	}
	fcancel()
	pubCancel()
	<-pubDone
	log.Debug("shim exiting", "containers", svc.Count())
	return err
}

// removeOwnSocket removes the socket file at path if it is still the one
// this shim served (st), not a socket a newer shim bound at the same path.
func removeOwnSocket(path string, st os.FileInfo) {
	if st == nil {
		return
	}
	if now, err := os.Lstat(path); err == nil && os.SameFile(st, now) {
		_ = os.Remove(path)
	}
}

// InheritedListener returns the listening socket passed as fd 3, either
// systemd style (LISTEN_FDS=1; LISTEN_PID, if set, must be this process) or
// containerd style (fd 3 without LISTEN_FDS). The variables are removed from
// the environment so runc and containers do not inherit them.
func InheritedListener() (net.Listener, error) {
	const fd = 3
	if v := os.Getenv("LISTEN_FDS"); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n != 1 {
			return nil, fmt.Errorf("LISTEN_FDS=%q: exactly one socket is expected: %w", v, errdefs.ErrInvalidArgument)
		}
		if p := os.Getenv("LISTEN_PID"); p != "" && p != strconv.Itoa(os.Getpid()) {
			return nil, fmt.Errorf("LISTEN_PID=%s is not this process (%d): %w", p, os.Getpid(), errdefs.ErrInvalidArgument)
		}
	}
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil || acc != 1 {
		return nil, fmt.Errorf("fd 3 is not a listening socket (%v): pass one as fd 3 with LISTEN_FDS=1, or use -socket: %w", err, errdefs.ErrInvalidArgument)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(fd, "shim-socket")
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("fd 3: %w", err)
	}
	return l, nil
}

// Listen creates a unix path socket (never abstract) at path, its directory
// 0700 if new. The socket file stays when the listener is closed.
func Listen(path string) (*net.UnixListener, error) {
	if !filepath.IsAbs(path) {
		return nil, errdefs.InvalidArgument("socket", "%q must be an absolute path", path)
	}
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, errdefs.InvalidArgument("socket", "%q is longer than a unix socket path may be", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	return l, nil
}

// OneProcEnv marks a shim whose GOMAXPROCS=1 was set by ServeEnv on its
// behalf: the shim removes both variables from its environment at start, so
// that runc and the containers do not inherit them.
const OneProcEnv = "EDGED_SHIM_ONEPROC"

// ServeEnv returns env for starting the long-lived shim: unless env sets
// GOMAXPROCS, it adds GOMAXPROCS=1 and OneProcEnv=1. The shim then runs with
// one P from its first instruction; a shim started without it executes
// itself once more to get there (see cmd/edged-shim).
func ServeEnv(env []string) []string {
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		switch {
		case strings.HasPrefix(kv, "GOMAXPROCS=") && kv != "GOMAXPROCS=":
			return env // the caller's choice
		case kv == "GOMAXPROCS=", strings.HasPrefix(kv, OneProcEnv+"="):
			continue // the first entry of a name wins: drop these
		}
		out = append(out, kv)
	}
	return append(out, "GOMAXPROCS=1", OneProcEnv+"=1")
}

// StartOptions are the flags of the start subcommand.
type StartOptions struct {
	Namespace, ID string
	// Address is the daemon's address (part of the socket name); the
	// daemon's ttrpc address comes from TTRPCAddress.
	Address       string
	TTRPCAddress  string
	PublishBinary string
	Debug         bool
	// Bundle is the container's bundle (the working directory).
	Bundle string
	// SocketDir holds the shim sockets (DefaultSocketDir if empty).
	SocketDir string
	// Self is the shim binary to spawn (os.Executable if empty).
	Self string
}

// SocketPath returns the socket of the shim serving group in namespace ns
// for the daemon at address: <dir>/<hex sha256(address/ns/group)>.
func SocketPath(dir, address, ns, group string) string {
	d := sha256.Sum256([]byte(filepath.Join(address, ns, group)))
	return filepath.Join(dir, hex.EncodeToString(d[:]))
}

// StartShim implements `edged-shim start` as containerd runs it: it picks
// the shim group (config.json annotations, else the id), returns the address
// of the group's shim when one already serves it, or else creates the
// socket, spawns the long-lived shim with it as fd 3 and returns
// "unix://<path>".
func StartShim(ctx context.Context, o StartOptions) (string, error) {
	if err := identifiers.Validate("namespace", o.Namespace); err != nil {
		return "", err
	}
	if err := identifiers.Validate("id", o.ID); err != nil {
		return "", err
	}
	group := o.ID
	if data, err := os.ReadFile(filepath.Join(o.Bundle, "config.json")); err == nil {
		var spec struct {
			Annotations map[string]string `json:"annotations"`
		}
		if json.Unmarshal(data, &spec) == nil {
			for _, k := range []string{GroupAnnotation, RuncGroupAnnotation, SandboxIDAnnotation} {
				if v := spec.Annotations[k]; v != "" {
					if err := identifiers.Validate(k, v); err != nil {
						return "", err
					}
					group = v
					break
				}
			}
		}
	}
	dir := o.SocketDir
	if dir == "" {
		dir = DefaultSocketDir
	}
	path := SocketPath(dir, o.Address, o.Namespace, group)
	address := "unix://" + path
	l, err := Listen(path)
	if errors.Is(err, unix.EADDRINUSE) {
		if c, derr := net.DialTimeout("unix", path, time.Second); derr == nil {
			c.Close()
			writeBundleFile(o.Bundle, "address", address)
			return address, nil // the group's shim is alive
		}
		_ = os.Remove(path) // stale
		l, err = Listen(path)
	}
	if err != nil {
		return "", fmt.Errorf("shim socket: %w", err)
	}
	defer l.Close()
	f, err := l.File()
	if err != nil {
		_ = os.Remove(path)
		return "", err
	}
	defer f.Close()
	self := o.Self
	if self == "" {
		if self, err = os.Executable(); err != nil {
			_ = os.Remove(path)
			return "", err
		}
	}
	args := []string{self, "-namespace", o.Namespace, "-id", o.ID, "-address", o.Address}
	if o.PublishBinary != "" {
		args = append(args, "-publish-binary", o.PublishBinary)
	}
	if o.Debug {
		args = append(args, "-debug")
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer null.Close()
	env := ServeEnv(append(os.Environ(), "LISTEN_FDS=1"))
	if o.TTRPCAddress != "" {
		env = append(env, "TTRPC_ADDRESS="+o.TTRPCAddress)
	}
	p, err := os.StartProcess(self, args, &os.ProcAttr{
		Dir:   o.Bundle,
		Env:   env,
		Files: []*os.File{null, null, null, f},
		Sys:   &unix.SysProcAttr{Setsid: true},
	})
	if err != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("spawn shim: %w", err)
	}
	writeBundleFile(o.Bundle, "shim.pid", strconv.Itoa(p.Pid))
	_ = p.Release()
	writeBundleFile(o.Bundle, "address", address)
	return address, nil
}

// writeBundleFile writes the files containerd reads from a bundle.
func writeBundleFile(bundle, name, content string) {
	if bundle == "" {
		return
	}
	if _, err := os.Stat(filepath.Join(bundle, "config.json")); err != nil {
		return
	}
	_ = os.WriteFile(filepath.Join(bundle, name), []byte(content), 0o600)
}

// DeleteBundle implements `edged-shim delete`: it force-deletes the runc
// container of the bundle and unmounts its rootfs, for a shim that is gone.
func DeleteBundle(ctx context.Context, bundle, namespace, id, stateDir string) (*taskapi.DeleteResponse, error) {
	if err := identifiers.Validate("id", id); err != nil {
		return nil, err
	}
	rec := runtimeRecord{Root: filepath.Join(stateDir, "runc", namespace)}
	if data, err := os.ReadFile(filepath.Join(bundle, runtimeRecordFile)); err == nil {
		_ = json.Unmarshal(data, &rec)
	}
	r := reaper.New(nil)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go r.Run(rctx)
	rc := &runc.Runc{Binary: rec.Binary, Root: rec.Root, Starter: r}
	var errs []error
	if err := rc.Delete(ctx, id, true); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, err)
	}
	if err := unmountAll(filepath.Join(bundle, "rootfs")); err != nil {
		errs = append(errs, err)
	}
	now := time.Now()
	return &taskapi.DeleteResponse{
		ExitStatus: 128 + uint32(unix.SIGKILL),
		ExitedAt:   &types.Timestamp{Seconds: now.Unix(), Nanos: int32(now.Nanosecond())},
	}, errors.Join(errs...)
}
