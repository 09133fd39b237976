package errgrpc

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edged/edged/edged/errdefs"
)

// kinds pairs each kind with its gRPC code, from grpc's own constants: it
// checks errdefs' numbers too.
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

func TestRoundTrip(t *testing.T) {
	for _, k := range kinds {
		err := fmt.Errorf("container %q: %w", "web", k.err)
		wire := ToGRPC(err)
		if st, _ := status.FromError(wire); st.Code() != k.code || st.Message() != err.Error() {
			t.Errorf("%v: status %v %q", k.err, st.Code(), st.Message())
		}
		back := FromGRPC(wire)
		if !errors.Is(back, k.err) || back.Error() != err.Error() {
			t.Errorf("%v: came back as %v", k.err, back)
		}
	}
	if err := FromGRPC(status.Error(codes.NotFound, "not found")); err != errdefs.ErrNotFound {
		t.Errorf("bare kind: %#v", err)
	}
	if err := ToGRPC(errors.New("plain")); status.Code(err) != codes.Unknown {
		t.Errorf("plain error: %v", err)
	}
	if err := FromGRPC(ToGRPC(context.Canceled)); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
	st := status.Error(codes.Internal, "boom")
	if err := FromGRPC(st); err != st {
		t.Errorf("unmapped code: %v", err)
	}
	if ToGRPC(nil) != nil || FromGRPC(nil) != nil {
		t.Error("nil")
	}
}
