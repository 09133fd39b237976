// Package runtime manages tasks: it starts runtime v2 shims (edged-shim
// with an inherited socket, or any containerd v2 shim through its `start`
// subcommand), keeps per-task bootstrap data on disk so that a restarted
// edged reconnects to running containers, and bounds every shim call with a
// deadline: a shim that does not answer is treated as dead and cleaned up,
// never allowed to hang edged.
package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gogo/protobuf/types"
	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/edged/protoconv"
	"github.com/edged/edged/internal/atomicfile"
	"github.com/edged/edged/proto/rpc"
	runcopts "github.com/edged/edged/proto/runtime/runc/v1"
	shimopts "github.com/edged/edged/proto/runtime/shim/v1"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	ptypes "github.com/edged/edged/proto/types"
)

// NativeRuntime is the runtime name of edged-shim.
const NativeRuntime = "io.containerd.edged.v2"

// GroupLabel puts containers carrying the same value into one shim process.
const GroupLabel = "edged.io/shim-group"

// Config configures the manager.
type Config struct {
	// State is edged's state directory: bundles, shim sockets, bootstrap.
	State string
	// Address is edged's API socket, where shims publish events.
	Address string
	// ShimBinary is edged-shim (default: next to the edged binary, else PATH).
	ShimBinary string
	// CallTimeout bounds every shim call but Wait (default 10 s).
	CallTimeout time.Duration
	// ConnectTimeout bounds reconnecting to a shim at start-up (default 1 s).
	ConnectTimeout time.Duration
	// SpareShim keeps one idle edged-shim per namespace in use, started
	// ahead, so that a task needing a new shim does not wait for one to
	// start. It costs one idle shim's memory per namespace.
	SpareShim bool
	Log       *slog.Logger
	// OnDead is called for each task whose shim died, once the runtime
	// has cleaned up after it (runc state, mounts, bundle, bootstrap),
	// for the daemon to undo what it set up for the task (its network).
	// The task's ID stays reserved until OnDead returns: a Create of the
	// same ID meanwhile fails with AlreadyExists instead of racing the
	// clean-up.
	OnDead func(ns, id string)
	// OnGone is called after OnDead, once the ID is free, so the daemon
	// can publish the task's exit: a client recreating the task on that
	// event finds the ID free and nothing of the old task left.
	OnGone func(ns, id string, pid uint32)
}

// Manager runs tasks through shims.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	shims   map[string]*shimConn // namespace/group
	tasks   map[string]*task     // namespace/id
	spares  map[string]*spare    // namespace
	filling map[string]bool      // namespace: a spare is being started
	// starting holds, per namespace/group, a channel closed when the
	// group's shim being started is up (or failed): one start per group.
	starting map[string]chan struct{}
	// fillTimers start a namespace's next spare (fillSpareLater).
	fillTimers map[string]*time.Timer
	closed     bool
	fills      sync.WaitGroup // spares being started
	// stopping counts background work Close waits for: released shims
	// being shut down, discarded bundles being removed (see background).
	stopping sync.WaitGroup
	// closing is closed when Close begins: background work that can wait
	// (a recovered create being resolved) gives up.
	closing chan struct{}
}

// task is one container's init process in a shim.
type task struct {
	Namespace string `json:"namespace"`
	ID        string `json:"id"`
	Runtime   string `json:"runtime"`
	Group     string `json:"group"`
	Bundle    string `json:"bundle"`
	Address   string `json:"address"`
	ShimPid   int    `json:"shim_pid"`
	Binary    string `json:"binary"`
	Native    bool   `json:"native"`
	Pid       uint32 `json:"pid"`
	Stdout    string `json:"stdout,omitempty"`

	shim *shimConn
	// creating is set (under Manager.mu) while Create has the shim create
	// the task: the task is not listed (IDs) until the shim has it.
	creating bool
	// dead marks the entry that holds a dead shim's task ID while it is
	// cleaned up (see shimDead).
	dead bool
}

// New returns a manager; call Recover before serving.
func New(cfg Config) (*Manager, error) {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ShimBinary == "" {
		cfg.ShimBinary = findShim()
	}
	for _, d := range []string{"bundles", "tasks", "s", "trash"} {
		if err := os.MkdirAll(filepath.Join(cfg.State, d), 0o700); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
	}
	return &Manager{cfg: cfg, log: cfg.Log, shims: map[string]*shimConn{}, tasks: map[string]*task{},
		spares: map[string]*spare{}, filling: map[string]bool{}, fillTimers: map[string]*time.Timer{}, starting: map[string]chan struct{}{}, closing: make(chan struct{})}, nil
}

func findShim() string {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "edged-shim")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("edged-shim"); err == nil {
		return p
	}
	return "edged-shim"
}

