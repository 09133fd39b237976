// Package errdefs defines the typed errors shared by every edged package and
// their mapping to and from ttrpc (gRPC status) codes, so that a client sees
// errors.Is(err, errdefs.ErrNotFound) after a round trip.
package errdefs

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The error kinds. Wrap them with %w to add context:
//
//	fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
var (
	ErrUnknown            = errors.New("unknown")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnavailable        = errors.New("unavailable")
	ErrNotImplemented     = errors.New("not implemented")
	ErrResourceExhausted  = errors.New("resource exhausted")
	ErrAborted            = errors.New("aborted")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrDataLoss           = errors.New("data loss")
)

// Convenience predicates.
func IsNotFound(err error) bool           { return errors.Is(err, ErrNotFound) }
func IsAlreadyExists(err error) bool      { return errors.Is(err, ErrAlreadyExists) }
func IsInvalidArgument(err error) bool    { return errors.Is(err, ErrInvalidArgument) }
func IsFailedPrecondition(err error) bool { return errors.Is(err, ErrFailedPrecondition) }
func IsUnavailable(err error) bool        { return errors.Is(err, ErrUnavailable) }
func IsNotImplemented(err error) bool     { return errors.Is(err, ErrNotImplemented) }

// InvalidArgument returns an ErrInvalidArgument naming the offending field.
func InvalidArgument(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), ErrInvalidArgument)
}

var kinds = []struct {
	err  error
	code codes.Code
}{
	{ErrInvalidArgument, codes.InvalidArgument},
	{ErrNotFound, codes.NotFound},
	{ErrAlreadyExists, codes.AlreadyExists},
	{ErrFailedPrecondition, codes.FailedPrecondition},
	{ErrUnavailable, codes.Unavailable},
	{ErrNotImplemented, codes.Unimplemented},
	{ErrResourceExhausted, codes.ResourceExhausted},
	{ErrAborted, codes.Aborted},
	{ErrPermissionDenied, codes.PermissionDenied},
	{ErrDataLoss, codes.DataLoss},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
	{ErrUnknown, codes.Unknown},
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
			msg := st.Message()
			// The server side message already ends in ": <kind>"; do not repeat it.
			msg = strings.TrimSuffix(msg, ": "+k.err.Error())
			if msg == "" || msg == k.err.Error() {
				return k.err
			}
			return &wireError{msg: msg, kind: k.err}
		}
	}
	return err
}

type wireError struct {
	msg  string
	kind error
}

func (e *wireError) Error() string { return e.msg + ": " + e.kind.Error() }
func (e *wireError) Unwrap() error { return e.kind }

// Code names err's kind ("not found", "invalid argument", ...; "unknown"
// when it wraps none), to carry an error across a process boundary in a
// text protocol; FromCode reverses it.
func Code(err error) string {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.err.Error()
		}
	}
	return ErrUnknown.Error()
}

// FromCode rebuilds an error from its Code and message (err.Error() on the
// sending side), so that errors.Is works on the receiving side. An
// unknown code gives an ErrUnknown.
func FromCode(code, msg string) error {
	kind := ErrUnknown
	for _, k := range kinds {
		if k.err.Error() == code {
			kind = k.err
			break
		}
	}
	msg = strings.TrimSuffix(msg, ": "+kind.Error())
	if msg == "" || msg == kind.Error() {
		return kind
	}
	return &wireError{msg: msg, kind: kind}
}
