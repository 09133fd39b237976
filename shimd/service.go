// Package shimd is edged-shim: it serves containerd's runtime v2 task API
// (containerd.task.v2.Task over ttrpc) for one or more containers, drives
// runc (or crun) for them, reaps their processes and forwards their events to
// the daemon.
package shimd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/internal/atomicfile"
	eventtypes "github.com/edged/edged/proto/events"
	protorpc "github.com/edged/edged/proto/rpc"
	runcopts "github.com/edged/edged/proto/runtime/runc/v1"
	shimopts "github.com/edged/edged/proto/runtime/shim/v1"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	tasktypes "github.com/edged/edged/proto/runtime/types"
	"github.com/edged/edged/shimd/publisher"
	"github.com/edged/edged/shimd/reaper"
	"github.com/edged/edged/shimd/runc"
	"github.com/edged/edged/shimd/stdio"
)

var _ taskapi.TaskService = (*Service)(nil)

// Version is reported by Connect.
const Version = "edged-shim v2"

// Event topics.
const (
	TopicCreate      = "/tasks/create"
	TopicStart       = "/tasks/start"
	TopicExit        = "/tasks/exit"
	TopicDelete      = "/tasks/delete"
	TopicExecAdded   = "/tasks/exec-added"
	TopicExecStarted = "/tasks/exec-started"
	TopicPaused      = "/tasks/paused"
	TopicResumed     = "/tasks/resumed"
	TopicOOM         = "/tasks/oom"
)

// OOMWatcher watches a container's memory cgroup for OOM kills.
type OOMWatcher interface {
	// Baseline is called before runc creates the container (runc create,
	// or runc run for a create and start at once) whose bundle names the
	// cgroup at path (relative to the hierarchies' root; "" when unknown),
	// which existed already or not: it reads the counter from which Add is
	// to count the container's kills, so that a kill before Add (runc run
	// returns with the container running) is reported too.
	Baseline(path string, existed bool) OOMBaseline
	// Add starts watching the cgroup of pid (the container's init) and
	// calls onOOM once for every OOM kill in it since base (since the
	// call when base is the zero value), with the cgroup's oom_kill
	// counter after that kill. Kills already counted may be reported
	// from within Add.
	Add(id string, pid int, base OOMBaseline, onOOM func(oomKills uint64)) error
	// Remove stops watching id. Before returning it must call onOOM for
	// every OOM already signalled for id: the shim calls Remove when the
	// container's init has exited and publishes TaskExit after it returns,
	// so a TaskOOM always precedes the TaskExit of the container.
	Remove(id string)
}

// Config configures a Service.
type Config struct {
	// Namespace of the containers (runc root is StateDir/runc/<Namespace>).
	Namespace string
	// StateDir holds the runc state root unless the options name one.
	StateDir string
	// Publisher forwards events; nil drops them.
	Publisher *publisher.Publisher
	// OOM, if set, reports OOM kills (published as TaskOOM).
	OOM OOMWatcher
	// Log receives the shim's logs.
	Log *slog.Logger
	// Shutdown is called (once, asynchronously) when a Shutdown request is
	// accepted: no containers remain, or now was set.
	Shutdown func()
	// LogMaxSize and LogMaxFiles are the defaults of file:// stdio.
	LogMaxSize  int64
	LogMaxFiles int
}

// Service implements containerd.task.v2.Task for the containers of one shim.
type Service struct {
	cfg    Config
	reaper *reaper.Reaper
	bufs   *stdio.Buffers

	mu         sync.Mutex
	containers map[string]*container
	byPid      map[int]*process
	starting   int           // runc create/exec in flight: their pid is not known yet
	early      []reaper.Exit // exits of pids not known yet (while starting > 0)
	shutdown   sync.Once
	trim       *time.Timer // debounced release of freed heap to the OS

	hierOnce sync.Once
	hier     []string // the host's cgroup hierarchies (cgroupHierarchies)
}

type container struct {
	id, bundle string
	rootfs     bool // we mounted <bundle>/rootfs
	runc       *runc.Runc
	opts       *runcopts.Options
	init       *process
	execs      map[string]*process
	deleting   bool
	// oom holds the container's TaskOOM events back while its TaskCreate
	// or TaskStart is not out yet.
	oom *oomGate
	// paused is set while this shim has the container frozen (guarded by
	// Service.mu); State answers from it instead of running `runc state`,
	// which costs a runc process per call.
	paused bool
}

type process struct {
	c                     *container
	execID                string // "" for init
	stdin, stdout, stderr string
	terminal              bool
	spec                  []byte // exec: process JSON
	io                    *stdio.IO
	// startMu is held while the process is started, so that its TaskExit
	// is never published before its TaskStart/TaskExecStarted.
	startMu sync.Mutex

	// guarded by Service.mu
	pid     int
	started bool
	// reaped is set, with exitStatus and exitedAt, as soon as the reaper
	// has collected the process: its pid is free from then on and may
	// belong to another process, so nothing may signal it any more. The
	// exit is complete (output copied, TaskExit published) once exited
	// is closed, up to 2 s later.
	reaped     bool
	exited     chan struct{} // closed after the exit is recorded and published
	exitStatus int
	exitedAt   time.Time
}

func (p *process) id() string {
	if p.execID == "" {
		return p.c.id
	}
	return p.execID
}