// ShimBinaryFor maps a runtime name to its shim binary, the containerd way:
// io.containerd.runc.v2 → containerd-shim-runc-v2 in PATH.
func ShimBinaryFor(runtime string) (string, error) {
	parts := strings.Split(runtime, ".")
	if len(parts) < 2 {
		return "", errdefs.InvalidArgument("runtime", "%q is not a runtime name like io.containerd.runc.v2", runtime)
	}
	name := "containerd-shim-" + parts[len(parts)-2] + "-" + parts[len(parts)-1]
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("runtime %q: shim binary %s not found in PATH: %w", runtime, name, errdefs.ErrNotFound)
	}
	return p, nil
}

func key(ns, id string) string { return ns + "/" + id }

// BundleDir is where a task's bundle lives.
func (m *Manager) BundleDir(ns, id string) string {
	return filepath.Join(m.cfg.State, "bundles", ns, id)
}

func (m *Manager) bootstrapPath(ns, id string) string {
	return filepath.Join(m.cfg.State, "tasks", ns, id+".json")
}

// CreateOpts describe a new task.
type CreateOpts struct {
	Runtime string
	Group   string
	Spec    []byte // OCI runtime spec, JSON
	// Prepare, if set, returns the spec instead of Spec. It runs while
	// the task's edged-shim starts (e.g. network set-up), after the task
	// ID is reserved: an error from it fails Create.
	Prepare func(ctx context.Context) ([]byte, error)
	// Undo, if set, undoes what Prepare set up when Create fails after
	// Prepare ran. It runs while the ID is still reserved, so that it
	// cannot undo the set-up of a new task of the same ID.
	Undo     func(ctx context.Context)
	Rootfs   []*ptypes.Mount
	Stdin    string
	Stdout   string
	Stderr   string
	Terminal bool
	Options  *types.Any
	// Start starts the task too. With an edged-shim this edged started it
	// is one shim call (and one `runc run --detach`); with any other shim,
	// Create then Start.
	Start bool
}

