package rpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/proto/rpc"
)

func dialServer(t *testing.T, ts *testServer) *rpc.Conn {
	t.Helper()
	nc, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	c := rpc.NewConn(nc)
	t.Cleanup(func() { c.Close() })
	return c
}

func callEcho(c *rpc.Conn, v string) (string, error) {
	var resp types.StringValue
	err := c.Call(context.Background(), ssvc, "Echo", &types.StringValue{Value: v}, &resp)
	return resp.Value, err
}

// A connection over MaxConns gets TooManyConns as the answer to its first
// request and is closed; OnRefuse hears of it; once a connection has
// closed, a new one is served.
func TestServerMaxConns(t *testing.T) {
	var refused atomic.Int32
	var lastOpen atomic.Int32
	ts := startServer(t, rpc.ServerConfig{MaxConns: 2,
		TooManyConns: &rpc.StatusError{Code: rpc.CodeResourceExhausted, Message: "2 connections open, the limit"},
		OnRefuse:     func(open int) { refused.Add(1); lastOpen.Store(int32(open)) }})
	a, b := dialServer(t, ts), dialServer(t, ts)
	for _, c := range []*rpc.Conn{a, b} {
		if v, err := callEcho(c, "in"); err != nil || v != "in" {
			t.Fatalf("a connection within the limit: %q %v", v, err)
		}
	}
	over := dialServer(t, ts)
	_, err := callEcho(over, "over")
	var st *rpc.StatusError
	if !errors.As(err, &st) || st.Code != rpc.CodeResourceExhausted || st.Message != "2 connections open, the limit" {
		t.Fatalf("a call on the connection over the limit: %v, want ResourceExhausted with the configured message", err)
	}
	select {
	case <-over.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the refused connection was not closed")
	}
	if _, err := callEcho(over, "again"); !errors.Is(err, rpc.ErrClosed) {
		t.Fatalf("a second call on the refused connection: %v, want ErrClosed", err)
	}
	if refused.Load() != 1 || lastOpen.Load() != 2 {
		t.Fatalf("OnRefuse called %d times (open %d), want once with 2", refused.Load(), lastOpen.Load())
	}
	// The two served connections still work.
	if v, err := callEcho(b, "still"); err != nil || v != "still" {
		t.Fatalf("a served connection after the refusal: %q %v", v, err)
	}
	a.Close()
	deadline := time.Now().Add(5 * time.Second)
	for ts.srv.Conns() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the server still holds %d connections after one closed", ts.srv.Conns())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if v, err := callEcho(dialServer(t, ts), "room"); err != nil || v != "room" {
		t.Fatalf("a new connection once one closed: %q %v", v, err)
	}
}

// A refused connection that sends nothing is closed after the refuse
// timeout, without an answer; the default status names the limit.
func TestServerMaxConnsSilentAndDefault(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{MaxConns: 1}, func(s *rpc.Server) { rpc.SetRefuseWait(s, 100*time.Millisecond) })
	in := dialServer(t, ts)
	if _, err := callEcho(in, "in"); err != nil {
		t.Fatal(err)
	}
	silent, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	n, err := silent.Read(make([]byte, 64))
	if n != 0 || err != io.EOF {
		t.Fatalf("read on a silent refused connection: %d bytes, %v; want the end of the connection", n, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the silent refused connection was closed after %v, want about 100ms", d)
	}
	_, err = callEcho(dialServer(t, ts), "over")
	var st *rpc.StatusError
	if !errors.As(err, &st) || st.Code != rpc.CodeResourceExhausted || st.Message != "rpc: too many connections" {
		t.Fatalf("default refusal: %v", err)
	}
}

// Refused connections waiting for their first request are bounded
// (MaxRefusing): beyond them, a refused connection is closed at once.
func TestServerMaxConnsRefusingBounded(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{MaxConns: 1}, func(s *rpc.Server) { rpc.SetRefuseWait(s, time.Minute) })
	if _, err := callEcho(dialServer(t, ts), "in"); err != nil {
		t.Fatal(err)
	}
	var waiting []net.Conn
	for range rpc.MaxRefusing {
		c, err := net.Dial("unix", ts.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		waiting = append(waiting, c)
	}
	// The server accepts in order: once the next connection is closed at
	// once, the ones before it are all waiting.
	c, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if n, err := c.Read(make([]byte, 64)); n != 0 || err != io.EOF {
		t.Fatalf("read on the refused connection beyond the bound: %d bytes, %v; want EOF", n, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %v, want at once", d)
	}
	// The ones within the bound still wait for their first request.
	for i, w := range waiting {
		w.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := w.Read(make([]byte, 64)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("refused connection %d within the bound: %v, want it still open (read deadline)", i, err)
		}
	}
}
