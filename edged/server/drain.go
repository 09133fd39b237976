package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/proto/rpc"
)

// drainEnds says whether method waits for something that may never come
// within a drain (a task's exit, the next event, more output of a followed
// log), and what the caller should do again later. When edged starts
// shutting down such calls end at once with ErrUnavailable, so they do not
// hold the drain for its whole grace period; every other call in progress
// is left to finish.
func drainEnds(method string) (again string, ok bool) {
	switch method {
	case "/edged.services.tasks.v1.Tasks/Wait":
		return "wait for the task", true
	case "/edged.services.tasks.v1.Tasks/Logs":
		return "read the logs", true
	case "/edged.services.events.v1.Events/Subscribe":
		return "subscribe", true
	}
	return "", false
}

// errDraining is the cause of the cancellation of the calls in drainEnds.
var errDraining = errors.New("edged is shutting down")

// drainingStatus is the status of a request that arrives once the drain
// has begun, on a connection kept open for a call still in progress:
// rpc.Server.Shutdown refuses it at once, and the drain begins nothing
// new.
func drainingStatus() *rpc.StatusError {
	err := fmt.Errorf("%w; try again once it is back (running containers keep running): %w", errDraining, errdefs.ErrUnavailable)
	return &rpc.StatusError{Code: errdefs.StatusCode(err), Message: err.Error()}
}

// drain tells handlers that edged has begun to shut down.
type drain struct {
	ctx   context.Context // done once the drain has begun
	begin context.CancelFunc
}

func newDrain() *drain {
	ctx, cancel := context.WithCancel(context.Background())
	return &drain{ctx: ctx, begin: cancel}
}

// bind returns the context a call of method runs with: ctx, cancelled as
// well when the drain begins if method is one of drainEnds; and done,
// which turns the handler's error into the one that names the drain when
// the drain is what ended the call. A stream's handler may end quietly
// when its context does (an event subscription returns nil): with stream
// set, a nil error is turned too, so that it does not look like the
// normal end of the stream.
func (d *drain) bind(ctx context.Context, method string, stream bool) (context.Context, func(error) error) {
	what, ok := drainEnds(method)
	if !ok || d == nil {
		return ctx, func(err error) error { return err }
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(d.ctx, func() { cancel(errDraining) })
	return ctx, func(err error) error {
		stop()
		drained := errors.Is(context.Cause(ctx), errDraining)
		cancel(nil)
		if drained && (err != nil || stream) {
			return fmt.Errorf("%w; %s again once it is back (running containers keep running): %w", errDraining, what, errdefs.ErrUnavailable)
		}
		return err
	}
}
