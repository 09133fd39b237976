package integration

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	containersapi "github.com/edged/edged/proto/services/containers/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestOneCallRunAndRemove: a container created with its task in one Create
// call, and a Wait that deletes the task and the container before it
// replies (what `edgectl run --rm` does): the output arrives, the exit
// status is returned and nothing is left. A Create whose task fails leaves
// no container; Wait without delete_container keeps the container; of two
// Waits with delete, the one whose deletion fails still reports the exit
// status in its error.
func TestOneCallRunAndRemove(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	cl := newClient(t, d)
	rootfs := busybox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req := func(id string, args ...string) *containersapi.CreateFromImageRequest {
		return &containersapi.CreateFromImageRequest{Id: id, RootfsPath: rootfs, Options: &containersapi.SpecOptions{Args: args}}
	}

	// Run and remove: status, output, nothing left.
	var out bytes.Buffer
	fifos, err := client.NewFIFOs(ctx, "", nil, &out, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fifos.Close()
	if _, err := cl.CreateTask(ctx, "", client.TaskOpts{Stdout: fifos.Stdout, Start: true, Container: req("one", "sh", "-c", "echo hello; exit 7")}); err != nil {
		t.Fatal(err)
	}
	st, err := cl.WaitDelete(ctx, "one", "", true)
	if err != nil {
		t.Fatal(err)
	}
	fifos.Wait()
	if st.Code != 7 || out.String() != "hello\n" {
		t.Fatalf("exit %d output %q; want 7 and hello", st.Code, out.String())
	}
	if _, err := cl.GetTask(ctx, "one", ""); !errdefs.IsNotFound(err) {
		t.Fatalf("task after WaitDelete: %v, want not found", err)
	}
	if _, err := cl.GetContainer(ctx, "one"); !errdefs.IsNotFound(err) {
		t.Fatalf("container after WaitDelete: %v, want not found", err)
	}

	// A task that cannot start: the call fails and the container it
	// created is gone again.
	_, err = cl.CreateTask(ctx, "bad", client.TaskOpts{Start: true, Container: req("bad", "/no/such/binary")})
	if err == nil {
		t.Fatal("create of a task with a missing binary succeeded")
	}
	if _, err := cl.GetContainer(ctx, "bad"); !errdefs.IsNotFound(err) {
		t.Fatalf("container of a failed one-call create: %v, want not found", err)
	}
	// An existing container is not replaced (and not deleted by the
	// failed call).
	if _, err := cl.CreateFromImage(ctx, req("keep", "true")); err != nil {
		t.Fatal(err)
	}
	_, err = cl.CreateTask(ctx, "keep", client.TaskOpts{Start: true, Container: req("keep", "true")})
	wantErr(t, err, errdefs.ErrAlreadyExists, "keep")
	if _, err := cl.GetContainer(ctx, "keep"); err != nil {
		t.Fatalf("existing container after a refused one-call create: %v", err)
	}
	// The ids must agree.
	_, err = cl.CreateTask(ctx, "other", client.TaskOpts{Container: req("x", "true")})
	wantErr(t, err, errdefs.ErrInvalidArgument, `container_id: "other" differs from the id "x"`)

	// Wait with delete only: the task goes, the container stays.
	if _, err := cl.CreateTask(ctx, "keep", client.TaskOpts{Start: true}); err != nil {
		t.Fatal(err)
	}
	if st, err := cl.WaitDelete(ctx, "keep", "", false); err != nil || st.Code != 0 {
		t.Fatalf("WaitDelete(keep): %+v %v", st, err)
	}
	if _, err := cl.GetTask(ctx, "keep", ""); !errdefs.IsNotFound(err) {
		t.Fatalf("task after WaitDelete: %v, want not found", err)
	}
	if _, err := cl.GetContainer(ctx, "keep"); err != nil {
		t.Fatalf("container after WaitDelete without container: %v", err)
	}

	// An exec waited for with delete is deleted; its task keeps running.
	if _, err := cl.CreateTask(ctx, "", client.TaskOpts{Start: true, Container: req("ex", "sleep", "300")}); err != nil {
		t.Fatal(err)
	}
	if err := cl.Exec(ctx, "ex", "e1", &specs.Process{Args: []string{"sh", "-c", "exit 3"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, client.TaskOpts{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.StartTask(ctx, "ex", "e1"); err != nil {
		t.Fatal(err)
	}
	if st, err := cl.WaitDelete(ctx, "ex", "e1", false); err != nil || st.Code != 3 {
		t.Fatalf("WaitDelete(exec): %+v %v", st, err)
	}
	if _, err := cl.GetTask(ctx, "ex", "e1"); !errdefs.IsNotFound(err) {
		t.Fatalf("exec after WaitDelete: %v, want not found", err)
	}
	if p, err := cl.GetTask(ctx, "ex", ""); err != nil || !strings.EqualFold(p.Status.String(), "RUNNING") {
		t.Fatalf("task after its exec was deleted: %v %v", p, err)
	}
	// Two callers wait for the same exec with delete: one deletes it and
	// gets the status; the other's deletion fails, and its error still
	// carries the status. (The exec sleeps a second so that both waits
	// are in edged before it exits.)
	if err := cl.Exec(ctx, "ex", "e2", &specs.Process{Args: []string{"sh", "-c", "sleep 1; exit 4"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, client.TaskOpts{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.StartTask(ctx, "ex", "e2"); err != nil {
		t.Fatal(err)
	}
	type waited struct {
		st  client.ExitStatus
		err error
	}
	results := make(chan waited, 2)
	for range 2 {
		go func() {
			st, err := cl.WaitDelete(ctx, "ex", "e2", false)
			results <- waited{st, err}
		}()
	}
	won, lost := <-results, <-results
	if won.err != nil {
		won, lost = lost, won
	}
	if won.err != nil || won.st.Code != 4 {
		t.Fatalf("WaitDelete(e2): %+v %v, want status 4", won.st, won.err)
	}
	wantErr(t, lost.err, errdefs.ErrNotFound, `"ex" exited with status 4; deleting its exec e2: `)

	// delete_container needs delete and the task itself.
	_, err = cl.WaitDelete(ctx, "ex", "e1", true)
	wantErr(t, err, errdefs.ErrInvalidArgument, "delete_container: requires delete and no exec_id")
	if _, err := cl.DeleteTask(ctx, "ex", true); err != nil {
		t.Fatal(err)
	}
}
