package rpc

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/internal/ttrpcwire"
	protorpc "github.com/edged/edged/proto/rpc"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("rpc: server closed")

// Handler serves one method: it decodes payload, the request message, and
// returns the encoded response message. An error becomes the response's
// status as ttrpc makes it: the code of a gRPC status error, else a code
// derived from well-known errors (io.EOF, context errors, os.ErrNotExist,
// ...) or Unknown, with err.Error() as the message.
type Handler func(ctx context.Context, payload []byte) ([]byte, error)

// Server serves unary ttrpc calls.
type Server struct {
	services map[string]map[string]Handler

	mu       sync.Mutex
	listener net.Listener
	conns    map[*serverConn]struct{}
	closed   bool
}

// NewServer returns a server with no services.
func NewServer() *Server {
	return &Server{services: map[string]map[string]Handler{}, conns: map[*serverConn]struct{}{}}
}

// Register adds the methods of service (for example
// "containerd.task.v2.Task"). Call it before Serve.
func (s *Server) Register(service string, methods map[string]Handler) {
	s.services[service] = methods
}

// Serve accepts connections on l until Stop, Shutdown or Close, then
// returns ErrServerClosed; it returns other accept errors as they are. Each
// connection is served by one goroutine, each call by one more.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
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
		sc := &serverConn{srv: s, conn: c}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		s.conns[sc] = struct{}{}
		s.mu.Unlock()
		go sc.run(ctx)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Stop stops accepting connections: Serve returns ErrServerClosed. Open
// connections are served until Shutdown or Close.
func (s *Server) Stop() {
	s.mu.Lock()
	s.closed = true
	l := s.listener
	s.mu.Unlock()
	if l != nil {
		l.Close()
	}
}

// Shutdown stops accepting connections, then closes every connection once
// no call is in progress on it, and returns when all are closed. When ctx
// ends first, it closes the remaining connections and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.Stop()
	poll := time.Millisecond
	for {
		if s.closeIdle() {
			return nil
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			s.Close()
			return ctx.Err()
		case <-t.C:
		}
		poll = min(2*poll, 100*time.Millisecond)
	}
}

// closeIdle closes the connections without calls in progress and reports
// whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.active == 0 {
			c.conn.Close()
			delete(s.conns, c)
		}
	}
	return len(s.conns) == 0
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
	wmu  sync.Mutex // one frame at a time
	// active counts calls in progress (under srv.mu).
	active int
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
	var hbuf [ttrpcwire.HeaderLen]byte
	var last uint32
	for {
		h, err := ttrpcwire.ReadHeader(c.conn, &hbuf)
		if err != nil {
			return
		}
		if h.Length > MaxMessage {
			if ttrpcwire.Discard(c.conn, int64(h.Length)) != nil {
				return
			}
			c.sendStatus(h.Stream, protorpc.CodeResourceExhausted, "message length "+itoa(uint64(h.Length))+" exceed maximum message size of "+itoa(MaxMessage))
			continue
		}
		var p []byte
		if h.Length > 0 {
			p = make([]byte, h.Length)
			if _, err := io.ReadFull(c.conn, p); err != nil {
				return
			}
		}
		if h.Stream%2 != 1 {
			c.sendStatus(h.Stream, protorpc.CodeInvalidArgument, "StreamID must be odd for client initiated streams")
			continue
		}
		switch h.Type {
		case ttrpcwire.TypeData:
			// No method of the shim streams: no stream is ever open.
			c.sendStatus(h.Stream, protorpc.CodeInvalidArgument, "StreamID is no longer active")
		case ttrpcwire.TypeRequest:
			if h.Stream <= last {
				c.sendStatus(h.Stream, protorpc.CodeInvalidArgument, "StreamID cannot be re-used and must increment")
				continue
			}
			last = h.Stream
			req, err := ttrpcwire.DecodeRequest(p)
			if err != nil {
				c.sendStatus(h.Stream, protorpc.CodeInvalidArgument, "unmarshal request error: "+err.Error())
				continue
			}
			methods, ok := c.srv.services[string(req.Service)]
			if !ok {
				c.sendStatus(h.Stream, protorpc.CodeUnimplemented, "service "+string(req.Service))
				continue
			}
			handler, ok := methods[string(req.Method)]
			if !ok {
				c.sendStatus(h.Stream, protorpc.CodeUnimplemented, "method "+string(req.Method))
				continue
			}
			c.srv.mu.Lock()
			c.active++
			c.srv.mu.Unlock()
			go c.call(ctx, h.Stream, handler, req.Payload, req.TimeoutNano)
		}
	}
}

