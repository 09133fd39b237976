package server

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/proto/rpc"
)

func TestDrainEndsLongWaitsOnly(t *testing.T) {
	d := newDrain()
	const wait = "/edged.services.tasks.v1.Tasks/Wait"
	const sub = "/edged.services.events.v1.Events/Subscribe"

	other, otherDone := d.bind(context.Background(), "/edged.services.containers.v1.Containers/Create", false)
	waitCtx, waitDone := d.bind(context.Background(), wait, false)
	subCtx, subDone := d.bind(context.Background(), sub, true)
	if waitCtx.Err() != nil || subCtx.Err() != nil {
		t.Fatal("a long wait was cancelled before the drain")
	}
	d.begin()
	<-waitCtx.Done()
	<-subCtx.Done()
	if other.Err() != nil {
		t.Fatalf("the drain cancelled a create in progress: %v", other.Err())
	}
	if err := otherDone(nil); err != nil {
		t.Fatalf("create's result: %v", err)
	}
	err := waitDone(waitCtx.Err())
	if !errors.Is(err, errdefs.ErrUnavailable) || err.Error() != "edged is shutting down; wait for the task again once it is back (running containers keep running): unavailable" {
		t.Fatalf("Wait ended by the drain: %v", err)
	}
	// A subscription ends quietly when its context does: still an error.
	if err := subDone(nil); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "subscribe again") {
		t.Fatalf("Subscribe ended by the drain: %v", err)
	}

	// A call made during the drain ends at once the same way.
	late, lateDone := d.bind(context.Background(), wait, false)
	<-late.Done()
	if err := lateDone(late.Err()); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Wait made during the drain: %v", err)
	}
}

func TestDrainKeepsOtherEnds(t *testing.T) {
	d := newDrain()
	const wait = "/edged.services.tasks.v1.Tasks/Wait"
	// A wait that ended by itself before the drain keeps its result.
	ctx, done := d.bind(context.Background(), wait, false)
	if err := done(nil); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() == nil {
		t.Fatal("the call's context outlived its end")
	}
	notFound := errdefs.ErrNotFound
	_, done = d.bind(context.Background(), wait, false)
	if err := done(notFound); err != notFound {
		t.Fatalf("error of a wait that failed on its own: %v", err)
	}
	d.begin()
	// A wait whose exit arrived although the drain began is a success.
	_, done = d.bind(context.Background(), wait, false)
	if err := done(nil); err != nil {
		t.Fatalf("a wait that succeeded as the drain began: %v", err)
	}
	// The caller's own cancellation is not the drain.
	cctx, cancel := context.WithCancel(context.Background())
	d2 := newDrain()
	ctx, done = d2.bind(cctx, wait, false)
	cancel()
	<-ctx.Done()
	if err := done(ctx.Err()); err != context.Canceled {
		t.Fatalf("a wait its caller cancelled: %v", err)
	}
}

// The status of a request refused during the drain names the shutdown,
// and comes back to the client as ErrUnavailable.
func TestDrainingStatus(t *testing.T) {
	st := drainingStatus()
	const want = "edged is shutting down; try again once it is back (running containers keep running): unavailable"
	if st.Code != rpc.CodeUnavailable || st.Message != want {
		t.Fatalf("draining status: %s %q; want Unavailable %q", rpc.CodeName(st.Code), st.Message, want)
	}
	if err := errdefs.FromStatus(st); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("the client's error: %v", err)
	}
}
