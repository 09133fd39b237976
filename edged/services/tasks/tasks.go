// Package tasks serves the Tasks API: it turns containers into running
// tasks through the runtime manager and its shims.
package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	ptypes "github.com/gogo/protobuf/types"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/events"
	"github.com/edged/edged/edged/filters"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/edged/runtime"
	"github.com/edged/edged/proto/rpc"
	runcopts "github.com/edged/edged/proto/runtime/runc/v1"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	containersapi "github.com/edged/edged/proto/services/containers/v1"
	api "github.com/edged/edged/proto/services/tasks/v1"
	ptypesapi "github.com/edged/edged/proto/types"
)

// RootfsFunc returns the rootfs mounts of a container (its snapshot).
type RootfsFunc func(ctx context.Context, ns string, c metadata.Container) ([]*ptypesapi.Mount, error)

// MetricsFunc reads the cgroup statistics of a task.
type MetricsFunc func(ctx context.Context, ns, id string, pid uint32) (*ptypesapi.Metrics, error)

// Network attaches tasks to networks. Setup runs before the task is
// created: it may change the OCI spec (e.g. point the network namespace at
// a path it prepared, add /etc/resolv.conf and /etc/hosts bind mounts) and
// returns the addresses to show. Teardown runs after the task is deleted
// and must be idempotent. IPs reports a running task's addresses.
type Network interface {
	Setup(ctx context.Context, ns string, c metadata.Container, spec *specs.Spec, bundle string) error
	Teardown(ctx context.Context, ns, id string) error
	IPs(ns, id string) []string
}

// Config wires the service.
type Config struct {
	DB      *metadata.DB
	Runtime *runtime.Manager
	Events  *events.Exchange
	// LogDir holds detached containers' logs: <LogDir>/<ns>/<id>/container.log.
	LogDir      string
	LogMaxSize  int64
	LogMaxFiles int
	Rootfs      RootfsFunc
	Metrics     MetricsFunc
	// Network, when set, sets up and tears down task networking.
	Network Network
	// Containers, when set, creates the container of a Create that carries
	// one and deletes the container of a Wait with delete_container.
	Containers Containers
	Log        *slog.Logger
}

// Containers is the part of the Containers service that one-call runs use.
type Containers interface {
	CreateFromImage(ctx context.Context, r *containersapi.CreateFromImageRequest) (*containersapi.CreateContainerResponse, error)
	Delete(ctx context.Context, r *containersapi.DeleteContainerRequest) (*ptypes.Empty, error)
}

type service struct{ Config }

// Register adds the Tasks service to srv.
func Register(srv rpc.Registrar, cfg Config) {
	if cfg.LogMaxSize <= 0 {
		cfg.LogMaxSize = 1 << 20
	}
	if cfg.LogMaxFiles <= 0 {
		cfg.LogMaxFiles = 3
	}
	api.RegisterTasksService(srv, &service{cfg})
}

// LogPath is the log file of a detached container.
func LogPath(dir, ns, id string) string {
	return filepath.Join(dir, ns, id, "container.log")
}

func (s *service) container(ctx context.Context, id string) (string, metadata.Container, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", metadata.Container{}, err
	}
	if err := identifiers.Validate("container_id", id); err != nil {
		return "", metadata.Container{}, err
	}
	var c metadata.Container
	err = s.DB.View(ctx, func(tx *metadata.Tx) (err error) {
		c, err = tx.GetContainer(ctx, ns, id)
		return err
	})
	return ns, c, err
}

func nsID(ctx context.Context, id string) (string, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	if err := identifiers.Validate("container_id", id); err != nil {
		return "", err
	}
	return ns, nil
}

