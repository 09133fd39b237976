package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	ptypes "github.com/gogo/protobuf/types"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/namespaces"
	containersapi "github.com/edged/edged/proto/services/containers/v1"
	api "github.com/edged/edged/proto/services/tasks/v1"
	ptypesapi "github.com/edged/edged/proto/types"
)

// Process is a task's process as the API reports it.
type Process = api.Process

// TaskOpts configure CreateTask.
type TaskOpts struct {
	// IO: fifo paths from NewFIFOs; all empty means detached with output
	// to the container's log file.
	Stdin, Stdout, Stderr string
	Terminal              bool
	// Rootfs overrides the container's snapshot mounts.
	Rootfs []*ptypesapi.Mount
	// Start starts the task too (CreateTask returns once it runs): one
	// call instead of CreateTask then StartTask, and with edged-shim one
	// runtime invocation instead of two.
	Start bool
	// Container, when set, is created in the same call, before its task
	// (as CreateFromImage would), and deleted again if the task cannot be
	// created. CreateTask's id may then be empty.
	Container *containersapi.CreateFromImageRequest
}

// CreateFromImage creates a container from an image (or a host rootfs
// directory) with spec options, the way `edgectl run` does.
func (c *Client) CreateFromImage(ctx context.Context, r *containersapi.CreateFromImageRequest) (*Container, error) {
	resp, err := c.containers.CreateFromImage(c.nsctx(ctx), r)
	if err != nil {
		return nil, convertError(err)
	}
	return resp.Container, nil
}

func (c *Client) tasksClient() api.TasksClient { return api.NewTasksClient(c.caller) }

// CreateTask creates the task of a container and returns its pid.
func (c *Client) CreateTask(ctx context.Context, id string, o TaskOpts) (uint32, error) {
	r, err := c.tasksClient().Create(c.nsctx(ctx), &api.CreateTaskRequest{ContainerId: id, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, Terminal: o.Terminal, Rootfs: o.Rootfs, Start: o.Start, Container: o.Container})
	if err != nil {
		return 0, convertError(err)
	}
	return r.Pid, nil
}

// StartTask starts a created task (exec empty) or an exec.
func (c *Client) StartTask(ctx context.Context, id, exec string) (uint32, error) {
	r, err := c.tasksClient().Start(c.nsctx(ctx), &api.StartRequest{ContainerId: id, ExecId: exec})
	if err != nil {
		return 0, convertError(err)
	}
	return r.Pid, nil
}

// Kill sends a signal to a task's process (all: to every process).
func (c *Client) Kill(ctx context.Context, id, exec string, signal uint32, all bool) error {
	_, err := c.tasksClient().Kill(c.nsctx(ctx), &api.KillRequest{ContainerId: id, ExecId: exec, Signal: signal, All: all})
	return convertError(err)
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	Code     uint32
	ExitedAt time.Time
}

// Wait blocks until the process exits. Without a deadline on ctx it waits
// up to a day (the daemon's longest).
func (c *Client) Wait(ctx context.Context, id, exec string) (ExitStatus, error) {
	return c.wait(ctx, &api.WaitRequest{ContainerId: id, ExecId: exec})
}

// WaitDelete waits as Wait does, then has the daemon delete the process
// (the task, or the exec) and, with container (task only), the container,
// before it replies: what a foreground `run --rm` needs, in one call. If the
// deletion fails the error says so and includes the exit status.
func (c *Client) WaitDelete(ctx context.Context, id, exec string, container bool) (ExitStatus, error) {
	return c.wait(ctx, &api.WaitRequest{ContainerId: id, ExecId: exec, Delete: true, DeleteContainer: container})
}

func (c *Client) wait(ctx context.Context, req *api.WaitRequest) (ExitStatus, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 24*time.Hour)
		defer cancel()
	}
	r, err := c.tasksClient().Wait(c.nsctx(ctx), req)
	if err != nil {
		return ExitStatus{}, convertError(err)
	}
	return ExitStatus{Code: r.ExitStatus, ExitedAt: timeOf(r.ExitedAt)}, nil
}

func timeOf(ts *ptypes.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return time.Unix(ts.Seconds, int64(ts.Nanos))
}

// DeleteTask deletes an exited task (force: kill it first) and returns its
// exit status.
func (c *Client) DeleteTask(ctx context.Context, id string, force bool) (ExitStatus, error) {
	r, err := c.tasksClient().Delete(c.nsctx(ctx), &api.DeleteTaskRequest{ContainerId: id, Force: force})
	if err != nil {
		return ExitStatus{}, convertError(err)
	}
	return ExitStatus{Code: r.ExitStatus, ExitedAt: timeOf(r.ExitedAt)}, nil
}