func (c *serverConn) call(ctx context.Context, stream uint32, h Handler, payload []byte, timeoutNano int64) {
	if timeoutNano > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(timeoutNano))
		defer cancel()
	}
	resp, err := h(ctx, payload)
	if err != nil {
		code, msg := statusOf(err)
		c.sendStatus(stream, code, msg)
	} else {
		c.sendResponse(stream, 0, "", resp)
	}
	c.srv.mu.Lock()
	c.active--
	c.srv.mu.Unlock()
}

func (c *serverConn) sendStatus(stream uint32, code uint32, msg string) {
	c.sendResponse(stream, code, msg, nil)
}

// sendResponse writes a response frame; a failed write closes the
// connection (its reader then ends).
func (c *serverConn) sendResponse(stream uint32, code uint32, msg string, payload []byte) {
	size := ttrpcwire.ResponseSize(code, msg, payload)
	if size > MaxMessage {
		code, payload = protorpc.CodeResourceExhausted, nil
		msg = "message length " + itoa(uint64(size)) + " exceed maximum message size of " + itoa(MaxMessage)
		size = ttrpcwire.ResponseSize(code, msg, nil)
	}
	f := ttrpcwire.AppendResponse(ttrpcwire.NewFrame(stream, ttrpcwire.TypeResponse, 0, size), code, msg, payload)
	c.wmu.Lock()
	_, err := c.conn.Write(f)
	c.wmu.Unlock()
	if err != nil {
		c.conn.Close()
	}
}

// statusOf returns the status code and message ttrpc sends for err: a
// StatusError's own, the code of an errdefs kind, or what ttrpc's server
// sends for the standard errors.
func statusOf(err error) (uint32, string) {
	var st *protorpc.StatusError
	if errors.As(err, &st) {
		return st.Code, st.Message
	}
	if code := errdefs.StatusCode(err); code != protorpc.CodeUnknown {
		return code, err.Error()
	}
	switch err {
	case io.EOF:
		return protorpc.CodeOutOfRange, err.Error()
	case io.ErrClosedPipe, io.ErrNoProgress, io.ErrShortBuffer, io.ErrShortWrite, io.ErrUnexpectedEOF:
		return protorpc.CodeFailedPrecondition, err.Error()
	case os.ErrInvalid:
		return protorpc.CodeInvalidArgument, err.Error()
	}
	switch {
	case os.IsExist(err):
		return protorpc.CodeAlreadyExists, err.Error()
	case os.IsNotExist(err):
		return protorpc.CodeNotFound, err.Error()
	case os.IsPermission(err):
		return protorpc.CodePermissionDenied, err.Error()
	}
	return protorpc.CodeUnknown, err.Error()
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return string(b[i:])
}

// UnmarshalError is the error a Handler returns when its request does not
// decode: Internal, with ttrpc's message.
func UnmarshalError(err error) error {
	return &protorpc.StatusError{Code: protorpc.CodeInternal, Message: "ttrpc: error unmarshalling payload: " + err.Error()}
}

// MarshalError is the error a Handler returns when its response does not
// encode: Internal, with ttrpc's message.
func MarshalError(err error) error {
	return &protorpc.StatusError{Code: protorpc.CodeInternal, Message: "ttrpc: error marshaling payload: " + err.Error()}
}