func (s *service) Create(ctx context.Context, r *api.CreateTaskRequest) (_ *api.CreateTaskResponse, retErr error) {
	if r.Container != nil {
		if s.Containers == nil {
			return nil, fmt.Errorf("creating a container with its task: %w", errdefs.ErrNotImplemented)
		}
		if r.ContainerId == "" {
			r.ContainerId = r.Container.Id
		}
		if r.ContainerId != r.Container.Id {
			return nil, errdefs.InvalidArgument("container_id", "%q differs from the id %q of the container to create", r.ContainerId, r.Container.Id)
		}
		if _, err := s.Containers.CreateFromImage(ctx, r.Container); err != nil {
			return nil, err
		}
		defer func() {
			if retErr == nil {
				return
			}
			if _, err := s.Containers.Delete(context.WithoutCancel(ctx), &containersapi.DeleteContainerRequest{Id: r.ContainerId}); err != nil {
				s.Log.Warn("cannot delete the container of a failed task create", "id", r.ContainerId, "error", err)
			}
		}()
	}
	ns, c, err := s.container(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	if len(c.Spec) == 0 {
		return nil, fmt.Errorf("container %q has no OCI spec: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	rootfs := r.Rootfs
	if len(rootfs) == 0 && c.SnapshotKey != "" {
		if s.Rootfs == nil {
			return nil, fmt.Errorf("container %q has snapshot %q but no snapshotter is configured: %w", c.ID, c.SnapshotKey, errdefs.ErrFailedPrecondition)
		}
		if rootfs, err = s.Rootfs(ctx, ns, c); err != nil {
			return nil, err
		}
	}
	stdin, stdout, stderr := r.Stdin, r.Stdout, r.Stderr
	if stdin == "" && stdout == "" && stderr == "" && !r.Terminal {
		// Detached: output goes to a size-rotated log file.
		p := LogPath(s.LogDir, ns, c.ID)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, fmt.Errorf("log directory: %w", err)
		}
		uri := "file://" + p + "?max-size=" + strconv.FormatInt(s.LogMaxSize, 10) + "&max-files=" + strconv.Itoa(s.LogMaxFiles)
		stdout, stderr = uri, uri
	}
	opts := r.Options
	if opts == nil && len(c.Runtime.Options) > 0 {
		a := &ptypes.Any{}
		if err := a.Unmarshal(c.Runtime.Options); err == nil {
			opts = a
		}
	}
	co := runtime.CreateOpts{
		Runtime: c.Runtime.Name, Group: c.Labels[runtime.GroupLabel], Spec: c.Spec, Rootfs: rootfs,
		Stdin: stdin, Stdout: stdout, Stderr: stderr, Terminal: r.Terminal, Options: opts, Start: r.Start,
	}
	if s.Network != nil {
		// The network is set up while the task's shim starts. A failed
		// Create tears it down while the ID is still reserved (Undo runs
		// only after Prepare did: a task that exists already keeps its
		// network, and a new one of the same ID cannot lose its own).
		co.Prepare = func(ctx context.Context) ([]byte, error) {
			var sp specs.Spec
			if err := json.Unmarshal(c.Spec, &sp); err != nil {
				return nil, fmt.Errorf("container %q: OCI spec: %v: %w", c.ID, err, errdefs.ErrInvalidArgument)
			}
			if err := s.Network.Setup(ctx, ns, c, &sp, s.Runtime.BundleDir(ns, c.ID)); err != nil {
				return nil, err
			}
			return json.Marshal(&sp)
		}
		co.Undo = func(ctx context.Context) {
			if err := s.Network.Teardown(ctx, ns, c.ID); err != nil {
				s.Log.Warn("network teardown of a failed create failed", "namespace", ns, "id", c.ID, "error", err)
			}
		}
	}
	pid, err := s.Runtime.Create(ctx, ns, c.ID, co)
	if err != nil {
		return nil, err
	}
	return &api.CreateTaskResponse{ContainerId: c.ID, Pid: pid}, nil
}

func (s *service) Start(ctx context.Context, r *api.StartRequest) (*api.StartResponse, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	pid, err := s.Runtime.Start(ctx, ns, r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	return &api.StartResponse{Pid: pid}, nil
}

func (s *service) Delete(ctx context.Context, r *api.DeleteTaskRequest) (*api.DeleteResponse, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	if r.Force {
		st, err := s.Runtime.State(ctx, ns, r.ContainerId, "")
		switch {
		case errdefs.IsNotFound(err):
			// No such task, or its shim no longer has it (deleted there):
			// nothing to kill; Runtime.Delete says which, and releases
			// the latter.
		case err != nil:
			return nil, err
		case st.Status != 3 && st.Status != 1:
			// Neither stopped nor created (Delete kills a created init).
			if err := s.Runtime.Kill(ctx, ns, r.ContainerId, "", 9, true); err != nil && !errdefs.IsNotFound(err) {
				return nil, err
			}
			if _, err := s.Runtime.Wait(ctx, ns, r.ContainerId, ""); err != nil {
				return nil, err
			}
		}
	}
	d, err := s.deleteTask(ctx, ns, r.ContainerId)
	if err != nil {
		return nil, err
	}
	return &api.DeleteResponse{Id: r.ContainerId, Pid: d.Pid, ExitStatus: d.ExitStatus, ExitedAt: d.ExitedAt}, nil
}

// deleteTask deletes a task whose init is not running and tears down its
// network. The network is torn down also when the task is gone already (its
// shim died): its record would otherwise stay until edged restarts. Unless
// a task of the container exists again (created meanwhile): the network is
// then that task's.
func (s *service) deleteTask(ctx context.Context, ns, id string) (*taskapi.DeleteResponse, error) {
	d, err := s.Runtime.Delete(ctx, ns, id, "")
	if err != nil && (!errdefs.IsNotFound(err) || s.Runtime.Has(ns, id)) {
		return nil, err
	}
	if s.Network != nil {
		if terr := s.Network.Teardown(ctx, ns, id); terr != nil {
			s.Log.Warn("network teardown failed", "namespace", ns, "id", id, "error", terr)
		}
	}
	if err != nil {
		return nil, err
	}
	return d, nil
}

func (s *service) DeleteProcess(ctx context.Context, r *api.DeleteProcessRequest) (*api.DeleteResponse, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	if r.ExecId == "" {
		return nil, errdefs.InvalidArgument("exec_id", "must be set; delete the task itself with Delete")
	}
	d, err := s.Runtime.Delete(ctx, ns, r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	return &api.DeleteResponse{Id: r.ExecId, Pid: d.Pid, ExitStatus: d.ExitStatus, ExitedAt: d.ExitedAt}, nil
}

func (s *service) toProcess(ns, id, exec string, st *taskapi.StateResponse) *api.Process {
	p := toProcess(id, exec, st)
	if s.Network != nil && exec == "" {
		p.Ips = s.Network.IPs(ns, id)
	}
	return p
}

func toProcess(id, exec string, st *taskapi.StateResponse) *api.Process {
	return &api.Process{
		ContainerId: id, Id: exec, Pid: st.Pid, Status: api.Status(st.Status),
		Stdin: st.Stdin, Stdout: st.Stdout, Stderr: st.Stderr, Terminal: st.Terminal,
		ExitStatus: st.ExitStatus, ExitedAt: st.ExitedAt,
	}
}

func (s *service) Get(ctx context.Context, r *api.GetRequest) (*api.GetResponse, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	st, err := s.Runtime.State(ctx, ns, r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	return &api.GetResponse{Process: s.toProcess(ns, r.ContainerId, r.ExecId, st)}, nil
}

func (s *service) List(ctx context.Context, r *api.ListTasksRequest) (*api.ListTasksResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	set, err := filters.Parse(r.Filters...)
	if err != nil {
		return nil, err
	}
	resp := &api.ListTasksResponse{}
	for _, id := range s.Runtime.IDs(ns) {
		st, err := s.Runtime.State(ctx, ns, id, "")
		if err != nil {
			if errdefs.IsNotFound(err) {
				continue // deleted meanwhile
			}
			if ctx.Err() != nil {
				return nil, err
			}
			// A shim that died or does not answer fails its own tasks'
			// calls (and is being cleaned up), not the list of all: its
			// task is listed with status UNKNOWN.
			if s.Log != nil {
				s.Log.Warn("task listed as unknown", "namespace", ns, "id", id, "error", err)
			}
			st = &taskapi.StateResponse{Pid: s.Runtime.Pid(ns, id)}
		}
		p := s.toProcess(ns, id, "", st)
		if set.Match(filters.AdaptorFunc(func(path []string) (string, bool) {
			switch path[0] {
			case "id", "container_id":
				return id, true
			case "status":
				return api.Status_name[int32(p.Status)], true
			case "pid":
				return strconv.Itoa(int(p.Pid)), true
			}
			return "", false
		})) {
			resp.Tasks = append(resp.Tasks, p)
		}
	}
	return resp, nil
}

func (s *service) Kill(ctx context.Context, r *api.KillRequest) (*ptypes.Empty, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	if r.Signal == 0 || r.Signal > 64 {
		return nil, errdefs.InvalidArgument("signal", "%d is not a signal number (1-64)", r.Signal)
	}
	return &ptypes.Empty{}, s.Runtime.Kill(ctx, ns, r.ContainerId, r.ExecId, r.Signal, r.All)
}

func (s *service) Exec(ctx context.Context, r *api.ExecProcessRequest) (*ptypes.Empty, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := identifiers.Validate("exec_id", r.ExecId); err != nil {
		return nil, err
	}
	if r.Spec == nil || len(r.Spec.Value) == 0 {
		return nil, errdefs.InvalidArgument("spec", "an OCI process spec is required")
	}
	return &ptypes.Empty{}, s.Runtime.Exec(ctx, ns, r.ContainerId, &taskapi.ExecProcessRequest{
		ExecId: r.ExecId, Terminal: r.Terminal, Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Spec: r.Spec,
	})
}

func (s *service) ResizePty(ctx context.Context, r *api.ResizePtyRequest) (*ptypes.Empty, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, s.Runtime.ResizePty(ctx, ns, r.ContainerId, r.ExecId, r.Width, r.Height)
}

func (s *service) CloseIO(ctx context.Context, r *api.CloseIORequest) (*ptypes.Empty, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	if !r.Stdin {
		return &ptypes.Empty{}, nil
	}
	return &ptypes.Empty{}, s.Runtime.CloseIO(ctx, ns, r.ContainerId, r.ExecId)
}

func (s *service) Pause(ctx context.Context, r *api.PauseTaskRequest) (*ptypes.Empty, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, s.Runtime.Pause(ctx, ns, r.ContainerId)
}

func (s *service) Resume(ctx context.Context, r *api.ResumeTaskRequest) (*ptypes.Empty, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, s.Runtime.Resume(ctx, ns, r.ContainerId)
}

func (s *service) ListPids(ctx context.Context, r *api.ListPidsRequest) (*api.ListPidsResponse, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	pr, err := s.Runtime.Pids(ctx, ns, r.ContainerId)
	if err != nil {
		return nil, err
	}
	resp := &api.ListPidsResponse{}
	for _, p := range pr.Processes {
		pi := &api.ProcessInfo{Pid: p.Pid}
		if p.Info != nil {
			var d runcopts.ProcessDetails
			if d.Unmarshal(p.Info.Value) == nil {
				pi.ExecId = d.ExecId
			}
		}
		resp.Processes = append(resp.Processes, pi)
	}
	return resp, nil
}

func (s *service) Update(ctx context.Context, r *api.UpdateTaskRequest) (*ptypes.Empty, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	if r.Resources == nil {
		return nil, errdefs.InvalidArgument("resources", "must be set")
	}
	return &ptypes.Empty{}, s.Runtime.Update(ctx, ns, r.ContainerId, r.Resources, r.Annotations)
}

func (s *service) Metrics(ctx context.Context, r *api.MetricsRequest) (*api.MetricsResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	if s.Config.Metrics == nil {
		return nil, fmt.Errorf("metrics: %w", errdefs.ErrNotImplemented)
	}
	set, err := filters.Parse(r.Filters...)
	if err != nil {
		return nil, err
	}
	// Metrics come from the cgroups of the tasks' init pids recorded at
	// create: no call to any shim, so a refresh of many tasks stays cheap.
	// A task that exited has no cgroup left and is skipped.
	resp := &api.MetricsResponse{}
	for _, id := range s.Runtime.IDs(ns) {
		if !set.Match(filters.AdaptorFunc(func(path []string) (string, bool) {
			if path[0] == "id" || path[0] == "container_id" {
				return id, true
			}
			return "", false
		})) {
			continue
		}
		pid := s.Runtime.Pid(ns, id)
		if pid == 0 {
			continue
		}
		m, err := s.Config.Metrics(ctx, ns, id, pid)
		if err != nil {
			if errdefs.IsNotFound(err) {
				continue
			}
			return nil, err
		}
		resp.Metrics = append(resp.Metrics, m)
	}
	return resp, nil
}

func (s *service) Wait(ctx context.Context, r *api.WaitRequest) (*api.WaitResponse, error) {
	ns, err := nsID(ctx, r.ContainerId)
	if err != nil {
		return nil, err
	}
	if r.DeleteContainer {
		if !r.Delete || r.ExecId != "" {
			return nil, errdefs.InvalidArgument("delete_container", "requires delete and no exec_id")
		}
		if s.Containers == nil {
			return nil, fmt.Errorf("deleting a container after its task: %w", errdefs.ErrNotImplemented)
		}
	}
	w, err := s.Runtime.Wait(ctx, ns, r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	if r.Delete {
		// The process has exited: its deletion must not be cut short by a
		// caller that gives up now (the runtime bounds its shim calls).
		dctx := context.WithoutCancel(ctx)
		what := "task"
		if r.ExecId != "" {
			what = "exec " + r.ExecId
			_, err = s.Runtime.Delete(dctx, ns, r.ContainerId, r.ExecId)
		} else {
			_, err = s.deleteTask(dctx, ns, r.ContainerId)
		}
		if err == nil && r.DeleteContainer {
			what = "container"
			_, err = s.Containers.Delete(dctx, &containersapi.DeleteContainerRequest{Id: r.ContainerId})
		}
		if err != nil {
			return nil, fmt.Errorf("%q exited with status %d; deleting its %s: %w", r.ContainerId, w.ExitStatus, what, err)
		}
	}
	return &api.WaitResponse{ExitStatus: w.ExitStatus, ExitedAt: w.ExitedAt}, nil
}
