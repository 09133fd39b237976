package server

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestIdleTrimmerRunsOnceAfterABurst(t *testing.T) {
	var n atomic.Int32
	tr := newIdleTrimmerCPU(50*time.Millisecond, func() { n.Add(1) }, func() time.Duration { return 0 })
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

// A long stream (an import) makes no unary calls but uses CPU: the release
// waits until the CPU use stops.
func TestIdleTrimmerWaitsWhileBusy(t *testing.T) {
	var n atomic.Int32
	var cpu atomic.Int64
	tr := newIdleTrimmerCPU(50*time.Millisecond, func() { n.Add(1) }, func() time.Duration { return time.Duration(cpu.Load()) })
	defer tr.stop()
	// Busy: 5 ms of CPU per 10 ms, far above 1% of the period.
	for i := 0; i < 20; i++ {
		cpu.Add(int64(5 * time.Millisecond))
		time.Sleep(10 * time.Millisecond)
	}
	if got := n.Load(); got != 0 {
		t.Fatalf("released %d times while busy", got)
	}
	time.Sleep(200 * time.Millisecond)
	if got := n.Load(); got != 1 {
		t.Fatalf("released %d times after the work stopped, want 1", got)
	}
}

func TestIdleTrimmerDisabled(t *testing.T) {
	tr := newIdleTrimmer(0, func() { t.Error("released with idle_release 0") })
	tr.touch()
	tr.stop()
	time.Sleep(20 * time.Millisecond)
}

func TestProcessCPUAdvances(t *testing.T) {
	a := processCPU()
	for end := time.Now().Add(30 * time.Millisecond); time.Now().Before(end); {
	}
	if b := processCPU(); b <= a {
		t.Fatalf("process CPU did not advance over 30 ms of spinning: %v → %v", a, b)
	}
}

// A request costs the trimmer no CPU reading (a system call) and no timer
// change: the CPU is read when the timer fires or is set again.
func TestIdleTrimmerTouchIsCheap(t *testing.T) {
	var reads atomic.Int32
	tr := newIdleTrimmerCPU(time.Hour, func() {}, func() time.Duration { reads.Add(1); return 0 })
	defer tr.stop()
	before := reads.Load()
	for range 1000 {
		tr.touch()
	}
	if got := reads.Load() - before; got != 0 {
		t.Fatalf("1000 requests read the CPU time %d times, want 0", got)
	}
}

// After a release the next request arms the timer again, and the trimmer
// releases once more after that request's idle period.
func TestIdleTrimmerRearmsAfterRelease(t *testing.T) {
	var n atomic.Int32
	tr := newIdleTrimmerCPU(30*time.Millisecond, func() { n.Add(1) }, func() time.Duration { return 0 })
	defer tr.stop()
	deadline := time.Now().Add(2 * time.Second)
	for n.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := n.Load(); got != 1 {
		t.Fatalf("released %d times after start, want 1", got)
	}
	tr.touch()
	time.Sleep(10 * time.Millisecond)
	if got := n.Load(); got != 1 {
		t.Fatalf("released %d times 10 ms after a request, want still 1", got)
	}
	for n.Load() != 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := n.Load(); got != 2 {
		t.Fatalf("released %d times after the request's idle period, want 2", got)
	}
}
