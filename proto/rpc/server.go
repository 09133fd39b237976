package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edged/edged/internal/ttrpcwire"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("rpc: server closed")

// errStreamClosed is the error of SendMsg after the stream has ended.
var errStreamClosed = errors.New("rpc: stream closed")

// UnaryServerInfo describes the unary call an interceptor sees.
type UnaryServerInfo struct {
	FullMethod string // "/service/method"
}

// UnaryInterceptor wraps every unary call: it calls m with unmarshal (or
// not) and returns its response or an error.
type UnaryInterceptor func(ctx context.Context, unmarshal func(Message) error, info *UnaryServerInfo, m Method) (Message, error)

// StreamServerInfo describes the streaming call an interceptor sees.
type StreamServerInfo struct {
	FullMethod      string
	StreamingClient bool
	StreamingServer bool
}

// StreamHandler serves one streaming call.
type StreamHandler func(ctx context.Context, stream StreamServer) (Message, error)

// StreamInterceptor wraps every streaming call.
type StreamInterceptor func(ctx context.Context, stream StreamServer, info *StreamServerInfo, h StreamHandler) (Message, error)

// ServerConfig configures a Server.
type ServerConfig struct {
	Unary  UnaryInterceptor
	Stream StreamInterceptor
	// MaxCalls bounds the calls and streams in progress on one
	// connection (each holds a goroutine); a request beyond it is refused
	// at once with ResourceExhausted. Zero means DefaultMaxCalls.
	MaxCalls int
	// FrameTimeout bounds how long a frame may take to arrive once its
	// first byte has: a client that stalls mid-frame is disconnected.
	// A connection waiting for the next frame has no deadline. Zero means
	// DefaultFrameTimeout.
	FrameTimeout time.Duration
	// WriteTimeout bounds how long a frame's write may wait for the
	// client to make room (or until the call's deadline, if later): a
	// client that stops reading is disconnected, which ends its calls.
	// Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Draining is the status of a request that arrives once Shutdown
	// has begun. Nil means Unavailable, "rpc: server is shutting down".
	Draining *StatusError
	// MaxConns bounds the open connections. A connection beyond it is
	// answered with TooManyConns, as the status of its first request
	// (read for up to refuseTimeout), and closed. Zero means no limit.
	MaxConns int
	// TooManyConns is that status. Nil means ResourceExhausted, "rpc:
	// too many connections".
	TooManyConns *StatusError
	// OnRefuse, when set, is called for each connection refused (for a
	// log line); open is the number of connections open.
	OnRefuse func(open int)
}

// DefaultMaxCalls is the default of ServerConfig.MaxCalls.
const DefaultMaxCalls = 256

// DefaultFrameTimeout is the default of ServerConfig.FrameTimeout: ample
// for 4 MiB from a live client, short enough that clients stalled
// mid-frame do not pile up.
const DefaultFrameTimeout = 20 * time.Second

// DefaultWriteTimeout is the default of ServerConfig.WriteTimeout.
const DefaultWriteTimeout = 20 * time.Second

// refuseTimeout bounds how long a connection refused for MaxConns may take
// to send its first request; maxRefusing bounds the refused connections
// waiting for theirs (others are closed at once, without an answer), and
// refuseMaxRequest the request read before answering (a larger one gets
// no answer).
const (
	refuseTimeout    = 2 * time.Second
	maxRefusing      = 16
	refuseMaxRequest = 64 << 10
)

// payloadChunk is the first allocation for a payload larger than it: the
// buffer then doubles as the bytes arrive, so a header announcing 4 MiB
// costs the server what the client has sent, not what it announced.
const payloadChunk = 64 << 10

// maxStreamQueuedBytes bounds the bytes of a client stream's messages
// waiting for its handler (see serverStream.deliver); one message is
// always taken, whatever its size.
const maxStreamQueuedBytes = 8 << 20

// streamFullWait is how long a message of a client stream waits for room
// in the stream's queue, the connection unread meanwhile, before it is
// refused with ErrStreamFull (ttrpc's figure).
const streamFullWait = time.Second

