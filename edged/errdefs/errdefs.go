// Package errdefs defines the typed errors shared by every edged package,
// and the gRPC status codes that carry them over ttrpc (StatusCode,
// KindOfStatus), so that a client sees errors.Is(err, errdefs.ErrNotFound)
// after a round trip: ToStatus turns an error into the *rpc.StatusError a
// server sends, FromStatus turns a received one back into a typed error.
// This package does not link gRPC.
package errdefs

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/edged/edged/proto/rpc"
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

// kinds lists the error kinds, most specific first; context errors are
// kinds too, so that they survive a process boundary.
var kinds = []error{
	ErrInvalidArgument, ErrNotFound, ErrAlreadyExists, ErrFailedPrecondition, ErrUnavailable,
	ErrNotImplemented, ErrResourceExhausted, ErrAborted, ErrPermissionDenied, ErrDataLoss,
	context.DeadlineExceeded, context.Canceled, ErrUnknown,
}

// Kind returns the kind err wraps (ErrUnknown when none).
func Kind(err error) error {
	for _, k := range kinds {
		if errors.Is(err, k) {
			return k
		}
	}
	return ErrUnknown
}

// WithKind returns an error with message msg (as err.Error() gave it on
// the other side of a wire or pipe) that wraps kind. A message that already
// ends in ": <kind>" does not repeat it; a message that is only the kind
// gives kind itself.
func WithKind(kind error, msg string) error {
	msg = strings.TrimSuffix(msg, ": "+kind.Error())
	if msg == "" || msg == kind.Error() {
		return kind
	}
	return &wireError{msg: msg, kind: kind}
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
func Code(err error) string { return Kind(err).Error() }

// FromCode rebuilds an error from its Code and message (err.Error() on the
// sending side), so that errors.Is works on the receiving side. An
// unknown code gives an ErrUnknown.
func FromCode(code, msg string) error {
	kind := ErrUnknown
	for _, k := range kinds {
		if k.Error() == code {
			kind = k
			break
		}
	}
	return WithKind(kind, msg)
}

// StatusCode returns the gRPC status code that carries err's kind in a
// ttrpc response (context.Canceled and DeadlineExceeded have their own;
// Unknown for an error of no kind).
func StatusCode(err error) uint32 {
	switch {
	case errors.Is(err, ErrInvalidArgument):
		return rpc.CodeInvalidArgument
	case errors.Is(err, ErrNotFound):
		return rpc.CodeNotFound
	case errors.Is(err, ErrAlreadyExists):
		return rpc.CodeAlreadyExists
	case errors.Is(err, ErrFailedPrecondition):
		return rpc.CodeFailedPrecondition
	case errors.Is(err, ErrUnavailable):
		return rpc.CodeUnavailable
	case errors.Is(err, ErrNotImplemented):
		return rpc.CodeUnimplemented
	case errors.Is(err, ErrResourceExhausted):
		return rpc.CodeResourceExhausted
	case errors.Is(err, ErrAborted):
		return rpc.CodeAborted
	case errors.Is(err, ErrPermissionDenied):
		return rpc.CodePermissionDenied
	case errors.Is(err, ErrDataLoss):
		return rpc.CodeDataLoss
	case errors.Is(err, context.DeadlineExceeded):
		return rpc.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return rpc.CodeCanceled
	}
	return rpc.CodeUnknown
}

// KindOfStatus returns the kind a gRPC status code stands for, the
// reverse of StatusCode; false for OK and codes of no kind (Internal,
// OutOfRange, ...).
func KindOfStatus(code uint32) (error, bool) {
	switch code {
	case rpc.CodeInvalidArgument:
		return ErrInvalidArgument, true
	case rpc.CodeNotFound:
		return ErrNotFound, true
	case rpc.CodeAlreadyExists:
		return ErrAlreadyExists, true
	case rpc.CodeFailedPrecondition:
		return ErrFailedPrecondition, true
	case rpc.CodeUnavailable:
		return ErrUnavailable, true
	case rpc.CodeUnimplemented:
		return ErrNotImplemented, true
	case rpc.CodeResourceExhausted:
		return ErrResourceExhausted, true
	case rpc.CodeAborted:
		return ErrAborted, true
	case rpc.CodePermissionDenied:
		return ErrPermissionDenied, true
	case rpc.CodeDataLoss:
		return ErrDataLoss, true
	case rpc.CodeDeadlineExceeded:
		return context.DeadlineExceeded, true
	case rpc.CodeCanceled:
		return context.Canceled, true
	case rpc.CodeUnknown:
		return ErrUnknown, true
	}
	return nil, false
}

// ToStatus converts err to the status a server sends for it: a
// *rpc.StatusError with the code of err's kind and the full wrapped text
// as its message. A StatusError passes through unchanged.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	var st *rpc.StatusError
	if errors.As(err, &st) {
		return err
	}
	return &rpc.StatusError{Code: StatusCode(err), Message: err.Error()}
}

// FromStatus converts a received *rpc.StatusError back into an error
// wrapping the matching kind, so errors.Is works on the receiving side.
// Other errors, and statuses of no kind, pass through unchanged.
func FromStatus(err error) error {
	var st *rpc.StatusError
	if !errors.As(err, &st) {
		return err
	}
	if kind, ok := KindOfStatus(st.Code); ok {
		return WithKind(kind, st.Message)
	}
	return err
}