// Create writes the bundle, starts (or reuses) the shim and creates the
// task. On failure nothing is left behind. Once the shim is asked to create
// the task, its answer is waited for (up to CallTimeout) even when ctx ends
// first: the task is then created all the same.
func (m *Manager) Create(ctx context.Context, ns, id string, o CreateOpts) (_ uint32, err error) {
	if err := identifiers.Validate("namespace", ns); err != nil {
		return 0, err
	}
	if err := identifiers.Validate("container_id", id); err != nil {
		return 0, err
	}
	if o.Group == "" {
		o.Group = id
	} else if err := identifiers.Validate("shim group", o.Group); err != nil {
		return 0, err
	}
	if o.Runtime == "" {
		o.Runtime = NativeRuntime
	}
	if o.Options == nil && o.Runtime == "io.containerd.runc.v2" {
		// Keep runc state of edged's containers apart from a containerd
		// on the same host (its shim defaults to /run/containerd/runc).
		b, err := (&runcopts.Options{Root: filepath.Join(m.cfg.State, "runc-v2")}).Marshal()
		if err != nil {
			return 0, err
		}
		o.Options = &types.Any{TypeUrl: "containerd.runc.v1.Options", Value: b}
	}
	m.mu.Lock()
	if old, ok := m.tasks[key(ns, id)]; ok {
		m.mu.Unlock()
		if old.dead {
			return 0, fmt.Errorf("task %q in namespace %q: its shim died and edged is cleaning up after it; try again shortly: %w", id, ns, errdefs.ErrAlreadyExists)
		}
		return 0, fmt.Errorf("task %q in namespace %q: %w", id, ns, errdefs.ErrAlreadyExists)
	}
	// Reserve the ID while the task is being created.
	t := &task{Namespace: ns, ID: id, Runtime: o.Runtime, Group: o.Group, Bundle: m.BundleDir(ns, id), Stdout: o.Stdout, creating: true}
	m.tasks[key(ns, id)] = t
	m.mu.Unlock()
	prepared := false
	if prep := o.Prepare; prep != nil {
		o.Prepare = func(ctx context.Context) ([]byte, error) {
			prepared = true
			return prep(ctx)
		}
	}
	defer func() {
		if err == nil {
			m.mu.Lock()
			t.creating = false
			sc := t.shim
			m.mu.Unlock()
			// A shim found dead while the task was in Create left it
			// out of its clean-up (cleanupShim): the task is cleaned up
			// here, as the others were.
			if sc != nil && sc.isDead() {
				m.deadTask(context.WithoutCancel(ctx), t)
			}
			return
		}
		var undo func(context.Context)
		if prepared {
			undo = o.Undo
		}
		m.failCreate(context.WithoutCancel(ctx), t, undo)
	}()

	if err := os.MkdirAll(filepath.Join(t.Bundle, "rootfs"), 0o711); err != nil {
		return 0, fmt.Errorf("create bundle: %w", err)
	}
	// An edged-shim starts while the spec is prepared and written: its
	// start-up overlaps with that work. Any other shim reads the bundle
	// when it starts, so it starts after.
	type shimResult struct {
		sc  *shimConn
		err error
	}
	var early chan shimResult
	if t.Runtime == NativeRuntime {
		early = make(chan shimResult, 1)
		go func() {
			sc, err := m.shimFor(ctx, t)
			early <- shimResult{sc, err}
		}()
	}
	prepErr := m.writeSpec(ctx, t.Bundle, o)
	var sc *shimConn
	if early != nil {
		r := <-early
		sc, err = r.sc, r.err
	} else if prepErr == nil {
		sc, err = m.shimFor(ctx, t)
	}
	if sc == nil {
		if prepErr != nil {
			return 0, prepErr
		}
		return 0, err
	}
	// Under m.mu: get and List read t.shim of a reserved task concurrently.
	m.mu.Lock()
	t.shim, t.Address, t.ShimPid, t.Binary, t.Native = sc, sc.address, sc.pid, sc.binary, sc.native
	m.mu.Unlock()
	sc.mu.Lock()
	sc.refs[id] = true
	sc.mu.Unlock()
	if prepErr != nil {
		return 0, prepErr
	}

	if t.Runtime == NativeRuntime {
		// Not while the task's container starts: it would compete with it.
		defer m.fillSpareLater(ns)
	}
	// Once asked, the shim's create is waited for to its end (or to the
	// call timeout), whatever becomes of ctx: a caller that gives up
	// (its client gone, its deadline over) does not end a create in the
	// shim (which keeps going until its own deadline), so releasing the
	// task then would remove the bundle runc is using and leave the
	// container the shim makes to nobody.
	dctx := context.WithoutCancel(ctx)
	cctx, cancel := context.WithTimeout(dctx, m.cfg.CallTimeout)
	defer cancel()
	req := &taskapi.CreateTaskRequest{
		Id: id, Bundle: t.Bundle, Rootfs: o.Rootfs, Terminal: o.Terminal,
		Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, Options: o.Options,
	}
	started := false
	if o.Start && sc.native && !sc.noFuse.Load() {
		req.Options, started = startOptions(o.Options)
	}
	// The bootstrap is saved before the shim creates the task, not after:
	// an edged killed in between would leave the task in a live shim (a
	// group's, or one a restarted edged reuses for the group) that no
	// bootstrap names, so the restarted edged would neither know it nor
	// let its ID be created again. Saved first, a restarted edged asks the
	// shim about it: kept when the shim has it, dropped when not. The pid
	// is not known yet; Recover takes it from the shim.
	if err := m.saveBootstrap(t); err != nil {
		return 0, fmt.Errorf("save task bootstrap: %w", err)
	}
	resp, err := sc.task.Create(cctx, req)
	if err != nil && started && unknownCreateAndStart(errdefs.FromStatus(err)) {
		// An edged-shim from before CreateAndStart: create, then start.
		m.log.Info("shim does not create and start in one call; using create and start", "shim", sc.key)
		sc.noFuse.Store(true)
		req.Options, started = o.Options, false
		resp, err = sc.task.Create(cctx, req)
	}
	if err != nil {
		return 0, m.callError(dctx, sc, "create", err)
	}
	m.mu.Lock()
	// creating stays set until Create returns: a shim that dies in the
	// Start below leaves the task to failCreate (see cleanupShim).
	t.Pid = resp.Pid
	m.mu.Unlock()
	if o.Start && !started {
		sctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
		defer cancel()
		if _, err := sc.task.Start(sctx, &taskapi.StartRequest{Id: id}); err != nil {
			err = m.callError(ctx, sc, "start", err)
			m.abandonTask(context.WithoutCancel(ctx), sc, id)
			return 0, err
		}
	}
	return resp.Pid, nil
}

// abandonTask removes from its shim a task whose Start failed after the
// shim created it (Delete kills a created init), within the call timeout.
// When that fails the shim still holds the task: it is treated as dead
// (killed, its containers force-deleted), so that the deferred release
// never recycles it as a spare with a container in it.
func (m *Manager) abandonTask(ctx context.Context, sc *shimConn, id string) {
	cctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	_, err := sc.task.Delete(cctx, &taskapi.DeleteRequest{Id: id})
	if err = errdefs.FromStatus(err); err != nil && !errdefs.IsNotFound(err) {
		m.log.Error("could not delete the task of a failed create in its shim; treating the shim as dead", "shim", sc.key, "id", id, "error", err)
		m.shimDead(ctx, sc)
	}
}

