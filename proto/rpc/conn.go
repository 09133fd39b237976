package rpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edged/edged/internal/ttrpcwire"
)

var (
	// ErrClosed is the error of calls on a closed or broken connection.
	ErrClosed = errors.New("rpc: connection closed")
	// ErrStreamFull ends a stream whose receiver did not take a message
	// for a second while more arrived (as ttrpc's client does).
	ErrStreamFull = errors.New("rpc: stream receiver fell behind")
	// ErrProtocol is a violation of the protocol by the server.
	ErrProtocol = errors.New("rpc: protocol error")
)

// StatusError is a call's non-OK status, as the server sent it (a
// google.rpc.Status code and message).
type StatusError struct {
	Code    uint32
	Message string
}

func (e *StatusError) Error() string {
	return "rpc error: code = " + CodeName(e.Code) + " desc = " + e.Message
}

// The status codes (google.rpc.Code) a StatusError carries.
const (
	CodeOK                 = 0
	CodeCanceled           = 1
	CodeUnknown            = 2
	CodeInvalidArgument    = 3
	CodeDeadlineExceeded   = 4
	CodeNotFound           = 5
	CodeAlreadyExists      = 6
	CodePermissionDenied   = 7
	CodeResourceExhausted  = 8
	CodeFailedPrecondition = 9
	CodeAborted            = 10
	CodeOutOfRange         = 11
	CodeUnimplemented      = 12
	CodeInternal           = 13
	CodeUnavailable        = 14
	CodeDataLoss           = 15
)

// CodeName returns the name of a status code ("NotFound").
func CodeName(code uint32) string {
	names := [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded",
		"NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted",
		"FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented", "Internal",
		"Unavailable", "DataLoss", "Unauthenticated"}
	if int(code) < len(names) {
		return names[code]
	}
	return "Code(" + strconv.FormatUint(uint64(code), 10) + ")"
}

// streamRecvBuffer is how many messages of a server stream wait for their
// receiver (ttrpc's figure).
const streamRecvBuffer = 64

// frame is one received frame of a stream.
type frame struct {
	h       ttrpcwire.Header
	payload []byte
}

// stream is the receiving end of one stream id.
type stream struct {
	id   uint32
	recv chan frame
	done chan struct{} // closed with err set when the stream ends
	once sync.Once
	err  error
}

func (s *stream) close(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
	})
}

// Conn is a ttrpc client connection: unary calls and streams, any number
// at once. It is safe for concurrent use.
//
// No goroutine reads the connection all the time. A call waiting for its
// answer reads the connection itself while it holds the read turn, and
// hands the frames of other calls and streams to them; calls that wait
// while another holds the turn get their frames handed over, or take the
// turn when it is free. A lone call, the common case of edgectl and of a
// fleet agent making one call after another, so reads its answer on its
// own goroutine: a hand-over from a reading goroutine costs a client with
// more than one CPU a thread wake-up per call. When nobody has read for
// idleReadDelay, an idle reader takes the turn and reads until a caller
// waits, so that the end of the connection (Done) and stream messages
// nobody waits for yet are seen.
type Conn struct {
	conn net.Conn
	rw   io.ReadWriter // conn's socket (see rawIO), else conn

	wmu  sync.Mutex // orders stream ids with their first frame on the wire
	next uint32

	mu      sync.Mutex
	streams map[uint32]*stream
	err     error // set once the connection is closed or broken

	done chan struct{} // closed when the connection has ended

	// turn holds a value while a goroutine reads the connection (the
	// read turn); fr, the frame being read, belongs to the holder.
	turn    chan struct{}
	fr      frameReader
	waiting atomic.Int32               // goroutines in wait
	idle    atomic.Pointer[time.Timer] // starts idleRead (atomic: idleRead itself restarts it)

	// busyPoll is SetBusyPoll's limit in nanoseconds (0: off); answerAvg
	// the moving average of how long unary calls waited for their answer
	// (see pollFor).
	busyPoll  atomic.Int64
	answerAvg atomic.Int64
}

// idleReadDelay is how long after the last read an idle reader takes the
// read turn.
const idleReadDelay = 50 * time.Millisecond

