package rpc

import (
	"io"
	"sync"
)

// readBuf is one read buffer of a server connection.
type readBuf = [readBufferSize]byte

// pooledReader reads into a buffer lent by a pool only while the
// connection has something to read (see rawIO.readPooled).
type pooledReader interface {
	readPooled(buf **readBuf, pool *sync.Pool) (int, error)
}

// connReader is the buffered reader of a server connection: bufio.Reader's
// job, except that over a pooledReader its buffer comes from the server's
// pool when bytes arrive and goes back to it while the connection waits
// for its client. An idle connection, the common state of a connection to
// edged, then holds no read buffer (4 KiB, about half of what an idle
// connection cost; see TestServerIdleConnMemory). Over another reader
// (net.Pipe, other systems) it keeps one buffer.
type connReader struct {
	src    io.Reader
	pooled pooledReader // src as a pooledReader, or nil
	pool   *sync.Pool   // of *readBuf
	buf    *readBuf     // nil while a pooled reader waits
	r, w   int          // buf[r:w] is unread
}

func newConnReader(src io.Reader, pool *sync.Pool) *connReader {
	b := &connReader{src: src, pool: pool}
	b.pooled, _ = src.(pooledReader)
	return b
}

// Buffered returns the number of bytes read and not yet taken.
func (b *connReader) Buffered() int { return b.w - b.r }

// fill reads into the empty buffer, waiting for at least one byte.
func (b *connReader) fill() error {
	b.r, b.w = 0, 0
	var n int
	var err error
	if b.pooled != nil {
		n, err = b.pooled.readPooled(&b.buf, b.pool)
	} else {
		if b.buf == nil {
			b.buf = b.pool.Get().(*readBuf)
		}
		n, err = b.src.Read(b.buf[:])
	}
	if n > 0 {
		b.w = n
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// Read reads what is buffered, else reads the connection: straight into p
// when p is at least as large as the buffer (as bufio.Reader does), else
// into the buffer.
func (b *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.r == b.w {
		if len(p) >= readBufferSize {
			return b.src.Read(p)
		}
		if err := b.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}

// wait waits for the next byte unless one is buffered.
func (b *connReader) wait() error {
	if b.r < b.w {
		return nil
	}
	return b.fill()
}

// release gives the buffer back to the pool; the reader is done.
func (b *connReader) release() {
	if b.buf != nil {
		b.pool.Put(b.buf)
		b.buf = nil
	}
	b.r, b.w = 0, 0
}