// startOptions wraps the create options a into edged.shim.v1.CreateAndStart
// (runc options carried over), or returns false when a cannot be carried:
// then the shim is asked to create only, and it reports whatever is wrong
// with a.
func startOptions(a *types.Any) (*types.Any, bool) {
	cs := &shimopts.CreateAndStart{Options: &shimopts.Options{}}
	if a != nil && a.TypeUrl != "" {
		switch a.TypeUrl[strings.LastIndex(a.TypeUrl, "/")+1:] {
		case "containerd.runc.v1.Options":
			cs.Options.Runc = &runcopts.Options{}
			if err := cs.Options.Runc.Unmarshal(a.Value); err != nil {
				return a, false
			}
		case "edged.shim.v1.Options":
			if err := cs.Options.Unmarshal(a.Value); err != nil {
				return a, false
			}
		default:
			return a, false
		}
	}
	b, err := cs.Marshal()
	if err != nil {
		return a, false
	}
	return &types.Any{TypeUrl: createAndStartType, Value: b}, true
}

// createAndStartType is the options type asking edged-shim to create and
// start a task in one call.
const createAndStartType = "edged.shim.v1.CreateAndStart"

// unknownCreateAndStart reports whether err is a shim's rejection of
// CreateAndStart options it does not know (an older edged-shim).
func unknownCreateAndStart(err error) bool {
	return errdefs.IsInvalidArgument(err) && strings.Contains(err.Error(), "unsupported type") && strings.Contains(err.Error(), createAndStartType)
}

// writeSpec writes the bundle's config.json: o.Spec, or what o.Prepare
// returns.
func (m *Manager) writeSpec(ctx context.Context, bundle string, o CreateOpts) error {
	spec := o.Spec
	if o.Prepare != nil {
		var err error
		if spec, err = o.Prepare(ctx); err != nil {
			return err
		}
	}
	// Written in place, not through a temporary file and a rename: the
	// bundle is new and used only once Create saved the task's bootstrap
	// data, and Recover removes every bundle without it, so a torn spec
	// is never read (two fewer file system operations per task).
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), spec, 0o600); err != nil {
		return fmt.Errorf("write bundle spec: %w", err)
	}
	return nil
}

func (m *Manager) shimFor(ctx context.Context, t *task) (*shimConn, error) {
	if t.Runtime != NativeRuntime {
		binary, err := ShimBinaryFor(t.Runtime)
		if err != nil {
			return nil, err
		}
		sc, err := m.startV2Shim(ctx, t.Namespace, t.ID, t.Bundle, binary)
		if err != nil {
			return nil, err
		}
		m.mu.Lock()
		m.shims[sc.key] = sc
		m.mu.Unlock()
		return sc, nil
	}
	// Two creates in a new group must not both start its shim: the second
	// would take over the group's socket path, leaving the first shim's
	// containers unreachable after an edged restart. The first starts it;
	// the others wait for it.
	k := key(t.Namespace, t.Group)
	for {
		m.mu.Lock()
		sc, wait := m.shims[k], m.starting[k]
		m.mu.Unlock()
		if sc != nil && !sc.isDead() {
			return sc, nil
		}
		if wait != nil {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		m.mu.Lock()
		if m.shims[k] != sc || m.starting[k] != nil {
			m.mu.Unlock()
			continue // changed meanwhile: look again
		}
		done := make(chan struct{})
		m.starting[k] = done
		m.mu.Unlock()
		sc, err := m.startNativeShim(ctx, t.Namespace, t.Group)
		m.mu.Lock()
		delete(m.starting, k)
		if err == nil {
			m.shims[k] = sc
		}
		m.mu.Unlock()
		close(done)
		return sc, err
	}
}

func (s *shimConn) isDead() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead
}

func (m *Manager) saveBootstrap(t *task) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(m.bootstrapPath(t.Namespace, t.ID)), 0o700); err != nil {
		return err
	}
	return atomicfile.Replace(m.bootstrapPath(t.Namespace, t.ID), b, 0o600)
}

// get returns a live task.
func (m *Manager) get(ns, id string) (*task, error) {
	if err := identifiers.Validate("container_id", id); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tasks[key(ns, id)]
	if !ok || t.shim == nil {
		return nil, fmt.Errorf("task %q in namespace %q: %w", id, ns, errdefs.ErrNotFound)
	}
	if t.creating {
		// Not the shim's to answer: until its container is registered
		// it says NotFound, which Delete would take for a task deleted
		// in the shim and release the task being created.
		return nil, fmt.Errorf("task %q in namespace %q is being created: %w", id, ns, errdefs.ErrUnavailable)
	}
	return t, nil
}

// call runs fn against the task's shim with the call deadline and turns a
// shim that does not answer into a dead one.
func (m *Manager) call(ctx context.Context, ns, id, op string, fn func(context.Context, taskapi.TaskService) error) error {
	t, err := m.get(ns, id)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	if err := fn(cctx, t.shim.task); err != nil {
		return m.callError(ctx, t.shim, op, err)
	}
	return nil
}

