package shimd_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	"github.com/edged/edged/shimd"
	"github.com/edged/edged/shimd/publisher"
	"github.com/edged/edged/shimd/reaper"
)

// pendingOOM stands in for the cgroups epoll OOM monitor (another package):
// it reports one OOM kill that the kernel signalled but the monitor had not
// delivered yet when the container's init exited — the race the shim's exit
// path must order. Its contract (deliver pending OOMs inside Remove) is the
// one OOMWatcher documents.
type pendingOOM struct {
	mu    sync.Mutex
	onOOM map[string]func(uint64)
}

func (w *pendingOOM) Baseline(path string, existed bool) shimd.OOMBaseline {
	return shimd.OOMBaseline{}
}

func (w *pendingOOM) Add(id string, pid int, base shimd.OOMBaseline, onOOM func(uint64)) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onOOM[id] = onOOM
	return nil
}

func (w *pendingOOM) Remove(id string) {
	w.mu.Lock()
	f := w.onOOM[id]
	delete(w.onOOM, id)
	w.mu.Unlock()
	if f != nil {
		time.Sleep(50 * time.Millisecond) // a slow monitor
		f(1)
	}
}

// oomHelper runs in a child process (it must be a subreaper and reap all
// children, which the test process itself must not do): one container
// through the Service API with the OOM watcher.
func oomHelper() int {
	if err := reaper.SetSubreaper(); err != nil {
		fmt.Println(err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	pub := publisher.New(os.Getenv("TTRPC_ADDRESS"), "test", publisher.Options{}, log)
	go pub.Run(ctx)
	state, _ := os.MkdirTemp("", "es-oom")
	defer os.RemoveAll(state)
	svc := shimd.New(shimd.Config{Namespace: "test", StateDir: state, Publisher: pub, Log: log,
		OOM: &pendingOOM{onOOM: map[string]func(uint64){}}})
	go svc.Reaper().Run(ctx)
	id, bundle := os.Getenv("OOM_ID"), os.Getenv("OOM_BUNDLE")
	steps := []func() error{
		func() error {
			_, err := svc.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: bundle})
			return err
		},
		func() error { _, err := svc.Start(ctx, &taskapi.StartRequest{Id: id}); return err },
		func() error { _, err := svc.Wait(ctx, &taskapi.WaitRequest{Id: id}); return err },
		func() error { _, err := svc.Delete(ctx, &taskapi.DeleteRequest{Id: id}); return err },
		func() error { return pub.Flush(ctx) },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			fmt.Printf("step %d: %v\n", i, err)
			return 1
		}
	}
	return 0
}

// TaskOOM noticed for a container is published before its TaskExit.
func TestOOMBeforeExit(t *testing.T) {
	ev := newEventServer(t, "")
	id := randID("oom")
	b := newBundle(t, id, []string{"true"}, false, nil)
	self, _ := os.Executable()
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), "EDGED_SHIM_OOM_HELPER=1", "TTRPC_ADDRESS="+ev.path, "OOM_ID="+id, "OOM_BUNDLE="+b)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	ev.waitTopics(t, id, []string{"/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit", "/tasks/delete"}, 10*time.Second)
}
