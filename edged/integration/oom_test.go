package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/client"
	eventtypes "github.com/edged/edged/proto/events"
	containersapi "github.com/edged/edged/proto/services/containers/v1"
)

// oomRecord is what the test saw of one container.
type oomRecord struct {
	ooms     []time.Time // TaskOOM receipts
	kills    []uint64    // their oom_kills counters
	exitAt   time.Time   // TaskExit receipt
	status   uint32
	diedAt   time.Time // the init's pidfd became readable
	exitBad  bool      // a TaskOOM arrived after the TaskExit
	extraExt int       // TaskExits beyond the first
}

// oomLog collects the /tasks/oom and /tasks/exit events of a subscription.
type oomLog struct {
	mu     sync.Mutex
	recs   map[string]*oomRecord
	total  int // TaskOOM events received
	exits  int
	synced bool
	other  []string
}

func (l *oomLog) rec(id string) *oomRecord {
	r := l.recs[id]
	if r == nil {
		r = &oomRecord{}
		l.recs[id] = r
	}
	return r
}

func (l *oomLog) collect(t *testing.T, evs <-chan *client.Envelope) {
	for env := range evs {
		now := time.Now()
		l.mu.Lock()
		switch env.Topic {
		case "/tasks/oom":
			var e eventtypes.TaskOOM
			if err := client.UnmarshalEvent(env, &e); err != nil {
				l.other = append(l.other, err.Error())
				break
			}
			r := l.rec(e.ContainerId)
			r.ooms = append(r.ooms, now)
			r.kills = append(r.kills, e.OomKills)
			if !r.exitAt.IsZero() {
				r.exitBad = true
			}
			l.total++
		case "/tasks/exit":
			var e eventtypes.TaskExit
			if err := client.UnmarshalEvent(env, &e); err != nil {
				l.other = append(l.other, err.Error())
				break
			}
			r := l.rec(e.ContainerId)
			if !r.exitAt.IsZero() {
				r.extraExt++
			} else {
				r.exitAt, r.status = now, e.ExitStatus
			}
			l.exits++
		case "/test/oom-sync":
			l.synced = true
		default:
			l.other = append(l.other, env.Topic)
		}
		l.mu.Unlock()
	}
}

// watchDeath records when process pid has exited, through a pidfd (the
// test is not its parent). The pidfd is opened before the task starts.
func (l *oomLog) watchDeath(t *testing.T, id string, pid uint32) {
	t.Helper()
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	go func() {
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, 60_000)
			if err == unix.EINTR {
				continue
			}
			break
		}
		now := time.Now()
		l.mu.Lock()
		l.rec(id).diedAt = now
		l.mu.Unlock()
	}()
}

