package integration

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

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/internal/testutil"
	tasksapi "github.com/edged/edged/proto/services/tasks/v1"
)

// fgRun is a foreground edgectl started by startForeground.
type fgRun struct {
	cmd            *exec.Cmd
	stdout, stderr testutil.SyncBuffer
	done           chan error // its exit
}

// startForeground starts edgectl with args, killed at the end of the test.
func startForeground(t *testing.T, args ...string) *fgRun {
	t.Helper()
	return startForegroundEnv(t, nil, args...)
}

// startForegroundEnv is startForeground with env added to edgectl's
// environment.
func startForegroundEnv(t *testing.T, env []string, args ...string) *fgRun {
	t.Helper()
	r := &fgRun{done: make(chan error, 1)}
	r.cmd = exec.Command(filepath.Join(binDir, "edgectl"), args...)
	if env != nil {
		r.cmd.Env = append(os.Environ(), env...)
	}
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cmd.Process.Kill() })
	go func() { r.done <- r.cmd.Wait() }()
	return r
}

// expectExit waits up to 30 s for the edgectl of r (called name) to exit
// with code and checks it printed stdout: the output from before and after
// the restarts.
func (r *fgRun) expectExit(t *testing.T, name string, code int, stdout string) {
	t.Helper()
	select {
	case err := <-r.done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != code {
			t.Errorf("%s: edgectl exit %v, want %d; stderr %q", name, err, code, r.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: edgectl did not exit; stdout %q, stderr %q", name, r.stdout.String(), r.stderr.String())
	}
	if got := r.stdout.String(); got != stdout {
		t.Errorf("%s: stdout %q, want %q (the output from before and after the restarts)", name, got, stdout)
	}
}

// waitForRuns polls cond for up to 20 s, then fails with what and the
// output of runs.
func waitForRuns(t *testing.T, runs []*fgRun, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			var out []string
			for _, r := range runs {
				out = append(out, fmt.Sprintf("stdout %q stderr %q", r.stdout.String(), r.stderr.String()))
			}
			t.Fatalf("timed out waiting for %s; %s", what, strings.Join(out, " / "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A foreground `edgectl run` outlives restarts of edged under it: a
// SIGTERM (edged's drain ends the wait with Unavailable) and then a kill
// -9 (the connection breaks). edgectl connects again, waits again, and
// exits with the container's exit code; the output written while edged
// was away arrives (the shim holds the fifos), and --rm still removes the
// container. Before, edgectl exited 1 with the drain message and left the
// container running with nobody reading its output.
func TestForegroundRunOutlivesEdgedRestarts(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	gate := t.TempDir()
	os.Chmod(gate, 0o777)

	var runs []*fgRun
	for _, id := range []string{"fg1", "fg2"} {
		// The container prints, waits for the test's signal (a file in
		// a bind mount), prints again and exits 7.
		script := "echo before; while [ ! -e /gate/" + id + " ]; do sleep 0.05; done; echo after; echo err >&2; exit 7"
		runs = append(runs, startForeground(t, "--address", d.Address, "run", "--rm", "--rootfs", rootfs,
			"--mount", "src="+gate+",dst=/gate", id, "sh", "-c", script))
	}
	waitFor := func(what string, cond func() bool) { t.Helper(); waitForRuns(t, runs, what, cond) }
	for _, r := range runs {
		waitFor("the containers to start", func() bool { return r.stdout.String() == "before\n" })
	}
	time.Sleep(500 * time.Millisecond) // edgectl is in its Wait call

	// A restart by systemd: SIGTERM, then a new edged.
	d.Stop(t)
	for _, r := range runs {
		waitFor("edgectl to see edged go", func() bool { return strings.Contains(r.stderr.String(), "lost edged") })
		select {
		case err := <-r.done:
			t.Fatalf("edgectl exited when edged stopped: %v; stderr %q", err, r.stderr.String())
		default:
		}
	}
	// The drain ended the wait (or, on a host too slow for the sleep
	// above, the Wait went out after edged had closed).
	if s := runs[0].stderr.String(); !strings.Contains(s, "edged is shutting down") && !strings.Contains(s, "connection closed") || !strings.Contains(s, "fg1 keeps running; connecting again for up to 1m0s") {
		t.Errorf("stderr after the SIGTERM: %q", runs[0].stderr.String())
	}
	t.Logf("fg1 after the SIGTERM: %s", runs[0].stderr.String())
	d2 := startDaemonAt(t, d)
	// fg1 ends while edged is back.
	if err := os.WriteFile(filepath.Join(gate, "fg1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A crash: kill -9 while fg2 is still waited for; fg2 ends while edged
	// is down, and the next edged learns of its exit.
	time.Sleep(300 * time.Millisecond)
	d2.Kill()
	if err := os.WriteFile(filepath.Join(gate, "fg2"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	d3 := startDaemonAt(t, d2)

	for i, r := range runs {
		r.expectExit(t, fmt.Sprintf("fg%d", i+1), 7, "before\nafter\n")
		if !strings.HasSuffix(r.stderr.String(), "err\n") {
			t.Errorf("fg%d: stderr %q", i+1, r.stderr.String())
		}
	}
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d3.Address}}
	if got := c.ok("c", "ls", "-q"); got != "" {
		t.Errorf("--rm left containers after the restarts: %q", got)
	}
	if got := c.ok("task", "ls"); strings.Contains(got, "fg1") || strings.Contains(got, "fg2") {
		t.Errorf("tasks left after the restarts: %q", got)
	}
}

// While edged is away, Ctrl-C ends the wait: edgectl says the container
// keeps running (there is no edged to pass the signal to) and exits 130,
// as for any command a SIGINT cuts short.
func TestForegroundRunInterruptedWhileEdgedAway(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	var stderr testutil.SyncBuffer
	cmd := exec.Command(filepath.Join(binDir, "edgectl"), "--address", d.Address, "run", "--rootfs", rootfs, "away", "sleep", "300")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	cl := newClient(t, d)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if p, err := cl.GetTask(ctxT(t), "away", ""); err == nil && p.Pid > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task did not start; stderr %q", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cl.Close()
	d.Kill()
	for !strings.Contains(stderr.String(), "connecting again") {
		if time.Now().After(deadline) {
			t.Fatalf("edgectl did not notice edged was gone; stderr %q", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Errorf("edgectl exit %v, want 130", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Ctrl-C did not end edgectl while edged was away; stderr %q", stderr.String())
	}
	if !strings.Contains(stderr.String(), "edgectl: away keeps running; edgectl stopped waiting for it while edged was away: interrupted (SIGINT)\n") {
		t.Errorf("stderr %q", stderr.String())
	}
	// The container did keep running: the next edged has it.
	d2 := startDaemonAt(t, d)
	cl2 := newClient(t, d2)
	if p, err := cl2.GetTask(ctxT(t), "away", ""); err != nil || p.Pid == 0 {
		t.Fatalf("task after the restart: %+v, %v", p, err)
	}
	if _, err := cl2.DeleteTask(ctxT(t), "away", true); err != nil {
		t.Fatal(err)
	}
}

// With edged gone for longer than --reconnect, a foreground run gives up
// with an error naming the wait and saying the container keeps running;
// --reconnect 0 gives up at once (edgectl's behaviour before it waited
// through restarts).
func TestForegroundRunReconnectGivesUp(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	start := func(reconnect, id string) *fgRun {
		return startForeground(t, "--address", d.Address, "--reconnect", reconnect, "run", "--rootfs", rootfs, id, "sleep", "300")
	}
	r1, r0 := start("1s", "give1"), start("0", "give0")
	cl := newClient(t, d)
	deadline := time.Now().Add(20 * time.Second)
	for _, id := range []string{"give1", "give0"} {
		for {
			if p, err := cl.GetTask(ctxT(t), id, ""); err == nil && p.Pid > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not start", id)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond) // both are in their Wait call
	cl.Close()
	d.Kill()
	for _, tc := range []struct {
		r    *fgRun
		want []string
	}{
		{r0, []string{"edged connection: rpc: connection closed"}},
		{r1, []string{"connecting again for up to 1s", "give1 keeps running, but edgectl cannot wait for it: edged did not come back within 1s: connect to edged at " + d.Address}},
	} {
		select {
		case err := <-tc.r.done:
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("edgectl exit %v, want 1; stderr %q", err, tc.r.stderr.String())
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("edgectl did not give up; stderr %q", tc.r.stderr.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(tc.r.stderr.String(), w) {
				t.Errorf("stderr %q, want %q", tc.r.stderr.String(), w)
			}
		}
	}
	if strings.Contains(r0.stderr.String(), "connecting again") {
		t.Errorf("--reconnect 0 tried again: %q", r0.stderr.String())
	}
	// Both containers kept running: the next edged has them.
	d2 := startDaemonAt(t, d)
	cl2 := newClient(t, d2)
	for _, id := range []string{"give1", "give0"} {
		if p, err := cl2.GetTask(ctxT(t), id, ""); err != nil || p.Pid == 0 {
			t.Errorf("%s after the restart: %+v, %v", id, p, err)
		}
		cl2.DeleteTask(ctxT(t), id, true)
	}
}

// Ctrl-C while edged is still creating a foreground run's container (or
// an exec). The create is held for as long as the test needs: the
// container joins a shim group whose shim is stopped (SIGSTOP), so edged's
// call to it waits.
//
//   - Once: edgectl lets the create finish and then removes the task and
//     the container, and says so; exit 130 (128+SIGINT, as a shell reports
//     it). Before, edgectl cut the call short and said "not started": when
//     edged had finished the create before the signal but edgectl had not
//     read the reply yet, the container kept running (with --rm never
//     removed), or the signal was lost and edgectl waited for a container
//     that never got it.
//   - Twice: edgectl abandons the create at once, still held by the stopped
//     shim, and says it did not start; its exit closes the connection, which
//     cancels the create, and edged undoes it.
//
// Either way nothing of the run is left, and the group's other container
// is untouched.
func TestForegroundCtrlCDuringCreate(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	cl := newClient(t, d)
	ctx := ctxT(t)
	runDetached(t, cl, rootfs, "anchor", map[string]string{"edged.io/shim-group": "held"}, "sleep", "300")
	p, err := cl.GetTask(ctx, "anchor", "")
	if err != nil {
		t.Fatal(err)
	}
	shim := shimOf(t, int(p.Pid))
	t.Cleanup(func() { syscall.Kill(shim, syscall.SIGCONT) })
	for _, tc := range []struct {
		id      string
		signals int
		stderr  string
	}{
		{"once", 1, "edgectl: once: removed: interrupted (SIGINT)\n"},
		{"twice", 2, "edgectl: twice: not started: interrupted (SIGINT)\n"},
	} {
		syscall.Kill(shim, syscall.SIGSTOP)
		waitFor(t, func() bool { return allThreadsStopped(shim) })
		r := startForeground(t, "--address", d.Address, "run", "--rm", "--shim-group", "held", "--rootfs", rootfs, tc.id, "sleep", "300")
		// The container record is the first thing the create makes; the
		// task's create then waits for the stopped shim.
		waitForRuns(t, []*fgRun{r}, tc.id+"'s container record", func() bool {
			_, err := cl.GetContainer(ctx, tc.id)
			return err == nil
		})
		for range tc.signals {
			r.cmd.Process.Signal(syscall.SIGINT)
			time.Sleep(100 * time.Millisecond) // handled before the next
		}
		if tc.signals == 1 {
			// edgectl waits for the create, which the shim still holds,
			// and after a second says so.
			hint := stopHint(tc.id)
			waitForRuns(t, []*fgRun{r}, "the hint", func() bool { return r.stderr.String() == hint })
			select {
			case err := <-r.done:
				t.Fatalf("%s: edgectl exited (%v) before the create ended; stderr %q", tc.id, err, r.stderr.String())
			default:
			}
			tc.stderr = hint + tc.stderr
			syscall.Kill(shim, syscall.SIGCONT)
			r.expectExit(t, tc.id, 130, "")
		} else {
			// edgectl ends with the shim still stopped.
			r.expectExit(t, tc.id, 130, "")
			syscall.Kill(shim, syscall.SIGCONT)
		}
		got := r.stderr.String()
		if tc.signals > 1 {
			// A very slow host may have let a second pass between the
			// signals: the hint is then printed before the abandon.
			got = strings.TrimPrefix(got, stopHint(tc.id))
		}
		if got != tc.stderr {
			t.Errorf("stderr %q, want %q", got, tc.stderr)
		}
		waitForRuns(t, []*fgRun{r}, "the removal of "+tc.id, func() bool {
			_, cerr := cl.GetContainer(ctx, tc.id)
			_, terr := cl.GetTask(ctx, tc.id, "")
			return errdefs.IsNotFound(cerr) && errdefs.IsNotFound(terr)
		})
	}
	// An exec the same way, with one Ctrl-C: edgectl removes it once its
	// create is done. edgectl makes its fifos (in XDG_RUNTIME_DIR, a tmpfs)
	// after it catches signals and before it sends the exec, which the
	// stopped shim then holds.
	fifoDir, err := os.MkdirTemp("/dev/shm", "edged-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(fifoDir)
	syscall.Kill(shim, syscall.SIGSTOP)
	waitFor(t, func() bool { return allThreadsStopped(shim) })
	r := startForegroundEnv(t, []string{"XDG_RUNTIME_DIR=" + fifoDir}, "--address", d.Address, "task", "exec", "--exec-id", "held-exec", "anchor", "sleep", "300")
	waitForRuns(t, []*fgRun{r}, "edgectl's fifos", func() bool {
		m, _ := filepath.Glob(filepath.Join(fifoDir, "edgectl-io-*"))
		return len(m) > 0
	})
	r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-r.done:
		t.Fatalf("exec: edgectl exited (%v) before the create ended; stderr %q", err, r.stderr.String())
	case <-time.After(300 * time.Millisecond):
	}
	syscall.Kill(shim, syscall.SIGCONT)
	r.expectExit(t, "exec", 130, "")
	// The hint too if the create outlasted the signal by a second on a
	// slow host.
	if got, want := strings.TrimPrefix(r.stderr.String(), stopHint("exec held-exec in anchor")), "edgectl: exec held-exec in anchor: removed: interrupted (SIGINT)\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
	if _, err := cl.GetTask(ctx, "anchor", "held-exec"); !errdefs.IsNotFound(err) {
		t.Errorf("the exec after edgectl removed it: %v", err)
	}
	if pids, err := cl.Pids(ctx, "anchor"); err != nil || len(pids) != 1 {
		t.Errorf("anchor's processes after the exec's removal: %+v, %v", pids, err)
	}

	if p, err := cl.GetTask(ctx, "anchor", ""); err != nil || p.Status != tasksapi.Status_RUNNING {
		t.Errorf("the group's other container: %+v, %v", p, err)
	}
	cl.DeleteTask(ctx, "anchor", true)
}

// A foreground run whose container is deleted while edged is away says
// that its exit status is lost, instead of a bare "not found". The real
// cause, a kill -9 of edged between a Wait{delete}'s delete and its reply,
// is a window of microseconds; the test makes the same state for real:
// edgectl is stopped (SIGSTOP) while edged is killed, started again and
// the container deleted through another client, then edgectl resumes,
// connects again and waits.
func TestForegroundRunDeletedWhileEdgedAway(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	r := startForeground(t, "--address", d.Address, "run", "--rm", "--rootfs", rootfs, "gone", "sleep", "300")
	cl := newClient(t, d)
	waitForRuns(t, []*fgRun{r}, "the container's start", func() bool {
		p, err := cl.GetTask(ctxT(t), "gone", "")
		return err == nil && p.Pid > 0
	})
	r.cmd.Process.Signal(syscall.SIGSTOP)
	t.Cleanup(func() { r.cmd.Process.Signal(syscall.SIGCONT) })
	d.Kill()
	d2 := startDaemonAt(t, d)
	cl2 := newClient(t, d2)
	if _, err := cl2.DeleteTask(ctxT(t), "gone", true); err != nil {
		t.Fatal(err)
	}
	if err := cl2.DeleteContainer(ctxT(t), "gone"); err != nil {
		t.Fatal(err)
	}
	r.cmd.Process.Signal(syscall.SIGCONT)
	r.expectExit(t, "gone", 1, "")
	for _, want := range []string{
		"edgectl: lost edged",
		"edgectl: gone was deleted while edged was away, so its exit status is lost: ",
	} {
		if !strings.Contains(r.stderr.String(), want) {
			t.Errorf("stderr %q, want %q", r.stderr.String(), want)
		}
	}
}

// stopHint is what edgectl prints when a create outlasts a Ctrl-C by a
// second.
func stopHint(what string) string {
	return "edgectl: " + what + ": waiting for edged to finish creating it, then removing it (Ctrl-C again to abandon)\n"
}

// A foreground `edgectl task exec` rides out a kill -9 of edged the same
// way a run does: the exec process keeps running, edgectl connects to the
// next edged, waits for the exec again and exits with its code; its output
// from before and after arrives. One exec ends while edged is back, the
// other while edged is down (its exit is learned from the shim).
func TestForegroundExecOutlivesEdgedRestart(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	gate := t.TempDir()
	os.Chmod(gate, 0o777)
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	c.ok("run", "-d", "--rootfs", rootfs, "--mount", "src="+gate+",dst=/gate", "host", "sleep", "300")

	var runs []*fgRun
	for _, g := range []string{"e1", "e2"} {
		script := "echo before; while [ ! -e /gate/" + g + " ]; do sleep 0.05; done; echo after; exit 6"
		runs = append(runs, startForeground(t, "--address", d.Address, "task", "exec", "--exec-id", g, "host", "sh", "-c", script))
	}
	waitFor := func(what string, cond func() bool) { t.Helper(); waitForRuns(t, runs, what, cond) }
	for _, r := range runs {
		waitFor("the execs to start", func() bool { return r.stdout.String() == "before\n" })
	}
	time.Sleep(300 * time.Millisecond) // edgectl is in its Wait call
	d.Kill()
	for _, r := range runs {
		waitFor("edgectl to see edged go", func() bool { return strings.Contains(r.stderr.String(), "lost edged") })
	}
	// e2 ends while edged is down.
	if err := os.WriteFile(filepath.Join(gate, "e2"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	d2 := startDaemonAt(t, d)
	// e1 ends while edged is back.
	time.Sleep(300 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(gate, "e1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, r := range runs {
		r.expectExit(t, fmt.Sprintf("e%d", i+1), 6, "before\nafter\n")
	}
	// The container's init is untouched, and the execs are gone.
	c2 := cli{t: t, env: []string{"EDGED_ADDRESS=" + d2.Address}}
	if got := c2.ok("task", "ls"); !strings.Contains(got, "RUNNING") {
		t.Errorf("the container's task after the execs: %q", got)
	}
	cl := newClient(t, d2)
	for _, g := range []string{"e1", "e2"} {
		if p, err := cl.GetTask(ctxT(t), "host", g); err == nil {
			t.Errorf("exec %s still there after its wait: %+v", g, p)
		}
	}
	c2.ok("task", "rm", "-f", "host")
}
