package server

import (
	"runtime/debug"
	"sync"
	"time"
)

// idleTrimmer returns the memory a burst of requests left in the Go heap
// to the system once edged has been idle for a moment: on a device with
// 256 MB, the few MiB the runtime keeps for the next burst matter more than
// the next burst's first milliseconds. It wakes up once per burst, never
// while idle.
type idleTrimmer struct {
	after time.Duration
	mu    sync.Mutex
	timer *time.Timer
}

func newIdleTrimmer(after time.Duration, trim func()) *idleTrimmer {
	if trim == nil {
		trim = debug.FreeOSMemory
	}
	t := &idleTrimmer{after: after}
	t.timer = time.AfterFunc(after, trim)
	return t
}

// touch postpones the trim to after from now.
func (t *idleTrimmer) touch() {
	t.mu.Lock()
	t.timer.Reset(t.after)
	t.mu.Unlock()
}

func (t *idleTrimmer) stop() {
	t.mu.Lock()
	t.timer.Stop()
	t.mu.Unlock()
}
