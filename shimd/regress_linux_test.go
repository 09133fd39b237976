package shimd_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/errdefs/errgrpc"
	runcopts "github.com/edged/edged/proto/runtime/runc/v1"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	tasktypes "github.com/edged/edged/proto/runtime/types"
)

// pidnsEnv marks a test binary re-executed by inPidNamespace.
const pidnsEnv = "EDGED_SHIM_TEST_PIDNS"

// inPidNamespace runs the calling test again, alone, in a private PID
// namespace (unshare -pf --mount-proc), where it may steer the kernel's pid
// allocation through /proc/sys/kernel/ns_last_pid to make a freed pid be
// reused at once: on the host that would disturb (and depend on) every
// other process. It returns true in the re-executed test, which does the
// work; in the outer test it reports the inner one's result and returns
// false.
func inPidNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(pidnsEnv) != "" {
		return true
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skipf("needs unshare(1) to run in a private pid namespace: %v", err)
	}
	args := []string{"-pf", "--mount-proc", os.Args[0], "-test.run", "^" + t.Name() + "$", "-test.v", "-test.count=1"}
	cmd := exec.Command(unshare, args...)
	cmd.Env = append(os.Environ(), pidnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in a private pid namespace:\n%s", out)
	switch {
	case err != nil:
		t.Fatalf("test in a private pid namespace failed: %v", err)
	case strings.Contains(string(out), "--- SKIP: "+t.Name()):
		t.Skip("skipped in the private pid namespace (see log)")
	case !strings.Contains(string(out), "--- PASS: "+t.Name()):
		t.Fatal("the test did not run in the private pid namespace")
	}
	return false
}

// setLastPid makes the next pid the kernel allocates in this namespace
// last+1.
func setLastPid(t *testing.T, last int) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(fmt.Sprint(last)), 0); err != nil {
		t.Fatal(err)
	}
}

