package shimd_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"
	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
	eventtypes "github.com/edged/edged/proto/events"
	runcopts "github.com/edged/edged/proto/runtime/runc/v1"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	tasktypes "github.com/edged/edged/proto/runtime/types"
	apitypes "github.com/edged/edged/proto/types"
)

func create(t *testing.T, s *shimProc, req *taskapi.CreateTaskRequest) uint32 {
	t.Helper()
	resp, err := s.task.Create(ctxT(t, 30*time.Second), req)
	if err != nil {
		t.Fatalf("create %s: %v", req.Id, err)
	}
	if resp.Pid == 0 {
		t.Fatal("create returned pid 0")
	}
	return resp.Pid
}

func start(t *testing.T, s *shimProc, id, exec string) uint32 {
	t.Helper()
	resp, err := s.task.Start(ctxT(t, 30*time.Second), &taskapi.StartRequest{Id: id, ExecId: exec})
	if err != nil {
		t.Fatalf("start %s/%s: %v", id, exec, err)
	}
	return resp.Pid
}

func wait(t *testing.T, s *shimProc, id, exec string) *taskapi.WaitResponse {
	t.Helper()
	resp, err := s.task.Wait(ctxT(t, 30*time.Second), &taskapi.WaitRequest{Id: id, ExecId: exec})
	if err != nil {
		t.Fatalf("wait %s/%s: %v", id, exec, err)
	}
	return resp
}

func del(t *testing.T, s *shimProc, id string) *taskapi.DeleteResponse {
	t.Helper()
	resp, err := s.task.Delete(ctxT(t, 30*time.Second), &taskapi.DeleteRequest{Id: id})
	if err != nil {
		t.Fatalf("delete %s: %v", id, err)
	}
	return resp
}

// Echo through a stdout fifo, on an overlay rootfs mounted by the shim; the
// events arrive in order at a real ttrpc events server.
func TestEchoFifoOverlayAndEvents(t *testing.T) {
	ev := newEventServer(t, "")
	s := startShim(t, ev.path)
	id := randID("echo")
	b := newBundle(t, id, []string{"echo", "hello"}, true, nil)
	upper, work := filepath.Join(b, "upper"), filepath.Join(b, "work")
	os.MkdirAll(upper, 0o755)
	os.MkdirAll(work, 0o755)
	stdout, r := fifo(t, b, "stdout")
	pid := create(t, s, &taskapi.CreateTaskRequest{
		Id: id, Bundle: b, Stdout: stdout,
		Rootfs: []*apitypes.Mount{{Type: "overlay", Source: "overlay", Options: []string{
			"lowerdir=" + shared.rootfs, "upperdir=" + upper, "workdir=" + work}}},
	})
	// The rootfs is a real overlay mount now.
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if !strings.Contains(string(mounts), filepath.Join(b, "rootfs")+" ") {
		t.Fatalf("rootfs of %s not mounted", b)
	}
	st, err := s.task.State(ctxT(t, 10*time.Second), &taskapi.StateRequest{Id: id})
	if err != nil || st.Status != tasktypes.Status_CREATED || st.Pid != pid {
		t.Fatalf("state after create: %+v %v", st, err)
	}
	if got := start(t, s, id, ""); got != pid {
		t.Fatalf("start pid %d, create pid %d", got, pid)
	}
	if out := readAll(t, r, 10*time.Second); out != "hello\n" {
		t.Fatalf("output %q", out)
	}
	w := wait(t, s, id, "")
	if w.ExitStatus != 0 || w.ExitedAt == nil {
		t.Fatalf("wait: %+v", w)
	}
	st, _ = s.task.State(ctxT(t, 10*time.Second), &taskapi.StateRequest{Id: id})
	if st.Status != tasktypes.Status_STOPPED {
		t.Fatalf("state after exit: %v", st.Status)
	}
	d := del(t, s, id)
	if d.ExitStatus != 0 || d.Pid != pid || d.ExitedAt == nil || d.ExitedAt.Seconds != w.ExitedAt.Seconds {
		t.Fatalf("delete: %+v (wait %+v)", d, w)
	}
	mounts, _ = os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), filepath.Join(b, "rootfs")+" ") {
		t.Fatal("rootfs still mounted after delete")
	}
	ev.waitTopics(t, id, []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}, 10*time.Second)
	// Decode the exit as containerd would.
	ev.mu.Lock()
	exitEnv := ev.events[2]
	ev.mu.Unlock()
	if exitEnv.Event.TypeUrl != "containerd.events.TaskExit" || exitEnv.Namespace != "test" {
		t.Fatalf("exit envelope: %s %s", exitEnv.Event.TypeUrl, exitEnv.Namespace)
	}
	var exit eventtypes.TaskExit
	if err := exit.Unmarshal(exitEnv.Event.Value); err != nil {
		t.Fatal(err)
	}
	if exit.ContainerId != id || exit.Id != id || exit.Pid != pid || exit.ExitStatus != 0 {
		t.Fatalf("exit event %+v", exit)
	}
	if _, err := s.task.State(ctxT(t, 5*time.Second), &taskapi.StateRequest{Id: id}); err == nil {
		t.Fatal("state after delete succeeded")
	} else {
		wantErr(t, err, errdefs.ErrNotFound, id)
	}
	// No container left: Shutdown ends the shim. The reply may lose the
	// race with the shim closing the connection (containerd, too, takes
	// ttrpc.ErrClosed from Shutdown as success); the exit is what counts.
	if _, err := s.task.Shutdown(ctxT(t, 5*time.Second), &taskapi.ShutdownRequest{Id: id}); err != nil && !errors.Is(err, ttrpc.ErrClosed) {
		t.Fatal(err)
	}
	if !s.exited(5 * time.Second) {
		t.Fatal("shim still running after shutdown")
	}
	if _, err := os.Stat(s.socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}

