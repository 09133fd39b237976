package events

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/namespaces"
	eventtypes "github.com/edged/edged/proto/events"
	eventsapi "github.com/edged/edged/proto/services/events/v1"
	ptypes "github.com/gogo/protobuf/types"
)

func TestFanOutInOrderWithFilters(t *testing.T) {
	ex := New(100, nil)
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), "default"))
	defer cancel()
	all, _, err := ex.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exits, _, _ := ex.Subscribe(ctx, "topic==/tasks/exit")
	for i := 0; i < 10; i++ {
		topic := "/tasks/start"
		if i%2 == 1 {
			topic = "/tasks/exit"
		}
		if err := ex.Publish(ctx, topic, &eventtypes.TaskStart{Pid: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10; i++ {
		env := <-all
		var ev eventtypes.TaskStart
		ev.Unmarshal(env.Event.Value)
		if ev.Pid != uint32(i) || env.Namespace != "default" || env.Event.TypeUrl != "containerd.events.TaskStart" || env.Timestamp == nil {
			t.Fatalf("event %d: %+v %+v", i, env, ev)
		}
	}
	for i := 1; i < 10; i += 2 {
		env := <-exits
		var ev eventtypes.TaskStart
		ev.Unmarshal(env.Event.Value)
		if ev.Pid != uint32(i) {
			t.Fatalf("filtered event: got pid %d want %d", ev.Pid, i)
		}
	}
	if ex.Subscribers() != 2 {
		t.Fatalf("subscribers: %d", ex.Subscribers())
	}
	cancel()
	deadline := time.Now().Add(2 * time.Second)
	for ex.Subscribers() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if ex.Subscribers() != 0 {
		t.Fatal("cancelled subscribers not removed")
	}
}

func TestSlowSubscriberDropped(t *testing.T) {
	ex := New(4, nil)
	ctx := namespaces.WithNamespace(context.Background(), "default")
	ch, errc, _ := ex.Subscribe(ctx)
	for i := 0; i < 10; i++ {
		if err := ex.Publish(ctx, "/x", &eventtypes.TaskOOM{}); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for range ch {
		n++
	}
	err := <-errc
	if n != 4 || !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "fell more than 4 events behind") {
		t.Fatalf("got %d events, err %v", n, err)
	}
}

func TestValidate(t *testing.T) {
	ok := &eventsapi.Envelope{Namespace: "default", Topic: "/a/b", Event: mustAny(t)}
	if err := Validate(ok); err != nil {
		t.Fatal(err)
	}
	cases := map[string]*eventsapi.Envelope{
		"envelope: must be set":          nil,
		"envelope.namespace":             {Namespace: "../x", Topic: "/a", Event: mustAny(t)},
		"must start with '/'":            {Namespace: "d", Topic: "a", Event: mustAny(t)},
		"empty component":                {Namespace: "d", Topic: "/a/", Event: mustAny(t)},
		"outside printable ASCII":        {Namespace: "d", Topic: "/a b", Event: mustAny(t)},
		"must be set with a type_url":    {Namespace: "d", Topic: "/a"},
		"longer than the maximum of 256": {Namespace: "d", Topic: "/" + strings.Repeat("a", 300), Event: mustAny(t)},
	}
	for want, env := range cases {
		err := Validate(env)
		if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v", want, err)
		}
	}
	big := &eventsapi.Envelope{Namespace: "d", Topic: "/a", Event: mustAny(t)}
	big.Event.Value = make([]byte, MaxEventBytes+1)
	if err := Validate(big); err == nil || !strings.Contains(err.Error(), "more than the maximum") {
		t.Errorf("oversized event: %v", err)
	}
	if err := New(1, nil).Publish(context.Background(), "/a", &eventtypes.TaskOOM{}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("publish without namespace: %v", err)
	}
}

func mustAny(t *testing.T) *ptypes.Any {
	a, err := MarshalAny(&eventtypes.TaskOOM{ContainerId: "x"})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestPublishWithoutSubscribers: with nobody listening Publish skips the
// marshaling but still rejects a bad topic, and a subscriber that arrives
// afterwards receives only what is published from then on.
func TestPublishWithoutSubscribers(t *testing.T) {
	ex := New(4, nil)
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), "default"))
	defer cancel()
	if err := ex.Publish(ctx, "/before", &eventtypes.TaskOOM{ContainerId: "a"}); err != nil {
		t.Fatalf("publish without subscribers: %v", err)
	}
	err := ex.Publish(ctx, "no-slash", &eventtypes.TaskOOM{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), `"no-slash" must start with '/'`) {
		t.Fatalf("bad topic without subscribers: %v", err)
	}
	ch, _, err := ex.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.Publish(ctx, "/after", &eventtypes.TaskOOM{ContainerId: "b"}); err != nil {
		t.Fatal(err)
	}
	select {
	case env := <-ch:
		if env.Topic != "/after" || env.Namespace != "default" || env.Event.TypeUrl != TypeURL(&eventtypes.TaskOOM{}) {
			t.Fatalf("got envelope %+v", env)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no envelope")
	}
	select {
	case env := <-ch:
		t.Fatalf("unexpected second envelope %+v", env)
	default:
	}
}

// TestForwardBatch: a batch reaches subscribers in order, stamped when it
// has no timestamp; an invalid, empty or oversized batch publishes nothing
// and the error names the problem.
func TestForwardBatch(t *testing.T) {
	ex := New(100, nil)
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), "default"))
	defer cancel()
	sub, _, err := ex.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	env := func(topic string) *eventsapi.Envelope {
		return &eventsapi.Envelope{Namespace: "default", Topic: topic, Event: mustAny(t)}
	}
	bad := env("/a")
	bad.Namespace = "a/b"
	for _, c := range []struct {
		envs []*eventsapi.Envelope
		want string
	}{
		{nil, "envelopes: must not be empty"},
		{[]*eventsapi.Envelope{env("/a"), bad, env("/c")}, "envelopes[1]: envelope.namespace"},
		{make([]*eventsapi.Envelope, MaxBatch+1), "257 envelopes is more than the maximum of 256"},
	} {
		err := ex.ForwardBatch(ctx, c.envs)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want InvalidArgument with %q, got %v", c.want, err)
		}
	}
	if err := ex.ForwardBatch(ctx, []*eventsapi.Envelope{env("/x/1"), env("/x/2"), env("/x/3")}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/x/1", "/x/2", "/x/3"} {
		got := <-sub
		if got.Topic != want || got.Timestamp == nil {
			t.Fatalf("got %s (timestamp %v), want %s: an invalid batch leaked or the order changed", got.Topic, got.Timestamp, want)
		}
	}
	select {
	case got := <-sub:
		t.Fatalf("unexpected envelope %s", got.Topic)
	default:
	}
}
