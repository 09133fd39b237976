package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/namespaces"
	eventtypes "github.com/edged/edged/proto/events"
	eventsapi "github.com/edged/edged/proto/services/events/v1"
)

// TestEventsOrderToEverySubscriber publishes from one client and checks
// that every subscriber receives every event, in publish order, and that
// filters select by topic and namespace.
func TestEventsOrderToEverySubscriber(t *testing.T) {
	d := startDaemon(t)
	pub := newClient(t, d)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()

	const n = 500
	type sub struct {
		envs <-chan *client.Envelope
		errc <-chan error
	}
	var subs []sub
	for i := 0; i < 3; i++ {
		c := newClient(t, d)
		envs, errc := c.Subscribe(ctx, "topic==/test/seq")
		subs = append(subs, sub{envs, errc})
	}
	other := newClient(t, d)
	nsEnvs, _ := other.Subscribe(ctx, "namespace==other")
	syncSubscribers(t, pub, "/test/seq", subs[0].envs, subs[1].envs, subs[2].envs)
	syncSubscribers(t, newClient(t, d, client.WithNamespace("other")), "/test/sync", nsEnvs)

	for i := 0; i < n; i++ {
		if err := pub.Publish(ctx, "/test/seq", &eventtypes.TaskExit{ContainerId: fmt.Sprint(i), ExitStatus: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Publish(namespaces.WithNamespace(ctx, "other"), "/test/other", &eventtypes.TaskOOM{ContainerId: "x"}); err != nil {
		t.Fatal(err)
	}
	for si, s := range subs {
		for i := 0; i < n; i++ {
			select {
			case env := <-s.envs:
				var ev eventtypes.TaskExit
				if err := client.UnmarshalEvent(env, &ev); err != nil {
					t.Fatal(err)
				}
				if ev.ContainerId != fmt.Sprint(i) || env.Topic != "/test/seq" || env.Namespace != "default" || env.Event.TypeUrl != "containerd.events.TaskExit" {
					t.Fatalf("subscriber %d event %d: got %s %s %+v", si, i, env.Namespace, env.Topic, ev)
				}
			case err := <-s.errc:
				t.Fatalf("subscriber %d ended: %v", si, err)
			case <-time.After(10 * time.Second):
				t.Fatalf("subscriber %d: event %d did not arrive", si, i)
			}
		}
	}
	select {
	case env := <-nsEnvs:
		if env.Namespace != "other" || env.Topic != "/test/other" {
			t.Fatalf("namespace filter delivered %s %s", env.Namespace, env.Topic)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("namespace-filtered event did not arrive")
	}
	// Container lifecycle events are published by the services.
	lc, lcErr := newClient(t, d).Subscribe(ctx, "topic~=^/containers/", "topic==/test/sync")
	syncSubscribers(t, pub, "/test/sync", lc)
	if _, err := pub.CreateContainer(ctx, testContainer("evt")); err != nil {
		t.Fatal(err)
	}
	if err := pub.DeleteContainer(ctx, "evt"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/containers/create", "/containers/delete"} {
		select {
		case env := <-lc:
			if env.Topic != want {
				t.Fatalf("got %s want %s", env.Topic, want)
			}
		case err := <-lcErr:
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not received", want)
		}
	}
}

// syncSubscribers publishes marker events on topic until every subscriber
// has received one, then an end marker, and drains each subscriber up to
// it. Afterwards all subscriptions are registered and empty.
func syncSubscribers(t *testing.T, pub *client.Client, topic string, subs ...<-chan *client.Envelope) {
	t.Helper()
	ctx := context.Background()
	synced := make([]bool, len(subs))
	deadline := time.Now().Add(10 * time.Second)
	for {
		all := true
		if err := pub.Publish(ctx, topic, &eventtypes.TaskOOM{ContainerId: "sync"}); err != nil {
			t.Fatal(err)
		}
		for i, ch := range subs {
			if synced[i] {
				continue
			}
			select {
			case <-ch:
				synced[i] = true
			case <-time.After(20 * time.Millisecond):
				all = false
			}
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("subscribers did not register")
		}
	}
	if err := pub.Publish(ctx, topic, &eventtypes.TaskOOM{ContainerId: "sync-end"}); err != nil {
		t.Fatal(err)
	}
	for _, ch := range subs {
		for {
			select {
			case env := <-ch:
				var ev eventtypes.TaskOOM
				client.UnmarshalEvent(env, &ev)
				if ev.ContainerId != "sync-end" {
					continue
				}
			case <-time.After(10 * time.Second):
				t.Fatal("sync end marker not received")
			}
			break
		}
	}
}

// TestSlowSubscriberIsDropped checks that a subscriber that stops reading
// neither blocks publishers nor grows edged's memory: edged cuts it off
// when it falls a queue behind, while a reading subscriber receives every
// event. The stalled subscriber is a raw connection that sends a Subscribe
// request and never reads its socket, so edged's writes really block.
func TestSlowSubscriberIsDropped(t *testing.T) {
	d := startDaemon(t)
	pub := newClient(t, d)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()

	stalled := stalledSubscriber(t, d.Address, "topic==/test/flood")
	defer stalled.Close()
	fast := newClient(t, d)
	fastEnvs, fastErr := fast.Subscribe(ctx, "topic==/test/flood")
	syncSubscribers(t, pub, "/test/flood", fastEnvs)
	rssBefore := vmRSS(t, d.Pid())

	const n = 20000
	got := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			select {
			case _, ok := <-fastEnvs:
				if !ok {
					got <- fmt.Errorf("fast subscriber ended after %d: %v", i, <-fastErr)
					return
				}
			case <-time.After(20 * time.Second):
				got <- fmt.Errorf("fast subscriber stalled after %d", i)
				return
			}
		}
		got <- nil
	}()
	payload := &eventtypes.TaskExit{ContainerId: "flood", Id: string(make([]byte, 512))}
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := pub.Publish(ctx, "/test/flood", payload); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, "event subscriber dropped: fell behind")
	rssAfter := vmRSS(t, d.Pid())
	// 20,000 events of 0.5 KiB are 10 MiB; holding them for the stalled
	// subscriber would show. Allow for heap growth of the working set only.
	if rssAfter-rssBefore > 6<<10 {
		t.Fatalf("edged grew from %d KiB to %d KiB while a subscriber stalled", rssBefore, rssAfter)
	}
	t.Logf("published %d events in %v with a stalled subscriber; RSS %d -> %d KiB", n, elapsed, rssBefore, rssAfter)

	// A client-side consumer that stops reading gets a clear error.
	slow := newClient(t, d)
	_, slowErr := slow.Subscribe(ctx, "topic==/test/flood2")
	time.Sleep(100 * time.Millisecond)
	for i := 0; i < 2000; i++ {
		pub.Publish(ctx, "/test/flood2", payload)
	}
	select {
	case err := <-slowErr:
		wantErr(t, err, errdefs.ErrResourceExhausted, "fell behind")
	case <-time.After(30 * time.Second):
		t.Fatal("a consumer that never reads was not told it fell behind")
	}
}

// stalledSubscriber sends a raw ttrpc Subscribe request and never reads.
func stalledSubscriber(t *testing.T, address string, filters ...string) net.Conn {
	t.Helper()
	conn, err := net.Dial("unix", address)
	if err != nil {
		t.Fatal(err)
	}
	// Shrink our receive buffer so edged's writes block soon.
	conn.(*net.UnixConn).SetReadBuffer(4096)
	payload, err := (&eventsapi.SubscribeRequest{Filters: filters}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	writeFrame(t, conn, 1, 1 /* request */, 0x1 /* remote closed */, rawRequest("edged.services.events.v1.Events", "Subscribe", payload))
	return conn
}

func vmRSS(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			var kb int
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:")), "%d", &kb)
			return kb
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func TestEventsBadInput(t *testing.T) {
	d := startDaemon(t)
	c := newClient(t, d)
	ctx := ctxT(t)
	err := c.Publish(ctx, "no-slash", &eventtypes.TaskOOM{})
	wantErr(t, err, errdefs.ErrInvalidArgument, `topic: "no-slash" must start with '/'`)
	err = c.Publish(ctx, "/a//b", &eventtypes.TaskOOM{})
	wantErr(t, err, errdefs.ErrInvalidArgument, "empty component")
	_, errc := c.Subscribe(ctx, "topic=/x")
	select {
	case err := <-errc:
		wantErr(t, err, errdefs.ErrInvalidArgument, "expected an operator")
	case <-time.After(10 * time.Second):
		t.Fatal("bad filter not refused")
	}
}
