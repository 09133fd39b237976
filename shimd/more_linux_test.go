package shimd_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"
	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
	runcopts "github.com/edged/edged/proto/runtime/runc/v1"
	shimopts "github.com/edged/edged/proto/runtime/shim/v1"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	tasktypes "github.com/edged/edged/proto/runtime/types"
	apitypes "github.com/edged/edged/proto/types"
	"github.com/edged/edged/proto/wire"
	"github.com/edged/edged/shimd"
)

// A container printing ~390 KiB into a file:// log rotated at 16 KiB,
// keeping 3 files.
func TestLogRotation(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("log")
	script := `i=0; while [ $i -lt 8000 ]; do echo "line-$i-abcdefghijklmnopqrstuvwxyz0123456789"; i=$((i+1)); done; echo done >&2`
	b := newBundle(t, id, []string{"sh", "-c", script}, false, nil)
	logPath := filepath.Join(b, "ctr.log")
	uri := "file://" + logPath + "?max-size=16384&max-files=3"
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdout: uri, Stderr: uri})
	start(t, s, id, "")
	if w := wait(t, s, id, ""); w.ExitStatus != 0 {
		t.Fatalf("exit %d", w.ExitStatus)
	}
	lineRe := regexp.MustCompile(`^(line-\d+-abcdefghijklmnopqrstuvwxyz0123456789|done)$`)
	for i, name := range []string{logPath, logPath + ".1", logPath + ".2"} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("log file %d: %v", i, err)
		}
		if len(data) == 0 || len(data) > 16384 {
			t.Fatalf("%s: %d bytes, want 1..16384", name, len(data))
		}
		if i > 0 && len(data) < 16384-64 {
			t.Fatalf("rotated %s only %d bytes", name, len(data))
		}
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		for sc.Scan() {
			if !lineRe.MatchString(sc.Text()) {
				t.Fatalf("%s: broken line %q", name, sc.Text())
			}
		}
		if data[len(data)-1] != '\n' {
			t.Fatalf("%s does not end at a line boundary", name)
		}
	}
	if _, err := os.Stat(logPath + ".3"); !os.IsNotExist(err) {
		t.Fatalf("%s.3 exists: max-files=3 keeps 3 files (%v)", logPath, err)
	}
	cur, _ := os.ReadFile(logPath)
	if !strings.Contains(string(cur), "line-7999-") || !strings.HasSuffix(string(cur), "done\n") {
		t.Fatalf("last lines missing from the active log: ...%q", cur[max(0, len(cur)-100):])
	}
	del(t, s, id)
}

// Events published while the daemon's events socket is absent are kept and
// delivered in order once it listens.
func TestEventsQueuedWhileDaemonDown(t *testing.T) {
	dir, err := os.MkdirTemp("", "es-evq")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "events.sock")
	s := startShim(t, path)
	id := randID("queued")
	b := newBundle(t, id, []string{"true"}, false, nil)
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	start(t, s, id, "")
	wait(t, s, id, "")
	del(t, s, id)
	time.Sleep(500 * time.Millisecond) // a few failed reconnects
	ev := newEventServer(t, path)
	ev.waitTopics(t, id, []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}, 10*time.Second)
}

