package events_test

import (
	"context"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/events"
	"github.com/edged/edged/edged/namespaces"
	eventssvc "github.com/edged/edged/edged/services/events"
	"github.com/edged/edged/internal/ttrpcwire"
	"github.com/edged/edged/proto/rpc"
	api "github.com/edged/edged/proto/services/events/v1"
)

// A subscriber that stops reading its socket is dropped by the exchange;
// its Subscribe handler, blocked sending the events queued before the
// drop, must end too (the server's WriteTimeout disconnects it), freeing
// those events (1024 of 64 KiB stayed pinned, and the handler running).
func TestSubscribeStalledSubscriberEnds(t *testing.T) {
	ctx := context.Background()
	ex := events.New(0, nil)
	srv := rpc.NewServer(rpc.ServerConfig{WriteTimeout: 200 * time.Millisecond})
	eventssvc.Register(srv, ex)
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Skipf("unix socket: %v", err) // t.TempDir's path may be too long
	}
	go srv.Serve(ctx, l)
	defer srv.Close()

	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	// Subscribe on a raw connection that is never read.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req, err := (&api.SubscribeRequest{}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	p := ttrpcwire.AppendRequest(nil, "edged.services.events.v1.Events", "Subscribe", req, 0, nil)
	if _, err := c.Write(append(ttrpcwire.NewFrame(1, ttrpcwire.TypeRequest, ttrpcwire.FlagRemoteClosed, len(p)), p...)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ex.Subscribers() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no subscriber after 5s")
		}
	}
	pctx := namespaces.WithNamespace(ctx, "default")
	big := strings.Repeat("x", events.MaxEventBytes-100)
	for range 3000 {
		ex.Forward(pctx, &api.Envelope{Namespace: "default", Topic: "/x", Event: &ptypes.Any{TypeUrl: "t", Value: []byte(big)}})
	}
	if n := ex.Subscribers(); n != 0 {
		t.Errorf("%d subscribers after 3000 unread events, want the stalled one dropped", n)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := srv.WaitIdle(wctx); err != nil {
		t.Errorf("Subscribe handler of the dropped subscriber: %v", err)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	if d := (int64(m1.HeapAlloc) - int64(m0.HeapAlloc)) >> 20; d > 16 {
		t.Errorf("dropped subscriber pins %d MiB", d)
	}
}