// NewConn returns a client on conn; Close closes conn.
func NewConn(conn net.Conn) *Conn {
	c := &Conn{conn: conn, next: 1, streams: map[uint32]*stream{}, done: make(chan struct{}), turn: make(chan struct{}, 1)}
	c.rw = readWriter(conn)
	c.fr.r = bufio.NewReaderSize(c.rw, readBufferSize)
	c.idle.Store(time.AfterFunc(idleReadDelay, c.idleRead))
	return c
}

// SetBusyPoll lets a unary call that reads its own answer poll the socket
// without sleeping before it waits in Go's poller, for twice the average
// time this connection's answers took, at most limit; 0 (the default) or
// less turns it off.
//
// Why: a thread that sleeps for its answer has to be woken for it, and
// the server's write does the waking. On the 2-CPU virtual machine edged
// is measured on, where an idle CPU is soon halted, a wake-up is dear:
// perf put about 16 µs of edged's CPU per answer into waking the client
// (sock_def_readable), and the answer reached a sleeping client later
// still. Sequential container create+delete through the Go client, in
// make bench runs of the same day, with the client's limit of 600 µs:
// 2,600-3,300 pairs per second against 2,200-2,500 with polling off; edged
// used 50-70 µs less CPU per pair, the client 110-140 µs more. Limits of
// 400 µs and 1 ms did no better sequentially, and 1 ms cost 4 concurrent
// clients (in one process, on 2 CPUs) a sixth of their rate.
//
// A poll is tried only where it can pay: never with a single P
// (GOMAXPROCS 1, which Go also derives from a CPU quota), where it would
// only delay the server, and not while this connection's answers take
// over half the limit on average (a moving average over the last few
// calls), as under load or for slow calls such as a task start. A call
// that polls in vain costs twice the average answer time of CPU, at most
// limit. Streams never poll.
func (c *Conn) SetBusyPoll(limit time.Duration) { c.busyPoll.Store(int64(max(limit, 0))) }

// BusyPoll returns SetBusyPoll's limit.
func (c *Conn) BusyPoll() time.Duration { return time.Duration(c.busyPoll.Load()) }

// pollFor returns how long a unary call's read may poll (see
// SetBusyPoll): twice the connection's average answer time, at least a
// tenth of the limit and at most the limit; none while that average is
// over half the limit.
func (c *Conn) pollFor() time.Duration {
	limit := c.busyPoll.Load()
	if limit == 0 {
		return 0
	}
	// GOMAXPROCS takes the scheduler's lock: asked last.
	avg := c.answerAvg.Load()
	if avg > limit/2 || runtime.GOMAXPROCS(0) < 2 {
		return 0
	}
	return time.Duration(min(limit, max(2*avg, limit/10)))
}

// noteAnswer adds a unary call's wait for its answer to the moving
// average (weight 1/4: an answer that took 50 ms keeps polling off for
// about a dozen fast calls after it). Concurrent calls may lose one
// another's update: the average is an estimate.
func (c *Conn) noteAnswer(d time.Duration) {
	avg := c.answerAvg.Load()
	c.answerAvg.Store(avg + (int64(d)-avg)/4)
}

// Close closes the connection; calls in progress fail with ErrClosed.
func (c *Conn) Close() error {
	c.idle.Load().Stop()
	return c.shut(net.ErrClosed)
}

// shut closes the connection and ends it with err, once a reader in
// progress has failed on the closed connection and left.
func (c *Conn) shut(err error) error {
	cerr := c.conn.Close()
	c.turn <- struct{}{}
	c.fail(err)
	<-c.turn
	return cerr
}

// Done is closed when the connection has ended (closed by either side).
func (c *Conn) Done() <-chan struct{} { return c.done }

// release gives up the read turn.
func (c *Conn) release() {
	<-c.turn
	if t := c.idle.Load(); t != nil { // nil: the timer fired before NewConn stored it
		t.Reset(idleReadDelay)
	}
}

// idleRead reads for the streams while no call waits, from idleReadDelay
// after the last read until it has handed over a call's answer or a frame
// while a call waits (a call then takes the turn for its own answer).
func (c *Conn) idleRead() {
	select {
	case c.turn <- struct{}{}:
	default:
		return // a caller reads; it restarts the timer when it leaves
	}
	select {
	case <-c.done:
		<-c.turn // no timer restart: nothing is left to read
		return
	default:
	}
	defer c.release()
	for {
		f, err := c.fr.next()
		if err != nil {
			c.fail(err)
			return
		}
		c.dispatch(f)
		if c.waiting.Load() > 0 || f.h.Type == ttrpcwire.TypeResponse {
			return // a call waits, or was just answered: calls are being made
		}
	}
}

