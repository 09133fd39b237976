package shimd_test

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	eventtypes "github.com/edged/edged/proto/events"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
)

// The client code path edged uses drives Debian's containerd-shim-runc-v2
// (containerd 1.6) through its start subcommand, and its events decode.
func TestInteropContainerdShimRuncV2(t *testing.T) {
	bin, err := exec.LookPath("containerd-shim-runc-v2")
	if err != nil {
		t.Skip("containerd-shim-runc-v2 not installed (Debian containerd)")
	}
	ev := newEventServer(t, "")
	id := randID("interop")
	b := newBundle(t, id, []string{"sh", "-c", "echo interop; exit 7"}, false, nil)
	// containerd opens the shim's log fifo in the bundle before start.
	_, shimLog := fifo(t, b, "log")
	logc := make(chan string, 1)
	go func() {
		shimLog.SetReadDeadline(time.Now().Add(20 * time.Second))
		data, _ := io.ReadAll(shimLog)
		logc <- string(data)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			select {
			case l := <-logc:
				t.Logf("containerd shim log:\n%s", l)
			case <-time.After(time.Second):
			}
		}
	})
	cmd := exec.Command(bin, "-namespace", "test", "-address", "/run/edged-interop-test.sock", "-publish-binary", "/usr/bin/true", "-id", id, "start")
	cmd.Dir = b
	cmd.Env = append(os.Environ(), "TTRPC_ADDRESS="+ev.path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("start: %v %s", err, out)
	}
	addr := strings.TrimSpace(string(out))
	if !strings.HasPrefix(addr, "unix:///run/containerd/s/") {
		t.Fatalf("address %q", addr)
	}
	task, closeFn := dialAddress(t, addr)
	defer closeFn()
	// containerd's shim takes the namespace from the ttrpc metadata.
	ctx := ttrpc.WithMetadata(ctxT(t, 30*time.Second), ttrpc.MD{"containerd-namespace-ttrpc": []string{"test"}})
	t.Cleanup(func() {
		exec.Command("runc", "--root", "/run/containerd/runc/test", "delete", "--force", id).Run()
		task.Shutdown(ctx, &taskapi.ShutdownRequest{Id: id, Now: true})
	})
	stdout, r := fifo(t, b, "stdout")
	stderr, _ := fifo(t, b, "stderr")
	c, err := task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdout: stdout, Stderr: stderr})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r, 10*time.Second); got != "interop\n" {
		t.Fatalf("output %q", got)
	}
	w, err := task.Wait(ctx, &taskapi.WaitRequest{Id: id})
	if err != nil || w.ExitStatus != 7 {
		t.Fatalf("wait %+v %v", w, err)
	}
	d, err := task.Delete(ctx, &taskapi.DeleteRequest{Id: id})
	if err != nil || d.Pid != c.Pid || d.ExitStatus != 7 {
		t.Fatalf("delete %+v %v", d, err)
	}
	ev.waitTopics(t, id, []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}, 10*time.Second)
	ev.mu.Lock()
	env := ev.events[2]
	ev.mu.Unlock()
	var exit eventtypes.TaskExit
	if env.Event.TypeUrl != "containerd.events.TaskExit" || exit.Unmarshal(env.Event.Value) != nil || exit.ExitStatus != 7 || exit.Pid != c.Pid {
		t.Fatalf("exit event %s %+v", env.Event.TypeUrl, exit)
	}
	pid := int(0)
	if conn, err := task.Connect(ctx, &taskapi.ConnectRequest{Id: id}); err == nil {
		pid = int(conn.ShimPid)
	}
	task.Shutdown(ctx, &taskapi.ShutdownRequest{Id: id})
	if pid != 0 {
		for i := 0; i < 50 && unix.Kill(pid, 0) == nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		if unix.Kill(pid, 0) == nil {
			t.Fatalf("containerd shim %d still running after shutdown", pid)
		}
	}
}