// Server is edged's ttrpc server: the wire protocol of
// github.com/containerd/ttrpc (PROTOCOL.md), unary calls and streams in
// both directions, for the generated services (it is a Registrar).
// ttrpc's own server runs three goroutines per connection and passes every
// response through a channel to its writer, and encodes its envelopes
// with protobuf-go; here a connection has one reading goroutine, a unary
// call runs on a pooled worker goroutine (see runUnary) and a stream on a
// goroutine of its own, and a call writes its own frames under the
// connection's lock.
//
// A call's error becomes its status: a *StatusError's code and message,
// else (as ttrpc's server does) a code for the standard errors (io.EOF,
// context errors, os.ErrNotExist, ...) or Unknown, with err.Error().
// Interceptors map other errors to StatusErrors.
type Server struct {
	cfg      ServerConfig
	services map[string]*ServiceDesc

	mu       sync.Mutex
	listener net.Listener
	conns    map[*serverConn]struct{}
	closed   bool
	// draining is set when Shutdown begins: requests are refused from
	// then on (see serverConn.begin).
	draining bool
	// calls counts the calls and streams whose handler has not returned,
	// on every connection, closed ones included.
	calls int

	// Unary calls run on pooled goroutines (see worker): an idle worker
	// waits on work; idle counts those waiting; quit, closed by Stop,
	// sends them away.
	work     chan unaryCall
	idle     atomic.Int32
	quit     chan struct{}
	quitOnce sync.Once

	streamWait time.Duration // see streamFullWait; a field for tests

	// refusing counts the connections refused for MaxConns whose first
	// request is being read (see refuse); refuseWait is refuseTimeout, a
	// field for tests.
	refusing   atomic.Int32
	refuseWait time.Duration

	// readBufs lends connections their read buffers (see connReader).
	readBufs sync.Pool
}

// maxIdleWorkers bounds the goroutines kept waiting for the next unary
// call. A worker's stack stays grown between calls (and the garbage
// collector halves idle ones), so a few are enough: they serve the calls
// in flight at once, of every connection.
const maxIdleWorkers = 8

// unaryCall is one unary call handed to a worker.
type unaryCall struct {
	c       *serverConn
	ctx     context.Context
	cancel  context.CancelFunc
	id      uint32
	name    string
	m       Method
	payload []byte
}