// Two containers in one shim: independent waits and exits; Shutdown waits
// for the last container.
func TestGrouping(t *testing.T) {
	ev := newEventServer(t, "")
	s := startShim(t, ev.path)
	a, b := randID("ga"), randID("gb")
	for _, id := range []string{a, b} {
		create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: newBundle(t, id, []string{"sleep", "100"}, false, nil)})
		start(t, s, id, "")
	}
	if _, err := s.task.Kill(ctxT(t, 10*time.Second), &taskapi.KillRequest{Id: a, Signal: uint32(unix.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if w := wait(t, s, a, ""); w.ExitStatus != 137 {
		t.Fatalf("a exit %d", w.ExitStatus)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: b})
	cancel()
	if err == nil {
		t.Fatal("b exited with a")
	}
	if st, err := s.task.State(ctxT(t, 5*time.Second), &taskapi.StateRequest{Id: b}); err != nil || st.Status != tasktypes.Status_RUNNING {
		t.Fatalf("b state %+v %v", st, err)
	}
	del(t, s, a)
	if _, err := s.task.Shutdown(ctxT(t, 5*time.Second), &taskapi.ShutdownRequest{Id: a}); err != nil {
		t.Fatal(err)
	}
	if s.exited(300 * time.Millisecond) {
		t.Fatal("shim exited while hosting b")
	}
	c, err := s.task.Connect(ctxT(t, 5*time.Second), &taskapi.ConnectRequest{Id: b})
	if err != nil || int(c.ShimPid) != s.pid() || c.TaskPid == 0 {
		t.Fatalf("connect %+v %v", c, err)
	}
	if _, err := s.task.Kill(ctxT(t, 10*time.Second), &taskapi.KillRequest{Id: b, Signal: uint32(unix.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if w := wait(t, s, b, ""); w.ExitStatus != 137 {
		t.Fatalf("b exit %d", w.ExitStatus)
	}
	del(t, s, b)
	ev.waitTopics(t, a, []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}, 10*time.Second)
	ev.waitTopics(t, b, []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}, 10*time.Second)
	s.task.Shutdown(ctxT(t, 5*time.Second), &taskapi.ShutdownRequest{Id: b})
	if !s.exited(5 * time.Second) {
		t.Fatal("shim did not exit after its last container")
	}
}

func TestErrors(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	ctx := ctxT(t, 30*time.Second)
	id := randID("err")
	b := newBundle(t, id, []string{"sleep", "100"}, false, nil)

	for _, bad := range []string{"a/b", "..", "", "../x", "a b"} {
		_, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: bad, Bundle: b})
		wantErr(t, err, errdefs.ErrInvalidArgument, "id")
		_, err = s.task.State(ctx, &taskapi.StateRequest{Id: bad})
		wantErr(t, err, errdefs.ErrInvalidArgument, "id")
	}
	_, err := s.task.State(ctx, &taskapi.StateRequest{Id: "missing"})
	wantErr(t, err, errdefs.ErrNotFound, `container "missing"`)
	_, err = s.task.Wait(ctx, &taskapi.WaitRequest{Id: "missing"})
	wantErr(t, err, errdefs.ErrNotFound, "missing")
	_, err = s.task.Kill(ctx, &taskapi.KillRequest{Id: "missing", Signal: 9})
	wantErr(t, err, errdefs.ErrNotFound, "missing")

	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: "relative/bundle"})
	wantErr(t, err, errdefs.ErrInvalidArgument, "bundle")
	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b + "/../x"})
	wantErr(t, err, errdefs.ErrInvalidArgument, "clean absolute path")
	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: "/nonexistent-bundle"})
	wantErr(t, err, errdefs.ErrInvalidArgument, "config.json")
	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdout: "binary:///usr/bin/logger"})
	wantErr(t, err, errdefs.ErrNotImplemented, "binary://")
	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdout: "http://x/y"})
	wantErr(t, err, errdefs.ErrInvalidArgument, "unsupported scheme")
	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdout: "file:///tmp/x?max-size=-1"})
	wantErr(t, err, errdefs.ErrInvalidArgument, "max-size")
	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdout: filepath.Join(b, "no-such-fifo")})
	wantErr(t, err, errdefs.ErrInvalidArgument, "no-such-fifo")
	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Options: &types.Any{TypeUrl: "x.Unknown"}})
	wantErr(t, err, errdefs.ErrInvalidArgument, "x.Unknown")
	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Rootfs: []*apitypes.Mount{{Type: "bind", Source: "relative"}}})
	wantErr(t, err, errdefs.ErrInvalidArgument, "absolute")
	// A runtime binary that does not exist.
	opts, _ := (&runcopts.Options{BinaryName: "no-such-runtime"}).Marshal()
	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Options: &types.Any{TypeUrl: "containerd.runc.v1.Options", Value: opts}})
	wantErr(t, err, errdefs.ErrFailedPrecondition, "no-such-runtime")
	// runc's own error comes back (bad spec).
	badB := newBundle(t, id, []string{"/no/such/binary"}, false, nil)
	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: badB})
	if err == nil {
		t.Fatal("create of a container whose binary is missing succeeded")
	}
	if !strings.Contains(err.Error(), "runc create") {
		t.Fatalf("error %v does not come from runc", err)
	}

	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	wantErr(t, err, errdefs.ErrAlreadyExists, id)
	_, err = s.task.State(ctx, &taskapi.StateRequest{Id: id, ExecId: "nope"})
	wantErr(t, err, errdefs.ErrNotFound, `exec "nope"`)
	_, err = s.task.Kill(ctx, &taskapi.KillRequest{Id: id, Signal: 0})
	wantErr(t, err, errdefs.ErrInvalidArgument, "signal")
	_, err = s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: "x"})
	wantErr(t, err, errdefs.ErrInvalidArgument, "spec")
	_, err = s.task.Stats(ctx, &taskapi.StatsRequest{Id: id})
	wantErr(t, err, errdefs.ErrNotImplemented, "stats")
	_, err = s.task.Checkpoint(ctx, &taskapi.CheckpointTaskRequest{Id: id})
	wantErr(t, err, errdefs.ErrNotImplemented, "checkpoint")
	_, err = s.task.Update(ctx, &taskapi.UpdateTaskRequest{Id: id, Resources: &types.Any{Value: []byte("{")}})
	wantErr(t, err, errdefs.ErrInvalidArgument, "resources")
	_, err = s.task.ResizePty(ctx, &taskapi.ResizePtyRequest{Id: id, Width: 80, Height: 24})
	wantErr(t, err, errdefs.ErrFailedPrecondition, "no terminal")
	start(t, s, id, "")
	_, err = s.task.Start(ctx, &taskapi.StartRequest{Id: id})
	wantErr(t, err, errdefs.ErrFailedPrecondition, "already started")
	// Update through runc: a real pids limit.
	if _, err := s.task.Update(ctx, &taskapi.UpdateTaskRequest{Id: id, Resources: &types.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: []byte(`{"pids":{"limit":42}}`)}}); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile("/sys/fs/cgroup/pids/edged-shim-test/" + id + "/pids.max"); err != nil || strings.TrimSpace(string(data)) != "42" {
		t.Fatalf("pids.max %q %v", data, err)
	}
	s.task.Kill(ctx, &taskapi.KillRequest{Id: id, Signal: 9})
	wait(t, s, id, "")
	del(t, s, id)
}

