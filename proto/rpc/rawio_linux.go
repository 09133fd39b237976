package rpc

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// rawIO reads and writes a connection's socket with read(2) and write(2)
// made as raw system calls, and waits in Go's poller (deadlines included)
// when the socket has nothing to read or no room, as net.Conn does.
//
// Why: the socket is non-blocking, so these calls never block, but the
// syscall package's Read and Write tell the scheduler that they might
// (entersyscall, exitsyscall). When the process was idle a moment before,
// as a server between the calls of a sequential client is, and the client
// between its calls, that wakes the runtime's monitor thread (sysmon),
// which had gone to sleep and then polls every 20 µs for a while: a
// thread wake-up, often of the other CPU, and a train of short sleeps per
// call, on both sides. Measured on the 2-CPU test host, 10,000 container
// create+delete pairs through the Go client: futex calls per RPC 0.6 to
// 0.1 in edged and 1.2 to 0.07 in the client, context switches 3.2 to 1.4
// and 3.2 to 1.9, the client's CPU time per pair 220 to 160 µs (edged's
// own figures in edged/metadata's walFile.writeRaw, the other half).
type rawIO struct {
	rc   syscall.RawConn
	conn net.Conn // for write deadlines (see writeWithin)
	// net, local and peer describe the connection in errors, as
	// net.Conn's do.
	net         string
	local, peer net.Addr

	// The Read and the Write in progress keep their state here, so that
	// the functions handed to rc are made once, not a closure per call
	// (4 allocations per RPC). There is one Read at a time (the
	// connection's reader) and one Write at a time (the holder of the
	// connection's write lock).
	rbuf   []byte
	rn     int
	rerrno syscall.Errno
	readFn func(fd uintptr) bool
	// pbuf and pool are readPooled's buffer and its lender.
	pbuf         *readBuf
	pool         *sync.Pool
	readPooledFn func(fd uintptr) bool

	wbuf    []byte
	wn      int
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
	// wtimeout and wnotBefore are writeWithin's bounds (none when
	// wtimeout is 0); wdeadline tells that write set the deadline.
	wtimeout   time.Duration
	wnotBefore time.Time
	wdeadline  bool

	// poll is how long Read reads the socket without sleeping before it
	// waits in the poller (see Conn.SetBusyPoll); set by the reader.
	// polled and slept count the Reads a poll found data for and those
	// that waited after one (for tests).
	poll          time.Duration
	polled, slept uint64
	pollFn        func(fd uintptr)
	pollGot       bool
}

// newRawIO returns raw I/O on conn's socket, or nil when conn has none
// (net.Pipe in tests, a TLS wrapper): then conn's own Read and Write do.
func newRawIO(conn net.Conn) *rawIO {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc, conn: conn, net: conn.LocalAddr().Network(), local: conn.LocalAddr(), peer: conn.RemoteAddr()}
	r.readFn, r.writeFn, r.readPooledFn, r.pollFn = r.read, r.write, r.readPool, r.busyPoll
	return r
}

// setPoll sets how long the next Reads poll (0: none).
func (r *rawIO) setPoll(d time.Duration) { r.poll = d }

// busyPoll reads into rbuf until the socket has something or r.poll has
// passed, without sleeping; pollGot tells which.
func (r *rawIO) busyPoll(fd uintptr) {
	start := time.Now()
	for {
		if r.read(fd) {
			r.pollGot = true
			return
		}
		if time.Since(start) >= r.poll {
			return
		}
	}
}

// read reads into rbuf once the socket is readable; false: wait.
func (r *rawIO) read(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(len(r.rbuf)))
		if errno != syscall.EINTR {
			r.rn, r.rerrno = int(n), errno
			return errno != syscall.EAGAIN
		}
	}
}

func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rbuf, r.rn, r.rerrno = p, 0, 0
	if r.poll > 0 {
		r.pollGot = false
		if err := r.rc.Control(r.pollFn); err == nil && r.pollGot {
			r.polled++
			r.rbuf = nil
			return r.readResult(nil)
		}
		r.slept++
	}
	err := r.rc.Read(r.readFn)
	r.rbuf = nil
	return r.readResult(err)
}

