package server

import (
	"errors"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/internal/pageout"
)

// idleTrimmer gives memory back to the system once edged has been idle for
// a moment: on a device with 256 MB, the few MiB the runtime keeps for the
// next burst and the code pages the kernel keeps mapped matter more than the
// next burst's first milliseconds.
//
// Idle means no unary request for the whole period and less than 1% CPU
// used over it, so that long streams (an import, a pull, a content write)
// postpone the release while waiting ones (an event subscription, a Wait, a
// followed log) do not. The trimmer wakes up once per burst, never while
// idle.
type idleTrimmer struct {
	after   time.Duration
	release func()
	cpu     func() time.Duration
	epoch   time.Time // monotonic origin of last

	// last is when the latest request finished (since epoch). touch only
	// stores it: a request costs no system call and no timer change, so a
	// burst of thousands of calls per second pays nothing for the trimmer.
	last atomic.Int64
	// armed is set while the timer is pending.
	armed atomic.Bool

	mu       sync.Mutex
	timer    *time.Timer
	armedAt  time.Duration // since epoch, when armedCPU was read
	armedCPU time.Duration
	stopped  bool
}

// newIdleTrimmer arms the trimmer: release runs after an idle period of
// after. A zero after returns nil, a trimmer that never releases.
func newIdleTrimmer(after time.Duration, release func()) *idleTrimmer {
	return newIdleTrimmerCPU(after, release, processCPU)
}

func newIdleTrimmerCPU(after time.Duration, release func(), cpu func() time.Duration) *idleTrimmer {
	if after <= 0 {
		return nil
	}
	t := &idleTrimmer{after: after, release: release, cpu: cpu, epoch: time.Now()}
	t.mu.Lock()
	t.armedCPU = cpu()
	t.armed.Store(true)
	t.timer = time.AfterFunc(after, t.fire)
	t.mu.Unlock()
	return t
}

func (t *idleTrimmer) now() time.Duration { return time.Since(t.epoch) }

// fire runs when the timer expires: if a request came meanwhile, the timer
// is set again for after past that request; if edged used more than 1% CPU
// since the timer was set (a stream), it waits another period; otherwise
// it releases.
func (t *idleTrimmer) fire() {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return
	}
	now := t.now()
	if wait := time.Duration(t.last.Load()) + t.after - now; wait > 0 {
		t.rearm(now, wait)
		t.mu.Unlock()
		return
	}
	cpu := t.cpu()
	if busy := cpu-t.armedCPU > (now-t.armedAt)/100; busy {
		t.rearm(now, t.after)
		t.mu.Unlock()
		return
	}
	t.armed.Store(false)
	t.mu.Unlock()
	t.release()
}

// rearm sets the timer to fire after wait; t.mu is held.
func (t *idleTrimmer) rearm(now, wait time.Duration) {
	t.armedAt, t.armedCPU = now, t.cpu()
	t.timer.Reset(wait)
}

// releaseNow releases at once, in the background.
func (t *idleTrimmer) releaseNow() {
	if t == nil {
		return
	}
	t.mu.Lock()
	stopped := t.stopped
	t.mu.Unlock()
	if !stopped {
		go t.release()
	}
}

// touch postpones the release to after from now.
func (t *idleTrimmer) touch() {
	if t == nil {
		return
	}
	now := t.now()
	t.last.Store(int64(now))
	if t.armed.Load() {
		return
	}
	// The first request after a release: set the timer again.
	t.mu.Lock()
	if !t.stopped && !t.armed.Load() {
		t.armed.Store(true)
		t.rearm(now, t.after)
	}
	t.mu.Unlock()
}

func (t *idleTrimmer) stop() {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.stopped = true
	t.timer.Stop()
	t.mu.Unlock()
}

// processCPU is the user+system CPU time edged has used.
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idleRelease returns the heap to the system and, with pageOutCode, pages
// out edged's executable. A kernel without MADV_PAGEOUT is reported once.
func idleRelease(log *slog.Logger, pageOutCode bool) func() {
	var enabled atomic.Bool
	enabled.Store(pageOutCode)
	return func() {
		debug.FreeOSMemory()
		if !enabled.Load() {
			return
		}
		st, err := pageout.Executable()
		if errors.Is(err, pageout.ErrUnsupported) {
			if enabled.Swap(false) {
				log.Info("not paging out code when idle", "reason", err)
			}
			return
		}
		if err != nil {
			log.Warn("paging out code when idle", "error", err)
			return
		}
		log.Debug("released memory", "code_mappings", st.Mappings, "code_bytes", st.Bytes)
	}
}