func TestExitStatus(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("exit")
	b := newBundle(t, id, []string{"sh", "-c", "exit 3"}, false, nil)
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	start(t, s, id, "")
	if w := wait(t, s, id, ""); w.ExitStatus != 3 {
		t.Fatalf("exit status %d, want 3", w.ExitStatus)
	}
	st, err := s.task.State(ctxT(t, 5*time.Second), &taskapi.StateRequest{Id: id})
	if err != nil || st.ExitStatus != 3 || st.Status != tasktypes.Status_STOPPED {
		t.Fatalf("state %+v %v", st, err)
	}
	if d := del(t, s, id); d.ExitStatus != 3 {
		t.Fatalf("delete exit status %d", d.ExitStatus)
	}
}

func TestKillSigkill(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("kill")
	b := newBundle(t, id, []string{"sleep", "100"}, false, nil)
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	start(t, s, id, "")
	// Wait honours the caller's deadline while the task runs.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id})
	cancel()
	if err == nil {
		t.Fatal("wait returned while the task runs")
	}
	_, err = s.task.Delete(ctxT(t, 5*time.Second), &taskapi.DeleteRequest{Id: id})
	wantErr(t, err, errdefs.ErrFailedPrecondition, "kill it first")
	if _, err := s.task.Kill(ctxT(t, 10*time.Second), &taskapi.KillRequest{Id: id, Signal: uint32(unix.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if w := wait(t, s, id, ""); w.ExitStatus != 137 {
		t.Fatalf("exit status %d, want 137", w.ExitStatus)
	}
	_, err = s.task.Kill(ctxT(t, 10*time.Second), &taskapi.KillRequest{Id: id, Signal: uint32(unix.SIGKILL)})
	wantErr(t, err, errdefs.ErrNotFound, "already finished")
	if d := del(t, s, id); d.ExitStatus != 137 {
		t.Fatalf("delete exit status %d", d.ExitStatus)
	}
}

// A created but never started container is killed by Delete.
func TestDeleteCreated(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("created")
	b := newBundle(t, id, []string{"sleep", "100"}, false, nil)
	pid := create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	d := del(t, s, id)
	if d.Pid != pid || d.ExitStatus != 137 {
		t.Fatalf("delete: %+v", d)
	}
	if err := unix.Kill(int(pid), 0); err == nil {
		t.Fatalf("init %d still alive", pid)
	}
}

func execSpec(t *testing.T, args ...string) *types.Any {
	t.Helper()
	data := `{"args":["` + strings.Join(args, `","`) + `"],"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0}}`
	return &types.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte(data)}
}

func TestExecPidsPauseResume(t *testing.T) {
	ev := newEventServer(t, "")
	s := startShim(t, ev.path)
	id := randID("exec")
	b := newBundle(t, id, []string{"sleep", "100"}, false, nil)
	initPid := create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	start(t, s, id, "")

	stdout, r := fifo(t, b, "exec-out")
	ctx := ctxT(t, 30*time.Second)
	if _, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: "e1", Stdout: stdout, Spec: execSpec(t, "sh", "-c", "echo from-exec; exit 5")}); err != nil {
		t.Fatal(err)
	}
	_, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: "e1", Spec: execSpec(t, "true")})
	wantErr(t, err, errdefs.ErrAlreadyExists, "e1")
	_, err = s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: "../e", Spec: execSpec(t, "true")})
	wantErr(t, err, errdefs.ErrInvalidArgument, "exec_id")
	st, err := s.task.State(ctx, &taskapi.StateRequest{Id: id, ExecId: "e1"})
	if err != nil || st.Status != tasktypes.Status_CREATED {
		t.Fatalf("exec state %+v %v", st, err)
	}
	execPid := start(t, s, id, "e1")
	if out := readAll(t, r, 10*time.Second); out != "from-exec\n" {
		t.Fatalf("exec output %q", out)
	}
	if w := wait(t, s, id, "e1"); w.ExitStatus != 5 {
		t.Fatalf("exec exit %d", w.ExitStatus)
	}
	resp, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id, ExecId: "e1"})
	if err != nil || resp.Pid != execPid || resp.ExitStatus != 5 {
		t.Fatalf("delete exec %+v %v", resp, err)
	}

	// A long running exec shows up in Pids with its exec id.
	if _, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: "e2", Spec: execSpec(t, "sleep", "100")}); err != nil {
		t.Fatal(err)
	}
	e2 := start(t, s, id, "e2")
	pids, err := s.task.Pids(ctx, &taskapi.PidsRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	found := map[uint32]string{}
	for _, p := range pids.Processes {
		found[p.Pid] = ""
		if p.Info != nil {
			var d runcopts.ProcessDetails
			if err := d.Unmarshal(p.Info.Value); err != nil {
				t.Fatal(err)
			}
			found[p.Pid] = d.ExecId
		}
	}
	if _, ok := found[initPid]; !ok || found[e2] != "e2" || len(found) != 2 {
		t.Fatalf("pids %v (init %d, e2 %d)", found, initPid, e2)
	}

	if _, err := s.task.Pause(ctx, &taskapi.PauseRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if st, err := s.task.State(ctx, &taskapi.StateRequest{Id: id}); err != nil || st.Status != tasktypes.Status_PAUSED {
		t.Fatalf("state after pause %+v %v", st, err)
	}
	if _, err := s.task.Resume(ctx, &taskapi.ResumeRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if st, err := s.task.State(ctx, &taskapi.StateRequest{Id: id}); err != nil || st.Status != tasktypes.Status_RUNNING {
		t.Fatalf("state after resume %+v %v", st, err)
	}
	_, err = s.task.Resume(ctx, &taskapi.ResumeRequest{Id: id})
	wantErr(t, err, errdefs.ErrFailedPrecondition, "not paused")

	if _, err := s.task.Kill(ctx, &taskapi.KillRequest{Id: id, ExecId: "e2", Signal: uint32(unix.SIGTERM)}); err != nil {
		t.Fatal(err)
	}
	if w := wait(t, s, id, "e2"); w.ExitStatus != 128+15 {
		t.Fatalf("e2 exit %d", w.ExitStatus)
	}
	if _, err := s.task.Kill(ctx, &taskapi.KillRequest{Id: id, Signal: uint32(unix.SIGKILL), All: true}); err != nil {
		t.Fatal(err)
	}
	wait(t, s, id, "")
	del(t, s, id)
	ev.waitTopics(t, id, []string{"/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit",
		"/tasks/exec-added", "/tasks/exec-started", "/tasks/paused", "/tasks/resumed", "/tasks/exit", "/tasks/exit", "/tasks/delete"}, 10*time.Second)
}
