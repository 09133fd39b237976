package publisher_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"

	eventtypes "github.com/edged/edged/proto/events"
	eventsapi "github.com/edged/edged/proto/services/events/v1"
	"github.com/edged/edged/proto/services/ttrpcevents/v1"
	"github.com/edged/edged/proto/wire"
	"github.com/edged/edged/shimd/publisher"
)

type server struct {
	mu    sync.Mutex
	got   []*eventsapi.Envelope
	calls []int // envelopes per call
	// hold, when set, blocks every call until it is closed; arrived then
	// receives a value as each call comes in.
	hold    chan struct{}
	arrived chan struct{}
}

func (s *server) Forward(ctx context.Context, req *ttrpcevents.ForwardRequest) (*types.Empty, error) {
	return s.take(req.Envelope)
}

func (s *server) ForwardBatch(ctx context.Context, req *ttrpcevents.ForwardBatchRequest) (*types.Empty, error) {
	return s.take(req.Envelopes...)
}

func (s *server) take(envs ...*eventsapi.Envelope) (*types.Empty, error) {
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		s.arrived <- struct{}{}
		<-hold
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, envs...)
	s.calls = append(s.calls, len(envs))
	return &types.Empty{}, nil
}

func (s *server) callSizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func (s *server) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.got {
		switch e.Event.TypeUrl {
		case "containerd.events.TaskStart":
			var v eventtypes.TaskStart
			v.Unmarshal(e.Event.Value)
			out = append(out, v.ContainerId)
		case "containerd.events.TaskExit":
			var v eventtypes.TaskExit
			v.Unmarshal(e.Event.Value)
			out = append(out, "exit:"+v.ContainerId)
		}
	}
	return out
}

func serve(t *testing.T, path string) *server {
	return serveWith(t, path, &server{}, false)
}

// serveWith serves s at path; forwardOnly serves the Forward method alone,
// as containerd does.
func serveWith(t *testing.T, path string, s *server, forwardOnly bool) *server {
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	if forwardOnly {
		srv.RegisterService("containerd.services.events.ttrpc.v1.Events", &ttrpc.ServiceDesc{
			Methods: map[string]ttrpc.Method{
				"Forward": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
					var req ttrpcevents.ForwardRequest
					if err := unmarshal(wire.Of(&req)); err != nil {
						return nil, err
					}
					resp, err := s.Forward(ctx, &req)
					return wire.Of(resp), err
				},
			},
		})
	} else {
		ttrpcevents.RegisterEventsService(wire.Server(srv), s)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	t.Cleanup(func() { srv.Close() })
	return s
}

// While the daemon is down the queue keeps the newest events, dropping the
// oldest non-exit ones first, and delivers them in order once it is up.
func TestQueueOverflowKeepsExits(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ev.sock")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	p := publisher.New("unix://"+path, "ns1", publisher.Options{QueueSize: 4, MaxBackoff: 50 * time.Millisecond}, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	p.Publish("/tasks/exit", &eventtypes.TaskExit{ContainerId: "a"})
	p.Publish("/tasks/start", &eventtypes.TaskStart{ContainerId: "s1"})
	p.Publish("/tasks/start", &eventtypes.TaskStart{ContainerId: "s2"})
	p.Publish("/tasks/exit", &eventtypes.TaskExit{ContainerId: "b"})
	p.Publish("/tasks/start", &eventtypes.TaskStart{ContainerId: "s3"}) // drops s1
	p.Publish("/tasks/start", &eventtypes.TaskStart{ContainerId: "s4"}) // drops s2
	if p.Dropped() != 2 {
		t.Fatalf("dropped %d, want 2", p.Dropped())
	}
	fctx, fcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	if err := p.Flush(fctx); err == nil {
		t.Fatal("flush succeeded without a daemon")
	}
	fcancel()
	s := serve(t, path)
	fctx, fcancel = context.WithTimeout(ctx, 5*time.Second)
	defer fcancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.ids(), " "); got != "exit:a exit:b s3 s4" {
		t.Fatalf("delivered %q", got)
	}
	s.mu.Lock()
	env := s.got[0]
	s.mu.Unlock()
	if env.Namespace != "ns1" || env.Topic != "/tasks/exit" || env.Timestamp == nil {
		t.Fatalf("envelope %+v", env)
	}
}

// The connection is re-established after the daemon restarts.
func TestReconnect(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ev.sock")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	p := publisher.New(path, "ns", publisher.Options{MaxBackoff: 50 * time.Millisecond}, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	srv, _ := ttrpc.NewServer()
	s1 := &server{}
	ttrpcevents.RegisterEventsService(wire.Server(srv), s1)
	ul, _ := net.Listen("unix", path)
	l := &connTracker{Listener: ul}
	go srv.Serve(ctx, l)
	p.Publish("/tasks/start", &eventtypes.TaskStart{ContainerId: "one"})
	fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
	defer fcancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	// The daemon restarts: its process exit closes its connections at
	// once (ttrpc's Server.Close closes them asynchronously, and a call
	// arriving in between would still be served).
	l.closeAll()
	srv.Close()
	os.Remove(path)
	s2 := serve(t, path)
	p.Publish("/tasks/start", &eventtypes.TaskStart{ContainerId: "two"})
	if err := p.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	if strings.Join(s1.ids(), " ") != "one" || strings.Join(s2.ids(), " ") != "two" {
		t.Fatalf("first %v second %v", s1.ids(), s2.ids())
	}
}

// connTracker is a listener whose accepted connections closeAll closes
// with it, as the exit of the serving process does.
type connTracker struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *connTracker) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *connTracker) closeAll() {
	l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// Events queued while a call is in flight go out together in one
// ForwardBatch, in order; against a daemon that only serves Forward
// (containerd) they go one per call, in order, and none is lost.
func TestBatching(t *testing.T) {
	for _, forwardOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("forwardOnly=%v", forwardOnly), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ev.sock")
			hold := make(chan struct{})
			s := serveWith(t, path, &server{hold: hold, arrived: make(chan struct{}, 64)}, forwardOnly)
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
			p := publisher.New(path, "ns", publisher.Options{}, log)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go p.Run(ctx)
			// The first event's call blocks in the server while 20 more
			// are queued.
			p.Publish("/tasks/start", &eventtypes.TaskStart{ContainerId: "c0"})
			select {
			case <-s.arrived:
			case <-time.After(5 * time.Second):
				t.Fatal("the first event never reached the server")
			}
			want := []string{"c0"}
			for i := 1; i <= 20; i++ {
				id := fmt.Sprintf("c%d", i)
				p.Publish("/tasks/start", &eventtypes.TaskStart{ContainerId: id})
				want = append(want, id)
			}
			p.Publish("/tasks/exit", &eventtypes.TaskExit{ContainerId: "c1"})
			want = append(want, "exit:c1")
			close(hold)
			fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
			defer fcancel()
			if err := p.Flush(fctx); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(s.ids(), " "); got != strings.Join(want, " ") {
				t.Fatalf("delivered %q\nwant      %q", got, strings.Join(want, " "))
			}
			calls := s.callSizes()
			wantCalls := []int{1, 21}
			if forwardOnly {
				wantCalls = slices.Repeat([]int{1}, 22)
			}
			if !slices.Equal(calls, wantCalls) {
				t.Fatalf("envelopes per call %v, want %v", calls, wantCalls)
			}
		})
	}
}
