package main

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
)

func TestInterruption(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(interrupted(syscall.SIGTERM))
	msg, code, ok := interruption(ctx, fmt.Errorf("pull x: %w", context.Canceled))
	if !ok || code != 143 || msg != "pull x: interrupted (SIGTERM)" {
		t.Errorf("got %q %d %v", msg, code, ok)
	}
	if _, _, ok := interruption(ctx, errors.New("not found")); ok {
		t.Error("an error other than the cancellation counts as an interruption")
	}
	// A context cancelled for another reason (a deadline, the command's own
	// cancel) is not an interruption.
	plain, cancelPlain := context.WithCancel(context.Background())
	cancelPlain()
	if _, _, ok := interruption(plain, context.Canceled); ok {
		t.Error("a plain cancel counts as an interruption")
	}
	// An error that carries the interruption itself (a command's own
	// context cancelled with the signal as its cause) counts before ctx
	// has seen the signal: both get it, in either order.
	msg, code, ok = interruption(context.Background(), fmt.Errorf("x keeps running; edgectl stopped waiting for it while edged was away: %w", interrupted(syscall.SIGINT)))
	if !ok || code != 130 || msg != "x keeps running; edgectl stopped waiting for it while edged was away: interrupted (SIGINT)" {
		t.Errorf("interruption in the error: %q %d %v", msg, code, ok)
	}
	ctxInt, cancelInt := context.WithCancelCause(context.Background())
	cancelInt(interrupted(syscall.SIGINT))
	if msg, code, _ := interruption(ctxInt, context.Canceled); code != 130 || msg != "interrupted (SIGINT)" {
		t.Errorf("SIGINT: %q %d", msg, code)
	}
}

func TestInterruptContext(t *testing.T) {
	ctx, stop := interruptContext(context.Background())
	defer stop()
	syscall.Kill(syscall.Getpid(), syscall.SIGINT)
	<-ctx.Done()
	var i interrupted
	if !errors.As(context.Cause(ctx), &i) || syscall.Signal(i) != syscall.SIGINT {
		t.Fatalf("cause %v", context.Cause(ctx))
	}
}
