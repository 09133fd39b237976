package rpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/internal/ttrpcwire"
	"github.com/edged/edged/proto/rpc"
)

// The tests of the bounds on what a client can make the server hold:
// memory for frames not yet received, for answers it does not read and
// for stream messages its handler has not taken; and time, for frames
// that stall and answers nobody reads.

// heapMiB returns the live heap and the goroutine stacks, in MiB, after a
// collection. The figures are noisy: the tests' thresholds are far above
// the expected figures and far below the unbounded ones.
func heapMiB() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc+m.StackInuse) >> 20
}

// waitClosed fails t unless the server closes c within d.
func waitClosed(t *testing.T, what string, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	for {
		_, err := c.Read(b[:])
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			t.Errorf("%s: still open after %v", what, d)
			return
		default:
			return // a reset: closed
		}
	}
}

// A frame's header does not make the server allocate the payload it
// announces: the buffer grows as the bytes arrive (50 connections that
// announce 4 MiB and send one byte held 200 MiB).
func TestServerPartialFrameMemory(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	before := heapMiB()
	const conns = 50
	for range conns {
		c, err := net.Dial("unix", ts.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		f := ttrpcwire.NewFrame(1, ttrpcwire.TypeRequest, 0, ttrpcwire.MaxMessage)
		if _, err := c.Write(append(f, 0x0a)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if d := heapMiB() - before; d > 20 {
		t.Errorf("server holds %d MiB for %d connections that sent 11 bytes each", d, conns)
	}
}

// A client that stalls in the middle of a frame (its header or its
// payload) is disconnected after FrameTimeout; one that sends nothing
// stays connected, and one that sends a large frame in pieces, all within
// FrameTimeout, is served.
func TestServerPartialFrameTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ts := startServer(t, rpc.ServerConfig{FrameTimeout: timeout})
	idle := dialRaw(t, ts.path)
	halfHeader := dialRaw(t, ts.path)
	halfPayload := dialRaw(t, ts.path)
	if _, err := halfHeader.c.Write(ttrpcwire.NewFrame(1, ttrpcwire.TypeRequest, 0, 100)[:5]); err != nil {
		t.Fatal(err)
	}
	if _, err := halfPayload.c.Write(append(ttrpcwire.NewFrame(1, ttrpcwire.TypeRequest, 0, 100), 0x0a)); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, "connection stalled in a header", halfHeader.c, 10*timeout)
	waitClosed(t, "connection stalled in a payload", halfPayload.c, 10*timeout)
	time.Sleep(2 * timeout)
	idle.wantEcho(1, "idle connections stay open")

	// A frame of 1 MiB written in 4 pieces, within the timeout: its
	// buffer grows as they arrive.
	v := string(make([]byte, 1<<20))
	p := ttrpcwire.AppendRequest(nil, ssvc, "Echo", marshalMsg(&types.StringValue{Value: v}), 0, nil)
	f := append(ttrpcwire.NewFrame(3, ttrpcwire.TypeRequest, 0, len(p)), p...)
	for i := range 4 {
		if _, err := idle.c.Write(f[i*len(f)/4 : (i+1)*len(f)/4]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(timeout / 10)
	}
	if resp := idle.response(3); resp.Code != 0 || len(resp.Payload) != len(v)+4 {
		t.Errorf("Echo of 1 MiB sent slowly: code %d, %d bytes", resp.Code, len(resp.Payload))
	}
}

// A client that sends calls and stops reading their answers is
// disconnected after WriteTimeout: the handlers return and the answers
// are freed (200 answers of 1 MiB stayed pinned, and their handlers
// running, for ever).
func TestServerUnreadResponsesReleased(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{WriteTimeout: 200 * time.Millisecond})
	before := heapMiB()
	c, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const calls = 200
	for i := range calls {
		p := ttrpcwire.AppendRequest(nil, ssvc, "Big", marshalMsg(&types.Int32Value{Value: 1 << 20}), int64(100*time.Millisecond), nil)
		if _, err := c.Write(append(ttrpcwire.NewFrame(uint32(2*i+1), ttrpcwire.TypeRequest, 0, len(p)), p...)); err != nil {
			t.Fatal(err)
		}
	}
	// Let the server read the calls and block writing their answers
	// (WaitIdle would see none running before).
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.WaitIdle(ctx); err != nil {
		t.Errorf("handlers of a client that does not read: %v", err)
	}
	if d := heapMiB() - before; d > 50 {
		t.Errorf("server pins %d MiB for a client that stopped reading", d)
	}
	waitClosed(t, "connection of a client that does not read", c, 5*time.Second)
}

// A write that had to wait for room, within WriteTimeout, leaves no
// deadline behind: the connection serves calls after staying idle for
// longer than the timeout.
func TestServerWriteDeadlineCleared(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ts := startServer(t, rpc.ServerConfig{WriteTimeout: timeout})
	r := dialRaw(t, ts.path)
	r.request(1, ssvc, "Big", &types.Int32Value{Value: 4 << 20 / 2}, 0, nil)
	time.Sleep(timeout / 2) // the answer does not fit the socket's buffer
	if resp := r.response(1); resp.Code != 0 {
		t.Fatalf("Big: %+v", resp)
	}
	time.Sleep(2 * timeout)
	r.wantEcho(3, "after a write that waited")
	r.request(5, ssvc, "Big", &types.Int32Value{Value: 4 << 20 / 2}, 0, nil)
	if resp := r.response(5); resp.Code != 0 {
		t.Fatalf("Big: %+v", resp)
	}
}

// A client stream whose handler does not take its messages queues a
// bounded number of bytes, then the server stops reading the connection
// until the handler takes some: nothing is lost (one such stream held
// 64 messages of 4 MiB).
func TestServerClientStreamBytesBounded(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	before := heapMiB()
	r := dialRaw(t, ts.path)
	r.writeRequest(1, ttrpcwire.FlagRemoteOpen, ssvc, "Hold", nil, 0, nil)
	msg := marshalMsg(&types.StringValue{Value: string(make([]byte, ttrpcwire.MaxMessage-16))})
	const msgs = 64
	wrote := make(chan error, 1)
	go func() {
		f := append(ttrpcwire.NewFrame(1, ttrpcwire.TypeData, 0, len(msg)), msg...)
		for range msgs {
			if _, err := r.c.Write(f); err != nil {
				wrote <- err
				return
			}
		}
		_, err := r.c.Write(ttrpcwire.NewFrame(1, ttrpcwire.TypeData, ttrpcwire.FlagRemoteClosed|ttrpcwire.FlagNoData, 0))
		wrote <- err
	}()
	time.Sleep(500 * time.Millisecond)
	if d := heapMiB() - before; d > 64 {
		t.Errorf("one stream buffers %d MiB", d)
	}
	close(ts.state.release)
	if err := waitFor(t, "the client's writes", wrote); err != nil {
		t.Fatal(err)
	}
	if resp := r.response(1); resp.Code != 0 || string(resp.Payload) != "\x08\x40" {
		t.Errorf("Hold: %+v, want all %d messages received", resp, msgs)
	}
}

// While a stream's queue is over its bound, the other calls of the
// connection wait, but not for ever: after the stream's wait the message
// is refused with ErrStreamFull and the connection is read again.
func TestServerClientStreamBackpressureBounded(t *testing.T) {
	const wait = 300 * time.Millisecond
	ts := startServer(t, rpc.ServerConfig{}, func(s *rpc.Server) { rpc.SetStreamWait(s, wait) })
	r := dialRaw(t, ts.path)
	r.writeRequest(1, ttrpcwire.FlagRemoteOpen, ssvc, "Hold", nil, 0, nil)
	msg := marshalMsg(&types.StringValue{Value: string(make([]byte, ttrpcwire.MaxMessage-16))})
	for range 3 { // the third is over the bound
		r.write(1, ttrpcwire.TypeData, 0, msg)
	}
	start := time.Now()
	r.request(3, ssvc, "Echo", &types.StringValue{Value: "x"}, 0, nil)
	r.wantStatus("message over the stream's bound", 1, rpc.CodeInvalidArgument, "data handling error: rpc: stream receiver fell behind")
	if resp := r.response(3); resp.Code != 0 || string(resp.Payload) != "\x0a\x01x" {
		t.Errorf("Echo: %+v", resp)
	}
	if d := time.Since(start); d > 10*wait {
		t.Errorf("Echo behind a full stream answered after %v", d)
	}
	r.write(1, ttrpcwire.TypeData, ttrpcwire.FlagRemoteClosed|ttrpcwire.FlagNoData, nil)
	close(ts.state.release)
	if resp := r.response(1); resp.Code != 0 || string(resp.Payload) != "\x08\x02" {
		t.Errorf("Hold: %+v, want 2 messages", resp)
	}
}
