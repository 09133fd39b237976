package shimd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"
	"golang.org/x/sys/unix"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/errdefs/errgrpc"
	runcopts "github.com/edged/edged/proto/runtime/runc/v1"
	shimopts "github.com/edged/edged/proto/runtime/shim/v1"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	tasktypes "github.com/edged/edged/proto/runtime/types"
	"github.com/edged/edged/proto/wire"
)

// serverDeadline returns a task client (on a connection of its own) whose
// calls reach the shim with deadline d while the client itself waits for
// their answers as long as its context lets it: so the test sees the error
// the shim returns at its deadline, not its own context's.
func serverDeadline(t *testing.T, s *shimProc, d time.Duration) taskapi.TaskService {
	t.Helper()
	conn, err := net.Dial("unix", s.socket)
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn, ttrpc.WithUnaryClientInterceptor(
		func(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, _ *ttrpc.UnaryClientInfo, invoke ttrpc.Invoker) error {
			req.TimeoutNano = d.Nanoseconds()
			return invoke(ctx, req, resp)
		}))
	t.Cleanup(func() { c.Close() })
	return taskapi.NewTaskClient(wire.Client(c))
}

// editSpec rewrites the config.json of bundle b with edit.
func editSpec(t *testing.T, b string, edit func(spec map[string]any)) {
	t.Helper()
	path := filepath.Join(b, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	edit(spec)
	if data, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// liveProcs lists the processes (not zombies) whose command line contains
// every one of words, as "pid: command line".
func liveProcs(words ...string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if i := strings.LastIndexByte(string(stat), ')'); err != nil || i < 0 || strings.HasPrefix(string(stat[i+1:]), " Z") {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(strings.TrimRight(string(data), "\x00"), "\x00", " ")
		all := cmd != ""
		for _, w := range words {
			all = all && strings.Contains(cmd, w)
		}
		if all {
			out = append(out, fmt.Sprintf("%d: %s", pid, cmd))
		}
	}
	return out
}

// cgroupPids lists the processes in the cgroup at path (relative to the
// hierarchies' root) in every hierarchy that has it.
func cgroupPids(path string) []int {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", path))
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", path))
	seen := map[int]bool{}
	var out []int
	for _, d := range dirs {
		data, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(data)) {
			if p, err := strconv.Atoi(f); err == nil && !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out
}

// eventually polls check (up to d) until it returns "".
func eventually(d time.Duration, check func() string) string {
	deadline := time.Now().Add(d)
	for {
		msg := check()
		if msg == "" || time.Now().After(deadline) {
			return msg
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantKilledAtDeadline checks the error of a call the shim's runc outlived:
// DeadlineExceeded, naming the runc command killed, answered soon after
// the shim's deadline (runc was not waited for).
func wantKilledAtDeadline(t *testing.T, err error, took time.Duration, cmd string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s through a hung runc succeeded", cmd)
	}
	if took > 8*time.Second {
		t.Fatalf("the shim answered %v after a 1 s deadline (%v): the hung runc %s was waited for", took, err, cmd)
	}
	err = errgrpc.FromGRPC(err)
	t.Logf("answered after %v: %v", took.Round(time.Millisecond), err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v: want it to wrap context.DeadlineExceeded", err)
	}
	if want := " " + cmd + ": killed at the end of the call: context deadline exceeded"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q: want it to say %q", err, want)
	}
}

// cgroupDirs lists the directories of the cgroup at path (relative to the
// hierarchies' root) in every hierarchy that has it: one on cgroup v2,
// one per v1 hierarchy (controllers, name=systemd, a hybrid host's unified).
func cgroupDirs(path string) []string {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", path))
	if fi, err := os.Lstat(filepath.Join("/sys/fs/cgroup", path)); err == nil && fi.IsDir() {
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", path))
	}
	return dirs
}

// A Create (or CreateAndStart) whose runc hangs — a real runc in a real OCI
// hook that sleeps — returns at the shim's deadline with DeadlineExceeded;
// runc, the hook and the half-made container's init are killed, runc no
// longer knows the container, its cgroup is gone from every hierarchy
// (runc 1.1 makes it before its state.json, and runs the createRuntime
// hooks in between: `runc delete --force` then finds no container and
// removed only the state directory), the bundle has no pid file, and the
// same ID can be created again and runs. A cgroup that existed before the
// create ("existingCgroup", with a process of its own in it) is not the
// container's: it stays, and so does its process.
func TestCreateKilledAtDeadline(t *testing.T) {
	for _, tc := range []struct {
		name, hook string
		fused      bool
		existing   bool
		// escape: the hook starts a process in a session of its own
		// (out of runc's reach) and moves it into the container's
		// cgroup: the cgroup is not empty once runc is killed.
		escape bool
	}{
		{"create", "createRuntime", false, false, false},
		{"createAndStart", "createRuntime", true, false, false},
		// Hangs after the container's process started (runc run runs
		// poststart hooks once it runs): that process is killed too.
		{"createAndStartPoststart", "poststart", true, false, false},
		{"existingCgroup", "createRuntime", false, true, false},
		{"processLeftInCgroup", "createRuntime", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startShim(t, "/nonexistent/events.sock")
			id := randID("hang")
			cgPath := "/edged-shim-test/" + id
			b := newBundle(t, id, []string{"sleep", "100"}, false, nil)
			var before []string // the cgroup's directories before the create
			var own *exec.Cmd   // the process of the cgroup's own
			if tc.existing {
				mode, err := cgroups.DetectMode("")
				if err != nil {
					t.Skipf("no cgroups: %v", err)
				}
				cg := newTestCgroup(t, mode, cgPath)
				own, _ = startIn(t, cg, "sleep", "600")
				before = cgroupDirs(cgPath)
			}
			// A duration of its own names the hook's process.
			nap := fmt.Sprintf("59.%d", time.Now().UnixNano()%1000000)
			editSpec(t, b, func(spec map[string]any) {
				hook := map[string]any{"path": "/bin/sleep", "args": []string{"sleep", nap}}
				if tc.escape {
					hook = map[string]any{"path": "/bin/sh", "args": []string{"sh", "-c", `setsid sh -c '
for d in /sys/fs/cgroup/*` + cgPath + ` /sys/fs/cgroup` + cgPath + `; do echo $$ >$d/cgroup.procs; done 2>/dev/null
exec sleep ` + nap + `' </dev/null >/dev/null 2>&1 &
exec sleep ` + nap}}
				}
				spec["hooks"] = map[string]any{tc.hook: []any{hook}}
			})
			// A runtime named in the options: the shim records it in the
			// bundle (edged-shim.json) for its delete subcommand.
			ro := &runcopts.Options{BinaryName: "runc"}
			req := &taskapi.CreateTaskRequest{Id: id, Bundle: b}
			if tc.fused {
				req.Options = createAndStart(t, &shimopts.Options{Runc: ro})
			} else {
				data, _ := ro.Marshal()
				req.Options = &types.Any{TypeUrl: "containerd.runc.v1.Options", Value: data}
			}
			cmd := "create"
			if tc.fused {
				cmd = "run"
			}
			t0 := time.Now()
			_, err := serverDeadline(t, s, time.Second).Create(ctxT(t, 30*time.Second), req)
			wantKilledAtDeadline(t, err, time.Since(t0), cmd)

			// Checked at once: the Create returned once its undo was done.
			if tc.existing {
				// runc made it in the hierarchies where it was not:
				// left as well, the cgroup is not the container's.
				for _, d := range before {
					if _, err := os.Stat(d); err != nil {
						t.Fatalf("the cgroup that existed before the killed %s: %v; it is not the container's to remove", cmd, err)
					}
				}
			} else if left := cgroupDirs(cgPath); len(left) > 0 {
				t.Fatalf("the cgroup of the killed %s is left in %d hierarchies: %v", cmd, len(left), left)
			}
			if left := eventually(3*time.Second, func() string {
				procs := append(liveProcs("sleep", nap), liveProcs("runc", id)...)
				var inCg []int
				for _, p := range cgroupPids(cgPath) {
					if own == nil || p != own.Process.Pid {
						inCg = append(inCg, p)
					}
				}
				if len(procs) > 0 || len(inCg) > 0 {
					return fmt.Sprint(procs, " in the container's cgroup: ", inCg)
				}
				return ""
			}); left != "" {
				t.Fatalf("left running after the killed %s: %s", cmd, left)
			}
			if own != nil {
				if err := unix.Kill(own.Process.Pid, 0); err != nil {
					t.Fatalf("the process of the cgroup that existed before the killed %s: %v", cmd, err)
				}
				// Not the container's: the create again starts in an
				// empty cgroup.
				own.Process.Kill()
				own.Wait()
			}
			root := filepath.Join(s.state, "runc", "test")
			out, err := exec.Command("runc", "--root", root, "list").CombinedOutput()
			if err != nil || strings.Contains(string(out), id) {
				t.Fatalf("runc list after the killed %s: %v\n%s", cmd, err, out)
			}
			if _, err := os.Stat(filepath.Join(root, id)); !os.IsNotExist(err) {
				t.Fatalf("runc's state directory of %s: %v; want it removed", id, err)
			}
			for _, f := range []string{"init.pid", "edged-shim.json"} {
				if _, err := os.Stat(filepath.Join(b, f)); !os.IsNotExist(err) {
					t.Fatalf("%s in the bundle after the killed %s: %v; want none", f, cmd, err)
				}
			}
			_, err = s.task.State(ctxT(t, 5*time.Second), &taskapi.StateRequest{Id: id})
			wantErr(t, err, errdefs.ErrNotFound, id)

			// The same ID again, without the hook: created and running.
			editSpec(t, b, func(spec map[string]any) { delete(spec, "hooks") })
			pid := create(t, s, req)
			if !tc.fused {
				start(t, s, id, "")
			}
			st, err := s.task.State(ctxT(t, 5*time.Second), &taskapi.StateRequest{Id: id})
			if err != nil || st.Status != tasktypes.Status_RUNNING || st.Pid != pid {
				t.Fatalf("state of the created again %s: %+v, %v", id, st, err)
			}
			if err := unix.Kill(int(pid), 0); err != nil {
				t.Fatalf("init %d of the created again %s: %v", pid, id, err)
			}
			if _, err := s.task.Kill(ctxT(t, 10*time.Second), &taskapi.KillRequest{Id: id, Signal: 9}); err != nil {
				t.Fatal(err)
			}
			wait(t, s, id, "")
			del(t, s, id)
		})
	}
}

// freezeParent freezes (or thaws) the cgroup parent of the container's:
// runc reports the container as running then (its own cgroup is not the
// one frozen), so `runc exec` goes ahead, and hangs once its process is
// in the frozen cgroup.
func freezeParent(t *testing.T, parent string, frozen bool) {
	t.Helper()
	v1, v2 := "THAWED", "0"
	if frozen {
		v1, v2 = "FROZEN", "1"
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		if err := os.WriteFile(filepath.Join("/sys/fs/cgroup", parent, "cgroup.freeze"), []byte(v2), 0); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.WriteFile(filepath.Join("/sys/fs/cgroup/freezer", parent, "freezer.state"), []byte(v1), 0); err != nil {
		t.Fatal(err)
	}
}

// An exec Start whose runc hangs for real — `runc exec` into a container
// frozen through its parent cgroup — returns at the shim's deadline with
// DeadlineExceeded; runc is killed, and so is the half-made exec process:
// once the cgroup thaws, the exec's program does not run (a frozen
// `runc init` left behind would run it then). The exec stays created, with
// no pid and no files in the bundle, and can be deleted; the container
// takes other execs.
func TestExecKilledAtDeadline(t *testing.T) {
	id := randID("xhang")
	parent := "/edged-shim-test/" + id
	t.Cleanup(func() {
		// Registered first, run last: after the shim's clean-up deleted
		// the container. The parent cgroups are the test's.
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", parent))
		for _, d := range append(dirs, filepath.Join("/sys/fs/cgroup", parent)) {
			os.Remove(d)
		}
	})
	s := startShim(t, "/nonexistent/events.sock")
	b := newBundle(t, id, []string{"sleep", "100"}, false, nil)
	editSpec(t, b, func(spec map[string]any) {
		spec["linux"].(map[string]any)["cgroupsPath"] = parent + "/ctr"
	})
	initPid := create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	start(t, s, id, "")
	ctx := ctxT(t, 60*time.Second)
	nap := fmt.Sprintf("4242.%d", time.Now().UnixNano()%1000000)
	if _, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: "e1", Spec: execSpec(t, "sleep", nap)}); err != nil {
		t.Fatal(err)
	}
	freezeParent(t, parent, true)
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			freezeParent(t, parent, false)
		}
	})
	t0 := time.Now()
	_, err := serverDeadline(t, s, time.Second).Start(ctxT(t, 20*time.Second), &taskapi.StartRequest{Id: id, ExecId: "e1"})
	wantKilledAtDeadline(t, err, time.Since(t0), "exec")
	if left := eventually(3*time.Second, func() string {
		if p := liveProcs("runc", "exec", id); len(p) > 0 {
			return fmt.Sprint(p)
		}
		return ""
	}); left != "" {
		t.Fatalf("runc exec left running: %s", left)
	}
	st, err := s.task.State(ctx, &taskapi.StateRequest{Id: id, ExecId: "e1"})
	if err != nil || st.Status != tasktypes.Status_CREATED || st.Pid != 0 {
		t.Fatalf("exec state after the killed start: %+v, %v; want CREATED with no pid", st, err)
	}
	if left := execFiles(t, b); len(left) != 0 {
		t.Fatalf("per-exec files left in the bundle after the killed start: %v", left)
	}

	freezeParent(t, parent, false)
	thawed = true
	if left := eventually(3*time.Second, func() string {
		if pids := cgroupPids(parent + "/ctr"); len(pids) != 1 || pids[0] != int(initPid) {
			return fmt.Sprint(pids)
		}
		return ""
	}); left != "" {
		t.Fatalf("processes in the container's cgroup after the thaw: %s; want the init %d alone", left, initPid)
	}
	time.Sleep(500 * time.Millisecond)
	if p := liveProcs("sleep", nap); len(p) > 0 {
		t.Fatalf("the exec whose start failed ran once the container thawed: %v", p)
	}
	if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id, ExecId: "e1"}); err != nil {
		t.Fatalf("delete of the exec whose start was killed: %v", err)
	}
	if _, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: "e2", Spec: execSpec(t, "true")}); err != nil {
		t.Fatal(err)
	}
	start(t, s, id, "e2")
	if w := wait(t, s, id, "e2"); w.ExitStatus != 0 {
		t.Fatalf("exec after the killed one: exit status %d", w.ExitStatus)
	}
	if _, err := s.task.Kill(ctx, &taskapi.KillRequest{Id: id, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	wait(t, s, id, "")
	del(t, s, id)
}
