package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/proto/rpc"
)

// unaryInterceptor bounds every request's deadline, recovers panics and
// turns typed errors into status codes that survive the round trip.
//
// Long waits (see drainEnds) also end when d begins.
func unaryInterceptor(log *slog.Logger, defTimeout, maxTimeout time.Duration, trim *idleTrimmer, d *drain) rpc.UnaryInterceptor {
	return func(ctx context.Context, unmarshal func(rpc.Message) error, info *rpc.UnaryServerInfo, method rpc.Method) (resp rpc.Message, err error) {
		ctx, cancel := boundDeadline(ctx, defTimeout, maxTimeout)
		defer cancel()
		defer trim.touch()
		ctx, drained := d.bind(ctx, info.FullMethod, false)
		defer func() {
			err = drained(err)
			if r := recover(); r != nil {
				log.Error("panic in request", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				resp, err = nil, fmt.Errorf("internal error in %s: %w", info.FullMethod, errdefs.ErrUnknown)
			}
			if err != nil {
				log.Debug("request failed", "method", info.FullMethod, "error", err)
				err = errdefs.ToStatus(err)
			}
		}()
		return method(ctx, func(v rpc.Message) error {
			if err := unmarshal(v); err != nil {
				return fmt.Errorf("malformed %s request: %v: %w", info.FullMethod, err, errdefs.ErrInvalidArgument)
			}
			return nil
		})
	}
}

// streamInterceptor recovers panics in streaming handlers and turns their
// typed errors into status codes. Streams (event subscriptions, content
// reads and writes) may last as long as the client wants: they get no
// default deadline, only the client's own. Long ones (see drainEnds) end
// when d begins.
func streamInterceptor(log *slog.Logger, trim *idleTrimmer, d *drain) rpc.StreamInterceptor {
	return func(ctx context.Context, ss rpc.StreamServer, info *rpc.StreamServerInfo, h rpc.StreamHandler) (resp rpc.Message, err error) {
		defer trim.touch()
		ctx, drained := d.bind(ctx, info.FullMethod, true)
		defer func() {
			err = drained(err)
			if r := recover(); r != nil {
				log.Error("panic in stream", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				resp, err = nil, fmt.Errorf("internal error in %s: %w", info.FullMethod, errdefs.ErrUnknown)
			}
			if err != nil {
				log.Debug("stream failed", "method", info.FullMethod, "error", err)
				err = errdefs.ToStatus(err)
			}
		}()
		return h(ctx, ss)
	}
}

// boundDeadline gives ctx the default deadline when it has none, and cuts a
// deadline further away than max.
func boundDeadline(ctx context.Context, def, max time.Duration) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	switch {
	case !ok:
		return context.WithTimeout(ctx, def)
	case time.Until(dl) > max:
		return context.WithTimeout(ctx, max)
	}
	return ctx, func() {}
}
