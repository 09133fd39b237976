// Package interop checks edged-shim against the real containerd 1.6 (Debian
// package containerd): containerd resolves io.containerd.edged.v2 to
// containerd-shim-edged-v2, starts it with the start subcommand, drives the
// task API over ttrpc and receives the shim's events on its ttrpc Forward
// service. The stock containerd-shim-runc-v2 runs the same image as a control.
package interop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestContainerdRunsEdgedShim(t *testing.T) {
	c := startContainerd(t)
	img := filepath.Join(c.dir, "busybox.tar")
	if err := writeBusyboxImage(busyboxPath(t), img); err != nil {
		t.Fatal(err)
	}
	c.must("images", "import", "--index-name", testImage, img)
	if out := c.must("images", "ls", "-q"); !slices.Contains(strings.Fields(out), testImage) {
		t.Fatalf("imported image %s not listed: %q", testImage, out)
	}
	ev := c.watchEvents()
	c.syncEvents(ev)

	// The control: the stock runc shim with the same image and daemon.
	t.Run("RuncControl", func(t *testing.T) {
		id := "ctl-" + randHex(4)
		r := c.run(60*time.Second, "run", "--rm", "--runtime", runtimeRunc, testImage, id, "sh", "-c", "echo hello-from-runc; exit 7")
		if r.code != 7 || !hasLine(r.stdout, "hello-from-runc") {
			t.Fatalf("containerd-shim-runc-v2 control failed, the environment is broken (not edged-shim): %v", r)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("RunRmExitStatus", func(t *testing.T) {
		id := "rm-" + randHex(4)
		r := c.run(60*time.Second, "run", "--rm", "--runtime", runtimeEdged, testImage, id, "sh", "-c", "echo hello-from-edged-shim; exit 7")
		if r.code != 7 {
			t.Fatalf("want exit 7: %v", r)
		}
		if !hasLine(r.stdout, "hello-from-edged-shim") {
			t.Fatalf("stdout lacks the line: %v", r)
		}
		// The shim published the exit, with the status, to containerd.
		if l, ok := ev.wait(10*time.Second, "/tasks/exit", `"container_id":"`+id+`"`); !ok {
			t.Fatalf("no /tasks/exit for %s:\n%s", id, ev.all())
		} else if !strings.Contains(l, `"exit_status":7`) {
			t.Fatalf("exit event without status 7: %s", l)
		}
		c.assertGone(t, id)
	})

	t.Run("DetachedKill", func(t *testing.T) {
		id := "det-" + randHex(4)
		c.must("run", "-d", "--runtime", runtimeEdged, testImage, id, "sleep", "30")
		ti := c.waitTask(id, "RUNNING", 10*time.Second)
		if ti.pid <= 0 {
			t.Fatalf("running task without pid: %+v", ti)
		}
		shim, err := parentPid(ti.pid)
		if err != nil {
			t.Fatal(err)
		}
		if exe := exePath(shim); exe != c.shimBin {
			t.Fatalf("task %d runs under %d (%s), not edged-shim %s", ti.pid, shim, exe, c.shimBin)
		}
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ti.pid)); string(cmd) != "sleep\x0030\x00" {
			t.Fatalf("task %d runs %q", ti.pid, cmd)
		}
		if _, ok := ev.wait(10*time.Second, "/tasks/start", `"container_id":"`+id+`"`); !ok {
			t.Fatalf("no /tasks/start for %s:\n%s", id, ev.all())
		}

		if out := c.must("task", "ps", id); !slices.Contains(strings.Fields(out), fmt.Sprint(ti.pid)) {
			t.Fatalf("task ps lacks the init %d:\n%s", ti.pid, out)
		}
		c.must("task", "pause", id)
		c.waitTask(id, "PAUSED", 10*time.Second)
		c.must("task", "resume", id)
		c.waitTask(id, "RUNNING", 10*time.Second)
		for _, topic := range []string{"/tasks/paused", "/tasks/resumed"} {
			if _, ok := ev.wait(10*time.Second, topic, `"container_id":"`+id+`"`); !ok {
				t.Fatalf("no %s for %s:\n%s", topic, id, ev.all())
			}
		}
		// Unsupported operations fail with the shim's reason.
		if r := c.run(30*time.Second, "task", "checkpoint", id); r.code == 0 || !strings.Contains(r.stderr, "checkpoint: not supported by edged-shim: not implemented") {
			t.Fatalf("checkpoint: want the shim's not-implemented error: %v", r)
		}

		// Exec through containerd: output and exit status come back.
		r := c.run(30*time.Second, "task", "exec", "--exec-id", "e1", id, "sh", "-c", "echo exec-out; exit 3")
		if r.code != 3 || !hasLine(r.stdout, "exec-out") {
			t.Fatalf("exec: want exit 3 and exec-out: %v", r)
		}
		// A second exec with the same id is fine once the first is gone.
		if r := c.run(30*time.Second, "task", "exec", "--exec-id", "e1", id, "true"); r.code != 0 {
			t.Fatalf("exec id reuse: %v", r)
		}

		c.must("task", "kill", "-s", "SIGKILL", id)
		stopped := c.waitTask(id, "STOPPED", 10*time.Second)
		if stopped.pid != ti.pid {
			t.Fatalf("stopped task pid %d, was %d", stopped.pid, ti.pid)
		}
		l, ok := ev.wait(10*time.Second, "/tasks/exit", `"container_id":"`+id+`"`, `"id":"`+id+`"`)
		if !ok {
			t.Fatalf("no /tasks/exit for %s from the shim:\n%s", id, ev.all())
		}
		for _, want := range []string{`"exit_status":137`, fmt.Sprintf(`"pid":%d`, ti.pid)} {
			if !strings.Contains(l, want) {
				t.Fatalf("exit event lacks %s: %s", want, l)
			}
		}
		// Deleting a running container is refused; a stopped one goes.
		c.must("task", "rm", id)
		if _, ok := ev.wait(10*time.Second, "/tasks/delete", `"container_id":"`+id+`"`); !ok {
			t.Fatalf("no /tasks/delete for %s:\n%s", id, ev.all())
		}
		c.must("container", "rm", id)
		c.assertGone(t, id)
		waitExit(t, shim, 10*time.Second)
	})

	t.Run("Terminal", func(t *testing.T) {
		id := "tty-" + randHex(4)
		out, code := c.runTTY(t, 60*time.Second, "run", "--rm", "-t", "--runtime", runtimeEdged, testImage, id, "sh", "-c", "tty; echo tty-ok; exit 5")
		if code != 5 || !strings.Contains(out, "tty-ok") || !strings.Contains(out, "/dev/pts/") {
			t.Fatalf("ctr run -t: want exit 5, a pts name and tty-ok; exit %d, output %q", code, out)
		}
		c.assertGone(t, id)
	})

	t.Run("Stdin", func(t *testing.T) {
		// ctr 1.6 run never closes the task's stdin at EOF (with either
		// shim), so the container reads a line rather than to EOF.
		id := "in-" + randHex(4)
		r := c.runInput(30*time.Second, "piped-input\n", "run", "--rm", "--runtime", runtimeEdged, testImage, id, "sh", "-c", "read l; echo got:$l")
		if r.code != 0 || r.stdout != "got:piped-input\n" {
			t.Fatalf("stdin through the shim: %v", r)
		}
		c.assertGone(t, id)
	})

	// A shim that dies: containerd runs `containerd-shim-edged-v2 delete`
	// for the bundle, which must kill and delete the runc container.
	t.Run("ShimKilled", func(t *testing.T) {
		id := "dead-" + randHex(4)
		c.must("run", "-d", "--runtime", runtimeEdged, testImage, id, "sleep", "30")
		ti := c.waitTask(id, "RUNNING", 10*time.Second)
		shim, err := parentPid(ti.pid)
		if err != nil {
			t.Fatal(err)
		}
		if exePath(shim) != c.shimBin {
			t.Fatalf("parent %d of the task is not the edged shim", shim)
		}
		if err := unix.Kill(shim, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitExit(t, ti.pid, 10*time.Second)
		if _, ok := ev.wait(10*time.Second, "/tasks/exit", `"container_id":"`+id+`"`, `"exit_status":137`); !ok {
			t.Fatalf("containerd published no /tasks/exit for %s:\n%s", id, ev.all())
		}
		out, err := exec.Command("runc", "--root", filepath.Join("/run/containerd/runc", c.ns), "list", "-q").Output()
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(strings.Fields(string(out)), id) {
			t.Fatalf("runc still has container %s after the shim's delete", id)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, ok := c.task(id); !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s still listed after its shim died", id)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.must("container", "rm", id)
		c.assertGone(t, id)
	})

	t.Run("KillRunningRefusesDelete", func(t *testing.T) {
		id := "busy-" + randHex(4)
		c.must("run", "-d", "--runtime", runtimeEdged, testImage, id, "sleep", "30")
		c.waitTask(id, "RUNNING", 10*time.Second)
		r := c.run(30*time.Second, "task", "rm", id)
		if r.code == 0 || !strings.Contains(r.stderr, "running") {
			t.Fatalf("task rm of a running task: want a refusal naming it running: %v", r)
		}
		if ti, ok := c.task(id); !ok || ti.status != "RUNNING" {
			t.Fatalf("refused delete changed the task: %+v %v", ti, ok)
		}
		c.must("task", "kill", "-s", "SIGKILL", id)
		c.waitTask(id, "STOPPED", 10*time.Second)
		c.must("task", "rm", id)
		c.must("container", "rm", id)
		c.assertGone(t, id)
	})

	t.Run("MissingExecutable", func(t *testing.T) {
		id := "bad-" + randHex(4)
		r := c.run(60*time.Second, "run", "--rm", "--runtime", runtimeEdged, testImage, id, "no-such-cmd")
		if r.code == 0 || !strings.Contains(r.stderr, "no-such-cmd") || !strings.Contains(r.stderr, "executable file not found") {
			t.Fatalf("want a create failure naming the missing executable: %v", r)
		}
		c.assertGone(t, id)
	})

	// Containers annotated with one group share one shim, as with
	// containerd-shim-runc-v2's io.containerd.runc.v2.group; the shim stays
	// until its last container is deleted.
	t.Run("SharedShim", func(t *testing.T) {
		group := "g-" + randHex(4)
		ids := []string{"ga-" + randHex(4), "gb-" + randHex(4)}
		var shims []int
		for _, id := range ids {
			c.must("run", "-d", "--runtime", runtimeEdged, "--annotation", "io.edged.shim.group="+group, testImage, id, "sleep", "30")
			ti := c.waitTask(id, "RUNNING", 10*time.Second)
			shim, err := parentPid(ti.pid)
			if err != nil {
				t.Fatal(err)
			}
			shims = append(shims, shim)
		}
		if shims[0] != shims[1] || exePath(shims[0]) != c.shimBin {
			t.Fatalf("containers of group %s under shims %v, want one edged-shim", group, shims)
		}
		c.must("task", "kill", "-s", "SIGKILL", ids[0])
		c.waitTask(ids[0], "STOPPED", 10*time.Second)
		c.must("task", "rm", ids[0])
		c.must("container", "rm", ids[0])
		// containerd asked the shim to shut down; it hosts ids[1] still.
		time.Sleep(500 * time.Millisecond)
		if err := unix.Kill(shims[0], 0); err != nil {
			t.Fatalf("shared shim %d ended with a container left: %v", shims[0], err)
		}
		if ti := c.waitTask(ids[1], "RUNNING", time.Second); ti.pid <= 0 {
			t.Fatalf("%s: %+v", ids[1], ti)
		}
		r := c.run(30*time.Second, "task", "exec", "--exec-id", "e1", ids[1], "echo", "still-served")
		if r.code != 0 || !hasLine(r.stdout, "still-served") {
			t.Fatalf("exec in the remaining container: %v", r)
		}
		c.must("task", "kill", "-s", "SIGKILL", ids[1])
		c.waitTask(ids[1], "STOPPED", 10*time.Second)
		c.must("task", "rm", ids[1])
		c.must("container", "rm", ids[1])
		for _, id := range ids {
			c.assertGone(t, id)
		}
		waitExit(t, shims[0], 10*time.Second)
	})

	// Shims outlive containerd: a restarted containerd reconnects to the
	// shim (address file, Connect, State), sees an exit that happened while
	// it was down, and gets the events of later exits.
	t.Run("ContainerdRestart", func(t *testing.T) {
		down, up := "down-"+randHex(4), "up-"+randHex(4)
		tasks := map[string]taskInfo{}
		for _, id := range []string{down, up} {
			c.must("run", "-d", "--runtime", runtimeEdged, testImage, id, "sleep", "30")
			tasks[id] = c.waitTask(id, "RUNNING", 10*time.Second)
		}
		shim, err := parentPid(tasks[down].pid)
		if err != nil {
			t.Fatal(err)
		}
		c.stop()
		if err := unix.Kill(shim, 0); err != nil {
			t.Fatalf("shim %d did not outlive containerd: %v", shim, err)
		}
		// The exit of down happens while nobody listens for its event.
		if err := unix.Kill(tasks[down].pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitExit(t, tasks[down].pid, 10*time.Second)
		c.start()
		ev := c.watchEvents()
		if ti := c.waitTask(down, "STOPPED", 10*time.Second); ti.pid != tasks[down].pid {
			t.Fatalf("%s after restart: %+v, want pid %d", down, ti, tasks[down].pid)
		}
		if ti := c.waitTask(up, "RUNNING", 10*time.Second); ti.pid != tasks[up].pid {
			t.Fatalf("%s after restart: %+v, want pid %d", up, ti, tasks[up].pid)
		}
		c.syncEvents(ev)
		c.must("task", "kill", "-s", "SIGKILL", up)
		c.waitTask(up, "STOPPED", 10*time.Second)
		if _, ok := ev.wait(10*time.Second, "/tasks/exit", `"container_id":"`+up+`"`, `"exit_status":137`); !ok {
			t.Fatalf("no /tasks/exit for %s after the restart:\n%s", up, ev.all())
		}
		for _, id := range []string{down, up} {
			c.must("task", "rm", id)
			c.must("container", "rm", id)
			c.assertGone(t, id)
		}
	})

	t.Run("Measure", func(t *testing.T) {
		if testing.Short() {
			t.Skip("measurement skipped in -short mode")
		}
		c.measure(t)
	})
}

// assertGone checks that nothing of container id is left: no container or
// task in containerd, no shim serving it, no mount of its bundle.
func (c *containerd) assertGone(t *testing.T, id string) {
	t.Helper()
	if out := c.must("container", "ls", "-q"); slices.Contains(strings.Fields(out), id) {
		t.Fatalf("container %s still listed", id)
	}
	if _, ok := c.task(id); ok {
		t.Fatalf("task %s still listed", id)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		for _, pid := range c.shimPids() {
			if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmd), "\x00"+id+"\x00") {
				left = append(left, fmt.Sprint(pid))
			}
		}
		mps, err := mountsUnder(c.dir)
		if err != nil {
			t.Fatal(err)
		}
		mps = slices.DeleteFunc(mps, func(mp string) bool { return !strings.Contains(mp, "/"+id+"/") })
		if len(left) == 0 && len(mps) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: shims %v and mounts %v left", id, left, mps)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitExit waits until process pid is gone.
func waitExit(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive after %v", pid, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasLine(out, line string) bool {
	return slices.Contains(strings.Split(out, "\n"), line)
}

// measure times `ctr run --rm IMG id true` with both runtimes (runs
// interleaved, median of 10) and reads the memory of one shim of each
// hosting one sleeping container.
func (c *containerd) measure(t *testing.T) {
	const runs = 10
	runtimes := []string{runtimeRunc, runtimeEdged}
	times := map[string][]time.Duration{}
	for i := -1; i < runs; i++ { // i == -1 warms caches up
		for _, rt := range runtimes {
			id := fmt.Sprintf("m%d-%s", i+1, randHex(3))
			start := time.Now()
			r := c.run(60*time.Second, "run", "--rm", "--runtime", rt, testImage, id, "true")
			d := time.Since(start)
			if r.code != 0 {
				t.Fatalf("%s: %v", rt, r)
			}
			if i >= 0 {
				times[rt] = append(times[rt], d)
			}
		}
	}
	for _, rt := range runtimes {
		t.Logf("ctr run --rm true, %-22s median %v of %d (min %v, max %v)", rt, median(times[rt]).Round(time.Millisecond), runs,
			slices.Min(times[rt]).Round(time.Millisecond), slices.Max(times[rt]).Round(time.Millisecond))
	}

	// One shim of each runtime, one sleeping container each.
	shims := map[string]int{}
	for _, rt := range runtimes {
		shims[rt] = c.runSleeper(t, rt, "mem1-"+strings.Split(rt, ".")[2]+"-"+randHex(3))
	}
	if exe := exePath(shims[runtimeEdged]); exe != c.shimBin {
		t.Fatalf("edged container's parent %d is %s, not the edged shim", shims[runtimeEdged], exe)
	}
	if exe := exePath(shims[runtimeRunc]); filepath.Base(exe) != "containerd-shim-runc-v2" {
		t.Fatalf("runc container's parent %d is %s, not containerd-shim-runc-v2", shims[runtimeRunc], exe)
	}
	// Let them settle: edged-shim returns freed heap after 2s of quiet.
	time.Sleep(3 * time.Second)
	for _, rt := range runtimes {
		m := mustMem(t, shims[rt])
		st, err := os.Stat(exePath(shims[rt]))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("one shim, %-22s pid %-7d RSS %5d KiB  PSS %5d KiB  USS %5d KiB  binary %.1f MiB",
			rt, shims[rt], m.RSS, m.PSS, m.USS, float64(st.Size())/(1<<20))
	}

	// A second container of each runtime in its own shim: text pages are
	// now shared by two shims, USS is what one more shim costs.
	second := map[string]int{}
	for _, rt := range runtimes {
		second[rt] = c.runSleeper(t, rt, "mem2-"+strings.Split(rt, ".")[2]+"-"+randHex(3))
	}
	time.Sleep(3 * time.Second)
	for _, rt := range runtimes {
		a, b := mustMem(t, shims[rt]), mustMem(t, second[rt])
		t.Logf("two containers, two shims, %-22s PSS %5d KiB (%d + %d)  USS %5d KiB (%d + %d)",
			rt, a.PSS+b.PSS, a.PSS, b.PSS, a.USS+b.USS, a.USS, b.USS)
	}
	// Two edged containers sharing a group shim, against one edged
	// container in a shim of its own (same moment, same sharing).
	group := "mem-" + randHex(3)
	grouped := c.runSleeper(t, runtimeEdged, "memg1-"+randHex(3), "--annotation", "io.edged.shim.group="+group)
	if g2 := c.runSleeper(t, runtimeEdged, "memg2-"+randHex(3), "--annotation", "io.edged.shim.group="+group); g2 != grouped {
		t.Fatalf("grouped containers under shims %d and %d", grouped, g2)
	}
	time.Sleep(3 * time.Second)
	g, one := mustMem(t, grouped), mustMem(t, shims[runtimeEdged])
	t.Logf("edged-shim USS: two containers in one group shim %d KiB, one container per shim %d KiB", g.USS, one.USS)
}

// runSleeper runs `sleep 60` detached with runtime rt (extra ctr run
// flags in flags), deletes it in t.Cleanup, and returns its shim's pid.
func (c *containerd) runSleeper(t *testing.T, rt, id string, flags ...string) int {
	t.Helper()
	args := append([]string{"run", "-d", "--runtime", rt}, flags...)
	c.must(append(args, testImage, id, "sleep", "60")...)
	t.Cleanup(func() {
		c.run(10*time.Second, "task", "kill", "-s", "SIGKILL", id)
		c.waitTask(id, "STOPPED", 10*time.Second)
		c.run(10*time.Second, "task", "rm", id)
		c.run(10*time.Second, "container", "rm", id)
	})
	ti := c.waitTask(id, "RUNNING", 10*time.Second)
	shim, err := parentPid(ti.pid)
	if err != nil {
		t.Fatal(err)
	}
	return shim
}

func mustMem(t *testing.T, pid int) memUsage {
	t.Helper()
	m, err := readMem(pid)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