// NewServer returns a server with no services.
func NewServer(cfg ServerConfig) *Server {
	if cfg.MaxCalls <= 0 {
		cfg.MaxCalls = DefaultMaxCalls
	}
	if cfg.FrameTimeout <= 0 {
		cfg.FrameTimeout = DefaultFrameTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Draining == nil {
		cfg.Draining = &StatusError{Code: CodeUnavailable, Message: "rpc: server is shutting down"}
	}
	if cfg.TooManyConns == nil {
		cfg.TooManyConns = &StatusError{Code: CodeResourceExhausted, Message: "rpc: too many connections"}
	}
	return &Server{cfg: cfg, services: map[string]*ServiceDesc{}, conns: map[*serverConn]struct{}{},
		work: make(chan unaryCall), quit: make(chan struct{}), streamWait: streamFullWait, refuseWait: refuseTimeout,
		readBufs: sync.Pool{New: func() any { return new(readBuf) }}}
}

// runUnary hands call to an idle worker, or starts one.
//
// Why not a goroutine per call: a new goroutine starts on a 2 KiB stack,
// and decoding a container (gogo's Unmarshal of a message with maps has
// large frames) then SQLite grow it several times, each growth a copy of
// the whole stack: runtime.copystack was about 6% of edged's CPU during a
// container create+delete burst. A worker keeps its grown stack for the
// next call (as gRPC's server workers do).
func (s *Server) runUnary(call unaryCall) {
	select {
	case s.work <- call:
	default:
		go s.worker(call)
	}
}

// worker runs call, then the calls runUnary hands it while it waits idle;
// it returns when maxIdleWorkers others already wait, or after Stop.
func (s *Server) worker(call unaryCall) {
	for {
		call.c.unary(call.ctx, call.cancel, call.id, call.name, call.m, call.payload)
		call = unaryCall{} // drop the references while idle
		if s.idle.Add(1) > maxIdleWorkers {
			s.idle.Add(-1)
			return
		}
		select {
		case call = <-s.work:
			s.idle.Add(-1)
		case <-s.quit:
			s.idle.Add(-1)
			return
		}
	}
}

// RegisterService adds a service; call it before Serve. A name registered
// twice panics, as with ttrpc.
func (s *Server) RegisterService(name string, desc *ServiceDesc) {
	if _, ok := s.services[name]; ok {
		panic(fmt.Sprintf("rpc: duplicate service %s registered", name))
	}
	s.services[name] = desc
}

// Serve accepts connections on l until Stop, Shutdown or Close, then
// closes l and returns ErrServerClosed; other accept errors it returns as they are,
// except temporary ones (EMFILE, ENFILE, ECONNABORTED, EINTR), after which
// it waits and accepts again. Calls' contexts derive from ctx: when it
// ends, so do they.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	// l is closed on return, whatever the reason (as ttrpc does): a
	// listener left open after a Stop that came first would take
	// connections nobody accepts.
	defer l.Close()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listener = l
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EINTR) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		if open := len(s.conns); s.cfg.MaxConns > 0 && open >= s.cfg.MaxConns {
			s.mu.Unlock()
			if s.cfg.OnRefuse != nil {
				s.cfg.OnRefuse(open)
			}
			if s.refusing.Add(1) > maxRefusing {
				s.refusing.Add(-1)
				c.Close()
				continue
			}
			go s.refuse(c)
			continue
		}
		sc := &serverConn{srv: s, conn: c, rw: readWriter(c), streams: map[uint32]*serverStream{}}
		sc.bw, _ = sc.rw.(boundedWriter)
		s.conns[sc] = struct{}{}
		s.mu.Unlock()
		go sc.run(ctx)
	}
}

// refuse answers the first request of c, a connection over MaxConns, with
// TooManyConns and closes c. The request is read whole first: a unix
// socket closed with unread data resets its peer, which would then miss
// the answer.
func (s *Server) refuse(c net.Conn) {
	defer s.refusing.Add(-1)
	defer c.Close()
	if c.SetDeadline(time.Now().Add(s.refuseWait)) != nil {
		return
	}
	var hbuf [ttrpcwire.HeaderLen]byte
	h, err := ttrpcwire.ReadHeader(c, &hbuf)
	if err != nil || h.Length > refuseMaxRequest {
		return
	}
	if _, err := io.CopyN(io.Discard, c, int64(h.Length)); err != nil {
		return
	}
	st := s.cfg.TooManyConns
	size := ttrpcwire.ResponseSize(st.Code, st.Message, nil)
	c.Write(ttrpcwire.AppendResponse(ttrpcwire.NewFrame(h.Stream, ttrpcwire.TypeResponse, 0, size), st.Code, st.Message, nil))
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Stop stops accepting connections: Serve returns ErrServerClosed. Open
// connections are served until Shutdown or Close.
func (s *Server) Stop() {
	s.quitOnce.Do(func() { close(s.quit) })
	s.mu.Lock()
	s.closed = true
	l := s.listener
	s.mu.Unlock()
	if l != nil {
		l.Close()
	}
}

// Shutdown stops accepting connections and drains the open ones: the
// calls and streams in progress go on (a client stream still receives its
// messages), and every request that arrives from then on is refused with
// ServerConfig.Draining (Unavailable), at once. A connection is closed
// once no call or stream is in progress on it, and Shutdown returns when
// all are. When ctx ends first, it closes the remaining connections and
// returns ctx.Err().
//
// No request the client has written is dropped with its connection: each
// is served (read before Shutdown) or refused. On a unix socket the
// connection's reading side is shut down (shutdown(2), SHUT_RD) rather
// than the socket closed: the kernel then refuses the client's further
// writes (EPIPE: the client knows they were not sent), while the reader
// answers the requests already in the socket's buffer before it sees the
// end. Other connections are closed; a request still in their buffers is
// lost, as with ttrpc.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.Stop()
	if pollUntil(ctx, s.closeIdle) {
		return nil
	}
	s.Close()
	return ctx.Err()
}