// fail ends the connection after err (a read error, or net.ErrClosed
// from Close): every call and stream in progress ends with it.
func (c *Conn) fail(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = ErrClosed
	} else {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	streams := c.streams
	c.streams = nil
	c.mu.Unlock()
	for _, s := range streams {
		s.close(err)
	}
	c.conn.Close()
	close(c.done)
}

// dispatch hands a frame to its stream.
func (c *Conn) dispatch(f frame) {
	c.mu.Lock()
	s := c.streams[f.h.Stream]
	c.mu.Unlock()
	if s != nil { // else a late answer to an abandoned call
		c.deliver(s, f)
	}
}

// frameReader reads frames across holders of the read turn: a read cut
// short (a cancelled caller's) leaves what it read for the next one.
type frameReader struct {
	r    *bufio.Reader
	hbuf [ttrpcwire.HeaderLen]byte
	hn   int
	h    ttrpcwire.Header
	p    []byte // nil until the header is complete
	pn   int
}

func (fr *frameReader) next() (frame, error) {
	for fr.hn < len(fr.hbuf) {
		n, err := fr.r.Read(fr.hbuf[fr.hn:])
		fr.hn += n
		if err != nil && fr.hn < len(fr.hbuf) {
			if fr.hn > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return frame{}, err
		}
	}
	if fr.p == nil {
		fr.h = ttrpcwire.DecodeHeader(&fr.hbuf)
		if fr.h.Length > ttrpcwire.MaxMessage {
			return frame{}, fmt.Errorf("%w: frame of %d bytes is over the %d byte limit", ErrProtocol, fr.h.Length, ttrpcwire.MaxMessage)
		}
		fr.p = make([]byte, fr.h.Length)
	}
	for fr.pn < len(fr.p) {
		n, err := fr.r.Read(fr.p[fr.pn:])
		fr.pn += n
		if err != nil && fr.pn < len(fr.p) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return frame{}, err
		}
	}
	f := frame{fr.h, fr.p}
	fr.hn, fr.p, fr.pn = 0, nil, 0
	return f, nil
}

// deliver hands f to s. A receiver that does not take it within a second
// loses its stream, so that one slow stream does not stall the others.
func (c *Conn) deliver(s *stream, f frame) {
	select {
	case s.recv <- f:
		return
	case <-s.done:
		return
	default:
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case s.recv <- f:
	case <-s.done:
	case <-t.C:
		c.remove(s)
		s.close(ErrStreamFull)
	}
}

func (c *Conn) remove(s *stream) {
	c.mu.Lock()
	if c.streams != nil {
		delete(c.streams, s.id)
	}
	c.mu.Unlock()
}

// open sends a request on a new stream.
func (c *Conn) open(ctx context.Context, flags byte, service, method string, req Message, buf int) (*stream, error) {
	var payload []byte
	if req != nil {
		var err error
		if payload, err = marshal(req); err != nil {
			return nil, err
		}
	}
	var timeout int64
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d).Nanoseconds(), 1)
	}
	var md []ttrpcwire.KeyValue
	if m, ok := GetMetadata(ctx); ok {
		for _, kv := range m.pairs() {
			md = append(md, ttrpcwire.KeyValue{Key: kv[0], Value: kv[1]})
		}
	}
	size := ttrpcwire.RequestSize(service, method, payload, timeout, md)
	if size > ttrpcwire.MaxMessage {
		return nil, fmt.Errorf("rpc: %s/%s request of %d bytes is over the %d byte limit", service, method, size, ttrpcwire.MaxMessage)
	}
	s := &stream{recv: make(chan frame, buf), done: make(chan struct{})}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	s.id = c.next
	c.next += 2
	c.streams[s.id] = s
	c.mu.Unlock()
	f := ttrpcwire.AppendRequest(ttrpcwire.NewFrame(s.id, ttrpcwire.TypeRequest, flags, size), service, method, payload, timeout, md)
	if err := c.write(f); err != nil {
		c.remove(s)
		return nil, err
	}
	return s, nil
}

