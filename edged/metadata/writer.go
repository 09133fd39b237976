package metadata

import (
	"context"
	"fmt"
	"sync"

	"github.com/edged/edged/edged/errdefs"
)

// writer runs every write transaction (DB.Update) on one long-lived
// goroutine.
//
// Why: the API server runs each request on a new goroutine, which starts
// with a small stack. SQLite (C translated to Go) calls deep with large
// frames, so a request that wrote to the database grew its new stack
// several times, copying it each time: about 7% of edged's CPU time during a
// container create+delete burst went to runtime.copystack. The writer
// goroutine keeps its grown stack from one transaction to the next. There
// is a single writer connection anyway, so running its transactions on one
// goroutine serializes nothing that was not already serialized; the hand-off
// costs two goroutine switches.
type writer struct {
	reqs    chan *writeReq
	closing chan struct{}
	done    chan struct{}
	once    sync.Once
	pool    sync.Pool // *writeReq
}

// writeReq is one Update handed to the writer goroutine.
type writeReq struct {
	ctx      context.Context
	fn       func(*Tx) error
	err      error
	panicked bool
	panicVal any
	done     chan struct{}
}

func newWriter() *writer {
	w := &writer{reqs: make(chan *writeReq), closing: make(chan struct{}), done: make(chan struct{})}
	w.pool.New = func() any { return &writeReq{done: make(chan struct{}, 1)} }
	return w
}

// start runs the writer goroutine; exec runs one transaction.
func (w *writer) start(exec func(ctx context.Context, fn func(*Tx) error) error) {
	go func() {
		defer close(w.done)
		for {
			select {
			case r := <-w.reqs:
				w.serve(r, exec)
			case <-w.closing:
				return
			}
		}
	}()
}

func (w *writer) serve(r *writeReq, exec func(ctx context.Context, fn func(*Tx) error) error) {
	defer func() {
		if v := recover(); v != nil {
			r.panicked, r.panicVal = true, v
		}
		r.done <- struct{}{}
	}()
	r.err = exec(r.ctx, r.fn)
}

// do runs fn through exec on the writer goroutine and returns its result.
// A panic in fn is re-raised in the caller's goroutine (after the
// transaction was rolled back).
func (w *writer) do(ctx context.Context, fn func(*Tx) error) error {
	r := w.pool.Get().(*writeReq)
	r.ctx, r.fn = ctx, fn
	select {
	case w.reqs <- r:
	case <-w.closing:
		r.ctx, r.fn = nil, nil
		w.pool.Put(r)
		return fmt.Errorf("metadata: update: database is closed: %w", errdefs.ErrUnavailable)
	case <-ctx.Done():
		// Waiting for the writer, as a transaction waited for the writer
		// connection before.
		r.ctx, r.fn = nil, nil
		w.pool.Put(r)
		return dbError("begin transaction", ctx.Err())
	}
	<-r.done
	err, panicked, v := r.err, r.panicked, r.panicVal
	*r = writeReq{done: r.done}
	w.pool.Put(r)
	if panicked {
		panic(v)
	}
	return err
}

// stop makes later Updates fail and waits for the one running, if any.
func (w *writer) stop() {
	w.once.Do(func() { close(w.closing) })
	<-w.done
}
