package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	eventtypes "github.com/edged/edged/proto/events"
)

// taskTopics collects the /tasks/ topics of container id until /tasks/delete.
func taskTopics(t *testing.T, envs <-chan *client.Envelope, errc <-chan error, id string) []string {
	t.Helper()
	var topics []string
	timeout := time.After(30 * time.Second)
	for {
		select {
		case env := <-envs:
			if !strings.Contains(string(env.Event.Value), id) {
				continue
			}
			topics = append(topics, env.Topic)
			if env.Topic == "/tasks/exit" {
				var ev eventtypes.TaskExit
				if err := client.UnmarshalEvent(env, &ev); err != nil || ev.ExitStatus != 5 {
					t.Fatalf("exit event of %s: %+v %v", id, &ev, err)
				}
			}
			if env.Topic == "/tasks/delete" {
				return topics
			}
		case err := <-errc:
			t.Fatal(err)
		case <-timeout:
			t.Fatalf("events of %s: %v, no /tasks/delete", id, topics)
		}
	}
}

// TestRunCreateAndStartEvents: `edgectl run` creates and starts its task in
// one call (edged-shim: one runc run; containerd-shim-runc-v2: Create then
// Start). Either way the task's events are create, start, exit, delete and
// edgectl exits with the container's status; run -d's task runs.
func TestRunCreateAndStartEvents(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	cl := newClient(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	envs, errc := cl.Subscribe(ctx, "topic~=^/tasks/", "topic==/test/sync")
	syncSubscribers(t, cl, "/test/sync", envs)
	want := "/tasks/create /tasks/start /tasks/exit /tasks/delete"
	for _, rt := range []string{"", "io.containerd.runc.v2"} {
		id := "cs-native"
		args := []string{"run", "--rm"}
		if rt != "" {
			id = "cs-runcv2"
			args = append(args, "--runtime", rt)
		}
		out, errOut, code := c.run(append(args, "--rootfs", rootfs, id, "sh", "-c", "echo started; exit 5")...)
		if code != 5 || out != "started\n" {
			t.Fatalf("run %s: exit %d stdout %q stderr %q", id, code, out, errOut)
		}
		if got := strings.Join(taskTopics(t, envs, errc, id), " "); got != want {
			t.Fatalf("events of %s: %s; want %s", id, got, want)
		}
	}
	c.ok("run", "-d", "--rootfs", rootfs, "cs-detached", "sleep", "300")
	if out := c.ok("task", "ls"); !strings.Contains(out, "cs-detached") || !strings.Contains(out, "RUNNING") {
		t.Fatalf("task ls after run -d: %s", out)
	}
	// Starting it again is refused: it started with its create.
	if _, errOut, code := c.run("task", "start", "cs-detached"); code == 0 || !strings.Contains(errOut, "already exists") {
		t.Fatalf("task start of a running task: exit %d stderr %q", code, errOut)
	}
	c.ok("task", "rm", "-f", "cs-detached")
	c.ok("c", "rm", "cs-detached")
}