// closeIdle ends the connections without calls in progress (see Shutdown)
// and reports whether none is left. A connection leaves s.conns when its
// reader has answered what it had and returned.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.active == 0 && !c.readShut {
			// Under s.mu with draining set: no call can begin on c
			// any more, so it stays idle.
			c.readShut = true
			if uc, ok := c.conn.(*net.UnixConn); !ok || uc.CloseRead() != nil {
				c.conn.Close()
				delete(s.conns, c)
			}
		}
	}
	return len(s.conns) == 0
}

// WaitIdle returns nil when no handler is running, or an error wrapping
// ctx.Err() and saying how many still run when ctx ends first. After
// Close, the handlers still running are those of calls whose connection it
// closed: their contexts are cancelled, and WaitIdle lets them return
// before what they use is torn down.
func (s *Server) WaitIdle(ctx context.Context) error {
	running := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.calls
	}
	if pollUntil(ctx, func() bool { return running() == 0 }) {
		return nil
	}
	return fmt.Errorf("%d calls still running: %w", running(), ctx.Err())
}

// pollUntil calls done, at growing intervals up to 100 ms, until it
// reports true (pollUntil then does too) or ctx ends (false).
func pollUntil(ctx context.Context, done func() bool) bool {
	poll := time.Millisecond
	for !done() {
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		poll = min(2*poll, 100*time.Millisecond)
	}
	return true
}

// Close stops accepting and closes every connection at once.
func (s *Server) Close() error {
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.conn.Close()
		delete(s.conns, c)
	}
	return nil
}

type serverConn struct {
	srv  *Server
	conn net.Conn
	rw   io.ReadWriter // conn's socket (see rawIO), else conn
	bw   boundedWriter // rw when it sets write deadlines itself, else nil
	wmu  sync.Mutex    // one frame at a time

	// active counts calls and streams in progress; readShut tells that
	// Shutdown has shut down the reading side (both under srv.mu).
	active   int
	readShut bool

	smu     sync.Mutex
	streams map[uint32]*serverStream // open streams by id
}

// run reads frames until the connection fails or is closed; calls in
// progress then see their context cancelled and their responses dropped,
// as with ttrpc.
func (c *serverConn) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		c.conn.Close()
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		c.srv.mu.Unlock()
	}()
	r := newConnReader(c.rw, &c.srv.readBufs)
	defer r.release()
	var hbuf [ttrpcwire.HeaderLen]byte
	var last uint32
	for {
		// Wait for the next frame as long as it takes (an idle
		// connection stays open), then give the rest of it
		// FrameTimeout. A frame already in the read buffer, as small
		// ones mostly are, needs no deadline (nor its cost).
		if r.wait() != nil {
			return
		}
		deadline := false
		if r.Buffered() < ttrpcwire.HeaderLen {
			deadline = c.setFrameDeadline()
		}
		h, err := ttrpcwire.ReadHeader(r, &hbuf)
		if err != nil {
			return
		}
		if !deadline && r.Buffered() < int(min(h.Length, ttrpcwire.MaxMessage+1)) {
			deadline = c.setFrameDeadline()
		}
		if h.Length > ttrpcwire.MaxMessage {
			if ttrpcwire.Discard(r, int64(h.Length)) != nil {
				return
			}
			if deadline && c.conn.SetReadDeadline(time.Time{}) != nil {
				return
			}
			c.sendStatus(h.Stream, CodeResourceExhausted, tooLarge(int64(h.Length)))
			continue
		}
		p, err := readPayload(r, int(h.Length))
		if err != nil {
			return
		}
		if deadline && c.conn.SetReadDeadline(time.Time{}) != nil {
			return
		}
		if h.Stream%2 != 1 {
			c.sendStatus(h.Stream, CodeInvalidArgument, "StreamID must be odd for client initiated streams")
			continue
		}
		switch h.Type {
		case ttrpcwire.TypeData:
			c.data(h, p)
		case ttrpcwire.TypeRequest:
			if h.Stream <= last {
				c.sendStatus(h.Stream, CodeInvalidArgument, "StreamID cannot be re-used and must increment")
				continue
			}
			last = h.Stream
			c.request(ctx, h.Stream, p)
		}
		// Other types are ignored, for compatibility with later versions
		// of the protocol (as ttrpc does).
	}
}