// Per-exec files in the bundle. Each kind has a prefix or suffix of its own
// that no other file of the bundle shares ("exec-"…".pid", "exec-spec-",
// "exec-log-"), so an exec ID cannot name the file of another exec (IDs X
// and X-log once shared one) or of the container or shim (init.pid,
// shim.pid, log.json).
func (p *process) pidFile() string {
	if p.execID == "" {
		return filepath.Join(p.c.bundle, "init.pid")
	}
	return filepath.Join(p.c.bundle, "exec-"+p.execID+".pid")
}

func (p *process) specFile() string {
	return filepath.Join(p.c.bundle, "exec-spec-"+p.execID+".json")
}

func (p *process) runcLogFile() string {
	return filepath.Join(p.c.bundle, "exec-log-"+p.execID+".json")
}

// removeExecFiles removes the files an exec left in the bundle: they would
// otherwise pile up there for as long as the container lives.
func (p *process) removeExecFiles() {
	for _, f := range []string{p.pidFile(), p.specFile(), p.runcLogFile()} {
		_ = os.Remove(f)
	}
}

// New returns a Service. Run its Reaper (Service.Reaper().Run) before
// serving requests.
func New(cfg Config) *Service {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Service{
		cfg:        cfg,
		bufs:       stdio.NewBuffers(),
		containers: make(map[string]*container),
		byPid:      make(map[int]*process),
	}
	s.reaper = reaper.New(s.handleExit)
	s.trim = time.AfterFunc(time.Hour, trimHeap)
	s.trim.Stop()
	return s
}

// trimSoon returns the garbage of a burst of lifecycle calls (runc output,
// JSON, request buffers) to the OS once the shim has been quiet for a
// moment: the shim's resident memory is what counts on small devices.
func (s *Service) trimSoon() { s.trim.Reset(2 * time.Second) }

// Reaper returns the reaper that must run for the service to see exits.
func (s *Service) Reaper() *reaper.Reaper { return s.reaper }

// Count returns the number of containers the shim hosts.
func (s *Service) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.containers)
}

func (s *Service) publish(topic string, ev interface {
	Marshal() ([]byte, error)
	Reset()
	String() string
	ProtoMessage()
}) {
	if s.cfg.Publisher != nil {
		s.cfg.Publisher.Publish(topic, ev)
	}
}

// toStatus gives err the status code of its errdefs kind, which edged (or
// containerd) reads back as the kind after the round trip.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var st *protorpc.StatusError
	if errors.As(err, &st) {
		return err
	}
	return &protorpc.StatusError{Code: errdefs.StatusCode(err), Message: err.Error()}
}

