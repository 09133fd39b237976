package server

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestIdleTrimmerRunsOnceAfterABurst(t *testing.T) {
	var n atomic.Int32
	tr := newIdleTrimmer(50*time.Millisecond, func() { n.Add(1) })
	defer tr.stop()
	// A burst of requests keeps postponing the trim.
	for i := 0; i < 10; i++ {
		tr.touch()
		time.Sleep(10 * time.Millisecond)
	}
	if got := n.Load(); got != 0 {
		t.Fatalf("trimmed %d times during the burst", got)
	}
	time.Sleep(150 * time.Millisecond)
	if got := n.Load(); got != 1 {
		t.Fatalf("trimmed %d times after the burst, want 1", got)
	}
	// Idle: no further trims.
	time.Sleep(150 * time.Millisecond)
	if got := n.Load(); got != 1 {
		t.Fatalf("trimmed %d times while idle, want 1", got)
	}
	tr.touch()
	tr.stop()
	time.Sleep(100 * time.Millisecond)
	if got := n.Load(); got != 1 {
		t.Fatalf("trimmed after stop: %d", got)
	}
}