// setFrameDeadline bounds the time left to receive the frame begun; it
// reports whether the deadline is set (false: conn has no deadlines,
// net.Pipe in tests).
func (c *serverConn) setFrameDeadline() bool {
	return c.conn.SetReadDeadline(time.Now().Add(c.srv.cfg.FrameTimeout)) == nil
}

// readPayload reads a payload of n bytes. A payload larger than
// payloadChunk that is not already buffered goes into a buffer that
// starts at payloadChunk and doubles, up to n, as its bytes arrive (at
// most twice the bytes of one allocation, in all): the header alone
// commits nothing.
func readPayload(r *connReader, n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	if n <= payloadChunk || r.Buffered() >= n {
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, err
		}
		return p, nil
	}
	p := make([]byte, 0, payloadChunk)
	for len(p) < n {
		if len(p) == cap(p) {
			p = slices.Grow(p, min(cap(p), n-len(p)))
		}
		k, err := r.Read(p[len(p):min(cap(p), n)])
		p = p[:len(p)+k]
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}

// data hands a Data frame to its stream.
func (c *serverConn) data(h ttrpcwire.Header, p []byte) {
	c.smu.Lock()
	st := c.streams[h.Stream]
	c.smu.Unlock()
	if st == nil {
		c.sendStatus(h.Stream, CodeInvalidArgument, "StreamID is no longer active")
		return
	}
	if h.Flags&ttrpcwire.FlagNoData == 0 {
		if err := st.deliver(p); err != nil {
			c.sendStatus(h.Stream, CodeInvalidArgument, "data handling error: "+err.Error())
			return
		}
	}
	// The last message of a client may come with the remote closed flag
	// (PROTOCOL.md; ttrpc's own client sends it in a frame of its own).
	if h.Flags&ttrpcwire.FlagRemoteClosed != 0 {
		st.closeRecv()
	}
}

// request starts the call of a Request frame.
func (c *serverConn) request(ctx context.Context, id uint32, p []byte) {
	req, err := ttrpcwire.DecodeRequest(p)
	if err != nil {
		c.sendStatus(id, CodeInvalidArgument, "unmarshal request error: "+err.Error())
		return
	}
	desc, ok := c.srv.services[string(req.Service)]
	if !ok {
		c.sendStatus(id, CodeUnimplemented, "service "+string(req.Service))
		return
	}
	m, unary := desc.Methods[string(req.Method)]
	sd, streaming := desc.Streams[string(req.Method)]
	if !unary && !streaming {
		c.sendStatus(id, CodeUnimplemented, "method "+string(req.Method))
		return
	}
	if refused := c.begin(); refused != nil {
		c.sendStatus(id, refused.Code, refused.Message)
		return
	}
	// A timeout of zero is none; a negative one (a client calling after
	// its deadline) gives an expired context, as with ttrpc.
	var cancel context.CancelFunc
	if req.TimeoutNano != 0 {
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutNano))
	}
	ctx = withMD(ctx, req)
	if unary {
		c.srv.runUnary(unaryCall{c: c, ctx: ctx, cancel: cancel, id: id, name: string(req.Service) + "/" + string(req.Method), m: m, payload: req.Payload})
		return
	}
	st := c.openStream(ctx, id, sd, req.Payload)
	go c.stream(ctx, cancel, st, string(req.Service)+"/"+string(req.Method), sd)
}

// withMD attaches the request's metadata to ctx.
func withMD(ctx context.Context, req ttrpcwire.Request) context.Context {
	if len(req.Metadata) == 0 {
		return ctx
	}
	md := make(MD, len(req.Metadata))
	for _, kv := range req.Metadata {
		md[kv.Key] = append(md[kv.Key], kv.Value)
	}
	return WithMetadata(ctx, md)
}