// A group shim's Delete of a container must not drop the exit tracking of
// another container that was given one of its pids.
func TestGroupDeleteKeepsReusedPidOfOtherContainer(t *testing.T) {
	if !inPidNamespace(t) {
		return
	}
	s := startShim(t, "/nonexistent/events.sock")
	a := randID("ga")
	create(t, s, &taskapi.CreateTaskRequest{Id: a, Bundle: newBundle(t, a, []string{"true"}, false, nil)})
	pa := start(t, s, a, "")
	wait(t, s, a, "") // A exited, not deleted: its pid is free
	bID := randID("gb")
	bb := newBundle(t, bID, []string{"sleep", "100"}, false, nil)
	// Make B's init get A's pid: runc create starts a few processes
	// before the init, so aim below it and adjust by what was seen.
	off := 10
	var pb uint32
	for try := 0; try < 40; try++ {
		last := int(pa) - off
		setLastPid(t, last)
		pb = create(t, s, &taskapi.CreateTaskRequest{Id: bID, Bundle: bb})
		if pb == pa {
			break
		}
		off = int(pb) - last
		del(t, s, bID)
		pb = 0
	}
	if pb != pa {
		t.Skip("could not make B's init reuse A's pid")
	}
	start(t, s, bID, "")
	del(t, s, a) // must leave B's pid alone
	if _, err := s.task.Kill(ctxT(t, 10*time.Second), &taskapi.KillRequest{Id: bID, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Wait(ctxT(t, 5*time.Second), &taskapi.WaitRequest{Id: bID}); err != nil {
		st, _ := s.task.State(ctxT(t, 5*time.Second), &taskapi.StateRequest{Id: bID})
		t.Fatalf("wait for B after SIGKILL: %v (B's state: %v, pid %d alive: %v)", err, st.GetStatus(), pb, syscall.Kill(int(pb), 0) == nil)
	}
	del(t, s, bID)
}

// Once an exec is reaped its pid is free: Kill must not signal it even while
// the exec's output is still being copied, and State must say STOPPED.
func TestKillReapedExecDoesNotSignalReusedPid(t *testing.T) {
	if !inPidNamespace(t) {
		return
	}
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("kx")
	b := newBundle(t, id, []string{"sleep", "100"}, false, nil)
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	start(t, s, id, "")
	// A fifo nobody reads: the exec's output stays in the pipes, so the
	// shim waits (2 s) for it after reaping the exec.
	stdout, _ := fifo(t, b, "exec-out")
	ctx := ctxT(t, 30*time.Second)
	if _, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: "bg", Stdout: stdout, Spec: execSpec(t, "head", "-c", "100000", "/dev/zero")}); err != nil {
		t.Fatal(err)
	}
	pe := int(start(t, s, id, "bg"))
	for syscall.Kill(pe, 0) == nil { // until the shim has reaped it
		time.Sleep(time.Millisecond)
	}
	var victim *exec.Cmd
	last := pe - 1
	for try := 0; try < 20; try++ {
		setLastPid(t, last)
		victim = exec.Command("/bin/sleep", "100")
		if err := victim.Start(); err != nil {
			t.Fatal(err)
		}
		if victim.Process.Pid == pe {
			break
		}
		last -= victim.Process.Pid - pe
		victim.Process.Kill()
		victim.Wait()
		victim = nil
	}
	if victim == nil {
		t.Skip("could not make an unrelated process reuse the exec's pid")
	}
	waited := make(chan error, 1)
	go func() { waited <- victim.Wait() }()
	defer func() {
		victim.Process.Kill()
		<-waited
	}()
	st, err := s.task.State(ctx, &taskapi.StateRequest{Id: id, ExecId: "bg"})
	if err != nil {
		t.Fatal(err)
	}
	_, kerr := s.task.Kill(ctx, &taskapi.KillRequest{Id: id, ExecId: "bg", Signal: 9})
	select {
	case werr := <-waited:
		waited <- werr // for the deferred cleanup
		t.Fatalf("Kill of a reaped exec returned %v and killed unrelated pid %d (%v); State said %v", kerr, pe, werr, st.Status)
	case <-time.After(300 * time.Millisecond):
	}
	t.Logf("State(bg)=%v exit %d; Kill: %v", st.Status, st.ExitStatus, kerr)
	if err := errgrpc.FromGRPC(kerr); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Kill of a reaped exec: %v, want NotFound", err)
	}
	if st.Status != tasktypes.Status_STOPPED || st.ExitStatus != 0 {
		t.Fatalf("State of a reaped exec: %v exit %d, want STOPPED exit 0", st.Status, st.ExitStatus)
	}
	// Wait still answers only after the output copy ended (here: timed out).
	if w := wait(t, s, id, "bg"); w.ExitStatus != 0 {
		t.Fatalf("exec exit status %d", w.ExitStatus)
	}
}

// execFiles lists the per-exec files in the bundle (anything but the
// container's own).
func execFiles(t *testing.T, bundle string) []string {
	t.Helper()
	entries, err := os.ReadDir(bundle)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "exec-") || strings.HasPrefix(e.Name(), "hc-") {
			names = append(names, e.Name())
		}
	}
	return names
}

// Deleting an exec (and failing to start one) removes its pid file and
// runc log from the bundle: they would pile up for the container's life.
func TestExecDeleteRemovesBundleFiles(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("leak")
	b := newBundle(t, id, []string{"sleep", "100"}, false, nil)
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	start(t, s, id, "")
	ctx := ctxT(t, 60*time.Second)
	for i := 0; i < 5; i++ {
		eid := randID("hc")
		if _, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: eid, Spec: execSpec(t, "true")}); err != nil {
			t.Fatal(err)
		}
		start(t, s, id, eid)
		wait(t, s, id, eid)
		if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id, ExecId: eid}); err != nil {
			t.Fatal(err)
		}
	}
	// An exec runc fails to start.
	eid := randID("hc")
	if _, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: eid, Spec: execSpec(t, "/no/such/program")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id, ExecId: eid}); err == nil {
		t.Fatal("start of a missing program succeeded")
	}
	if left := execFiles(t, b); len(left) != 0 {
		t.Fatalf("per-exec files left in the bundle after the execs were deleted or failed: %v", left)
	}
}

