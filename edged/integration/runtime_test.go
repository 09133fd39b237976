package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/internal/testutil"
	containersapi "github.com/edged/edged/proto/services/containers/v1"
	tasksapi "github.com/edged/edged/proto/services/tasks/v1"
)

func requireRunc(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatalf("runc is required (Debian package runc): %v", err)
	}
}

func busybox(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testutil.ShortTempDir(t), "rootfs")
	if err := testutil.BusyboxRootfs(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRunForegroundExitCodeAndOutput(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}

	out := c.ok("run", "--rm", "--rootfs", rootfs, "hello", "echo", "hello from edged")
	if out != "hello from edged\n" {
		t.Fatalf("output %q", out)
	}
	out, errOut, code := c.run("run", "--rm", "--rootfs", rootfs, "fail", "sh", "-c", "echo out; echo err >&2; exit 3")
	if code != 3 || out != "out\n" || !strings.Contains(errOut, "err") {
		t.Fatalf("exit %d stdout %q stderr %q", code, out, errOut)
	}
	// --rm removed the containers.
	if got := c.ok("c", "ls", "-q"); got != "" {
		t.Fatalf("containers left: %q", got)
	}
	// Without --rm the container stays, its task is gone.
	out = c.ok("run", "--rootfs", rootfs, "--user", "app", "--env", "GREETING=hi", "--hostname", "box", "keep", "sh", "-c", "id -u; hostname; echo $GREETING")
	if out != "1000\nbox\nhi\n" {
		t.Fatalf("user/hostname/env: %q", out)
	}
	if got := c.ok("c", "ls", "-q"); got != "keep\n" {
		t.Fatalf("container not kept: %q", got)
	}
	// stdin with -i.
	cmd := exec.Command(filepath.Join(binDir, "edgectl"), "--address", d.Address, "run", "--rm", "-i", "--rootfs", rootfs, "cat1", "cat")
	cmd.Stdin = strings.NewReader("piped input\n")
	b, err := cmd.Output()
	if err != nil || string(b) != "piped input\n" {
		t.Fatalf("stdin: %q %v", b, err)
	}
	// Errors.
	c.fails(1, `container "keep" in namespace "default": already exists`, "run", "--rootfs", rootfs, "keep", "true")
	c.fails(1, "rootfs_path", "run", "--rootfs", "/nonexistent-rootfs", "x", "true")
	c.fails(2, "give IMAGE ID", "run", "onlyimage")
	c.fails(1, `id: "../bad" must match`, "run", "--rootfs", rootfs, "../bad", "true")
	c.fails(1, "exec: \"nonexistent-binary\"", "run", "--rm", "--rootfs", rootfs, "nobin", "nonexistent-binary")
	if got := c.ok("c", "ls", "-q"); got != "keep\nnobin\n" && got != "keep\n" {
		t.Fatalf("after errors: %q", got)
	}
}

func TestDetachedTaskLifecycle(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	cl := newClient(t, d)
	ctx := ctxT(t)

	c.ok("run", "-d", "--rootfs", rootfs, "web", "sh", "-c", "for i in $(seq 1 5); do echo line $i; done; exec sleep 300")
	// logs: all, tail.
	waitFor(t, func() bool { return c.ok("logs", "web") == "line 1\nline 2\nline 3\nline 4\nline 5\n" })
	if got := c.ok("logs", "--tail", "2", "web"); got != "line 4\nline 5\n" {
		t.Fatalf("tail: %q", got)
	}
	out := c.ok("task", "ls")
	if lines := testutil.Lines(out); len(lines) != 2 || !strings.Contains(lines[1], "RUNNING") {
		t.Fatalf("task ls:\n%s", out)
	}
	// exec.
	if got := c.ok("task", "exec", "web", "sh", "-c", "echo exec works; exit 0"); got != "exec works\n" {
		t.Fatalf("exec: %q", got)
	}
	if _, _, code := c.run("task", "exec", "web", "sh", "-c", "exit 5"); code != 5 {
		t.Fatalf("exec exit code %d", code)
	}
	// ps.
	if out := c.ok("task", "ps", "web"); len(testutil.Lines(out)) < 2 {
		t.Fatalf("ps: %s", out)
	}
	// pause / resume.
	c.ok("task", "pause", "web")
	p, err := cl.GetTask(ctx, "web", "")
	if err != nil || p.Status != tasksapi.Status_PAUSED {
		t.Fatalf("after pause: %v %v", p, err)
	}
	c.ok("task", "resume", "web")
	p, _ = cl.GetTask(ctx, "web", "")
	if p.Status != tasksapi.Status_RUNNING {
		t.Fatalf("after resume: %v", p.Status)
	}
	// A container with a task cannot be removed.
	c.fails(1, `container "web" has a task`, "c", "rm", "web")
	// rm of a running task without -f fails clearly.
	_, errOut, code := c.run("task", "rm", "web")
	if code != 1 || !strings.Contains(errOut, "edgectl:") {
		t.Fatalf("rm running: %d %q", code, errOut)
	}
	// logs -f follows until the task exits.
	follow := exec.Command(filepath.Join(binDir, "edgectl"), "--address", d.Address, "logs", "-f", "--tail", "1", "web")
	var fout strings.Builder
	follow.Stdout = &fout
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	c.ok("task", "kill", "-s", "KILL", "web")
	if err := waitCmd(follow, 15*time.Second); err != nil {
		t.Fatalf("logs -f did not end when the task exited: %v", err)
	}
	if fout.String() != "line 5\n" {
		t.Fatalf("logs -f: %q", fout.String())
	}
	if _, _, code := c.run("task", "wait", "web"); code != 137 {
		t.Fatalf("wait after SIGKILL: exit %d, want 137", code)
	}
	if out := c.ok("task", "rm", "web"); out != "web\t137\n" {
		t.Fatalf("rm: %q", out)
	}
	c.ok("c", "rm", "web")
	// Errors name the task.
	c.fails(1, `task "web" in namespace "default": not found`, "task", "kill", "web")
	c.fails(2, `unknown signal "BOGUS"`, "task", "kill", "-s", "BOGUS", "web")
	_, err = cl.GetTask(ctx, "nope", "")
	wantErr(t, err, errdefs.ErrNotFound, `task "nope"`)
}