// begin counts a call in progress, or returns the status it is refused
// with: Shutdown has begun, or MaxCalls are in progress.
func (c *serverConn) begin() *StatusError {
	c.srv.mu.Lock()
	defer c.srv.mu.Unlock()
	if c.srv.draining {
		return c.srv.cfg.Draining
	}
	if c.active >= c.srv.cfg.MaxCalls {
		return &StatusError{Code: CodeResourceExhausted, Message: "too many calls in progress on this connection (limit " + strconv.Itoa(c.srv.cfg.MaxCalls) + ")"}
	}
	c.active++
	c.srv.calls++
	return nil
}

func (c *serverConn) end() {
	c.srv.mu.Lock()
	c.active--
	c.srv.calls--
	c.srv.mu.Unlock()
}

func (c *serverConn) unary(ctx context.Context, cancel context.CancelFunc, id uint32, name string, m Method, payload []byte) {
	defer c.end()
	if cancel != nil {
		defer cancel()
	}
	var resp Message
	var err error
	if ic := c.srv.cfg.Unary; ic != nil {
		resp, err = ic(ctx, func(msg Message) error { return unmarshalPayload(payload, msg) }, &UnaryServerInfo{FullMethod: "/" + name}, m)
	} else {
		resp, err = m(ctx, func(msg Message) error { return unmarshalPayload(payload, msg) })
	}
	var p []byte
	if err == nil {
		p, err = marshalPayload(resp)
	}
	if err != nil {
		code, msg := statusOf(err)
		c.sendStatus(id, code, msg)
		return
	}
	dl, _ := ctx.Deadline()
	c.sendResponse(id, CodeOK, "", p, dl)
}

// openStream registers the stream of a Request on id and queues the
// request's message for the handler: a call whose client does not stream
// always gets it (an empty message encodes as nothing); a client stream
// gets it when there is one.
func (c *serverConn) openStream(ctx context.Context, id uint32, sd Stream, payload []byte) *serverStream {
	n := streamRecvBuffer
	if !sd.StreamingClient {
		n = 1
	}
	st := &serverStream{conn: c, id: id, ctx: ctx, recv: make(chan []byte, n), done: make(chan struct{})}
	if sd.StreamingClient {
		st.taken = make(chan struct{}, 1)
	}
	if len(payload) > 0 || !sd.StreamingClient {
		st.queued.Add(int64(len(payload)))
		st.recv <- payload
	}
	if !sd.StreamingClient {
		st.closeRecv()
	}
	c.smu.Lock()
	c.streams[id] = st
	c.smu.Unlock()
	return st
}

func (c *serverConn) stream(ctx context.Context, cancel context.CancelFunc, st *serverStream, name string, sd Stream) {
	defer c.end()
	if cancel != nil {
		defer cancel()
	}
	var resp Message
	var err error
	if ic := c.srv.cfg.Stream; ic != nil {
		resp, err = ic(ctx, st, &StreamServerInfo{FullMethod: "/" + name, StreamingClient: sd.StreamingClient, StreamingServer: sd.StreamingServer}, StreamHandler(sd.Handler))
	} else {
		resp, err = sd.Handler(ctx, st)
	}
	var p []byte
	if err == nil {
		p, err = marshalPayload(resp)
	}
	st.finish()
	switch {
	case err != nil:
		code, msg := statusOf(err)
		c.sendStatus(st.id, code, msg)
	case sd.StreamingServer:
		// The end of a server stream is a Data frame closing it.
		flags := byte(ttrpcwire.FlagRemoteClosed)
		if p == nil {
			flags |= ttrpcwire.FlagNoData
		}
		c.writeFrame(st.id, ttrpcwire.TypeData, flags, p, st.deadline())
	default:
		c.sendResponse(st.id, CodeOK, "", p, st.deadline())
	}
}

func (c *serverConn) sendStatus(id uint32, code uint32, msg string) {
	c.sendResponse(id, code, msg, nil, time.Time{})
}