// callError types a shim error; a deadline or a lost connection marks the
// shim dead and cleans up its tasks.
func (m *Manager) callError(ctx context.Context, sc *shimConn, op string, err error) error {
	err = errdefs.FromStatus(err)
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	// A closed connection means the shim is gone (it exited or was
	// killed), usually noticed at once: saying it did not answer within
	// the call timeout would send whoever reads the error looking for a
	// hung shim.
	if isConnError(err) {
		m.log.Error("shim connection closed; treating it as dead", "shim", sc.key, "op", op, "error", err)
		if sc.markDead() {
			go m.cleanupShim(context.WithoutCancel(ctx), sc)
		}
		return fmt.Errorf("shim %s exited (connection closed) before answering %s (%v); it is treated as dead: %w", sc.key, op, err, errdefs.ErrUnavailable)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		m.log.Error("shim did not answer; treating it as dead", "shim", sc.key, "op", op, "error", err)
		if sc.markDead() {
			go m.cleanupShim(context.WithoutCancel(ctx), sc)
		}
		return fmt.Errorf("shim %s did not answer %s within %v (%v); it is treated as dead: %w", sc.key, op, m.cfg.CallTimeout, err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func isConnError(err error) bool {
	if errors.Is(err, rpc.ErrClosed) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe")
}

// Task operations.

// Start starts the init process (exec empty) or an exec.
func (m *Manager) Start(ctx context.Context, ns, id, exec string) (uint32, error) {
	var pid uint32
	err := m.call(ctx, ns, id, "start", func(ctx context.Context, s taskapi.TaskService) error {
		r, err := s.Start(ctx, &taskapi.StartRequest{Id: id, ExecId: exec})
		if err == nil {
			pid = r.Pid
		}
		return err
	})
	return pid, err
}

// State returns the state of a process.
func (m *Manager) State(ctx context.Context, ns, id, exec string) (*taskapi.StateResponse, error) {
	var st *taskapi.StateResponse
	err := m.call(ctx, ns, id, "state", func(ctx context.Context, s taskapi.TaskService) (err error) {
		st, err = s.State(ctx, &taskapi.StateRequest{Id: id, ExecId: exec})
		return err
	})
	return st, err
}

// Kill signals a process.
func (m *Manager) Kill(ctx context.Context, ns, id, exec string, sig uint32, all bool) error {
	return m.call(ctx, ns, id, "kill", func(ctx context.Context, s taskapi.TaskService) error {
		_, err := s.Kill(ctx, &taskapi.KillRequest{Id: id, ExecId: exec, Signal: sig, All: all})
		return err
	})
}

// Exec adds an exec process.
func (m *Manager) Exec(ctx context.Context, ns, id string, r *taskapi.ExecProcessRequest) error {
	r.Id = id
	return m.call(ctx, ns, id, "exec", func(ctx context.Context, s taskapi.TaskService) error {
		_, err := s.Exec(ctx, r)
		return err
	})
}

// Pause freezes the task.
func (m *Manager) Pause(ctx context.Context, ns, id string) error {
	return m.call(ctx, ns, id, "pause", func(ctx context.Context, s taskapi.TaskService) error {
		_, err := s.Pause(ctx, &taskapi.PauseRequest{Id: id})
		return err
	})
}

// Resume thaws the task.
func (m *Manager) Resume(ctx context.Context, ns, id string) error {
	return m.call(ctx, ns, id, "resume", func(ctx context.Context, s taskapi.TaskService) error {
		_, err := s.Resume(ctx, &taskapi.ResumeRequest{Id: id})
		return err
	})
}

// Pids lists the task's processes.
func (m *Manager) Pids(ctx context.Context, ns, id string) (*taskapi.PidsResponse, error) {
	var r *taskapi.PidsResponse
	err := m.call(ctx, ns, id, "pids", func(ctx context.Context, s taskapi.TaskService) (err error) {
		r, err = s.Pids(ctx, &taskapi.PidsRequest{Id: id})
		return err
	})
	return r, err
}

// Update changes the task's resources.
func (m *Manager) Update(ctx context.Context, ns, id string, resources *types.Any, annotations map[string]string) error {
	return m.call(ctx, ns, id, "update", func(ctx context.Context, s taskapi.TaskService) error {
		_, err := s.Update(ctx, &taskapi.UpdateTaskRequest{Id: id, Resources: resources, Annotations: annotations})
		return err
	})
}

// ResizePty resizes a process's terminal.
func (m *Manager) ResizePty(ctx context.Context, ns, id, exec string, w, h uint32) error {
	return m.call(ctx, ns, id, "resize pty", func(ctx context.Context, s taskapi.TaskService) error {
		_, err := s.ResizePty(ctx, &taskapi.ResizePtyRequest{Id: id, ExecId: exec, Width: w, Height: h})
		return err
	})
}

// CloseIO closes a process's stdin.
func (m *Manager) CloseIO(ctx context.Context, ns, id, exec string) error {
	return m.call(ctx, ns, id, "close io", func(ctx context.Context, s taskapi.TaskService) error {
		_, err := s.CloseIO(ctx, &taskapi.CloseIORequest{Id: id, ExecId: exec, Stdin: true})
		return err
	})
}

// Wait blocks until the process exits or ctx ends. It has no call
// deadline of its own: waiting for an exit may take long, and ctx carries
// the API request's deadline.
func (m *Manager) Wait(ctx context.Context, ns, id, exec string) (*taskapi.WaitResponse, error) {
	t, err := m.get(ns, id)
	if err != nil {
		return nil, err
	}
	r, err := t.shim.task.Wait(ctx, &taskapi.WaitRequest{Id: id, ExecId: exec})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("wait: %w", ctx.Err())
		}
		return nil, m.callError(ctx, t.shim, "wait", err)
	}
	return r, nil
}

// Delete deletes an exited task (or exec): the shim deletes the runc
// container and unmounts the rootfs; edged removes the bundle and the
// bootstrap, and lets the shim go when it serves nothing else. An init the
// shim does not have (any more) is released and reported deleted.
func (m *Manager) Delete(ctx context.Context, ns, id, exec string) (*taskapi.DeleteResponse, error) {
	t, err := m.get(ns, id)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	r, err := t.shim.task.Delete(cctx, &taskapi.DeleteRequest{Id: id, ExecId: exec})
	if err != nil {
		err = errdefs.FromStatus(err)
		if exec == "" && errdefs.IsNotFound(err) {
			// The shim no longer has the init: it was deleted there (by an
			// edged killed before it removed the task's bootstrap, or by
			// another client of the shim). Deleting it is done; only edged's
			// record of it is left to release, else the task could never
			// be deleted, nor its container removed.
			if !m.release(ctx, t) {
				// A concurrent Delete released it first.
				return nil, fmt.Errorf("task %q in namespace %q: %w", id, ns, errdefs.ErrNotFound)
			}
			m.log.Warn("task already deleted in its shim; released it", "namespace", ns, "id", id, "shim", t.shim.key)
			// Its exit status is not known any more: 255, as for a task
			// of a dead shim.
			return &taskapi.DeleteResponse{Pid: t.Pid, ExitStatus: 255, ExitedAt: protoconv.Timestamp(time.Now())}, nil
		}
		return nil, m.callError(ctx, t.shim, "delete", err)
	}
	if exec != "" {
		return r, nil
	}
	m.release(ctx, t)
	return r, nil
}

// failCreate undoes a Create that failed, while the task's ID is still
// reserved (nothing of a new task of the same ID can be touched): the
// daemon's set-up (undo, when not nil), the task in its shim (a dead
// shim's container is force-deleted: shimDead leaves a task in Create to
// it; a live shim lets the task go, and is recycled or stopped when idle),
// the bundle and the bootstrap. Then it frees the ID.
func (m *Manager) failCreate(ctx context.Context, t *task, undo func(context.Context)) {
	if undo != nil {
		undo(ctx)
	}
	m.mu.Lock()
	sc := t.shim
	m.mu.Unlock()
	switch {
	case sc == nil:
		m.removeBundle(t.Bundle)
	case sc.isDead():
		m.removeTask(ctx, t)
		sc.mu.Lock()
		delete(sc.refs, t.ID)
		sc.mu.Unlock()
	default:
		m.letGo(ctx, t)
	}
	m.mu.Lock()
	if m.tasks[key(t.Namespace, t.ID)] == t {
		delete(m.tasks, key(t.Namespace, t.ID))
	}
	m.mu.Unlock()
}

// release forgets a deleted task and shuts its shim down when idle. It
// reports false, doing nothing, when the task was released already.
func (m *Manager) release(ctx context.Context, t *task) bool {
	m.mu.Lock()
	if m.tasks[key(t.Namespace, t.ID)] != t || t.creating {
		// In Create (failCreate undoes it), or released already (two
		// deletes of a task its shim no longer has), or its shim was
		// found dead and shimDead cleaned it up: a second release would
		// let the shim go again, or remove the files of a new task of
		// the same ID.
		m.mu.Unlock()
		return false
	}
	delete(m.tasks, key(t.Namespace, t.ID))
	m.mu.Unlock()
	m.letGo(ctx, t)
	return true
}

// letGo removes a task's bootstrap and bundle and its reference on its
// shim, which is recycled as the spare or shut down when idle. The caller
// removed the task's entry, or holds it until letGo returns.
func (m *Manager) letGo(ctx context.Context, t *task) {
	os.Remove(m.bootstrapPath(t.Namespace, t.ID))
	m.discardBundle(t.Bundle)
	sc := t.shim
	if sc == nil {
		return
	}
	sc.mu.Lock()
	delete(sc.refs, t.ID)
	idle := len(sc.refs) == 0
	sc.mu.Unlock()
	if !idle {
		return
	}
	if m.recycle(sc) {
		return
	}
	m.mu.Lock()
	if m.shims[sc.key] == sc {
		delete(m.shims, sc.key)
	}
	m.mu.Unlock()
	if !sc.native {
		// A containerd shim's `start` hands out the socket of a shim still
		// listening at its address: this one must be gone first.
		m.stopShim(ctx, sc, t.ID)
		return
	}
	// An edged-shim is let go in the background (its exit takes a few ms
	// nobody needs to wait for). Its socket path and log go first: a new
	// task of the same group may start a shim at the same path at once;
	// the old shim removes the path on exit only while it is still its own.
	os.Remove(sc.address)
	os.Remove(sc.address + ".log")
	m.background(func() { m.stopShim(context.WithoutCancel(ctx), sc, t.ID) })
}

// background runs fn in a goroutine Close waits for; once the manager is
// closed it runs fn at once (a request finishing during shutdown).
func (m *Manager) background(fn func()) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		fn()
		return
	}
	m.stopping.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.stopping.Done()
		fn()
	}()
}