// write sends one frame; the caller holds wmu. A failed write breaks the
// connection (a frame may be half written).
func (c *Conn) write(f []byte) error {
	if _, err := c.rw.Write(f); err != nil {
		c.shut(err)
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err
	}
	return nil
}

// wait returns the next frame of s: handed over by the reader, or read by
// this goroutine when the read turn is free.
func (c *Conn) wait(ctx context.Context, s *stream, poll time.Duration) (frame, error) {
	select {
	case f := <-s.recv:
		return f, nil
	default:
	}
	c.waiting.Add(1)
	defer c.waiting.Add(-1)
	select {
	case f := <-s.recv:
		return f, nil
	case <-s.done:
		return ended(s)
	case <-ctx.Done():
		c.remove(s)
		s.close(ctx.Err())
		return frame{}, ctx.Err()
	case c.turn <- struct{}{}:
		return c.readFor(ctx, s, poll)
	}
}

// ended returns what is left of a stream that has ended: a frame handed
// over before the end, else the end's error.
func ended(s *stream) (frame, error) {
	select {
	case f := <-s.recv:
		return f, nil
	default:
		return frame{}, s.err
	}
}

// poller is a connection's reader that can poll (rawIO).
type poller interface{ setPoll(time.Duration) }

// aLongTimeAgo is a read deadline that interrupts a read at once.
var aLongTimeAgo = time.Unix(1, 0)

// readFor reads, holding the read turn, until the next frame of s,
// handing over the frames of others. The end of ctx interrupts the read
// (through the read deadline); a frame half read stays for the next
// reader. Its reads poll for up to poll first (see SetBusyPoll); the end
// of ctx is noticed after the poll, which is short.
func (c *Conn) readFor(ctx context.Context, s *stream, poll time.Duration) (frame, error) {
	defer c.release()
	if p, ok := c.rw.(poller); ok && poll > 0 {
		p.setPoll(poll)
		defer p.setPoll(0)
	}
	if ctx.Done() != nil {
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			c.conn.SetReadDeadline(aLongTimeAgo)
			close(fired)
		})
		defer func() {
			if !stop() {
				<-fired
				c.conn.SetReadDeadline(time.Time{})
			}
		}()
	}
	for {
		select {
		case f := <-s.recv: // handed over before this goroutine took the turn
			return f, nil
		case <-s.done:
			return ended(s)
		default:
		}
		if err := ctx.Err(); err != nil {
			c.remove(s)
			s.close(err)
			return frame{}, err
		}
		f, err := c.fr.next()
		if err != nil {
			switch {
			case !errors.Is(err, os.ErrDeadlineExceeded):
				c.fail(err) // which ends s
			case ctx.Err() == nil: // not this call's deadline: cannot happen
				c.conn.SetReadDeadline(time.Time{})
			}
			continue // see above: s or ctx has ended
		}
		if f.h.Stream == s.id {
			return f, nil
		}
		c.dispatch(f)
	}
}

// Call makes a unary call. The deadline of ctx bounds it and goes to the
// server as the call's timeout; the metadata of ctx goes with it.
func (c *Conn) Call(ctx context.Context, service, method string, req, resp Message) error {
	poll := c.busyPoll.Load() != 0
	var start time.Time
	if poll {
		start = time.Now()
	}
	s, err := c.open(ctx, 0, service, method, req, 1)
	if err != nil {
		return err
	}
	f, err := c.wait(ctx, s, c.pollFor())
	if poll && err == nil {
		c.noteAnswer(time.Since(start))
	}
	c.remove(s)
	if err != nil {
		return err
	}
	if f.h.Type != ttrpcwire.TypeResponse {
		return fmt.Errorf("%w: frame of type %d in answer to a unary call", ErrProtocol, f.h.Type)
	}
	return decodeResponse(f.payload, resp)
}

func decodeResponse(p []byte, m Message) error {
	r, err := ttrpcwire.DecodeResponse(p)
	if err != nil {
		return fmt.Errorf("%w: response: %w", ErrProtocol, err)
	}
	if r.Code != 0 {
		return &StatusError{Code: r.Code, Message: r.Message}
	}
	return unmarshal(r.Payload, m)
}

