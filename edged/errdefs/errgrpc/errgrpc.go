// Package errgrpc maps edged's typed errors (package errdefs) to and from
// the gRPC status codes ttrpc carries, so that a client sees
// errors.Is(err, errdefs.ErrNotFound) after a round trip.
package errgrpc

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edged/edged/edged/errdefs"
)

// ToGRPC converts err to a status error carrying the matching code. The
// message keeps the full wrapped text. Status errors pass through unchanged.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Code(errdefs.StatusCode(err)), err.Error())
}

// FromGRPC converts a status error received from the wire back into an error
// wrapping the matching kind, so errors.Is works on the client side.
func FromGRPC(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if kind, ok := errdefs.KindOfStatus(uint32(st.Code())); ok {
		return errdefs.WithKind(kind, st.Message())
	}
	return err
}