// stopShim asks an idle shim to exit and collects it; one that does not
// answer within the call timeout is killed.
func (m *Manager) stopShim(ctx context.Context, sc *shimConn, id string) {
	cctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	_, err := sc.task.Shutdown(cctx, &taskapi.ShutdownRequest{Id: id})
	sc.closeClient()
	if err != nil && errors.Is(errdefs.FromStatus(err), context.DeadlineExceeded) && sc.pid > 0 {
		m.log.Warn("shim did not shut down; killing it", "shim", sc.key, "pid", sc.pid, "error", err)
		syscall.Kill(sc.pid, syscall.SIGKILL)
	}
	sc.reap()
}

// removeBundle removes a task's bundle directory without ever deleting
// through its rootfs: the shim unmounts the rootfs, and when that failed
// (or the shim is gone) the rootfs may still show the container's files —
// an image snapshot or, with --rootfs, a directory of the user's. It is
// detached and must then be an empty directory; if it is not, the bundle is
// left in place with a warning.
func (m *Manager) removeBundle(dir string) {
	rootfs := filepath.Join(dir, "rootfs")
	err := unix.Rmdir(rootfs)
	if err == unix.EBUSY {
		unix.Unmount(rootfs, unix.MNT_DETACH)
		err = unix.Rmdir(rootfs)
	}
	if err != nil && err != unix.ENOENT {
		m.log.Warn("bundle left in place: its rootfs is not an empty directory", "bundle", dir, "error", err)
		return
	}
	os.RemoveAll(dir)
}

