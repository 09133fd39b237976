package integration

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	eventtypes "github.com/edged/edged/proto/events"
)

// TestRuncV2ShimInterop runs containers through containerd's own shim,
// containerd-shim-runc-v2 from Debian's containerd package: edged starts
// it with its `start` subcommand and serves the ttrpc Forward service the
// shim publishes its events to.
func TestRuncV2ShimInterop(t *testing.T) {
	requireRunc(t)
	if _, err := exec.LookPath("containerd-shim-runc-v2"); err != nil {
		t.Fatalf("containerd-shim-runc-v2 (Debian package containerd) is required: %v", err)
	}
	d := startDaemon(t)
	rootfs := busybox(t)
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}

	out, errOut, code := c.run("run", "--rm", "--runtime", "io.containerd.runc.v2", "--rootfs", rootfs, "r1", "sh", "-c", "echo via runc shim; exit 6")
	if code != 6 || out != "via runc shim\n" {
		t.Fatalf("foreground through containerd-shim-runc-v2: exit %d stdout %q stderr %q", code, out, errOut)
	}

	cl := newClient(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	envs, errc := cl.Subscribe(ctx, "topic==/tasks/exit", "topic==/test/sync")
	syncSubscribers(t, cl, "/test/sync", envs)

	c.ok("run", "-d", "--runtime", "io.containerd.runc.v2", "--rootfs", rootfs, "r2", "sleep", "300")
	out = c.ok("task", "ls")
	if !strings.Contains(out, "r2") || !strings.Contains(out, "RUNNING") {
		t.Fatalf("task ls: %s", out)
	}
	if got := c.ok("task", "exec", "r2", "echo", "exec via runc shim"); got != "exec via runc shim\n" {
		t.Fatalf("exec: %q", got)
	}
	c.ok("task", "kill", "-s", "KILL", "r2")
	timeout := time.After(20 * time.Second)
	for done := false; !done; {
		select {
		case env := <-envs:
			var ev eventtypes.TaskExit
			if err := client.UnmarshalEvent(env, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Id != "r2" {
				continue // the exec's exit
			}
			if ev.ContainerId != "r2" || ev.ExitStatus != 137 {
				t.Fatalf("exit event from containerd-shim-runc-v2: %+v", &ev)
			}
			done = true
		case err := <-errc:
			t.Fatal(err)
		case <-timeout:
			t.Fatal("containerd-shim-runc-v2 did not publish the task's /tasks/exit to edged")
		}
	}
	if out := c.ok("task", "rm", "r2"); out != "r2\t137\n" {
		t.Fatalf("rm: %q", out)
	}
	c.ok("c", "rm", "r2")
}
