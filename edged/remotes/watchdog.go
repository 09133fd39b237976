package remotes

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// minProgress is what an exchange must move in every idle window
// (PullOptions.IdleTimeout), unless it ends first. The watchdog is reset
// after each minProgress bytes rather than after every read, so a server
// trickling a byte now and then cannot hold a download, a manifest or a
// token read open forever: a blob attempt that slow is dropped and resumed
// with a Range request (so a slow but real link loses nothing), and a
// small document must arrive whole within the window. 16 KiB per 60 s
// (the default) is about 270 B/s, far below any link that can pull an
// image.
const minProgress = 16 << 10

// stallError reports a response body that did not deliver minProgress
// bytes, or its end, within the idle timeout.
type stallError struct {
	idle time.Duration
	read int64
}

func (e *stallError) Error() string {
	return fmt.Sprintf("response stalled: less than %d KiB in %s (%d bytes read)", minProgress>>10, e.idle, e.read)
}

// watchdog is the one deadline of one HTTP exchange (every request: blobs,
// manifests, tokens, uploads, errors). It is armed before the request is
// sent and re-armed on progress: the response's headers, and every
// minProgress bytes of the request body sent or of the response body
// received. When idle passes without progress it cancels the request's
// context, which ends whatever is blocked (dialing, waiting for headers,
// a Read of a dead connection or of a server that stopped sending), and
// the exchange reports that instead of the cancellation, so a stall is
// never mistaken for the caller's own cancellation or deadline (and vice
// versa: when the caller's context ends, its error is returned as is).
//
// Transfers have no overall deadline by design (a large layer on a slow
// link takes what it takes), and the transport has no timeout of its own
// for headers: this watchdog is what bounds them, with the configured
// IdleTimeout.
type watchdog struct {
	ctx    context.Context    // the caller's context
	cancel context.CancelFunc // cancels the request, a child of ctx
	idle   time.Duration
	fired  atomic.Bool

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
}

// newWatchdog arms a watchdog for one exchange and returns the context to
// make the request with.
func newWatchdog(ctx context.Context, idle time.Duration) (context.Context, *watchdog) {
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	rctx, cancel := context.WithCancel(ctx)
	w := &watchdog{ctx: ctx, cancel: cancel, idle: idle}
	w.timer = time.AfterFunc(idle, func() { w.fired.Store(true); cancel() })
	return rctx, w
}

// progress re-arms the deadline. It returns false when the deadline has
// already passed (the request is being cancelled).
func (w *watchdog) progress() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return !w.fired.Load()
	}
	if !w.timer.Stop() {
		// Fired: its function may not have run yet.
		w.fired.Store(true)
		return false
	}
	w.timer.Reset(w.idle)
	return true
}

// stop disarms the deadline for good (the exchange is complete).
func (w *watchdog) stop() {
	w.mu.Lock()
	w.stopped = true
	w.timer.Stop()
	w.mu.Unlock()
}

// close ends the exchange: the deadline and the request's context.
func (w *watchdog) close() {
	w.stop()
	w.cancel()
}

// expired reports whether the deadline, not the caller, ended the exchange.
func (w *watchdog) expired() bool { return w.fired.Load() && w.ctx.Err() == nil }

// counter re-arms the watchdog every minProgress bytes.
type counter struct {
	w      *watchdog
	n      int64 // bytes in all
	window int64 // bytes since the last re-arm
}

func (c *counter) add(n int) {
	c.n += int64(n)
	c.window += int64(n)
	if c.window >= minProgress {
		c.window = 0
		c.w.progress()
	}
}

// upload wraps a request body: what the transport reads from it is
// progress.
func (w *watchdog) upload(body io.ReadCloser) io.ReadCloser {
	return &watchedUpload{body: body, c: counter{w: w}}
}

type watchedUpload struct {
	body io.ReadCloser
	c    counter
}

func (u *watchedUpload) Read(p []byte) (int, error) {
	n, err := u.body.Read(p)
	u.c.add(n)
	return n, err
}

func (u *watchedUpload) Close() error { return u.body.Close() }

// response wraps the body of a response that arrived in time; closing the
// body ends the exchange. Reading it fails with a *stallError when the
// deadline passes.
func (w *watchdog) response(body io.ReadCloser) *watchedBody {
	return &watchedBody{body: body, c: counter{w: w}}
}

// watchedBody is a response body bounded by its exchange's watchdog.
type watchedBody struct {
	body io.ReadCloser
	c    counter
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.c.add(n)
	if err == io.EOF {
		b.c.w.stop()
	} else if err != nil && b.c.w.expired() {
		err = &stallError{idle: b.c.w.idle, read: b.c.n}
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.c.w.stop()
	err := b.body.Close()
	b.c.w.cancel()
	return err
}