// discardBundle moves a deleted task's bundle to <state>/trash and removes
// it in the background (Close waits for that; Recover empties the trash): a
// task of the same ID may be created at once, and removing the files, on a
// flash card at times after a wait for the file system's journal, is
// nobody's wait.
func (m *Manager) discardBundle(dir string) {
	var r [8]byte
	rand.Read(r[:])
	trash := filepath.Join(m.cfg.State, "trash", hex.EncodeToString(r[:]))
	if err := os.Rename(dir, trash); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			m.removeBundle(dir)
		}
		return
	}
	m.background(func() { m.removeBundle(trash) })
}

// emptyTrash removes the bundles a previous edged discarded but had not
// removed yet.
func (m *Manager) emptyTrash() {
	dir := filepath.Join(m.cfg.State, "trash")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		m.removeBundle(filepath.Join(dir, e.Name()))
	}
}

// shimDead cleans up after a shim that is gone or hung: it kills it,
// force-deletes its containers and removes their bundles. A second call
// (or one after markDead) does nothing.
func (m *Manager) shimDead(ctx context.Context, sc *shimConn) {
	if sc.markDead() {
		m.cleanupShim(ctx, sc)
	}
}

// markDead marks the shim dead; it reports whether it was the first to.
// Once it returns, a failing Create sees the shim dead (failCreate).
func (s *shimConn) markDead() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return false
	}
	s.dead = true
	return true
}