// sendResponse writes a Response frame (see write for callDeadline); a
// failed write closes the connection (its reader then ends).
func (c *serverConn) sendResponse(id uint32, code uint32, msg string, payload []byte, callDeadline time.Time) {
	size := ttrpcwire.ResponseSize(code, msg, payload)
	if size > ttrpcwire.MaxMessage {
		code, payload = CodeResourceExhausted, nil
		msg = tooLarge(int64(size))
		size = ttrpcwire.ResponseSize(code, msg, nil)
	}
	f := ttrpcwire.AppendResponse(ttrpcwire.NewFrame(id, ttrpcwire.TypeResponse, 0, size), code, msg, payload)
	c.write(f, callDeadline)
}

// writeFrame writes a frame with payload p (see write for callDeadline).
func (c *serverConn) writeFrame(id uint32, typ, flags byte, p []byte, callDeadline time.Time) error {
	if len(p) > ttrpcwire.MaxMessage {
		return &StatusError{Code: CodeResourceExhausted, Message: tooLarge(int64(len(p)))}
	}
	return c.write(append(ttrpcwire.NewFrame(id, typ, flags, len(p)), p...), callDeadline)
}

// boundedWriter writes with a deadline it sets only when the write has
// to wait for room (see rawIO.writeWithin).
type boundedWriter interface {
	writeWithin(p []byte, timeout time.Duration, notBefore time.Time) (int, error)
}

// write writes frame f. When the client makes no room for it within
// WriteTimeout (or before callDeadline, if later), the connection is
// closed: a client that stops reading would otherwise pin the frame, the
// handler and every frame waiting for wmu, for ever. Its reader then ends,
// which cancels the calls' contexts, and their streams' sends fail.
func (c *serverConn) write(f []byte, callDeadline time.Time) error {
	timeout := c.srv.cfg.WriteTimeout
	c.wmu.Lock()
	var err error
	if c.bw != nil {
		_, err = c.bw.writeWithin(f, timeout, callDeadline)
	} else {
		// No raw socket: a deadline for every write.
		err = c.conn.SetWriteDeadline(laterOf(time.Now().Add(timeout), callDeadline))
		if err == nil || errors.Is(err, os.ErrNoDeadline) {
			_, err = c.rw.Write(f)
		}
	}
	c.wmu.Unlock()
	if err != nil {
		c.conn.Close()
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return nil
}

// laterOf returns the later of a and b.
func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// serverStream is the server's end of one stream.
type serverStream struct {
	conn *serverConn
	id   uint32
	ctx  context.Context
	recv chan []byte

	// queued is the bytes of the messages in recv. taken, of a client
	// stream, receives a value when the handler takes one, for deliver
	// waiting for room.
	queued atomic.Int64
	taken  chan struct{}

	done chan struct{} // closed when the handler has returned

	mu         sync.Mutex
	recvClosed bool // no more messages from the client
}

// deliver queues a message from the client. The queue holds
// streamRecvBuffer messages and maxStreamQueuedBytes bytes (but always
// one message): when it is full, deliver waits for the handler to take
// messages, and the connection is not read meanwhile (back-pressure:
// the client's writes then block, instead of the server buffering up to
// 64 messages of 4 MiB per stream). The wait is bounded: after
// streamWait (a second, ttrpc's figure) without room, the message is
// dropped with ErrStreamFull and reading goes on.
//
// The trade-off: while one stream's handler lags, the other calls and
// streams of its connection wait too, up to streamWait per message. The
// bound keeps this from becoming a deadlock when the lagging handler
// waits for one of them (ttrpc's server has the same stall, on its
// message count alone).
func (s *serverStream) deliver(p []byte) error {
	s.mu.Lock()
	closed := s.recvClosed
	s.mu.Unlock()
	if closed {
		return errStreamClosed
	}
	n := int64(len(p))
	var t *time.Timer
	for {
		if q := s.queued.Add(n); q == n || q <= maxStreamQueuedBytes {
			select {
			case s.recv <- p:
				return nil
			default:
			}
		}
		s.queued.Add(-n)
		if t == nil {
			t = time.NewTimer(s.conn.srv.streamWait)
			defer t.Stop()
		}
		select {
		case <-s.taken:
		case <-s.done:
			return errStreamClosed
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-t.C:
			return ErrStreamFull
		}
	}
}

// deadline returns the stream's deadline, or zero.
func (s *serverStream) deadline() time.Time {
	dl, _ := s.ctx.Deadline()
	return dl
}

// closeRecv marks the end of the client's messages.
func (s *serverStream) closeRecv() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.recvClosed {
		s.recvClosed = true
		close(s.recv)
	}
}