func waitCmd(cmd *exec.Cmd, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		cmd.Process.Kill()
		return fmt.Errorf("timed out")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("condition not met in 10 s")
}

func runDetached(t *testing.T, cl *client.Client, rootfs, id string, labels map[string]string, args ...string) {
	t.Helper()
	ctx := ctxT(t)
	if _, err := cl.CreateFromImage(ctx, &containersapi.CreateFromImageRequest{Id: id, RootfsPath: rootfs, Labels: labels, Options: &containersapi.SpecOptions{Args: args}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateTask(ctx, id, client.TaskOpts{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.StartTask(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
}

// TestRestartRecovery kills edged with SIGKILL while containers run; the
// containers keep running, a restarted edged reconnects to their shims and
// learns of an exit that happened while it was down.
func TestRestartRecovery(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	cl := newClient(t, d)
	ctx := ctxT(t)
	runDetached(t, cl, rootfs, "long", nil, "sleep", "300")
	runDetached(t, cl, rootfs, "short", nil, "sh", "-c", "read x < /dev/zero; sleep 300")
	pLong, _ := cl.GetTask(ctx, "long", "")
	pShort, _ := cl.GetTask(ctx, "short", "")
	cl.Close()
	d.Kill()

	// While edged is down: one container exits with a known status.
	syscall.Kill(int(pShort.Pid), syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	if err := syscall.Kill(int(pLong.Pid), 0); err != nil {
		t.Fatalf("container died with edged: %v", err)
	}

	d2 := startDaemonAt(t, d)
	waitLog(t, d2, "reconnected=2")
	cl2 := newClient(t, d2)
	p, err := cl2.GetTask(ctx, "long", "")
	if err != nil || p.Status != tasksapi.Status_RUNNING || p.Pid != pLong.Pid {
		t.Fatalf("long after restart: %+v %v", p, err)
	}
	st, err := cl2.Wait(ctx, "short", "")
	if err != nil || st.Code != 137 {
		t.Fatalf("exit while edged was down: %+v %v (want 137)", st, err)
	}
	if _, err := cl2.DeleteTask(ctx, "short", false); err != nil {
		t.Fatal(err)
	}
	if _, err := cl2.DeleteTask(ctx, "long", true); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(int(pLong.Pid), 0); err == nil {
		t.Fatal("force delete left the process running")
	}
}

// TestDeadShimsCleanedAtStart kills shims while edged is down (as a reboot
// would); the next edged cleans up their tasks, bundles and sockets.
func TestDeadShimsCleanedAtStart(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	cl := newClient(t, d)
	ctx := ctxT(t)
	runDetached(t, cl, rootfs, "a", nil, "sleep", "300")
	p, _ := cl.GetTask(ctx, "a", "")
	cl.Close()
	d.Kill()
	// Kill the shim and the container.
	shimPid := shimOf(t, int(p.Pid))
	syscall.Kill(shimPid, syscall.SIGKILL)
	syscall.Kill(int(p.Pid), syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)

	d2 := startDaemonAt(t, d)
	waitLog(t, d2, "dead=1")
	cl2 := newClient(t, d2)
	if _, err := cl2.GetTask(ctx, "a", ""); !errdefs.IsNotFound(err) {
		t.Fatalf("task of a dead shim: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(d2.State, "bundles", "default")); len(entries) != 0 {
		t.Fatalf("bundles left: %v", entries)
	}
	// The container can run again.
	if _, err := cl2.CreateTask(ctx, "a", client.TaskOpts{}); err != nil {
		t.Fatal(err)
	}
	cl2.DeleteTask(ctx, "a", true)
}

func readPpid(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	return strconv.Atoi(fields[1])
}

// shimOf returns the pid of the edged-shim whose child (by the shim being
// the child subreaper of runc's processes) the container process pid is.
// It waits briefly for the parent to be a shim, and fails naming what the
// parent is otherwise: a signal meant for the shim must never reach
// another process.
func shimOf(t *testing.T, pid int) int {
	t.Helper()
	var ppid int
	var comm string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var err error
		if ppid, err = readPpid(pid); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ppid))
		if comm = strings.TrimSpace(string(b)); comm == "edged-shim" {
			return ppid
		}
	}
	t.Fatalf("the parent of container process %d is %d (%q), not an edged-shim", pid, ppid, comm)
	return 0
}

// allThreadsStopped reports whether every thread of pid is stopped by a
// signal (state T in /proc).
func allThreadsStopped(pid int) bool {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			return false
		}
		rest := b[bytes.LastIndexByte(b, ')')+2:]
		if len(rest) == 0 || rest[0] != 'T' {
			return false
		}
	}
	return len(stats) > 0
}

// TestHungShimDoesNotHangEdged stops a shim (SIGSTOP): calls to it fail
// within the shim call deadline, edged treats it as dead, and other
// requests keep working.
func TestHungShimDoesNotHangEdged(t *testing.T) {
	requireRunc(t)
	dir := testutil.ShortTempDir(t)
	cfg := filepath.Join(dir, "edged.toml")
	os.WriteFile(cfg, []byte("[runtime]\nshim_call_timeout = \"1s\"\nshim_connect_timeout = \"500ms\"\n"), 0o600)
	d := testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: dir, Args: []string{"--config", cfg}})
	rootfs := busybox(t)
	cl := newClient(t, d)
	ctx := ctxT(t)
	runDetached(t, cl, rootfs, "hung", nil, "sleep", "300")
	p, _ := cl.GetTask(ctx, "hung", "")
	shimPid := shimOf(t, int(p.Pid))
	syscall.Kill(shimPid, syscall.SIGSTOP)
	defer syscall.Kill(shimPid, syscall.SIGKILL)
	// kill returns before every thread has stopped: a call sent at once
	// could still be answered.
	waitFor(t, func() bool { return allThreadsStopped(shimPid) })

	start := time.Now()
	_, err := cl.GetTask(ctx, "hung", "")
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("call to a hung shim took %v", took)
	}
	wantErr(t, err, errdefs.ErrUnavailable, "did not answer")
	if _, err := cl.Version(ctx); err != nil {
		t.Fatalf("edged hangs with a hung shim: %v", err)
	}
	waitFor(t, func() bool {
		_, err := cl.GetTask(ctx, "hung", "")
		return errdefs.IsNotFound(err)
	})
	d.Kill()
	// A restart with the hung shim still stopped finishes promptly too.
	start = time.Now()
	startDaemonAt(t, d)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("start-up with a hung shim took %v", took)
	}
}