// cleanupShim is shimDead's work, for a shim markDead marked.
func (m *Manager) cleanupShim(ctx context.Context, sc *shimConn) {
	sc.mu.Lock()
	ids := make([]string, 0, len(sc.refs))
	for id := range sc.refs {
		ids = append(ids, id)
	}
	sc.mu.Unlock()
	sc.closeClient()
	if sc.pid > 0 {
		syscall.Kill(sc.pid, syscall.SIGKILL)
	}
	sc.reap()
	// Each task's entry is replaced by a reservation of its ID (no shim:
	// the task is gone for every call) until its clean-up is over, so
	// that a task of the same ID cannot be created meanwhile: its fresh
	// bundle and network would be what the clean-up removes. A task
	// still in Create is left to it: its failure path (failCreate) cleans
	// up while its own reservation holds the ID.
	m.mu.Lock()
	if m.shims[sc.key] == sc {
		delete(m.shims, sc.key)
	}
	var tasks []*task
	for _, id := range ids {
		if t, ok := m.tasks[key(sc.ns, id)]; ok && t.shim == sc && !t.creating {
			tasks = append(tasks, t)
		}
	}
	m.mu.Unlock()
	for _, t := range tasks {
		m.deadTask(ctx, t)
	}
	if sc.native {
		os.Remove(sc.address)
	}
}

// deadTask cleans up after task t of a dead shim (cleanupTask) while a
// reservation holds its ID, then frees the ID and reports the task gone
// (taskGone). It does nothing when t's entry is gone already (cleaned up,
// or released).
func (m *Manager) deadTask(ctx context.Context, t *task) {
	k := key(t.Namespace, t.ID)
	held := &task{Namespace: t.Namespace, ID: t.ID, dead: true}
	m.mu.Lock()
	if m.tasks[k] != t {
		m.mu.Unlock()
		return
	}
	m.tasks[k] = held
	m.mu.Unlock()
	m.cleanupTask(ctx, t)
	m.mu.Lock()
	if m.tasks[k] == held {
		delete(m.tasks, k)
	}
	m.mu.Unlock()
	m.taskGone(t)
}

// cleanupTask removes what a task of a dead shim left (removeTask); then
// OnDead undoes what the daemon set up for it. The caller holds the task's
// ID (see cleanupShim) and calls taskGone after freeing it.
func (m *Manager) cleanupTask(ctx context.Context, t *task) {
	m.removeTask(ctx, t)
	if m.cfg.OnDead != nil {
		m.cfg.OnDead(t.Namespace, t.ID)
	}
}

// removeTask removes what a task of a dead shim left: the runc container,
// the rootfs mounts, the bundle and the bootstrap.
func (m *Manager) removeTask(ctx context.Context, t *task) {
	if t.Native {
		m.deleteNative(ctx, m.log, t.Namespace, t.ID, t.Bundle)
	} else if t.Binary != "" {
		m.deleteV2(ctx, m.log, t.Namespace, t.ID, t.Bundle, t.Binary)
	}
	m.removeBundle(t.Bundle)
	os.Remove(m.bootstrapPath(t.Namespace, t.ID))
}

// taskGone reports a dead shim's task cleaned up and its ID free.
func (m *Manager) taskGone(t *task) {
	if m.cfg.OnGone != nil {
		m.cfg.OnGone(t.Namespace, t.ID, t.Pid)
	}
}

// IDs lists the IDs of the tasks in a namespace.
func (m *Manager) IDs(ns string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for _, t := range m.tasks {
		if t.Namespace == ns && t.shim != nil && !t.creating {
			ids = append(ids, t.ID)
		}
	}
	sort.Strings(ids)
	return ids
}

// Has reports whether a task exists.
func (m *Manager) Has(ns, id string) bool {
	if identifiers.Validate("container_id", id) != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tasks[key(ns, id)]
	return ok && t.shim != nil // a task in Create with its shim counts
}

// Pid returns the init pid recorded at create (0 if there is no task). It
// needs no call to the shim.
func (m *Manager) Pid(ns, id string) uint32 {
	t, err := m.get(ns, id)
	if err != nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return t.Pid
}

// ShimPid returns the pid of a task's shim process (0 if unknown).
func (m *Manager) ShimPid(ns, id string) int {
	t, err := m.get(ns, id)
	if err != nil {
		return 0
	}
	return t.shim.pid
}

// Close closes the connections to the shims; the shims and their
// containers keep running. Spare shims are shut down.
func (m *Manager) Close() {
	m.mu.Lock()
	if !m.closed {
		close(m.closing)
	}
	m.closed = true
	for ns, t := range m.fillTimers {
		t.Stop()
		delete(m.fillTimers, ns)
	}
	spares := m.spares
	m.spares = map[string]*spare{}
	shims := make([]*shimConn, 0, len(m.shims))
	for _, sc := range m.shims {
		shims = append(shims, sc)
	}
	m.mu.Unlock()
	m.fills.Wait() // a spare started meanwhile stops itself
	for _, sp := range spares {
		m.stopSpare(sp.sc)
	}
	for _, sc := range shims {
		sc.closeClient()
	}
	m.stopping.Wait()
}
