package errdefs

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestCodeRoundTrip(t *testing.T) {
	for _, k := range kinds {
		err := fmt.Errorf("blob sha256:ab: %w", k)
		back := FromCode(Code(err), err.Error())
		if !errors.Is(back, k) {
			t.Errorf("%v: came back as %v, not that kind", k, back)
		}
		if back.Error() != err.Error() {
			t.Errorf("%v: message %q, want %q", k, back.Error(), err.Error())
		}
		if bare := FromCode(Code(k), k.Error()); bare != k {
			t.Errorf("bare %v came back as %#v", k, bare)
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

func TestInvalidArgument(t *testing.T) {
	if err := InvalidArgument("id", "%q is too long", "x"); err.Error() != `id: "x" is too long: invalid argument` || !IsInvalidArgument(err) {
		t.Fatalf("InvalidArgument: %v", err)
	}
}