// TestShimGroup runs two containers in one shim process; their exits and
// waits stay separate.
func TestShimGroup(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	cl := newClient(t, d)
	ctx := ctxT(t)
	group := map[string]string{"edged.io/shim-group": "g1"}
	runDetached(t, cl, rootfs, "g-a", group, "sh", "-c", "sleep 300")
	runDetached(t, cl, rootfs, "g-b", group, "sh", "-c", "sleep 0.2; exit 4")
	pa, _ := cl.GetTask(ctx, "g-a", "")
	pb, _ := cl.GetTask(ctx, "g-b", "")
	if shimOf(t, int(pa.Pid)) != shimOf(t, int(pb.Pid)) {
		t.Fatal("containers of one group run in different shims")
	}
	st, err := cl.Wait(ctx, "g-b", "")
	if err != nil || st.Code != 4 {
		t.Fatalf("g-b: %+v %v", st, err)
	}
	if p, _ := cl.GetTask(ctx, "g-a", ""); p.Status != tasksapi.Status_RUNNING {
		t.Fatalf("g-a affected by g-b's exit: %v", p.Status)
	}
	cl.DeleteTask(ctx, "g-b", false)
	// The shim stays while g-a runs.
	if err := syscall.Kill(shimOf(t, int(pa.Pid)), 0); err != nil {
		t.Fatal("shim exited while a container of its group runs")
	}
	cl.DeleteTask(ctx, "g-a", true)
}

var _ = context.Background

// waitLog waits for edged to log substr (the log arrives through a pipe,
// a little after edged wrote it).
func waitLog(t *testing.T, d *testutil.Daemon, substr string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if strings.Contains(d.Log(), substr) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("edged did not log %q:\n%s", substr, d.Log())
}