// A terminal container: the pty arrives over the console socket, ResizePty
// sets its size, the output is copied to the stdout fifo.
func TestTerminal(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("tty")
	b := newBundle(t, id, []string{"sh", "-c", "stty size; echo tty-ok"}, false, nil)
	// config.json's terminal must match the request.
	data, _ := os.ReadFile(filepath.Join(b, "config.json"))
	os.WriteFile(filepath.Join(b, "config.json"), []byte(strings.Replace(string(data), `"terminal": false`, `"terminal": true`, 1)), 0o644)
	stdout, r := fifo(t, b, "stdout")
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Terminal: true, Stdout: stdout})
	if _, err := s.task.ResizePty(ctxT(t, 5*time.Second), &taskapi.ResizePtyRequest{Id: id, Width: 100, Height: 40}); err != nil {
		t.Fatal(err)
	}
	start(t, s, id, "")
	out := readAll(t, r, 10*time.Second)
	if !strings.Contains(out, "40 100") || !strings.Contains(out, "tty-ok") {
		t.Fatalf("terminal output %q", out)
	}
	wait(t, s, id, "")
	del(t, s, id)
}

// stdin through a fifo; CloseIO ends it after what was written.
func TestStdinCloseIO(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("stdin")
	b := newBundle(t, id, []string{"cat"}, false, nil)
	stdinPath := filepath.Join(b, "stdin")
	if err := unix.Mkfifo(stdinPath, 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, r := fifo(t, b, "stdout")
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdin: stdinPath, Stdout: stdout})
	start(t, s, id, "")
	w, err := os.OpenFile(stdinPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString("ping\npong\n")
	w.Close()
	// Without CloseIO cat keeps waiting.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = s.task.Wait(ctx, &taskapi.WaitRequest{Id: id})
	cancel()
	if err == nil {
		t.Fatal("cat exited before CloseIO")
	}
	if _, err := s.task.CloseIO(ctxT(t, 5*time.Second), &taskapi.CloseIORequest{Id: id, Stdin: true}); err != nil {
		t.Fatal(err)
	}
	if out := readAll(t, r, 10*time.Second); out != "ping\npong\n" {
		t.Fatalf("output %q", out)
	}
	if ws := wait(t, s, id, ""); ws.ExitStatus != 0 {
		t.Fatalf("exit %d", ws.ExitStatus)
	}
	del(t, s, id)
}