// TestOOM50 runs 50 containers that exceed their memory limit — 10 one
// after another in their own shims, then 4 batches of 10 started at once,
// each batch in one shim (one epoll loop for 10 containers) — and checks
// that exactly 50 TaskOOM events arrive, one per container, each before the
// container's TaskExit. It logs the OOM event latency (process death →
// TaskOOM received) and, in the VM (make test-vm), enforces the 50 ms
// median budget.
func TestOOM50(t *testing.T) {
	requireRunc(t)
	hostCgroups(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	cl := newClient(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	subCtx, stopSub := context.WithCancel(ctx)
	evs, errc := cl.Subscribe(subCtx, "topic==/tasks/oom", "topic==/tasks/exit", "topic==/test/oom-sync")
	log := &oomLog{recs: map[string]*oomRecord{}}
	collected := make(chan struct{})
	go func() { log.collect(t, evs); close(collected) }()
	defer func() { stopSub(); <-collected }()
	// The subscription is registered once an event published after it
	// arrives.
	waitFor(t, func() bool {
		if err := cl.Publish(ctx, "/test/oom-sync", &eventtypes.TaskOOM{ContainerId: "sync"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		log.mu.Lock()
		defer log.mu.Unlock()
		return log.synced
	})

	create := func(id, group string) {
		t.Helper()
		var labels map[string]string
		if group != "" {
			labels = map[string]string{"edged.io/shim-group": group}
		}
		// tail buffers its whole input when there is no newline: it grows
		// until the kernel kills it.
		if _, err := cl.CreateFromImage(ctx, &containersapi.CreateFromImageRequest{Id: id, RootfsPath: rootfs, Labels: labels,
			Options: &containersapi.SpecOptions{Args: []string{"tail", "/dev/zero"}, MemoryLimit: 16 << 20}}); err != nil {
			t.Fatal(err)
		}
		pid, err := cl.CreateTask(ctx, id, client.TaskOpts{})
		if err != nil {
			t.Fatal(err)
		}
		log.watchDeath(t, id, pid)
	}
	finish := func(id string) {
		t.Helper()
		st, err := cl.Wait(ctx, id, "")
		if err != nil {
			t.Fatal(err)
		}
		if st.Code != 137 {
			t.Errorf("%s exited with %d, want 137 (SIGKILL by the OOM killer)", id, st.Code)
		}
		if _, err := cl.DeleteTask(ctx, id, false); err != nil {
			t.Fatal(err)
		}
		if err := cl.DeleteContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	start := time.Now()
	for i := range 10 {
		id := fmt.Sprintf("oom-seq-%d", i)
		ids = append(ids, id)
		create(id, "")
		if _, err := cl.StartTask(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
		finish(id)
	}
	for b := range 4 {
		var batch []string
		for i := range 10 {
			id := fmt.Sprintf("oom-b%d-%d", b, i)
			batch = append(batch, id)
			create(id, fmt.Sprintf("oom-group-%d", b))
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(batch))
		for _, id := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := cl.StartTask(ctx, id, ""); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, id := range batch {
			finish(id)
		}
		ids = append(ids, batch...)
	}
	took := time.Since(start)
	// Every exit is in; give late (wrong) OOM events a moment to show up.
	waitFor(t, func() bool { log.mu.Lock(); defer log.mu.Unlock(); return log.exits == 50 })
	time.Sleep(time.Second)
	stopSub()
	<-collected
	if err := <-errc; err != nil {
		t.Fatalf("subscription: %v", err)
	}

	log.mu.Lock()
	defer log.mu.Unlock()
	if log.total != 50 || len(log.other) != 0 {
		t.Errorf("received %d TaskOOM events, want exactly 50 (unexpected: %v)", log.total, log.other)
	}
	var lat []time.Duration
	for _, id := range ids {
		r := log.recs[id]
		switch {
		case r == nil || r.exitAt.IsZero():
			t.Errorf("%s: no TaskExit", id)
		case len(r.ooms) != 1:
			t.Errorf("%s: %d TaskOOM events, want 1", id, len(r.ooms))
		case r.exitBad || r.ooms[0].After(r.exitAt):
			t.Errorf("%s: TaskOOM after TaskExit", id)
		case r.kills[0] != 1:
			t.Errorf("%s: oom_kills %d, want 1", id, r.kills[0])
		case r.status != 137 || r.extraExt != 0:
			t.Errorf("%s: exit status %d, %d extra exits", id, r.status, r.extraExt)
		case r.diedAt.IsZero():
			t.Errorf("%s: death not observed", id)
		default:
			// Death is observed right after the kill; a TaskOOM
			// received before it counts as 0.
			lat = append(lat, max(0, r.ooms[0].Sub(r.diedAt)))
		}
	}
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	median := lat[len(lat)/2]
	msg := fmt.Sprintf("OOM event latency (kill -> TaskOOM received) over %d containers: median %v, p90 %v, max %v; run took %v",
		len(lat), median.Round(10*time.Microsecond), lat[len(lat)*9/10].Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond), took.Round(time.Millisecond))
	t.Log(msg)
	fmt.Fprintln(os.Stderr, "BUDGET", msg)
	if os.Getenv("EDGED_IN_VM") == "1" && median > 50*time.Millisecond {
		t.Errorf("median OOM event latency %v exceeds the 50 ms budget", median)
	}
}