func marshal(m Message) ([]byte, error) {
	b := make([]byte, m.Size())
	n, err := m.MarshalTo(b)
	if err != nil {
		return nil, fmt.Errorf("rpc: marshal %T: %w", m, err)
	}
	return b[:n], nil
}

func unmarshal(p []byte, m Message) error {
	if m == nil {
		return nil
	}
	m.Reset()
	if err := m.Unmarshal(p); err != nil {
		return fmt.Errorf("rpc: unmarshal %T: %w", m, err)
	}
	return nil
}

// NewStream starts a streaming call. A server-streaming call sends req
// with its request; a client-streaming call sends its messages with
// SendMsg. The stream ends when ctx does.
func (c *Conn) NewStream(ctx context.Context, desc *StreamDesc, service, method string, req Message) (ClientStream, error) {
	flags := byte(ttrpcwire.FlagRemoteClosed)
	if desc.StreamingClient {
		flags = ttrpcwire.FlagRemoteOpen
		req = nil
	}
	s, err := c.open(ctx, flags, service, method, req, streamRecvBuffer)
	if err != nil {
		return nil, err
	}
	cs := &clientStream{ctx: ctx, c: c, s: s, desc: *desc}
	cs.stop = context.AfterFunc(ctx, func() {
		c.remove(s)
		s.close(ctx.Err())
	})
	return cs, nil
}

type clientStream struct {
	ctx          context.Context
	c            *Conn
	s            *stream
	desc         StreamDesc
	stop         func() bool
	localClosed  bool
	remoteClosed bool
}

func (cs *clientStream) send(flags byte, payload []byte) error {
	select {
	case <-cs.s.done:
		return cs.s.err
	default:
	}
	cs.c.wmu.Lock()
	defer cs.c.wmu.Unlock()
	return cs.c.write(append(ttrpcwire.NewFrame(cs.s.id, ttrpcwire.TypeData, flags, len(payload)), payload...))
}

// SendMsg sends one message of a client stream.
func (cs *clientStream) SendMsg(m Message) error {
	if !cs.desc.StreamingClient {
		return fmt.Errorf("%w: cannot send data on a stream without a streaming client", ErrProtocol)
	}
	if cs.localClosed {
		return fmt.Errorf("rpc: send on a stream closed for sending: %w", ErrClosed)
	}
	p, err := marshal(m)
	if err != nil {
		return err
	}
	if len(p) > ttrpcwire.MaxMessage {
		return fmt.Errorf("rpc: message of %d bytes is over the %d byte limit", len(p), ttrpcwire.MaxMessage)
	}
	return cs.send(0, p)
}

// CloseSend ends the client's side of a client stream.
func (cs *clientStream) CloseSend() error {
	if !cs.desc.StreamingClient {
		return fmt.Errorf("%w: cannot close a stream without a streaming client", ErrProtocol)
	}
	if cs.localClosed {
		return nil
	}
	cs.localClosed = true
	return cs.send(ttrpcwire.FlagRemoteClosed|ttrpcwire.FlagNoData, nil)
}

// RecvMsg receives the next message; io.EOF after the last.
func (cs *clientStream) RecvMsg(m Message) error {
	if cs.remoteClosed {
		return io.EOF
	}
	f, err := cs.c.wait(cs.ctx, cs.s, 0)
	if err != nil {
		cs.finish()
		return err
	}
	switch f.h.Type {
	case ttrpcwire.TypeResponse:
		cs.finish()
		return decodeResponse(f.payload, m)
	case ttrpcwire.TypeData:
		if !cs.desc.StreamingServer {
			cs.finish()
			return fmt.Errorf("%w: data from a server that does not stream", ErrProtocol)
		}
		if f.h.Flags&ttrpcwire.FlagRemoteClosed != 0 {
			cs.finish()
			if f.h.Flags&ttrpcwire.FlagNoData != 0 {
				return io.EOF
			}
		}
		return unmarshal(f.payload, m)
	}
	cs.finish()
	return fmt.Errorf("%w: frame of type %d on a stream", ErrProtocol, f.h.Type)
}

func (cs *clientStream) finish() {
	cs.remoteClosed = true
	cs.stop()
	cs.c.remove(cs.s)
	cs.s.close(ErrClosed)
}
