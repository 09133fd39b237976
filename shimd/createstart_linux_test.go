package shimd_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	eventtypes "github.com/edged/edged/proto/events"
	runcopts "github.com/edged/edged/proto/runtime/runc/v1"
	shimopts "github.com/edged/edged/proto/runtime/shim/v1"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	tasktypes "github.com/edged/edged/proto/runtime/types"
)

// createAndStart returns CreateTaskRequest options asking the shim to
// create and start the task in one call.
func createAndStart(t *testing.T, o *shimopts.Options) *types.Any {
	t.Helper()
	b, err := (&shimopts.CreateAndStart{Options: o}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &types.Any{TypeUrl: "edged.shim.v1.CreateAndStart", Value: b}
}

// Create with CreateAndStart options runs the init at once: its output and
// exit status arrive, TaskCreate, TaskStart, TaskExit and TaskDelete are
// published in that order, and a Start after it is refused.
func TestCreateAndStartOneCall(t *testing.T) {
	ev := newEventServer(t, "")
	s := startShim(t, ev.path)
	id := randID("fused")
	b := newBundle(t, id, []string{"sh", "-c", "echo fused; exit 3"}, false, nil)
	stdout, r := fifo(t, b, "stdout")
	pid := create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdout: stdout, Options: createAndStart(t, nil)})
	if out := readAll(t, r, 10*time.Second); out != "fused\n" {
		t.Fatalf("output %q", out)
	}
	w := wait(t, s, id, "")
	if w.ExitStatus != 3 || w.ExitedAt == nil {
		t.Fatalf("wait: %+v", w)
	}
	st, err := s.task.State(ctxT(t, 5*time.Second), &taskapi.StateRequest{Id: id})
	if err != nil || st.Status != tasktypes.Status_STOPPED || st.ExitStatus != 3 || st.Pid != pid {
		t.Fatalf("state %+v %v", st, err)
	}
	_, err = s.task.Start(ctxT(t, 5*time.Second), &taskapi.StartRequest{Id: id})
	wantErr(t, err, errdefs.ErrFailedPrecondition, "already started")
	if d := del(t, s, id); d.ExitStatus != 3 || d.Pid != pid {
		t.Fatalf("delete: %+v", d)
	}
	ev.waitTopics(t, id, []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}, 10*time.Second)
	ev.mu.Lock()
	startEnv, exitEnv := ev.events[1], ev.events[2]
	ev.mu.Unlock()
	var start eventtypes.TaskStart
	var exit eventtypes.TaskExit
	if err := start.Unmarshal(startEnv.Event.Value); err != nil || start.ContainerId != id || start.Pid != pid {
		t.Fatalf("start event %+v %v", start, err)
	}
	if err := exit.Unmarshal(exitEnv.Event.Value); err != nil || exit.Pid != pid || exit.ExitStatus != 3 {
		t.Fatalf("exit event %+v %v", exit, err)
	}
}

// A process that exits before its pid file is read (true, started with
// the create) still gets its exit status, with TaskExit after TaskStart;
// runc options inside CreateAndStart are honoured (a runc root of our own).
func TestCreateAndStartExitsAtOnce(t *testing.T) {
	ev := newEventServer(t, "")
	s := startShim(t, ev.path)
	root := t.TempDir()
	for i := 0; i < 3; i++ {
		id := randID("quick")
		b := newBundle(t, id, []string{"true"}, false, nil)
		create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b,
			Options: createAndStart(t, &shimopts.Options{Runc: &runcopts.Options{Root: root}})})
		if w := wait(t, s, id, ""); w.ExitStatus != 0 {
			t.Fatalf("exit status %d", w.ExitStatus)
		}
		del(t, s, id)
		ev.waitTopics(t, id, []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}, 10*time.Second)
	}
}

// A CreateAndStart whose runc run fails leaves nothing: the error is the
// runtime's, and the ID can be created again.
func TestCreateAndStartFailureLeavesNothing(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("badrun")
	b := newBundle(t, id, []string{"/no/such/program"}, false, nil)
	_, err := s.task.Create(ctxT(t, 30*time.Second), &taskapi.CreateTaskRequest{Id: id, Bundle: b, Options: createAndStart(t, nil)})
	if err == nil {
		t.Fatal("create and start of a missing program succeeded")
	}
	if !strings.Contains(err.Error(), "/no/such/program") {
		t.Fatalf("error %q does not name the program", err)
	}
	_, err = s.task.State(ctxT(t, 5*time.Second), &taskapi.StateRequest{Id: id})
	wantErr(t, err, errdefs.ErrNotFound, id)
	// Bad options are refused before anything is done.
	_, err = s.task.Create(ctxT(t, 10*time.Second), &taskapi.CreateTaskRequest{Id: id, Bundle: b,
		Options: &types.Any{TypeUrl: "edged.shim.v1.CreateAndStart", Value: []byte{0xff}}})
	wantErr(t, err, errdefs.ErrInvalidArgument, "decode edged.shim.v1.CreateAndStart")
	_, err = s.task.Create(ctxT(t, 10*time.Second), &taskapi.CreateTaskRequest{Id: id, Bundle: b,
		Options: &types.Any{TypeUrl: "example.com/Unknown"}})
	wantErr(t, err, errdefs.ErrInvalidArgument, `unsupported type "example.com/Unknown" (want containerd.runc.v1.Options, edged.shim.v1.Options or edged.shim.v1.CreateAndStart)`)
}
