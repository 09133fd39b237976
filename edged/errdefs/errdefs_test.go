package errdefs

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestCodeRoundTrip(t *testing.T) {
	for _, k := range kinds {
		err := fmt.Errorf("blob sha256:ab: %w", k.err)
		back := FromCode(Code(err), err.Error())
		if !errors.Is(back, k.err) {
			t.Errorf("%v: came back as %v, not that kind", k.err, back)
		}
		if back.Error() != err.Error() {
			t.Errorf("%v: message %q, want %q", k.err, back.Error(), err.Error())
		}
		if bare := FromCode(Code(k.err), k.err.Error()); bare != k.err {
			t.Errorf("bare %v came back as %#v", k.err, bare)
		}
	}
	if c := Code(errors.New("plain")); c != "unknown" {
		t.Errorf("Code of a plain error = %q", c)
	}
	if err := FromCode("no such code", "x failed"); !errors.Is(err, ErrUnknown) || err.Error() != "x failed: unknown" {
		t.Errorf("unknown code: %v", err)
	}
	if err := FromCode(Code(context.Canceled), "pull: context canceled"); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
}

func TestGRPCRoundTrip(t *testing.T) {
	err := fmt.Errorf("container %q: %w", "web", ErrNotFound)
	back := FromGRPC(ToGRPC(err))
	if !errors.Is(back, ErrNotFound) || back.Error() != err.Error() {
		t.Fatalf("got %v", back)
	}
	if err := InvalidArgument("id", "%q is too long", "x"); err.Error() != `id: "x" is too long: invalid argument` || !IsInvalidArgument(err) {
		t.Fatalf("InvalidArgument: %v", err)
	}
}
