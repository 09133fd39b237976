package integration

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/internal/testutil"
	"github.com/edged/edged/proto/rpc"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	containersapi "github.com/edged/edged/proto/services/containers/v1"
	tasksapi "github.com/edged/edged/proto/services/tasks/v1"
)

// These tests cover edged being killed (or failing) between a shim call and
// the bootstrap file that records its result, with shim groups.

// cleanupShimsOf kills, at the end of the test, every edged-shim serving
// state (a test that kills edged, or a defect, may leave some), force-deletes
// the runc containers left under it and detaches its mounts.
func cleanupShimsOf(t *testing.T, state string) {
	t.Cleanup(func() {
		roots, _ := filepath.Glob(filepath.Join(state, "runc", "*"))
		for _, root := range roots {
			out, _ := exec.Command("runc", "--root", root, "list", "-q").Output()
			for _, id := range strings.Fields(string(out)) {
				exec.Command("runc", "--root", root, "delete", "--force", id).Run()
			}
		}
		for _, pid := range shimPids(state) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		b, _ := os.ReadFile("/proc/self/mounts")
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], state) {
				syscall.Unmount(f[1], syscall.MNT_DETACH)
			}
		}
	})
}

// shimPids lists the edged-shim processes serving state.
func shimPids(state string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), state) && strings.Contains(string(b), "edged-shim") {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// bootstrapFile is what edged records for a task in
// <state>/tasks/<ns>/<id>.json (the fields these tests use).
type bootstrapFile struct {
	Address string `json:"address"`
	ShimPid int    `json:"shim_pid"`
}

func bootstrapPath(state, ns, id string) string {
	return filepath.Join(state, "tasks", ns, id+".json")
}

func readBootstrap(t *testing.T, state, ns, id string) bootstrapFile {
	t.Helper()
	b, err := os.ReadFile(bootstrapPath(state, ns, id))
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapFile
	if err := json.Unmarshal(b, &bs); err != nil {
		t.Fatal(err)
	}
	return bs
}

// dialShimT connects to a shim's socket directly, as edged does.
func dialShimT(t *testing.T, ns, address string) taskapi.TaskService {
	t.Helper()
	conn, err := net.Dial("unix", address)
	if err != nil {
		t.Fatal(err)
	}
	c := rpc.NewConn(conn)
	t.Cleanup(func() { c.Close() })
	return taskapi.NewTaskClient(nsCaller{c: c, md: rpc.MD{namespaces.TTRPCHeader: {ns}}})
}

type nsCaller struct {
	c  *rpc.Conn
	md rpc.MD
}

func (n nsCaller) Call(ctx context.Context, service, method string, req, resp rpc.Message) error {
	return n.c.Call(rpc.WithMetadata(ctx, n.md), service, method, req, resp)
}

func (n nsCaller) NewStream(ctx context.Context, desc *rpc.StreamDesc, service, method string, req rpc.Message) (rpc.ClientStream, error) {
	return n.c.NewStream(rpc.WithMetadata(ctx, n.md), desc, service, method, req)
}

// deleteInShim does what edged does to delete an exited task, directly on
// its shim: kill the init, wait for it, delete it. It leaves the task's
// bootstrap file, as an edged killed right after the shim's Delete does.
func deleteInShim(t *testing.T, shim taskapi.TaskService, id string, pid uint32) {
	t.Helper()
	ctx := ctxT(t)
	syscall.Kill(int(pid), syscall.SIGKILL)
	if _, err := shim.Wait(ctx, &taskapi.WaitRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := shim.Delete(ctx, &taskapi.DeleteRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
}

func runcList(state string) string {
	out, _ := exec.Command("runc", "--root", filepath.Join(state, "runc", "default"), "list").CombinedOutput()
	return string(out)
}

func processGone(pid int) bool {
	for i := 0; i < 100; i++ {
		if syscall.Kill(pid, 0) != nil {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// groupOfTwo runs a and b in shim group g and returns their processes.
func groupOfTwo(t *testing.T, cl *client.Client, rootfs string) (pa, pb *client.Process) {
	t.Helper()
	ctx := ctxT(t)
	group := map[string]string{"edged.io/shim-group": "g"}
	runDetached(t, cl, rootfs, "a", group, "sleep", "300")
	runDetached(t, cl, rootfs, "b", group, "sleep", "300")
	var err error
	if pa, err = cl.GetTask(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	if pb, err = cl.GetTask(ctx, "b", ""); err != nil {
		t.Fatal(err)
	}
	return pa, pb
}

// checkRecoveredGroup checks, after a restart, that the deleted task is gone
// (its bootstrap too), the kept one runs with the same pid in the same shim,
// both containers can be removed, and the shim exits with its last task.
func checkRecoveredGroup(t *testing.T, d *testutil.Daemon, deleted string, kept string, keptPid uint32, shimPid int) {
	t.Helper()
	ctx := ctxT(t)
	waitLog(t, d, "tasks recovered")
	cl := newClient(t, d)
	p, err := cl.GetTask(ctx, kept, "")
	if err != nil {
		t.Fatalf("%s after the restart: %v", kept, err)
	}
	if p.Status != tasksapi.Status_RUNNING || p.Pid != keptPid {
		t.Fatalf("%s after the restart: status %v pid %d, want RUNNING pid %d", kept, p.Status, p.Pid, keptPid)
	}
	if got := shimOf(t, int(p.Pid)); got != shimPid {
		t.Fatalf("%s runs in shim %d, want its group's shim %d", kept, got, shimPid)
	}
	_, err = cl.GetTask(ctx, deleted, "")
	wantErr(t, err, errdefs.ErrNotFound, `task "`+deleted+`" in namespace "default": not found`)
	if _, err := os.Stat(bootstrapPath(d.State, "default", deleted)); !os.IsNotExist(err) {
		t.Fatalf("bootstrap of %s, deleted in its shim, left: %v", deleted, err)
	}
	if err := cl.DeleteContainer(ctx, deleted); err != nil {
		t.Fatalf("remove container %s: %v", deleted, err)
	}
	if _, err := cl.DeleteTask(ctx, kept, true); err != nil {
		t.Fatalf("delete task %s: %v", kept, err)
	}
	if err := cl.DeleteContainer(ctx, kept); err != nil {
		t.Fatalf("remove container %s: %v", kept, err)
	}
	if !processGone(shimPid) {
		t.Fatalf("shim %d still runs after its group's last task was deleted", shimPid)
	}
}

// TestRecoverGroupKeepsTasksWhenFirstWasDeleted: edged is killed after a
// group's shim deleted task a but before a's bootstrap file was removed. The
// restarted edged must drop a only, and keep b (running, same pid) in its
// shim: asking the shim about a alone and cleaning up the whole group on
// its NotFound force-deleted b and leaked the shim.
func TestRecoverGroupKeepsTasksWhenFirstWasDeleted(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	cleanupShimsOf(t, d.State)
	cl := newClient(t, d)
	pa, pb := groupOfTwo(t, cl, busybox(t))
	bs := readBootstrap(t, d.State, "default", "a")
	cl.Close()
	d.Kill()

	deleteInShim(t, dialShimT(t, "default", bs.Address), "a", pa.Pid)

	checkRecoveredGroup(t, startDaemonAt(t, d), "a", "b", pb.Pid, bs.ShimPid)
}

// TestRecoverGroupDropsTaskDeletedInShim: as above, but the task deleted in
// the shim is not the group's first: it must not come back as a task that
// can never be deleted (and whose container can never be removed).
func TestRecoverGroupDropsTaskDeletedInShim(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	cleanupShimsOf(t, d.State)
	cl := newClient(t, d)
	pa, pb := groupOfTwo(t, cl, busybox(t))
	bs := readBootstrap(t, d.State, "default", "b")
	cl.Close()
	d.Kill()

	deleteInShim(t, dialShimT(t, "default", bs.Address), "b", pb.Pid)

	checkRecoveredGroup(t, startDaemonAt(t, d), "b", "a", pa.Pid, bs.ShimPid)
}

// TestRecoverShutsDownShimWithNoTasksLeft: the shim's only task was deleted
// in it before edged was killed; the restarted edged drops the task and
// shuts the shim down instead of leaving it running unknown.
func TestRecoverShutsDownShimWithNoTasksLeft(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	cleanupShimsOf(t, d.State)
	cl := newClient(t, d)
	ctx := ctxT(t)
	runDetached(t, cl, busybox(t), "solo", nil, "sleep", "300")
	p, err := cl.GetTask(ctx, "solo", "")
	if err != nil {
		t.Fatal(err)
	}
	bs := readBootstrap(t, d.State, "default", "solo")
	cl.Close()
	d.Kill()

	deleteInShim(t, dialShimT(t, "default", bs.Address), "solo", p.Pid)

	d2 := startDaemonAt(t, d)
	waitLog(t, d2, "tasks recovered")
	cl2 := newClient(t, d2)
	_, err = cl2.GetTask(ctx, "solo", "")
	wantErr(t, err, errdefs.ErrNotFound, `task "solo" in namespace "default": not found`)
	if !processGone(bs.ShimPid) {
		t.Fatalf("shim %d, left with no task, still runs", bs.ShimPid)
	}
	if isSocket(bs.Address) {
		t.Fatalf("socket %s of the shut down shim left", bs.Address)
	}
	if err := cl2.DeleteContainer(ctx, "solo"); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteTaskTheShimNoLongerHas: a task that edged knows but its shim
// no longer has (deleted in the shim behind edged's back) is released by a
// (forced) delete: the delete succeeds and the container can be removed.
func TestDeleteTaskTheShimNoLongerHas(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	cleanupShimsOf(t, d.State)
	cl := newClient(t, d)
	ctx := ctxT(t)
	pa, pb := groupOfTwo(t, cl, busybox(t))
	bs := readBootstrap(t, d.State, "default", "b")

	deleteInShim(t, dialShimT(t, "default", bs.Address), "b", pb.Pid)

	_, err := cl.GetTask(ctx, "b", "")
	wantErr(t, err, errdefs.ErrNotFound, `container "b": not found`)
	if _, err := cl.DeleteTask(ctx, "b", true); err != nil {
		t.Fatalf("force delete of a task its shim no longer has: %v", err)
	}
	if _, err := os.Stat(bootstrapPath(d.State, "default", "b")); !os.IsNotExist(err) {
		t.Fatalf("bootstrap of the released task left: %v", err)
	}
	if err := cl.DeleteContainer(ctx, "b"); err != nil {
		t.Fatalf("remove container b: %v", err)
	}
	if p, err := cl.GetTask(ctx, "a", ""); err != nil || p.Status != tasksapi.Status_RUNNING || p.Pid != pa.Pid {
		t.Fatalf("a after b's release: %+v %v", p, err)
	}
	if _, err := cl.DeleteTask(ctx, "a", true); err != nil {
		t.Fatal(err)
	}
}

// TestCreateStartBootstrapWriteFailureLeavesNothing: the task's bootstrap
// file cannot be written (here <state>/tasks/default is a regular file; on
// a device: a full state file system) when a task is created and started.
// Create fails naming the cause, no container is left (it kept running, in
// a shim recycled as the namespace's spare), and creating the task again
// works once the file can be written.
func TestCreateStartBootstrapWriteFailureLeavesNothing(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	cleanupShimsOf(t, d.State)
	cl := newClient(t, d)
	ctx := ctxT(t)
	if _, err := cl.CreateFromImage(ctx, &containersapi.CreateFromImageRequest{Id: "y", RootfsPath: busybox(t), Options: &containersapi.SpecOptions{Args: []string{"sleep", "300"}}}); err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(d.State, "tasks", "default")
	if err := os.MkdirAll(filepath.Dir(blocker), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := cl.CreateTask(ctx, "y", client.TaskOpts{Start: true})
	if err == nil {
		t.Fatal("create succeeded without its bootstrap file")
	}
	if !strings.Contains(err.Error(), "save task bootstrap: ") || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("create error %q does not name the bootstrap write", err)
	}
	if out := runcList(d.State); strings.Contains(out, "y ") {
		t.Fatalf("container of the failed create left:\n%s", out)
	}
	if _, err := cl.GetTask(ctx, "y", ""); !errdefs.IsNotFound(err) {
		t.Fatalf("task of the failed create: %v", err)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateTask(ctx, "y", client.TaskOpts{Start: true}); err != nil {
		t.Fatalf("create again: %v", err)
	}
	if p, err := cl.GetTask(ctx, "y", ""); err != nil || p.Status != tasksapi.Status_RUNNING {
		t.Fatalf("task created again: %+v %v", p, err)
	}
	if _, err := cl.DeleteTask(ctx, "y", true); err != nil {
		t.Fatal(err)
	}
}

// TestDeadShimReportedAsExited: a call to a shim that died fails at once
// saying the shim exited, not that it "did not answer within" the call
// timeout (TestHungShimDoesNotHangEdged covers that case).
func TestDeadShimReportedAsExited(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	cleanupShimsOf(t, d.State)
	cl := newClient(t, d)
	ctx := ctxT(t)
	runDetached(t, cl, busybox(t), "z", nil, "sleep", "300")
	p, err := cl.GetTask(ctx, "z", "")
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(shimOf(t, int(p.Pid)), syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	_, err = cl.GetTask(ctx, "z", "")
	wantErr(t, err, errdefs.ErrUnavailable, "shim default/z exited (connection closed)")
	if strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("a shim that died is reported as not answering: %v", err)
	}
	waitFor(t, func() bool {
		_, err := cl.GetTask(ctx, "z", "")
		return errdefs.IsNotFound(err)
	})
}

// TestRecoverTaskCreatedWhileEdgedWasKilled: edged is killed while the
// group's shim creates task x (a prestart hook makes `runc create` take
// 2 s); the shim finishes the create after edged is gone. The restarted
// edged must know x (it was recorded before the shim's Create), so that it
// can be deleted and created again; before, x's bundle was removed as an
// orphan while the live shim kept x, and creating x again failed "already
// exists" for as long as the shim lived.
func TestRecoverTaskCreatedWhileEdgedWasKilled(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	cleanupShimsOf(t, d.State)
	cl := newClient(t, d)
	ctx := ctxT(t)
	rootfs := busybox(t)
	group := map[string]string{"edged.io/shim-group": "g"}
	runDetached(t, cl, rootfs, "a", group, "sleep", "300")
	pa, err := cl.GetTask(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cl.CreateFromImage(ctx, &containersapi.CreateFromImageRequest{Id: "x", RootfsPath: rootfs, Labels: group, Options: &containersapi.SpecOptions{Args: []string{"sleep", "300"}}})
	if err != nil {
		t.Fatal(err)
	}
	var sp specs.Spec
	if err := json.Unmarshal(c.Spec.Value, &sp); err != nil {
		t.Fatal(err)
	}
	sp.Hooks = &specs.Hooks{Prestart: []specs.Hook{{Path: "/bin/sleep", Args: []string{"sleep", "2"}}}}
	if c.Spec.Value, err = json.Marshal(&sp); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.UpdateContainer(ctx, c, "spec"); err != nil {
		t.Fatal(err)
	}
	go cl.CreateTask(ctx, "x", client.TaskOpts{}) // fails: edged is killed
	// Killed while the prestart hook runs: x is not in `runc list` yet.
	waitLog(t, d, "id=x")
	time.Sleep(700 * time.Millisecond)
	d.Kill()
	// The shim's create finishes without edged.
	waitFor(t, func() bool {
		return regexp.MustCompile(`(?m)^x\s+\d+\s+created`).MatchString(runcList(d.State))
	})
	time.Sleep(200 * time.Millisecond)

	d2 := startDaemonAt(t, d)
	waitLog(t, d2, "tasks recovered")
	cl2 := newClient(t, d2)
	if p, err := cl2.GetTask(ctx, "a", ""); err != nil || p.Status != tasksapi.Status_RUNNING || p.Pid != pa.Pid {
		t.Fatalf("a after the restart: %+v %v", p, err)
	}
	p, err := cl2.GetTask(ctx, "x", "")
	if err != nil || p.Status != tasksapi.Status_CREATED || p.Pid == 0 {
		t.Fatalf("x, created by the shim while edged was down: %+v %v", p, err)
	}
	if _, err := cl2.DeleteTask(ctx, "x", true); err != nil {
		t.Fatalf("delete x: %v", err)
	}
	if _, err := cl2.CreateTask(ctx, "x", client.TaskOpts{Start: true}); err != nil {
		t.Fatalf("create x again: %v", err)
	}
	for _, id := range []string{"x", "a"} {
		if _, err := cl2.DeleteTask(ctx, id, true); err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
}

// TestListWithDeadShim: a shim that died fails its own task's calls, not
// the namespace's task list: the list, asked before edged noticed the
// death, shows that task as UNKNOWN and the others as they are.
func TestListWithDeadShim(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	cleanupShimsOf(t, d.State)
	cl := newClient(t, d)
	ctx := ctxT(t)
	rootfs := busybox(t)
	runDetached(t, cl, rootfs, "z", nil, "sleep", "300")
	runDetached(t, cl, rootfs, "w", nil, "sleep", "300")
	p, err := cl.GetTask(ctx, "z", "")
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(shimOf(t, int(p.Pid)), syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	list, err := cl.ListTasks(ctx)
	if err != nil {
		t.Fatalf("task list with one dead shim: %v", err)
	}
	got := map[string]string{}
	for _, p := range list {
		got[p.ContainerId] = p.Status.String()
	}
	if got["w"] != "RUNNING" || (got["z"] != "UNKNOWN" && got["z"] != "") {
		t.Fatalf("task list with z's shim dead: %v; want w RUNNING and z UNKNOWN (or gone)", got)
	}
	if _, err := cl.DeleteTask(ctx, "w", true); err != nil {
		t.Fatal(err)
	}
}
