package shimd_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/errdefs/errgrpc"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	tasktypes "github.com/edged/edged/proto/runtime/types"
	"github.com/edged/edged/proto/wire"
)

// While a Create runs `runc create` (a real createRuntime hook sleeps 2 s),
// the shim answers State, Delete, Kill and Connect for its ID with
// Unavailable, "being created" (not NotFound: the task is not gone), and a
// Shutdown without now does not end it. Then the caller's connection
// closes (edged killed):
//   - with a deadline (edged's calls), the create is carried to its end:
//     the container is CREATED, with a pid, and can be deleted; the shim
//     then shuts down;
//   - without one (a containerd's call at times), the close still ends
//     the create, as before: the hook is killed and the ID is NotFound.
func TestCreateInProgress(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deadline time.Duration // of the Create, as the shim sees it; 0: none
	}{{"deadline", 20 * time.Second}, {"no deadline", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			s := startShim(t, "/nonexistent/events.sock")
			id := randID("creating")
			dir := t.TempDir()
			b := newBundle(t, id, []string{"sleep", "100"}, false, nil)
			hook := fmt.Sprintf("touch %s/in-hook; sleep 2; touch %s/hook-done", dir, dir)
			editSpec(t, b, func(spec map[string]any) {
				spec["hooks"] = map[string]any{"createRuntime": []any{map[string]any{"path": "/bin/sh", "args": []string{"sh", "-c", hook}}}}
			})
			// The caller, on a connection of its own.
			conn, err := net.Dial("unix", s.socket)
			if err != nil {
				t.Fatal(err)
			}
			var opts []ttrpc.ClientOpts
			if tc.deadline > 0 {
				opts = append(opts, ttrpc.WithUnaryClientInterceptor(
					func(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, _ *ttrpc.UnaryClientInfo, invoke ttrpc.Invoker) error {
						req.TimeoutNano = tc.deadline.Nanoseconds()
						return invoke(ctx, req, resp)
					}))
			}
			caller := ttrpc.NewClient(conn, opts...)
			defer caller.Close()
			go taskapi.NewTaskClient(wire.Client(caller)).Create(context.Background(), &taskapi.CreateTaskRequest{Id: id, Bundle: b})

			inHook := filepath.Join(dir, "in-hook")
			if msg := eventually(20*time.Second, func() string {
				if _, err := os.Stat(inHook); err != nil {
					return err.Error()
				}
				return ""
			}); msg != "" {
				t.Fatalf("the hook did not run: %s", msg)
			}
			ctx := ctxT(t, 30*time.Second)
			_, err = s.task.State(ctx, &taskapi.StateRequest{Id: id})
			wantErr(t, err, errdefs.ErrUnavailable, "being created")
			_, err = s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id})
			wantErr(t, err, errdefs.ErrUnavailable, "being created")
			_, err = s.task.Kill(ctx, &taskapi.KillRequest{Id: id, Signal: 9})
			wantErr(t, err, errdefs.ErrUnavailable, "being created")
			_, err = s.task.Connect(ctx, &taskapi.ConnectRequest{Id: id})
			wantErr(t, err, errdefs.ErrUnavailable, "being created")
			if _, err := s.task.Shutdown(ctx, &taskapi.ShutdownRequest{Id: id}); err != nil {
				t.Fatal(err)
			}
			if s.exited(300 * time.Millisecond) {
				t.Fatal("the shim exited on a Shutdown without now while it created a container")
			}
			// edged is killed.
			caller.Close()

			var st *taskapi.StateResponse
			if msg := eventually(15*time.Second, func() string {
				st, err = s.task.State(ctx, &taskapi.StateRequest{Id: id})
				if errors.Is(errgrpc.FromGRPC(err), errdefs.ErrUnavailable) {
					return err.Error()
				}
				return ""
			}); msg != "" {
				t.Fatalf("still being created: %s", msg)
			}
			_, hookErr := os.Stat(filepath.Join(dir, "hook-done"))
			if tc.deadline == 0 {
				wantErr(t, err, errdefs.ErrNotFound, id)
				if hookErr == nil {
					t.Fatal("the create of a call without a deadline went on after its connection closed")
				}
			} else {
				if err != nil || st.Status != tasktypes.Status_CREATED || st.Pid == 0 || hookErr != nil {
					t.Fatalf("after the caller's connection closed: %v %v (hook: %v); want the container created", st, err, hookErr)
				}
				if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id}); err != nil {
					t.Fatal(err)
				}
			}
			// The reply may lose the race with the shim closing the
			// connection (the ttrpc client then says ErrClosed; containerd
			// takes that as success too): the exit is what counts.
			if _, err := s.task.Shutdown(ctx, &taskapi.ShutdownRequest{Id: id}); err != nil && !errors.Is(err, ttrpc.ErrClosed) {
				t.Fatal(err)
			}
			if !s.exited(10 * time.Second) {
				t.Fatal("the shim with no container left did not shut down")
			}
		})
	}
}
