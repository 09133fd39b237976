package remotes

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// minProgress is what a response body must deliver in every idle window
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

// watchedBody bounds the reads of a response body with a watchdog. When it
// fires, the request's context is cancelled, which ends a blocked Read
// (a dead connection, or a server that stops sending), and Read reports a
// *stallError instead of the cancellation, so a stall is never mistaken
// for the caller's own cancellation or deadline (and vice versa: when the
// caller's context ends, its error is returned as is).
//
// Transfers have no overall deadline by design (a large layer on a slow
// link takes what it takes); the transport's ResponseHeaderTimeout covers
// only the wait for headers. This watchdog covers everything after them.
type watchedBody struct {
	body    io.ReadCloser
	ctx     context.Context    // the caller's context
	cancel  context.CancelFunc // cancels the request, a child of ctx
	idle    time.Duration
	timer   *time.Timer
	stalled atomic.Bool
	read    int64 // bytes read in all
	window  int64 // bytes read since the timer was last reset
}

// watchBody wraps the body of a response to a request made with a child
// context of ctx that cancel cancels; closing the body calls cancel.
func watchBody(ctx context.Context, cancel context.CancelFunc, body io.ReadCloser, idle time.Duration) *watchedBody {
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	b := &watchedBody{body: body, ctx: ctx, cancel: cancel, idle: idle}
	b.timer = time.AfterFunc(idle, func() { b.stalled.Store(true); cancel() })
	return b
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.read += int64(n)
	b.window += int64(n)
	if b.window >= minProgress && !b.stalled.Load() {
		b.window = 0
		b.timer.Reset(b.idle)
	}
	if err == io.EOF {
		b.timer.Stop()
	} else if err != nil && b.stalled.Load() && b.ctx.Err() == nil {
		err = &stallError{idle: b.idle, read: b.read}
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.timer.Stop()
	err := b.body.Close()
	b.cancel()
	return err
}