// GetTask returns a task's init process (exec empty) or an exec.
func (c *Client) GetTask(ctx context.Context, id, exec string) (*Process, error) {
	r, err := c.tasksClient().Get(c.nsctx(ctx), &api.GetRequest{ContainerId: id, ExecId: exec})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Process, nil
}

// ListTasks lists the tasks of the namespace.
func (c *Client) ListTasks(ctx context.Context, filters ...string) ([]*Process, error) {
	r, err := c.tasksClient().List(c.nsctx(ctx), &api.ListTasksRequest{Filters: filters})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Tasks, nil
}

// Exec adds a process to a running task; start it with StartTask(id, execID).
func (c *Client) Exec(ctx context.Context, id, execID string, p *specs.Process, o TaskOpts) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = c.tasksClient().Exec(c.nsctx(ctx), &api.ExecProcessRequest{
		ContainerId: id, ExecId: execID, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, Terminal: o.Terminal,
		Spec: &ptypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: b},
	})
	return convertError(err)
}

// DeleteExec removes an exited exec process.
func (c *Client) DeleteExec(ctx context.Context, id, execID string) (ExitStatus, error) {
	r, err := c.tasksClient().DeleteProcess(c.nsctx(ctx), &api.DeleteProcessRequest{ContainerId: id, ExecId: execID})
	if err != nil {
		return ExitStatus{}, convertError(err)
	}
	return ExitStatus{Code: r.ExitStatus, ExitedAt: timeOf(r.ExitedAt)}, nil
}

// Pause freezes a task; Resume thaws it.
func (c *Client) Pause(ctx context.Context, id string) error {
	_, err := c.tasksClient().Pause(c.nsctx(ctx), &api.PauseTaskRequest{ContainerId: id})
	return convertError(err)
}

// Resume thaws a paused task.
func (c *Client) Resume(ctx context.Context, id string) error {
	_, err := c.tasksClient().Resume(c.nsctx(ctx), &api.ResumeTaskRequest{ContainerId: id})
	return convertError(err)
}

// Pids lists a task's processes.
func (c *Client) Pids(ctx context.Context, id string) ([]*api.ProcessInfo, error) {
	r, err := c.tasksClient().ListPids(c.nsctx(ctx), &api.ListPidsRequest{ContainerId: id})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Processes, nil
}

// UpdateResources changes a running task's resources.
func (c *Client) UpdateResources(ctx context.Context, id string, res *specs.LinuxResources) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = c.tasksClient().Update(c.nsctx(ctx), &api.UpdateTaskRequest{ContainerId: id, Resources: &ptypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: b}})
	return convertError(err)
}

// ResizePty resizes a process's terminal.
func (c *Client) ResizePty(ctx context.Context, id, exec string, width, height uint32) error {
	_, err := c.tasksClient().ResizePty(c.nsctx(ctx), &api.ResizePtyRequest{ContainerId: id, ExecId: exec, Width: width, Height: height})
	return convertError(err)
}

// CloseStdin closes a process's stdin.
func (c *Client) CloseStdin(ctx context.Context, id, exec string) error {
	_, err := c.tasksClient().CloseIO(c.nsctx(ctx), &api.CloseIORequest{ContainerId: id, ExecId: exec, Stdin: true})
	return convertError(err)
}

// Metrics returns the cgroup statistics of the namespace's running tasks.
func (c *Client) Metrics(ctx context.Context, filters ...string) ([]*ptypesapi.Metrics, error) {
	r, err := c.tasksClient().Metrics(c.nsctx(ctx), &api.MetricsRequest{Filters: filters})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Metrics, nil
}

// Logs writes a detached container's log to w: the last tail lines
// (tail < 0: all), and with follow new output until the task exits.
func (c *Client) Logs(ctx context.Context, id string, follow bool, tail int64, w io.Writer) error {
	ns, ok := namespaces.Namespace(ctx)
	if !ok {
		ns = c.namespace
	}
	stream, err := c.tasksClient().Logs(ctx, &api.LogsRequest{ContainerId: id, Follow: follow, Tail: tail, Namespace: ns})
	if err != nil {
		return convertError(err)
	}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return convertError(err)
		}
		if _, err := w.Write(chunk.Data); err != nil {
			return fmt.Errorf("write logs: %w", err)
		}
	}
}
