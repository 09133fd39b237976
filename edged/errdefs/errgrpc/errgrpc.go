// Package errgrpc maps edged's typed errors (package errdefs) to and from
// the gRPC status codes ttrpc carries, so that a client sees
// errors.Is(err, errdefs.ErrNotFound) after a round trip.
package errgrpc

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edged/edged/edged/errdefs"
)

var kinds = []struct {
	err  error
	code codes.Code
}{
	{errdefs.ErrInvalidArgument, codes.InvalidArgument},
	{errdefs.ErrNotFound, codes.NotFound},
	{errdefs.ErrAlreadyExists, codes.AlreadyExists},
	{errdefs.ErrFailedPrecondition, codes.FailedPrecondition},
	{errdefs.ErrUnavailable, codes.Unavailable},
	{errdefs.ErrNotImplemented, codes.Unimplemented},
	{errdefs.ErrResourceExhausted, codes.ResourceExhausted},
	{errdefs.ErrAborted, codes.Aborted},
	{errdefs.ErrPermissionDenied, codes.PermissionDenied},
	{errdefs.ErrDataLoss, codes.DataLoss},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
	{errdefs.ErrUnknown, codes.Unknown},
}

// ToGRPC converts err to a status error carrying the matching code. The
// message keeps the full wrapped text. Status errors pass through unchanged.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return status.Error(k.code, err.Error())
		}
	}
	return status.Error(codes.Unknown, err.Error())
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
	for _, k := range kinds {
		if k.code == st.Code() {
			return errdefs.WithKind(k.err, st.Message())
		}
	}
	return err
}