// The edged.shim.v1.Options log limits apply when the URI has none.
func TestShimOptionsLogLimits(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("opts")
	b := newBundle(t, id, []string{"sh", "-c", "i=0; while [ $i -lt 300 ]; do echo 0123456789012345678901234567890123456789; i=$((i+1)); done"}, false, nil)
	opts, _ := (&shimopts.Options{Runc: &runcopts.Options{BinaryName: "runc"}, Log: &shimopts.LogOptions{MaxSize: 4096, MaxFiles: 2}}).Marshal()
	logPath := filepath.Join(b, "c.log")
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdout: "file://" + logPath,
		Options: &types.Any{TypeUrl: "edged.shim.v1.Options", Value: opts}})
	start(t, s, id, "")
	wait(t, s, id, "")
	for _, n := range []string{logPath, logPath + ".1"} {
		if st, err := os.Stat(n); err != nil || st.Size() > 4096 || st.Size() == 0 {
			t.Fatalf("%s: %v %v", n, st, err)
		}
	}
	if _, err := os.Stat(logPath + ".2"); !os.IsNotExist(err) {
		t.Fatal("max_files=2 kept a third file")
	}
	del(t, s, id)
}

func runShimCmd(t *testing.T, dir string, stdin []byte, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(shared.shim, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	out, err := cmd.Output()
	return string(out), err
}

func dialAddress(t *testing.T, address string) (taskapi.TaskService, func()) {
	t.Helper()
	conn, err := net.Dial("unix", strings.TrimPrefix(address, "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	rpc := ttrpc.NewClient(conn)
	return taskapi.NewTaskClient(wire.Client(rpc)), func() { rpc.Close() }
}

// The containerd-style start and delete subcommands.
func TestStartDeleteSubcommands(t *testing.T) {
	ev := newEventServer(t, "")
	state, err := os.MkdirTemp("", "es-sd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(state)
	group := randID("grp")
	id1, id2 := randID("sub1"), randID("sub2")
	ann := map[string]string{"io.containerd.runc.v2.group": group}
	b1 := newBundle(t, id1, []string{"sleep", "100"}, false, ann)
	b2 := newBundle(t, id2, []string{"sleep", "100"}, false, ann)
	env := []string{"TTRPC_ADDRESS=" + ev.path}
	common := []string{"-namespace", "test", "-address", "/run/edged-test.sock", "-publish-binary", "/usr/bin/true", "-state-dir", state}
	addr, err := runShimCmd(t, b1, nil, env, append(common, "-id", id1, "start")...)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	want := "unix://" + shimd.SocketPath(filepath.Join(state, "s"), "/run/edged-test.sock", "test", group)
	if addr != want {
		t.Fatalf("start printed %q, want %q", addr, want)
	}
	if data, _ := os.ReadFile(filepath.Join(b1, "address")); string(data) != addr {
		t.Fatalf("bundle address file %q", data)
	}
	pidData, _ := os.ReadFile(filepath.Join(b1, "shim.pid"))
	var shimPid int
	fmt.Sscan(string(pidData), &shimPid)
	if shimPid == 0 {
		t.Fatal("no shim.pid")
	}
	defer unix.Kill(shimPid, syscall.SIGKILL)
	// The second container of the group gets the same shim.
	addr2, err := runShimCmd(t, b2, nil, env, append(common, "-id", id2, "start")...)
	if err != nil || addr2 != addr {
		t.Fatalf("second start: %q %v, want %q", addr2, err, addr)
	}
	task, closeFn := dialAddress(t, addr)
	defer closeFn()
	ctx := ctxT(t, 30*time.Second)
	for _, c := range []struct{ id, b string }{{id1, b1}, {id2, b2}} {
		if _, err := task.Create(ctx, &taskapi.CreateTaskRequest{Id: c.id, Bundle: c.b}); err != nil {
			t.Fatal(err)
		}
		if _, err := task.Start(ctx, &taskapi.StartRequest{Id: c.id}); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := task.Connect(ctx, &taskapi.ConnectRequest{Id: id2})
	if err != nil || int(conn.ShimPid) != shimPid {
		t.Fatalf("connect %+v %v (shim.pid %d)", conn, err, shimPid)
	}
	// The runc root is <state-dir>/runc/<ns>.
	if _, err := os.Stat(filepath.Join(state, "runc", "test", id1)); err != nil {
		t.Fatalf("runc state: %v", err)
	}
	// The shim dies; delete cleans up like containerd expects.
	unix.Kill(shimPid, syscall.SIGKILL)
	time.Sleep(100 * time.Millisecond)
	for _, c := range []struct{ id, b string }{{id1, b1}, {id2, b2}} {
		out, err := runShimCmd(t, c.b, nil, env, append(common, "-id", c.id, "delete")...)
		if err != nil {
			t.Fatalf("delete: %v", err)
		}
		var resp taskapi.DeleteResponse
		if err := resp.Unmarshal([]byte(out)); err != nil {
			t.Fatalf("delete output %q: %v", out, err)
		}
		if resp.ExitStatus != 137 || resp.ExitedAt == nil {
			t.Fatalf("delete response %+v", resp)
		}
		if _, err := os.Stat(filepath.Join(state, "runc", "test", c.id)); !os.IsNotExist(err) {
			t.Fatalf("runc state of %s left: %v", c.id, err)
		}
	}
	// A stale socket is replaced by a new shim.
	addr3, err := runShimCmd(t, b1, nil, env, append(common, "-id", id1, "start")...)
	if err != nil || addr3 != addr {
		t.Fatalf("restart: %q %v", addr3, err)
	}
	task3, close3 := dialAddress(t, addr3)
	defer close3()
	// The reply may lose the race with the shim closing the connection
	// (containerd treats ttrpc.ErrClosed from Shutdown as success).
	if _, err := task3.Shutdown(ctx, &taskapi.ShutdownRequest{Id: id1}); err != nil && !errors.Is(err, ttrpc.ErrClosed) {
		t.Fatal(err)
	}
	_, err = runShimCmd(t, b1, nil, env, "-namespace", "test", "-address", "x", "-id", "../bad", "start")
	if err == nil {
		t.Fatal("start with an invalid id succeeded")
	}
}

// Without a socket on fd 3 the shim explains what it needs.
func TestNoListener(t *testing.T) {
	cmd := exec.Command(shared.shim, "-namespace", "test", "-id", "x", "-address", "/x")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "fd 3 is not a listening socket") {
		t.Fatalf("err %v output %q", err, out)
	}
	cmd = exec.Command(shared.shim, "-namespace", "test", "-id", "x", "-address", "/x")
	cmd.Env = append(os.Environ(), "LISTEN_FDS=2")
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "exactly one socket") {
		t.Fatalf("err %v output %q", err, out)
	}
}