// finish ends the stream: later SendMsg calls fail and frames for it are
// answered as for an unknown stream.
func (s *serverStream) finish() {
	close(s.done)
	s.conn.smu.Lock()
	delete(s.conn.streams, s.id)
	s.conn.smu.Unlock()
}

// SendMsg sends m to the client in a Data frame.
func (s *serverStream) SendMsg(m Message) error {
	select {
	case <-s.done:
		return errStreamClosed
	default:
	}
	p, err := marshalPayload(m)
	if err != nil {
		return err
	}
	if err := s.ctx.Err(); err != nil {
		return err
	}
	// An empty message is a Data frame of length zero, which the client
	// decodes (the no data flag would mean no message).
	return s.conn.writeFrame(s.id, ttrpcwire.TypeData, 0, p, s.deadline())
}

// RecvMsg receives the client's next message; io.EOF after the last.
func (s *serverStream) RecvMsg(m Message) error {
	select {
	case p, ok := <-s.recv:
		if !ok {
			return io.EOF
		}
		s.queued.Add(-int64(len(p)))
		if s.taken != nil {
			select {
			case s.taken <- struct{}{}:
			default: // deliver is told already
			}
		}
		return unmarshalPayload(p, m)
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// tooLarge is ttrpc's message for a message of n bytes over the limit.
func tooLarge(n int64) string {
	return "message length " + strconv.FormatInt(n, 10) + " exceed maximum message size of " + strconv.Itoa(ttrpcwire.MaxMessage)
}

// unmarshalPayload decodes a request message, with ttrpc's status.
func unmarshalPayload(p []byte, m Message) error {
	m.Reset()
	if err := m.Unmarshal(p); err != nil {
		return &StatusError{Code: CodeInternal, Message: "ttrpc: error unmarshalling payload: " + err.Error()}
	}
	return nil
}

// marshalPayload encodes a response message (nil for none or an empty
// one), with ttrpc's status on failure.
func marshalPayload(m Message) ([]byte, error) {
	if m == nil {
		return nil, nil
	}
	n := m.Size()
	if n == 0 {
		return nil, nil
	}
	b := make([]byte, n)
	k, err := m.MarshalTo(b)
	if err != nil {
		return nil, &StatusError{Code: CodeInternal, Message: "ttrpc: error marshaling payload: " + err.Error()}
	}
	return b[:k], nil
}

// statusOf returns the status code and message sent for err: a
// StatusError's own, or what ttrpc's server sends for the standard errors.
func statusOf(err error) (uint32, string) {
	var st *StatusError
	if errors.As(err, &st) {
		return st.Code, st.Message
	}
	switch err {
	case io.EOF:
		return CodeOutOfRange, err.Error()
	case io.ErrClosedPipe, io.ErrNoProgress, io.ErrShortBuffer, io.ErrShortWrite, io.ErrUnexpectedEOF:
		return CodeFailedPrecondition, err.Error()
	case os.ErrInvalid:
		return CodeInvalidArgument, err.Error()
	case context.Canceled:
		return CodeCanceled, err.Error()
	case context.DeadlineExceeded:
		return CodeDeadlineExceeded, err.Error()
	}
	switch {
	case os.IsExist(err):
		return CodeAlreadyExists, err.Error()
	case os.IsNotExist(err):
		return CodeNotFound, err.Error()
	case os.IsPermission(err):
		return CodePermissionDenied, err.Error()
	}
	return CodeUnknown, err.Error()
}
