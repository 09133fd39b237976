// Package server assembles edged: it opens the metadata store, registers
// the ttrpc services, listens (or takes systemd's socket), tells systemd
// when it is ready and drains gracefully on shutdown.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/config"
	"github.com/edged/edged/edged/events"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/edged/network"
	"github.com/edged/edged/edged/protoconv"
	"github.com/edged/edged/edged/runtime"
	containerssvc "github.com/edged/edged/edged/services/containers"
	eventssvc "github.com/edged/edged/edged/services/events"
	namespacessvc "github.com/edged/edged/edged/services/namespaces"
	taskssvc "github.com/edged/edged/edged/services/tasks"
	versionsvc "github.com/edged/edged/edged/services/version"
	eventtypes "github.com/edged/edged/proto/events"
	"github.com/edged/edged/proto/rpc"
)

// Server is a configured edged.
type Server struct {
	cfg    *config.Config
	log    *slog.Logger
	db     *metadata.DB
	ex     *events.Exchange
	rpc    *rpc.Server
	trim   *idleTrimmer
	drain  *drain
	rt     *runtime.Manager
	images ImageStore
	// network is the task network hook (edged/network).
	network *network.Network
	// startup keeps systemd waiting while edged starts (startup.go).
	startup *startup
	closed  bool
}

// New opens the stores under cfg.Root and cfg.State and registers the
// services. It does not listen yet.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, version versionsvc.Info) (s *Server, err error) {
	startup := notifyStartup(log, startupNoticeInterval)
	defer func() {
		if err != nil {
			startup.finish()
		}
	}()
	startup.status("opening the metadata database")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{cfg.Root, 0o711}, {cfg.State, 0o711}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("create %s: %w", d.path, err)
		}
	}
	sync := "NORMAL"
	if cfg.Metadata.Synchronous == "full" {
		sync = "FULL"
	}
	db, err := metadata.Open(ctx, filepath.Join(cfg.Root, "meta.db"), withImageSchema(metadata.Options{
		Synchronous:   sync,
		CacheSizeKiB:  cfg.Metadata.CacheSizeKiB,
		CompressSpecs: cfg.Metadata.CompressSpecs,
		Logger:        log,
	}))
	if err != nil {
		return nil, fmt.Errorf("open metadata: %w", err)
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	// Idleness after requests returns the heap they grew and the code
	// pages they mapped.
	trim := newIdleTrimmer(cfg.Memory.IdleRelease.Duration, idleRelease(log, cfg.Memory.PageOutCode))
	defer func() {
		if err != nil {
			trim.stop()
		}
	}()
	drain := newDrain()
	rs := rpc.NewServer(rpc.ServerConfig{
		Unary:    unaryInterceptor(log, cfg.API.DefaultTimeout.Duration, cfg.API.MaxTimeout.Duration, trim, drain),
		Stream:   streamInterceptor(log, trim, drain),
		Draining: drainingStatus(),
		MaxConns: cfg.API.MaxConnections,
		TooManyConns: &rpc.StatusError{Code: rpc.CodeResourceExhausted, Message: fmt.Sprintf(
			"edged has reached its limit of %d open API connections (api.max_connections): close idle connections or raise the limit", cfg.API.MaxConnections)},
		OnRefuse: refuseLogger(log, cfg.API.MaxConnections, refuseLogEvery),
	})
	s = &Server{cfg: cfg, log: log, db: db, ex: events.New(cfg.Events.SubscriberQueue, log), rpc: rs, trim: trim, drain: drain, startup: startup}
	s.rt, err = runtime.New(runtime.Config{
		State: cfg.State, Address: cfg.Address, ShimBinary: cfg.Runtime.ShimBinary,
		CallTimeout: cfg.Runtime.ShimCallTimeout.Duration, ConnectTimeout: cfg.Runtime.ShimConnectTimeout.Duration,
		SpareShim: cfg.Runtime.SpareShim, Log: log, OnDead: s.taskDead, OnGone: s.publishDeadTask,
	})
	if err != nil {
		return nil, err
	}
	imgs, err := s.setupImages(ctx)
	if err != nil {
		return nil, err
	}
	reg := rs
	versionsvc.Register(reg, version)
	namespacessvc.Register(reg, db, s.ex)
	containers := containerssvc.Register(reg, db, s.ex, s.createFromImage, s.rt.Has, s.containerDeleted)
	eventssvc.Register(reg, s.ex)
	if s.network, err = s.setupNetwork(ctx, reg); err != nil {
		return nil, err
	}
	taskssvc.Register(reg, taskssvc.Config{
		DB: db, Runtime: s.rt, Events: s.ex, LogDir: filepath.Join(cfg.Root, "logs"),
		LogMaxSize: cfg.Runtime.LogMaxSize, LogMaxFiles: cfg.Runtime.LogMaxFiles, Log: log,
		Metrics: metricsFunc(log), Network: s.network, Rootfs: imgs.rootfs, Containers: containers,
	})
	return s, nil
}

// ImageStore prepares containers' root filesystems from images.
type ImageStore interface {
	// PrepareContainer resolves image in namespace ns, prepares a writable
	// snapshot for container id and mounts it temporarily at Rootfs for
	// user lookups until Done; Rollback removes the snapshot.
	PrepareContainer(ctx context.Context, ns, id, image, snapshotter string) (*PreparedRootfs, error)
}

