package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/errdefs/errgrpc"
)

// unaryInterceptor bounds every request's deadline, recovers panics and
// turns typed errors into status codes that survive the round trip.
func unaryInterceptor(log *slog.Logger, defTimeout, maxTimeout time.Duration, trim *idleTrimmer) ttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (resp any, err error) {
		ctx, cancel := boundDeadline(ctx, defTimeout, maxTimeout)
		defer cancel()
		defer trim.touch()
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in request", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				resp, err = nil, fmt.Errorf("internal error in %s: %w", info.FullMethod, errdefs.ErrUnknown)
			}
			if err != nil {
				log.Debug("request failed", "method", info.FullMethod, "error", err)
				err = errgrpc.ToGRPC(err)
			}
		}()
		return method(ctx, func(v any) error {
			if err := unmarshal(v); err != nil {
				return fmt.Errorf("malformed %s request: %v: %w", info.FullMethod, err, errdefs.ErrInvalidArgument)
			}
			return nil
		})
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

// StreamError converts an error returned by a streaming handler, which the
// unary interceptor does not see.
func StreamError(err error) error { return errgrpc.ToGRPC(err) }