// lookup finds the process (init for execID ""). A container whose Create
// has not returned yet (runc create still running, or its failure being
// undone) is not NotFound but Unavailable, "being created": NotFound tells
// a client that the task is gone (edged, recovering after it was killed
// during the create, would remove the bundle runc is using and forget a
// container the shim may yet make), and a Delete or Kill must not be taken
// for one of a task deleted already. Once the Create returns, the
// container is there or NotFound.
func (s *Service) lookup(id, execID string) (*container, *process, error) {
	if err := identifiers.Validate("id", id); err != nil {
		return nil, nil, err
	}
	if execID != "" {
		if err := identifiers.Validate("exec_id", execID); err != nil {
			return nil, nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	if c.init == nil {
		return nil, nil, fmt.Errorf("container %q is being created (its create has not returned yet): %w", id, errdefs.ErrUnavailable)
	}
	if execID == "" {
		return c, c.init, nil
	}
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, fmt.Errorf("exec %q of container %q: %w", execID, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

// ---- exits

// handleExit receives the exits the reaper did not hand to a runc caller.
func (s *Service) handleExit(e reaper.Exit) {
	s.mu.Lock()
	p, ok := s.byPid[e.Pid]
	if !ok {
		if s.starting > 0 && len(s.early) < 1024 {
			s.early = append(s.early, e)
		}
		s.mu.Unlock()
		return
	}
	delete(s.byPid, e.Pid)
	p.markReaped(e)
	s.mu.Unlock()
	go s.finishExit(p, e)
}

// markReaped records that p's exit was collected (s.mu held): its pid must
// not be signalled from now on, although its output may still be copied.
func (p *process) markReaped(e reaper.Exit) {
	p.reaped = true
	p.exitStatus, p.exitedAt = e.Status, e.At
}

// setPid records the pid of a started process; an exit already reaped for it
// is processed now.
func (s *Service) setPid(p *process, pid int) {
	s.mu.Lock()
	p.pid = pid
	for i, e := range s.early {
		if e.Pid == pid {
			s.early = append(s.early[:i], s.early[i+1:]...)
			p.markReaped(e)
			s.mu.Unlock()
			go s.finishExit(p, e)
			return
		}
	}
	s.byPid[pid] = p
	s.mu.Unlock()
}

// exitedEarly reports whether the exit of pid was reaped before its pid was
// known.
func (s *Service) exitedEarly(pid int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.early {
		if e.Pid == pid {
			return true
		}
	}
	return false
}

func (s *Service) beginStart() {
	s.mu.Lock()
	s.starting++
	s.mu.Unlock()
}

func (s *Service) endStart() {
	s.mu.Lock()
	s.starting--
	if s.starting == 0 {
		s.early = nil
	}
	s.mu.Unlock()
}

// finishExit records an exit once the process's output is flushed, and
// publishes TaskExit (after any TaskOOM of the container).
func (s *Service) finishExit(p *process, e reaper.Exit) {
	if p.io != nil {
		p.io.WaitOutput(2 * time.Second)
		p.io.Close()
	}
	if p.execID == "" && s.cfg.OOM != nil {
		s.cfg.OOM.Remove(p.c.id)
	}
	p.startMu.Lock() // a Start in progress publishes its event first
	defer p.startMu.Unlock()
	s.publish(TopicExit, &eventtypes.TaskExit{
		ContainerId: p.c.id,
		Id:          p.id(),
		Pid:         uint32(e.Pid),
		ExitStatus:  uint32(e.Status),
		ExitedAt:    timestamp(e.At),
	})
	close(p.exited)
	s.trimSoon()
	s.cfg.Log.Debug("process exited", "id", p.c.id, "exec", p.execID, "pid", e.Pid, "status", e.Status)
}

func timestamp(t time.Time) *types.Timestamp {
	if t.IsZero() {
		return nil
	}
	return &types.Timestamp{Seconds: t.Unix(), Nanos: int32(t.Nanosecond())}
}

// ---- options

type createOptions struct {
	runc     *runcopts.Options
	logSize  int64
	logFiles int
	// start: create and start the init at once (edged.shim.v1.CreateAndStart).
	start bool
}

func parseOptions(a *types.Any) (*createOptions, error) {
	o := &createOptions{runc: &runcopts.Options{}}
	if a == nil || a.TypeUrl == "" {
		return o, nil
	}
	name := a.TypeUrl[strings.LastIndex(a.TypeUrl, "/")+1:]
	switch name {
	case "containerd.runc.v1.Options":
		if err := o.runc.Unmarshal(a.Value); err != nil {
			return nil, errdefs.InvalidArgument("options", "decode %s: %v", name, err)
		}
	case "edged.shim.v1.Options", "edged.shim.v1.CreateAndStart":
		var so shimopts.Options
		if name == "edged.shim.v1.CreateAndStart" {
			var cs shimopts.CreateAndStart
			if err := cs.Unmarshal(a.Value); err != nil {
				return nil, errdefs.InvalidArgument("options", "decode %s: %v", name, err)
			}
			if cs.Options != nil {
				so = *cs.Options
			}
			o.start = true
		} else if err := so.Unmarshal(a.Value); err != nil {
			return nil, errdefs.InvalidArgument("options", "decode %s: %v", name, err)
		}
		if so.Runc != nil {
			o.runc = so.Runc
		}
		if so.Log != nil {
			if so.Log.MaxSize > 1<<40 || so.Log.MaxFiles > 1000 {
				return nil, errdefs.InvalidArgument("options.log", "max_size %d / max_files %d out of range", so.Log.MaxSize, so.Log.MaxFiles)
			}
			o.logSize, o.logFiles = int64(so.Log.MaxSize), int(so.Log.MaxFiles)
		}
	default:
		return nil, errdefs.InvalidArgument("options", "unsupported type %q (want containerd.runc.v1.Options, edged.shim.v1.Options or edged.shim.v1.CreateAndStart)", a.TypeUrl)
	}
	if o.runc.Root != "" && !filepath.IsAbs(o.runc.Root) {
		return nil, errdefs.InvalidArgument("options.root", "%q must be an absolute path", o.runc.Root)
	}
	if strings.ContainsAny(o.runc.BinaryName, "\x00\n") {
		return nil, errdefs.InvalidArgument("options.binary_name", "%q is not a valid program name", o.runc.BinaryName)
	}
	return o, nil
}

// runtimeRecord is written to <bundle>/edged-shim.json so that the delete
// subcommand finds the runtime of a container whose shim is gone.
type runtimeRecord struct {
	Binary string `json:"binary"`
	Root   string `json:"root"`
	ID     string `json:"id"`
}

const runtimeRecordFile = "edged-shim.json"

// ---- Task service

// Create creates a container (runc create) from the bundle. Until it
// returns, the container's ID is reserved: calls for it fail with
// Unavailable, "being created" (see lookup), and Shutdown without now does
// not end the shim.
//
// A create is carried to its end, or to the caller's deadline, even when
// the caller's connection closes meanwhile (edged killed): its bootstrap
// names the task, and the restarted edged finds it created, or gone if the
// create failed. Only a call without a deadline (a containerd's, at
// times) is still ended by the close of its connection: nothing would
// bound it otherwise.
func (s *Service) Create(ctx context.Context, req *taskapi.CreateTaskRequest) (*taskapi.CreateTaskResponse, error) {
	defer s.trimSoon()
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(context.WithoutCancel(ctx), dl)
		defer cancel()
	}
	pid, err := s.create(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	return &taskapi.CreateTaskResponse{Pid: uint32(pid)}, nil
}

func (s *Service) create(ctx context.Context, req *taskapi.CreateTaskRequest) (_ int, retErr error) {
	if err := identifiers.Validate("id", req.Id); err != nil {
		return 0, err
	}
	if req.Checkpoint != "" || req.ParentCheckpoint != "" {
		return 0, fmt.Errorf("create from checkpoint: %w", errdefs.ErrNotImplemented)
	}
	if !filepath.IsAbs(req.Bundle) || filepath.Clean(req.Bundle) != req.Bundle {
		return 0, errdefs.InvalidArgument("bundle", "%q must be a clean absolute path", req.Bundle)
	}
	if _, err := os.Stat(filepath.Join(req.Bundle, "config.json")); err != nil {
		return 0, errdefs.InvalidArgument("bundle", "%q has no config.json: %v", req.Bundle, err)
	}
	for _, f := range []struct{ n, v string }{{"stdin", req.Stdin}, {"stdout", req.Stdout}, {"stderr", req.Stderr}} {
		if err := stdio.Validate(f.n, f.v); err != nil {
			return 0, err
		}
	}
	opts, err := parseOptions(req.Options)
	if err != nil {
		return 0, err
	}
	root := opts.runc.Root
	if root == "" {
		root = filepath.Join(s.cfg.StateDir, "runc", s.cfg.Namespace)
	}
	c := &container{
		id:     req.Id,
		bundle: req.Bundle,
		opts:   opts.runc,
		execs:  make(map[string]*process),
		runc: &runc.Runc{
			Binary:        opts.runc.BinaryName,
			Root:          root,
			SystemdCgroup: opts.runc.SystemdCgroup,
			Starter:       s.reaper,
		},
	}
	s.mu.Lock()
	if _, ok := s.containers[req.Id]; ok {
		s.mu.Unlock()
		return 0, fmt.Errorf("container %q: %w", req.Id, errdefs.ErrAlreadyExists)
	}
	s.containers[req.Id] = c // reserved; init is set once created
	s.mu.Unlock()
	var p *process
	created, wroteRecord := false, false
	defer func() {
		if retErr == nil {
			return
		}
		// A runc killed at the caller's deadline removed what it had made
		// itself (runc.Create); a created container is removed here.
		if created {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), runc.CleanupTimeout)
			_ = c.runc.Delete(dctx, c.id, true)
			cancel()
		}
		if p != nil && p.io != nil {
			p.io.Close()
		}
		if c.rootfs {
			_ = unmountAll(filepath.Join(c.bundle, "rootfs"))
		}
		// The bundle as it was: no pid file (runc may have written one
		// before it was killed), no runtime record of a container that
		// does not exist.
		if p != nil {
			_ = os.Remove(p.pidFile())
		}
		if wroteRecord {
			_ = os.Remove(filepath.Join(c.bundle, runtimeRecordFile))
		}
		s.mu.Lock()
		delete(s.containers, c.id)
		if p != nil && p.pid != 0 {
			delete(s.byPid, p.pid)
		}
		s.mu.Unlock()
	}()
	if err := os.MkdirAll(root, 0o711); err != nil {
		return 0, fmt.Errorf("runc root: %w", err)
	}
	// The delete subcommand derives the runc root and binary the same way
	// when no record is found: a record is written only for a runtime it
	// could not derive (a file and two fsyncs less per container).
	if c.runc.Binary != "" || opts.runc.Root != "" {
		rec, _ := json.Marshal(runtimeRecord{Binary: c.runc.Binary, Root: root, ID: c.id})
		if err := atomicfile.WriteFile(filepath.Join(c.bundle, runtimeRecordFile), rec, 0o600); err != nil {
			return 0, fmt.Errorf("bundle: %w", err)
		}
		wroteRecord = true
	}
	if len(req.Rootfs) > 0 {
		if err := mountRootfs(req.Rootfs, filepath.Join(c.bundle, "rootfs")); err != nil {
			return 0, err
		}
		c.rootfs = true
	}
	p = &process{c: c, stdin: req.Stdin, stdout: req.Stdout, stderr: req.Stderr, terminal: req.Terminal, exited: make(chan struct{})}
	// The init may exit before its pid is known: its TaskExit waits for
	// the TaskCreate (and TaskStart) published below (finishExit takes
	// startMu), and so does a Start, once the container is found, until
	// the TaskCreate is out.
	p.startMu.Lock()
	defer p.startMu.Unlock()
	if opts.start {
		p.started = true // p is not reachable by other calls yet
	}
	// Read before runc makes the cgroup: a killed create removes it only
	// if it is the container's own, and the OOM counter counts from there.
	cg := s.bundleCgroup(c.bundle, c.runc.SystemdCgroup)
	var oomBase OOMBaseline
	if s.cfg.OOM != nil {
		oomBase = s.cfg.OOM.Baseline(cg.path, cg.existed)
	}
	// Closed until the TaskCreate (and TaskStart) are out; Start closes it
	// again while it starts the init.
	c.oom = &oomGate{publish: func(oomKills uint64) {
		s.publish(TopicOOM, &eventtypes.TaskOOM{ContainerId: c.id, OomKills: oomKills})
	}}
	var cgDirs []string
	if !cg.existed && !c.runc.SystemdCgroup {
		// With the systemd driver the cgroup is a transient unit's, which
		// systemd removes once its processes are gone.
		cgDirs = cg.dirs
	}
	if err := s.startProcess(ctx, p, func(stdioFiles [3]*os.File, console, pidFile string) error {
		o := runc.CreateOpts{
			PidFile:       pidFile,
			ConsoleSocket: console,
			LogFile:       filepath.Join(c.bundle, "log.json"),
			NoPivot:       opts.runc.NoPivotRoot,
			NoNewKeyring:  opts.runc.NoNewKeyring,
			Stdio:         stdioFiles,
			CgroupDirs:    cgDirs,
		}
		var err error
		if opts.start {
			err = c.runc.Run(ctx, c.id, c.bundle, o)
		} else {
			err = c.runc.Create(ctx, c.id, c.bundle, o)
		}
		created = err == nil
		return err
	}, opts, func(pid int, exited bool) {
		// Before the exit of pid can be processed: the watch is removed
		// when the init exits.
		s.watchOOM(c.id, pid, exited, oomBase, c.oom)
	}); err != nil {
		return 0, err
	}
	s.mu.Lock()
	c.init = p
	pid := p.pid
	s.mu.Unlock()
	s.publish(TopicCreate, &eventtypes.TaskCreate{
		ContainerId: c.id,
		Bundle:      c.bundle,
		Rootfs:      req.Rootfs,
		Io:          &eventtypes.TaskIO{Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, Terminal: req.Terminal},
		Pid:         uint32(pid),
	})
	if opts.start {
		s.publish(TopicStart, &eventtypes.TaskStart{ContainerId: c.id, Pid: uint32(pid)})
	}
	c.oom.release()
	return pid, nil
}

// watchOOM watches the cgroup of a container's init for OOM kills, counted
// from base, and publishes them through gate. An init that already exited
// (a fused create and start of a short process) may have no cgroup left
// to find, which is not worth a warning.
func (s *Service) watchOOM(id string, pid int, exited bool, base OOMBaseline, gate *oomGate) {
	if s.cfg.OOM == nil {
		return
	}
	if err := s.cfg.OOM.Add(id, pid, base, gate.onOOM); err != nil {
		if exited {
			s.cfg.Log.Debug("oom watcher: init already exited", "id", id, "error", err)
		} else {
			s.cfg.Log.Warn("oom watcher", "id", id, "error", err)
		}
	}
}

// startProcess sets up stdio (and the console socket), runs the runc
// command, and records the pid it wrote. onPid, if set, is called with the
// pid (and whether its exit was already reaped) before the process's exit
// can be processed.
func (s *Service) startProcess(ctx context.Context, p *process, run func([3]*os.File, string, string) error, opts *createOptions, onPid func(pid int, exited bool)) error {
	logSize, logFiles := s.cfg.LogMaxSize, s.cfg.LogMaxFiles
	if opts != nil && opts.logSize > 0 {
		logSize = opts.logSize
	}
	if opts != nil && opts.logFiles > 0 {
		logFiles = opts.logFiles
	}
	var uid, gid int
	if p.c.opts != nil {
		uid, gid = int(p.c.opts.IoUid), int(p.c.opts.IoGid)
	}
	pio, err := stdio.New(stdio.Config{
		Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr, Terminal: p.terminal,
		LogMaxSize: logSize, LogMaxFiles: logFiles, UID: uid, GID: gid,
	}, s.bufs, s.cfg.Log.With("id", p.c.id, "exec", p.execID))
	if err != nil {
		return err
	}
	p.io = pio
	var console *stdio.ConsoleSocket
	if p.terminal {
		if console, err = stdio.NewConsoleSocket(); err != nil {
			return err
		}
		defer console.Close()
	}
	pidFile := p.pidFile()
	_ = os.Remove(pidFile)
	consolePath := ""
	if console != nil {
		consolePath = console.Path()
	}
	s.beginStart()
	defer s.endStart()
	err = run(pio.ChildFiles(), consolePath, pidFile)
	pio.ChildStarted()
	if err != nil {
		return err
	}
	if console != nil {
		master, err := console.Receive(10 * time.Second)
		if err != nil {
			return err
		}
		pio.AttachConsole(master)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("pid file %s holds %q: %w", pidFile, data, errdefs.ErrUnknown)
	}
	if onPid != nil {
		onPid(pid, s.exitedEarly(pid))
	}
	s.setPid(p, pid)
	return nil
}

// Start starts the container's init (runc start) or an exec (runc exec).
func (s *Service) Start(ctx context.Context, req *taskapi.StartRequest) (*taskapi.StartResponse, error) {
	c, p, err := s.lookup(req.Id, req.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	p.startMu.Lock()
	defer p.startMu.Unlock()
	defer s.trimSoon()
	s.mu.Lock()
	started, initExited := p.started, c.init.reaped
	if !started {
		p.started = true // claimed; reset on failure
	}
	s.mu.Unlock()
	if started {
		return nil, toStatus(fmt.Errorf("process %q of container %q already started: %w", p.id(), c.id, errdefs.ErrFailedPrecondition))
	}
	fail := func(err error) (*taskapi.StartResponse, error) {
		s.mu.Lock()
		p.started = false
		s.mu.Unlock()
		return nil, toStatus(err)
	}
	if initExited {
		return fail(fmt.Errorf("container %q has exited: %w", c.id, errdefs.ErrFailedPrecondition))
	}
	if req.ExecId == "" {
		// The init may be OOM-killed before runc start returns: the
		// monitor's TaskOOM waits for the TaskStart. The gate is closed,
		// not startMu taken, on the OOM path: the monitor's single loop
		// must not wait for a start.
		c.oom.hold()
		if err := c.runc.Start(ctx, c.id); err != nil {
			c.oom.release()
			return fail(err)
		}
		s.publish(TopicStart, &eventtypes.TaskStart{ContainerId: c.id, Pid: uint32(p.pid)})
		c.oom.release()
		return &taskapi.StartResponse{Pid: uint32(p.pid)}, nil
	}
	specFile := p.specFile()
	if err := atomicfile.WriteFile(specFile, p.spec, 0o600); err != nil {
		return fail(fmt.Errorf("exec spec: %w", err))
	}
	defer os.Remove(specFile)
	if err := s.startProcess(ctx, p, func(files [3]*os.File, console, pidFile string) error {
		return c.runc.Exec(ctx, c.id, specFile, runc.ExecOpts{
			PidFile:       pidFile,
			ConsoleSocket: console,
			LogFile:       p.runcLogFile(),
			Stdio:         files,
		})
	}, nil, nil); err != nil {
		if p.io != nil {
			p.io.Close()
		}
		// runc's error was read from its log already.
		p.removeExecFiles()
		return fail(err)
	}
	s.mu.Lock()
	pid := p.pid
	s.mu.Unlock()
	s.publish(TopicExecStarted, &eventtypes.TaskExecStarted{ContainerId: c.id, ExecId: p.execID, Pid: uint32(pid)})
	return &taskapi.StartResponse{Pid: uint32(pid)}, nil
}

// Delete deletes an exited (or never started) process; for the init, the
// container: runc delete, rootfs unmount.
func (s *Service) Delete(ctx context.Context, req *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	c, p, err := s.lookup(req.Id, req.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	running := p.started && !p.reaped
	if req.ExecId == "" && c.deleting {
		s.mu.Unlock()
		return nil, toStatus(fmt.Errorf("container %q is being deleted: %w", c.id, errdefs.ErrFailedPrecondition))
	}
	if running {
		s.mu.Unlock()
		return nil, toStatus(fmt.Errorf("process %q of container %q is running; kill it first: %w", p.id(), c.id, errdefs.ErrFailedPrecondition))
	}
	if req.ExecId != "" {
		started := p.started
		s.mu.Unlock()
		if started {
			// Reaped: its output is being copied and its TaskExit is
			// not published yet; Delete answers after both, as Wait.
			select {
			case <-p.exited:
			case <-ctx.Done():
				return nil, toStatus(fmt.Errorf("exec %q of container %q: wait for its exit: %w", p.execID, c.id, ctx.Err()))
			}
		}
		s.mu.Lock()
		if c.execs[req.ExecId] != p {
			s.mu.Unlock()
			return nil, toStatus(fmt.Errorf("exec %q of container %q: %w", req.ExecId, c.id, errdefs.ErrNotFound))
		}
		delete(c.execs, req.ExecId)
		resp := &taskapi.DeleteResponse{Pid: uint32(p.pid), ExitStatus: uint32(p.exitStatus), ExitedAt: timestamp(p.exitedAt)}
		s.mu.Unlock()
		if p.io != nil {
			p.io.Close()
		}
		p.removeExecFiles()
		return resp, nil
	}
	c.deleting = true
	exited := p.reaped
	s.mu.Unlock()
	defer s.trimSoon()
	if exited {
		err = c.runc.DeleteExited(ctx, c.id) // no runc process in the common case
	} else {
		err = c.runc.Delete(ctx, c.id, true)
	}
	if err != nil && !errdefs.IsNotFound(err) {
		s.mu.Lock()
		c.deleting = false
		s.mu.Unlock()
		return nil, toStatus(err)
	}
	// A created, never started init is killed by delete --force; its exit
	// (and output) follow shortly. Not waited for past the caller's
	// deadline: the container is gone from runc, so the shim forgets it
	// too rather than fail a Delete that could not be retried.
	t := time.NewTimer(10 * time.Second)
	select {
	case <-p.exited:
	case <-t.C:
		s.cfg.Log.Warn("init exit not seen after delete", "id", c.id, "pid", p.pid)
	case <-ctx.Done():
		s.cfg.Log.Warn("init exit not seen before the delete's deadline", "id", c.id, "pid", p.pid, "error", ctx.Err())
	}
	t.Stop()
	if p.io != nil {
		p.io.Close()
	}
	if c.rootfs {
		if err := unmountAll(filepath.Join(c.bundle, "rootfs")); err != nil {
			s.cfg.Log.Warn("unmount rootfs", "id", c.id, "error", err)
		}
	}
	s.mu.Lock()
	delete(s.containers, c.id)
	// A pid of this container may already be another container's: its
	// entry is removed only if it is still this container's process.
	if s.byPid[p.pid] == p {
		delete(s.byPid, p.pid)
	}
	for _, e := range c.execs {
		if s.byPid[e.pid] == e {
			delete(s.byPid, e.pid)
		}
		if e.io != nil {
			e.io.Close()
		}
	}
	resp := &taskapi.DeleteResponse{Pid: uint32(p.pid), ExitStatus: uint32(p.exitStatus), ExitedAt: timestamp(p.exitedAt)}
	s.mu.Unlock()
	s.publish(TopicDelete, &eventtypes.TaskDelete{
		ContainerId: c.id, Pid: resp.Pid, ExitStatus: resp.ExitStatus, ExitedAt: resp.ExitedAt,
	})
	return resp, nil
}

// State reports a process's status.
func (s *Service) State(ctx context.Context, req *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	c, p, err := s.lookup(req.Id, req.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	resp := &taskapi.StateResponse{
		Id: c.id, ExecId: p.execID, Bundle: c.bundle, Pid: uint32(p.pid),
		Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr, Terminal: p.terminal,
	}
	// A reaped process is STOPPED even while its output is still copied:
	// its pid is gone.
	exited, started, paused := p.reaped, p.started, c.paused
	if exited {
		resp.ExitStatus, resp.ExitedAt = uint32(p.exitStatus), timestamp(p.exitedAt)
	}
	s.mu.Unlock()
	switch {
	case exited:
		resp.Status = tasktypes.Status_STOPPED
	case !started:
		resp.Status = tasktypes.Status_CREATED
	case paused:
		resp.Status = tasktypes.Status_PAUSED
	default:
		resp.Status = tasktypes.Status_RUNNING
	}
	return resp, nil
}

// Pids lists the container's processes; execs carry a
// containerd.runc.v1.ProcessDetails.
func (s *Service) Pids(ctx context.Context, req *taskapi.PidsRequest) (*taskapi.PidsResponse, error) {
	c, _, err := s.lookup(req.Id, "")
	if err != nil {
		return nil, toStatus(err)
	}
	pids, err := c.runc.Ps(ctx, c.id)
	if err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	execByPid := make(map[int]string, len(c.execs))
	for id, e := range c.execs {
		if e.pid != 0 {
			execByPid[e.pid] = id
		}
	}
	s.mu.Unlock()
	resp := &taskapi.PidsResponse{}
	for _, pid := range pids {
		pi := &tasktypes.ProcessInfo{Pid: uint32(pid)}
		if id, ok := execByPid[pid]; ok {
			d, _ := (&runcopts.ProcessDetails{ExecId: id}).Marshal()
			pi.Info = &types.Any{TypeUrl: "containerd.runc.v1.ProcessDetails", Value: d}
		}
		resp.Processes = append(resp.Processes, pi)
	}
	return resp, nil
}

// Pause freezes the container.
func (s *Service) Pause(ctx context.Context, req *taskapi.PauseRequest) (*types.Empty, error) {
	c, _, err := s.lookup(req.Id, "")
	if err != nil {
		return nil, toStatus(err)
	}
	if err := c.runc.Pause(ctx, c.id); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	c.paused = true
	s.mu.Unlock()
	s.publish(TopicPaused, &eventtypes.TaskPaused{ContainerId: c.id})
	return &types.Empty{}, nil
}

// Resume thaws the container.
func (s *Service) Resume(ctx context.Context, req *taskapi.ResumeRequest) (*types.Empty, error) {
	c, _, err := s.lookup(req.Id, "")
	if err != nil {
		return nil, toStatus(err)
	}
	if err := c.runc.Resume(ctx, c.id); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	c.paused = false
	s.mu.Unlock()
	s.publish(TopicResumed, &eventtypes.TaskResumed{ContainerId: c.id})
	return &types.Empty{}, nil
}

// Checkpoint is not supported.
func (s *Service) Checkpoint(ctx context.Context, req *taskapi.CheckpointTaskRequest) (*types.Empty, error) {
	return nil, toStatus(fmt.Errorf("checkpoint: not supported by edged-shim: %w", errdefs.ErrNotImplemented))
}

// Kill signals a process (the init through runc kill, an exec directly).
func (s *Service) Kill(ctx context.Context, req *taskapi.KillRequest) (*types.Empty, error) {
	c, p, err := s.lookup(req.Id, req.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	if req.Signal == 0 || req.Signal > 64 {
		return nil, toStatus(errdefs.InvalidArgument("signal", "%d is not a signal number", req.Signal))
	}
	finished := func() error {
		return fmt.Errorf("process %q of container %q already finished: %w", p.id(), c.id, errdefs.ErrNotFound)
	}
	if req.ExecId != "" {
		// Signalled under s.mu: once the exec is reaped (handleExit marks
		// it under s.mu) its pid is free and may be another process's.
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case p.reaped:
			return nil, toStatus(finished())
		case !p.started || p.pid == 0:
			return nil, toStatus(fmt.Errorf("exec %q of container %q is not started: %w", p.execID, c.id, errdefs.ErrFailedPrecondition))
		}
		if err := killPid(p.pid, int(req.Signal)); err != nil {
			return nil, toStatus(err)
		}
		return &types.Empty{}, nil
	}
	s.mu.Lock()
	reaped := p.reaped
	s.mu.Unlock()
	if reaped && !req.All {
		return nil, toStatus(finished())
	}
	if err := c.runc.Kill(ctx, c.id, int(req.Signal), req.All); err != nil {
		s.mu.Lock()
		reaped = p.reaped
		s.mu.Unlock()
		if reaped {
			return nil, toStatus(finished())
		}
		return nil, toStatus(err)
	}
	return &types.Empty{}, nil
}

// Exec registers an additional process; Start runs it.
func (s *Service) Exec(ctx context.Context, req *taskapi.ExecProcessRequest) (*types.Empty, error) {
	if err := s.exec(req); err != nil {
		return nil, toStatus(err)
	}
	return &types.Empty{}, nil
}

func (s *Service) exec(req *taskapi.ExecProcessRequest) error {
	if req.ExecId == "" {
		return errdefs.InvalidArgument("exec_id", "must not be empty")
	}
	if err := identifiers.Validate("exec_id", req.ExecId); err != nil {
		return err
	}
	if req.ExecId == "init" {
		return errdefs.InvalidArgument("exec_id", "%q is reserved", req.ExecId)
	}
	c, _, err := s.lookup(req.Id, "")
	if err != nil {
		return err
	}
	if req.Spec == nil || len(req.Spec.Value) == 0 {
		return errdefs.InvalidArgument("spec", "an OCI process spec is required")
	}
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(req.Spec.Value, &spec); err != nil {
		return errdefs.InvalidArgument("spec", "not an OCI process JSON: %v", err)
	}
	spec["terminal"], _ = json.Marshal(req.Terminal)
	data, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	for _, f := range []struct{ n, v string }{{"stdin", req.Stdin}, {"stdout", req.Stdout}, {"stderr", req.Stderr}} {
		if err := stdio.Validate(f.n, f.v); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.init.reaped || c.deleting {
		return fmt.Errorf("container %q is not running: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	if _, ok := c.execs[req.ExecId]; ok {
		return fmt.Errorf("exec %q of container %q: %w", req.ExecId, c.id, errdefs.ErrAlreadyExists)
	}
	c.execs[req.ExecId] = &process{
		c: c, execID: req.ExecId, stdin: req.Stdin, stdout: req.Stdout, stderr: req.Stderr,
		terminal: req.Terminal, spec: data, exited: make(chan struct{}),
	}
	s.publish(TopicExecAdded, &eventtypes.TaskExecAdded{ContainerId: c.id, ExecId: req.ExecId})
	return nil
}

// ResizePty sets the window size of a terminal process.
func (s *Service) ResizePty(ctx context.Context, req *taskapi.ResizePtyRequest) (*types.Empty, error) {
	_, p, err := s.lookup(req.Id, req.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	if p.io == nil {
		return nil, toStatus(fmt.Errorf("process %q is not started: %w", p.id(), errdefs.ErrFailedPrecondition))
	}
	if err := p.io.Resize(req.Width, req.Height); err != nil {
		return nil, toStatus(err)
	}
	return &types.Empty{}, nil
}

// CloseIO closes a process's stdin (once what was written is delivered).
func (s *Service) CloseIO(ctx context.Context, req *taskapi.CloseIORequest) (*types.Empty, error) {
	_, p, err := s.lookup(req.Id, req.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	if req.Stdin && p.io != nil {
		p.io.CloseStdin()
	}
	return &types.Empty{}, nil
}

// Update changes the container's resources (runc update; resources is the
// OCI LinuxResources JSON).
func (s *Service) Update(ctx context.Context, req *taskapi.UpdateTaskRequest) (*types.Empty, error) {
	c, _, err := s.lookup(req.Id, "")
	if err != nil {
		return nil, toStatus(err)
	}
	if req.Resources == nil || len(req.Resources.Value) == 0 {
		return nil, toStatus(errdefs.InvalidArgument("resources", "must be set"))
	}
	if !json.Valid(req.Resources.Value) {
		return nil, toStatus(errdefs.InvalidArgument("resources", "not OCI LinuxResources JSON"))
	}
	if err := c.runc.Update(ctx, c.id, req.Resources.Value); err != nil {
		return nil, toStatus(err)
	}
	return &types.Empty{}, nil
}

// Wait blocks until the process exits or ctx is done.
func (s *Service) Wait(ctx context.Context, req *taskapi.WaitRequest) (*taskapi.WaitResponse, error) {
	_, p, err := s.lookup(req.Id, req.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	select {
	case <-ctx.Done():
		return nil, toStatus(ctx.Err())
	case <-p.exited:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &taskapi.WaitResponse{ExitStatus: uint32(p.exitStatus), ExitedAt: timestamp(p.exitedAt)}, nil
}

// Stats is not served by the shim: edged reads cgroups itself.
func (s *Service) Stats(ctx context.Context, req *taskapi.StatsRequest) (*taskapi.StatsResponse, error) {
	return nil, toStatus(fmt.Errorf("stats: not served by edged-shim (edged reads cgroup statistics directly): %w", errdefs.ErrNotImplemented))
}

// Connect returns the shim's and the task's pids.
func (s *Service) Connect(ctx context.Context, req *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	resp := &taskapi.ConnectResponse{ShimPid: uint32(os.Getpid()), Version: Version}
	if req.Id != "" {
		_, p, err := s.lookup(req.Id, "")
		if err != nil {
			return nil, toStatus(err)
		}
		s.mu.Lock()
		resp.TaskPid = uint32(p.pid)
		s.mu.Unlock()
	}
	return resp, nil
}

// Shutdown ends the shim when it hosts no container any more (or now is
// set); otherwise it does nothing. A container being created counts: its
// Create has not returned.
func (s *Service) Shutdown(ctx context.Context, req *taskapi.ShutdownRequest) (*types.Empty, error) {
	s.mu.Lock()
	n := len(s.containers)
	s.mu.Unlock()
	if n > 0 && !req.Now {
		return &types.Empty{}, nil
	}
	if s.cfg.Shutdown != nil {
		s.shutdown.Do(func() { go s.cfg.Shutdown() })
	}
	return &types.Empty{}, nil
}