// readPool reads into pbuf, taken from pool if need be, once the socket
// is readable; while it is not, pbuf goes back to pool (false: wait).
func (r *rawIO) readPool(fd uintptr) bool {
	for {
		if r.pbuf == nil {
			r.pbuf = r.pool.Get().(*readBuf)
		}
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.pbuf[0])), uintptr(len(r.pbuf)))
		switch errno {
		case syscall.EINTR:
		case syscall.EAGAIN:
			r.pool.Put(r.pbuf)
			r.pbuf = nil
			return false
		default:
			r.rn, r.rerrno = int(n), errno
			return true
		}
	}
}

// readPooled reads as Read does, into *buf, which it takes from pool when
// nil; while the socket has nothing to read, the buffer is back in pool
// (*buf is nil meanwhile), so that a connection waiting for its client
// holds none. Taking and giving back are a sync.Pool's per-CPU fast path:
// no system call more than Read.
func (r *rawIO) readPooled(buf **readBuf, pool *sync.Pool) (int, error) {
	r.pbuf, r.pool, r.rn, r.rerrno = *buf, pool, 0, 0
	err := r.rc.Read(r.readPooledFn)
	*buf = r.pbuf
	r.pbuf, r.pool = nil, nil
	return r.readResult(err)
}

// readResult is the result of a Read or readPooled that ended with err
// from the raw connection and rn, rerrno from read(2).
func (r *rawIO) readResult(err error) (int, error) {
	n, errno := r.rn, r.rerrno
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: r.net, Source: r.local, Addr: r.peer, Err: os.NewSyscallError("read", errno)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// write writes what is left of wbuf while the socket takes it; false:
// wait for room.
func (r *rawIO) write(fd uintptr) bool {
	for r.wn < len(r.wbuf) {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.wbuf[r.wn])), uintptr(len(r.wbuf)-r.wn))
		switch errno {
		case 0:
			r.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			// The wait in the poller starts: bound it, once per
			// Write. A failure to set the deadline (a closed conn)
			// shows in the wait.
			if r.wtimeout > 0 && !r.wdeadline {
				r.wdeadline = true
				r.conn.SetWriteDeadline(laterOf(time.Now().Add(r.wtimeout), r.wnotBefore))
			}
			return false
		default:
			r.werrno = errno
			return true
		}
	}
	return true
}

func (r *rawIO) Write(p []byte) (int, error) {
	r.wbuf, r.wn, r.werrno = p, 0, 0
	err := r.rc.Write(r.writeFn)
	n, errno := r.wn, r.werrno
	r.wbuf = nil
	if r.wdeadline {
		// Clear it for the next write (which may not wait, and so
		// not set its own). It fails only on a closed conn.
		r.wdeadline = false
		r.conn.SetWriteDeadline(time.Time{})
	}
	if err == nil && errno != 0 {
		err = &net.OpError{Op: "write", Net: r.net, Source: r.local, Addr: r.peer, Err: os.NewSyscallError("write", errno)}
	}
	return n, err
}

// writeWithin writes p as Write does, but waits at most timeout (or until
// notBefore, if later) for the socket to take it, and fails with
// os.ErrDeadlineExceeded after. The deadline is set only when the socket
// has no room, so a write it takes at once, as it does most, costs
// nothing more.
func (r *rawIO) writeWithin(p []byte, timeout time.Duration, notBefore time.Time) (int, error) {
	r.wtimeout, r.wnotBefore = timeout, notBefore
	n, err := r.Write(p)
	r.wtimeout, r.wnotBefore = 0, time.Time{}
	return n, err
}

// readWriter returns raw I/O on conn's socket, else conn.
func readWriter(conn net.Conn) io.ReadWriter {
	if r := newRawIO(conn); r != nil {
		return r
	}
	return conn
}