// Exec IDs X and X-log must not share a file in the bundle (the spec of one
// was the runc log of the other).
func TestExecFileNamesDoNotCollide(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("coll")
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: newBundle(t, id, []string{"sleep", "100"}, false, nil)})
	start(t, s, id, "")
	ctx := ctxT(t, 120*time.Second)
	fails := 0
	const rounds = 30
	for i := 0; i < rounds; i++ {
		y := fmt.Sprintf("e%d", i)
		x := y + "-log"
		for _, e := range []string{y, x} {
			if _, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: e, Spec: execSpec(t, "true")}); err != nil {
				t.Fatal(err)
			}
		}
		errs := make(chan error, 2)
		for _, e := range []string{y, x} {
			go func(e string) {
				_, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id, ExecId: e})
				errs <- err
			}(e)
		}
		for j := 0; j < 2; j++ {
			if err := <-errs; err != nil {
				fails++
				t.Log(err)
			}
		}
	}
	if fails > 0 {
		t.Fatalf("%d of %d exec starts failed", fails, 2*rounds)
	}
}

// A file:// log on a filesystem that filled up for a while loses what came
// meanwhile, not everything after: logging resumes once there is room.
func TestFileLogResumesAfterENOSPC(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "logs")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=256k"); err != nil {
		t.Skipf("needs a small tmpfs to fill: %v", err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("enospc")
	script := `p=` + strings.Repeat("x", 160) + `; i=0; while true; do echo "line-$i-$p"; i=$((i+1)); sleep 0.05; done`
	b := newBundle(t, id, []string{"sh", "-c", script}, false, nil)
	logPath := filepath.Join(mnt, "ctr.log")
	uri := "file://" + logPath + "?max-size=16384&max-files=2"
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdout: uri, Stderr: uri})
	start(t, s, id, "")
	time.Sleep(500 * time.Millisecond)
	// Fill the filesystem for 1.5 s: log writes (and rotations) fail.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	time.Sleep(1500 * time.Millisecond)
	os.Remove(filler)
	size := func() int64 {
		var n int64
		for _, p := range []string{logPath, logPath + ".1"} {
			if st, err := os.Stat(p); err == nil {
				n += st.Size()
			}
		}
		return n
	}
	// The log files' sizes change once logging resumes (rotation can make
	// the total shrink, so compare, not order).
	before := size()
	resumed := false
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !resumed; time.Sleep(100 * time.Millisecond) {
		resumed = size() != before
	}
	s.task.Kill(ctxT(t, 10*time.Second), &taskapi.KillRequest{Id: id, Signal: 9})
	wait(t, s, id, "")
	del(t, s, id)
	if !resumed {
		t.Fatalf("nothing logged in the 3 s after the filesystem had room again (log files %d bytes)", before)
	}
}

// A runc invocation must not outlive the caller's deadline: a Pause that
// failed with DeadlineExceeded must not pause the container later. A hung
// runc cannot be caused on demand, so a wrapper script that sleeps before
// running the real runc's pause stands in for one.
func TestRuncKilledAtCallDeadline(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "pause-finished")
	fake := filepath.Join(dir, "slowrunc")
	runcPath, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("needs runc")
	}
	script := "#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = pause ]; then sleep 4; touch " + marker + "; fi; done\nexec " + runcPath + " \"$@\"\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ro, _ := (&runcopts.Options{BinaryName: fake}).Marshal()
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("dl")
	b := newBundle(t, id, []string{"sleep", "100"}, false, nil)
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Options: &types.Any{TypeUrl: "containerd.runc.v1.Options", Value: ro}})
	start(t, s, id, "")
	_, err = s.task.Pause(ctxT(t, time.Second), &taskapi.PauseRequest{Id: id})
	if err == nil {
		t.Fatal("pause through a hung runc succeeded within 1 s")
	}
	time.Sleep(5 * time.Second)
	_, merr := os.Stat(marker)
	st, _ := s.task.State(ctxT(t, 5*time.Second), &taskapi.StateRequest{Id: id})
	if merr == nil {
		t.Fatalf("runc pause was not killed at the call's deadline (Pause: %v); state now %v", err, st.GetStatus())
	}
	s.task.Kill(ctxT(t, 10*time.Second), &taskapi.KillRequest{Id: id, Signal: 9})
	wait(t, s, id, "")
	del(t, s, id)
}
