package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/edged/edged/internal/ttrpcwire"
	protorpc "github.com/edged/edged/proto/rpc"
)

// Client makes unary ttrpc calls on one connection, one call at a time
// (calls are serialised): it needs no goroutine of its own.
type Client struct {
	mu     sync.Mutex
	conn   net.Conn
	stream uint32
	hbuf   [ttrpcwire.HeaderLen]byte
	broken error
}

// NewClient returns a client using conn; Close closes conn.
func NewClient(conn net.Conn) *Client { return &Client{conn: conn, stream: 1} }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Call sends req (an encoded message) to service/method and returns the
// encoded response message. A non-OK status comes back as a
// *protorpc.StatusError (package proto/rpc). The deadline of ctx is
// sent to the server as the call's timeout, and bounds the wait; when ctx
// ends the connection is unusable (the response may still arrive) and
// every later call fails.
func (c *Client) Call(ctx context.Context, service, method string, req []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return nil, c.broken
	}
	if c.stream > 1 && peerClosed(c.conn) {
		// Like ttrpc's client, which learns it from its reader goroutine:
		// a connection the server closed while idle takes no call (the
		// server may have read and run it without answering).
		c.broken = fmt.Errorf("rpc: connection closed by the server: %w", io.ErrUnexpectedEOF)
		return nil, c.broken
	}
	var timeout int64
	d, ok := ctx.Deadline() // zero without one: clears an earlier call's
	if ok {
		timeout = max(time.Until(d).Nanoseconds(), 1)
	}
	if err := c.conn.SetDeadline(d); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	resp, err := c.roundTrip(service, method, req, timeout)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		} else if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			err = context.DeadlineExceeded // the conn's deadline fired first
		}
		c.broken = fmt.Errorf("rpc: connection unusable after a failed call: %w", err)
		return nil, err
	}
	if resp.Code != protorpc.CodeOK {
		return nil, &protorpc.StatusError{Code: resp.Code, Message: resp.Message}
	}
	return resp.Payload, nil
}

func (c *Client) roundTrip(service, method string, req []byte, timeout int64) (ttrpcwire.Response, error) {
	id := c.stream
	c.stream += 2
	size := ttrpcwire.RequestSize(service, method, req, timeout, nil)
	if size > MaxMessage {
		return ttrpcwire.Response{}, fmt.Errorf("rpc: request of %d bytes is over the %d byte limit", size, MaxMessage)
	}
	if _, err := c.conn.Write(ttrpcwire.AppendRequest(ttrpcwire.NewFrame(id, ttrpcwire.TypeRequest, 0, size), service, method, req, timeout, nil)); err != nil {
		return ttrpcwire.Response{}, err
	}
	for {
		h, err := ttrpcwire.ReadHeader(c.conn, &c.hbuf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return ttrpcwire.Response{}, err
		}
		if h.Length > MaxMessage {
			return ttrpcwire.Response{}, fmt.Errorf("rpc: response of %d bytes is over the %d byte limit", h.Length, MaxMessage)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.conn, p); err != nil {
			return ttrpcwire.Response{}, err
		}
		if h.Stream != id || h.Type != ttrpcwire.TypeResponse {
			continue // not ours (a late answer to an abandoned call)
		}
		return ttrpcwire.DecodeResponse(p)
	}
}