// PreparedRootfs is a container's snapshot, ready for spec generation.
type PreparedRootfs struct {
	Config      ocispec.ImageConfig
	Rootfs      string
	Snapshotter string
	SnapshotKey string
	Done        func()
	Rollback    func(context.Context)
}

// publishDeadTask reports the exit of a task whose shim died.
func (s *Server) publishDeadTask(ns, id string, pid uint32) {
	ctx := namespaces.WithNamespace(context.Background(), ns)
	now := protoconv.Timestamp(time.Now())
	_ = s.ex.Publish(ctx, "/tasks/exit", &eventtypes.TaskExit{ContainerId: id, Id: id, Pid: pid, ExitStatus: 255, ExitedAt: now})
	_ = s.ex.Publish(ctx, "/tasks/delete", &eventtypes.TaskDelete{ContainerId: id, Pid: pid, ExitStatus: 255, ExitedAt: now})
}

// Recover reconnects to the shims of a previous edged and cleans up after
// dead ones; call it before Run.
func (s *Server) Recover(ctx context.Context) error {
	s.startup.status("recovering tasks")
	res, err := s.rt.Recover(ctx)
	if err != nil {
		return err
	}
	s.log.Info("tasks recovered", "reconnected", res.Reconnected, "dead", res.Dead, "duration", res.Duration)
	s.startup.status("cleaning up networks")
	s.cleanupNetworks(ctx)
	s.recoverImages(ctx)
	return nil
}

// Events returns the event exchange.
func (s *Server) Events() *events.Exchange { return s.ex }

// Run listens and serves until ctx is done, then drains (see Serve).
func (s *Server) Run(ctx context.Context) error {
	l, activated, err := Listen(s.cfg.Address, s.cfg.API.SocketGID, s.cfg.State)
	if err != nil {
		return err
	}
	return s.Serve(ctx, l, activated)
}

// handlerExitTimeout bounds the wait, after the drain closed the last
// connections, for the handlers of their calls to return (their contexts
// are cancelled) before the stores close under them.
const handlerExitTimeout = 5 * time.Second

// Serve serves on l until ctx is done, then drains: it stops accepting,
// ends the long waits at once (Tasks.Wait, a followed Tasks.Logs,
// Events.Subscribe: see drainEnds), and gives the other calls in progress
// cfg.API.ShutdownTimeout to finish before it closes their connections.
// A call in progress is not cancelled by ctx: a container create, a commit
// of written content or a pull that was under way when SIGTERM came
// completes. Nothing new begins: a request that arrives during the drain,
// on a connection still open, is refused at once with Unavailable
// ("edged is shutting down"; see rpc.Server.Shutdown).
func (s *Server) Serve(ctx context.Context, l net.Listener, activated bool) error {
	s.log.Info("edged serving", "address", l.Addr().String(), "socket_activated", activated, "root", s.cfg.Root, "state", s.cfg.State)
	errc := make(chan error, 1)
	go func() { errc <- s.rpc.Serve(context.WithoutCancel(ctx), l) }()

	s.startup.finish()
	// STATUS= too: systemctl status would show the last start-up phase
	// for the daemon's whole life.
	notify(s.log, daemon.SdNotifyReady+"\nSTATUS=serving")
	// Start-up code (configuration, migrations, recovery, the import
	// directory) does not run again: give its memory back now rather than
	// after the first idle period.
	s.trim.releaseNow()
	stopWatchdog := s.watchdog()
	defer stopWatchdog()

	select {
	case err := <-errc:
		s.drain.begin()
		s.rpc.Close()
		s.waitHandlers()
		if err != nil && !errors.Is(err, rpc.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	notify(s.log, daemon.SdNotifyStopping)
	s.log.Info("edged shutting down", "grace", s.cfg.API.ShutdownTimeout.Duration)
	s.drain.begin()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.API.ShutdownTimeout.Duration)
	defer cancel()
	if err := s.rpc.Shutdown(sctx); err != nil {
		s.log.Warn("in-flight requests did not finish in time; closing connections", "error", err)
		s.rpc.Close()
	}
	s.waitHandlers()
	if !activated {
		// Our own socket: remove it so a stale path does not linger. A
		// socket systemd owns stays for the next activation.
		os.Remove(s.cfg.Address)
	}
	return nil
}

// waitHandlers waits up to handlerExitTimeout for the handlers of calls
// whose connections were closed.
func (s *Server) waitHandlers() {
	ctx, cancel := context.WithTimeout(context.Background(), handlerExitTimeout)
	defer cancel()
	if err := s.rpc.WaitIdle(ctx); err != nil {
		s.log.Warn("handlers still running after their connections were closed; closing the stores", "error", err)
	}
}

// Close releases the stores.
func (s *Server) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.startup.finish()
	s.trim.stop()
	s.closeImages()
	s.closeNetwork()
	s.rt.Close()
	return s.db.Close()
}

func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify failed", "state", state, "error", err)
	}
}

// watchdog pets systemd's watchdog at half its interval when WATCHDOG_USEC
// asks for it.
func (s *Server) watchdog() func() {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				notify(s.log, daemon.SdNotifyWatchdog)
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}
