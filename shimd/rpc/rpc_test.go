package rpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/errdefs/errgrpc"
	protorpc "github.com/edged/edged/proto/rpc"
	"github.com/edged/edged/proto/wire"

	"github.com/edged/edged/internal/ttrpcwire"
)

// The tests talk to github.com/containerd/ttrpc, the implementation edged
// and containerd use, over real unix sockets: Server against ttrpc's
// client, Client against ttrpc's server.

const testService = "test.v1.Echo"

func listen(t *testing.T) (net.Listener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return l, path
}

// stringValue decodes a google.protobuf.StringValue payload.
func stringValue(t *testing.T, p []byte) string {
	var v types.StringValue
	if err := v.Unmarshal(p); err != nil {
		t.Errorf("unmarshal: %v", err)
	}
	return v.Value
}

func encodeString(s string) []byte {
	b, err := (&types.StringValue{Value: s}).Marshal()
	if err != nil {
		panic(err)
	}
	return b
}

// startServer serves methods and returns a ttrpc client connected to it.
func startServer(t *testing.T, methods map[string]Handler) (*Server, *ttrpc.Client, string) {
	t.Helper()
	l, path := listen(t)
	srv := NewServer()
	srv.Register(testService, methods)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return srv, c, path
}

func call(ctx context.Context, c *ttrpc.Client, method, arg string) (string, error) {
	var resp types.StringValue
	err := c.Call(ctx, testService, method, wire.Of(&types.StringValue{Value: arg}), wire.Of(&resp))
	return resp.Value, err
}

func TestServerAnswersTTRPCClient(t *testing.T) {
	var deadline time.Duration
	_, c, _ := startServer(t, map[string]Handler{
		"Echo": func(ctx context.Context, p []byte) ([]byte, error) {
			if d, ok := ctx.Deadline(); ok {
				deadline = time.Until(d)
			}
			return encodeString("echo " + stringValue(t, p)), nil
		},
		"Empty": func(ctx context.Context, p []byte) ([]byte, error) { return nil, nil },
		// A typed error gets its kind's code; a StatusError keeps its own.
		"NotFound": func(ctx context.Context, p []byte) ([]byte, error) {
			return nil, fmt.Errorf("container %q: %w", stringValue(t, p), errdefs.ErrNotFound)
		},
		"Status": func(ctx context.Context, p []byte) ([]byte, error) {
			return nil, &protorpc.StatusError{Code: protorpc.CodeOutOfRange, Message: "past the end"}
		},
		"Plain": func(ctx context.Context, p []byte) ([]byte, error) { return nil, errors.New("plain failure") },
		"Canceled": func(ctx context.Context, p []byte) ([]byte, error) {
			return nil, context.Canceled
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := call(ctx, c, "Echo", "hello")
	if err != nil || got != "echo hello" {
		t.Fatalf("Echo = %q, %v; want %q", got, err, "echo hello")
	}
	if deadline <= 5*time.Second || deadline > 10*time.Second {
		t.Errorf("handler deadline in %v, want the client's 10s", deadline)
	}
	if got, err := call(ctx, c, "Empty", "x"); err != nil || got != "" {
		t.Errorf("Empty = %q, %v", got, err)
	}

	_, err = call(ctx, c, "NotFound", "c1")
	if code(err) != codes.NotFound || !strings.Contains(err.Error(), `container "c1": not found`) {
		t.Errorf("NotFound: %v (code %v)", err, code(err))
	}
	if !errors.Is(errgrpc.FromGRPC(err), errdefs.ErrNotFound) {
		t.Errorf("NotFound does not map back to ErrNotFound: %v", err)
	}
	_, err = call(ctx, c, "Status", "")
	if code(err) != codes.OutOfRange || !strings.Contains(err.Error(), "desc = past the end") {
		t.Errorf("Status: %v", err)
	}
	_, err = call(ctx, c, "Plain", "")
	if code(err) != codes.Unknown || !strings.Contains(err.Error(), "plain failure") {
		t.Errorf("Plain: %v", err)
	}
	_, err = call(ctx, c, "Canceled", "")
	if code(err) != codes.Canceled {
		t.Errorf("Canceled: %v", err)
	}

	_, err = call(ctx, c, "Missing", "")
	if code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "method Missing") {
		t.Errorf("unknown method: %v", err)
	}
	err = c.Call(ctx, "other.Service", "Echo", wire.Of(&types.StringValue{}), wire.Of(&types.StringValue{}))
	if code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "service other.Service") {
		t.Errorf("unknown service: %v", err)
	}
}

// A call blocked in its handler does not hold up others on the same
// connection, and a disconnecting client cancels it.
func TestServerConcurrentCallsAndDisconnect(t *testing.T) {
	entered := make(chan struct{})
	cancelled := make(chan struct{})
	_, c, _ := startServer(t, map[string]Handler{
		"Block": func(ctx context.Context, p []byte) ([]byte, error) {
			close(entered)
			<-ctx.Done()
			close(cancelled)
			return nil, ctx.Err()
		},
		"Echo": func(ctx context.Context, p []byte) ([]byte, error) { return p, nil },
	})
	go call(context.Background(), c, "Block", "")
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := call(ctx, c, "Echo", "x"); err != nil || got != "x" {
		t.Fatalf("Echo during a blocked call = %q, %v", got, err)
	}
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked handler's context was not cancelled when the client went away")
	}
}

// Shutdown lets the call in progress answer, then closes the connection.
func TestServerShutdownWaitsForCalls(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	srv, c, path := startServer(t, map[string]Handler{
		"Slow": func(ctx context.Context, p []byte) ([]byte, error) {
			close(entered)
			<-release
			return encodeString("done"), nil
		},
	})
	res := make(chan error, 1)
	go func() {
		got, err := call(context.Background(), c, "Slow", "")
		if err == nil && got != "done" {
			err = fmt.Errorf("got %q", got)
		}
		res <- err
	}()
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a call in progress", err)
	default:
	}
	if _, err := net.Dial("unix", path); err == nil {
		t.Error("the server still accepts connections during Shutdown")
	}
	close(release)
	if err := <-res; err != nil {
		t.Errorf("call in progress during Shutdown: %v", err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last call ended")
	}

	// A deadline ends the wait for a call that never finishes.
	srv2, c2, _ := startServer(t, map[string]Handler{
		"Hang": func(ctx context.Context, p []byte) ([]byte, error) { <-ctx.Done(); return nil, ctx.Err() },
	})
	go call(context.Background(), c2, "Hang", "")
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv2.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a hanging call: %v, want DeadlineExceeded", err)
	}
}

// rawFrame writes one frame and reads the response status.
func rawFrame(t *testing.T, conn net.Conn, length, stream uint32, typ byte, payload []byte) ttrpcwire.Response {
	t.Helper()
	var h [ttrpcwire.HeaderLen]byte
	binary.BigEndian.PutUint32(h[0:4], length)
	binary.BigEndian.PutUint32(h[4:8], stream)
	h[8] = typ
	if _, err := conn.Write(append(h[:], payload...)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rh, err := ttrpcwire.ReadHeader(conn, &h)
	if err != nil {
		t.Fatal(err)
	}
	if rh.Stream != stream || rh.Type != ttrpcwire.TypeResponse {
		t.Fatalf("response header %+v for stream %d", rh, stream)
	}
	p := make([]byte, rh.Length)
	if _, err := io.ReadFull(conn, p); err != nil {
		t.Fatal(err)
	}
	r, err := ttrpcwire.DecodeResponse(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Malformed traffic gets ttrpc's status answers and the connection keeps
// working.
func TestServerProtocolErrors(t *testing.T) {
	_, _, path := startServer(t, map[string]Handler{
		"Echo": func(ctx context.Context, p []byte) ([]byte, error) { return p, nil },
	})
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := ttrpcwire.AppendRequest(nil, testService, "Echo", encodeString("x"), 0, nil)

	r := rawFrame(t, conn, uint32(len(req)), 2, ttrpcwire.TypeRequest, req)
	if codes.Code(r.Code) != codes.InvalidArgument || !strings.Contains(r.Message, "StreamID must be odd") {
		t.Errorf("even stream id: %+v", r)
	}
	r = rawFrame(t, conn, uint32(len(req)), 3, ttrpcwire.TypeRequest, req)
	if r.Code != 0 || stringValue(t, r.Payload) != "x" {
		t.Errorf("valid request: %+v", r)
	}
	r = rawFrame(t, conn, uint32(len(req)), 3, ttrpcwire.TypeRequest, req)
	if codes.Code(r.Code) != codes.InvalidArgument || !strings.Contains(r.Message, "cannot be re-used") {
		t.Errorf("re-used stream id: %+v", r)
	}
	r = rawFrame(t, conn, 3, 5, ttrpcwire.TypeRequest, []byte{0x0a, 0x05, 'a'})
	if codes.Code(r.Code) != codes.InvalidArgument || !strings.Contains(r.Message, "unmarshal request error") {
		t.Errorf("truncated request: %+v", r)
	}
	r = rawFrame(t, conn, 0, 7, ttrpcwire.TypeData, nil)
	if codes.Code(r.Code) != codes.InvalidArgument || !strings.Contains(r.Message, "no longer active") {
		t.Errorf("data frame: %+v", r)
	}
	big := make([]byte, MaxMessage+1)
	r = rawFrame(t, conn, uint32(len(big)), 9, ttrpcwire.TypeRequest, big)
	if codes.Code(r.Code) != codes.ResourceExhausted || !strings.Contains(r.Message, "exceed maximum message size") {
		t.Errorf("oversized message: %+v", r)
	}
	r = rawFrame(t, conn, uint32(len(req)), 11, ttrpcwire.TypeRequest, req)
	if r.Code != 0 || stringValue(t, r.Payload) != "x" {
		t.Errorf("request after errors: %+v", r)
	}
}

// ttrpcEcho is a ttrpc service for the client tests.
func ttrpcServer(t *testing.T, h func(ctx context.Context, req *types.StringValue) (*types.StringValue, error)) string {
	t.Helper()
	l, path := listen(t)
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	srv.RegisterService(testService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"Echo": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var req types.StringValue
			if err := unmarshal(wire.Of(&req)); err != nil {
				return nil, err
			}
			resp, err := h(ctx, &req)
			if err != nil {
				return nil, err
			}
			return wire.Of(resp), nil
		},
	}})
	go srv.Serve(context.Background(), l)
	t.Cleanup(func() { srv.Close() })
	return path
}

func TestClientCallsTTRPCServer(t *testing.T) {
	var deadline time.Duration
	path := ttrpcServer(t, func(ctx context.Context, req *types.StringValue) (*types.StringValue, error) {
		if d, ok := ctx.Deadline(); ok {
			deadline = time.Until(d)
		}
		switch req.Value {
		case "missing":
			return nil, errgrpc.ToGRPC(fmt.Errorf("thing: %w", errdefs.ErrNotFound))
		case "hang":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return &types.StringValue{Value: "echo " + req.Value}, nil
	})
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(conn)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, v := range []string{"a", "b"} {
		p, err := c.Call(ctx, testService, "Echo", encodeString(v))
		if err != nil || stringValue(t, p) != "echo "+v {
			t.Fatalf("Call(%q) = %q, %v", v, p, err)
		}
	}
	if deadline <= 5*time.Second || deadline > 10*time.Second {
		t.Errorf("server saw deadline in %v, want the caller's 10s", deadline)
	}
	// A call without a deadline is not bound by an earlier call's.
	sctx, scancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	if _, err := c.Call(sctx, testService, "Echo", encodeString("s")); err != nil {
		t.Fatal(err)
	}
	scancel()
	time.Sleep(300 * time.Millisecond)
	if p, err := c.Call(context.Background(), testService, "Echo", encodeString("later")); err != nil || stringValue(t, p) != "echo later" {
		t.Fatalf("call without deadline after one with: %q, %v", p, err)
	}
	_, err = c.Call(ctx, testService, "Echo", encodeString("missing"))
	if code(err) != codes.NotFound || !strings.Contains(err.Error(), "thing") {
		t.Errorf("error status: %v", err)
	}
	_, err = c.Call(ctx, testService, "Nope", nil)
	if code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "method Nope") {
		t.Errorf("unknown method: %v", err)
	}

	// A call outliving its context fails with the context's error, and the
	// connection is not used again.
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	start := time.Now()
	_, err = c.Call(short, testService, "Echo", encodeString("hang"))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Errorf("hanging call: %v after %v", err, time.Since(start))
	}
	if _, err := c.Call(ctx, testService, "Echo", encodeString("a")); err == nil || !strings.Contains(err.Error(), "unusable") {
		t.Errorf("call after a failed one: %v", err)
	}

	// A cancelled (not timed out) call returns at once too.
	conn2, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c2 := NewClient(conn2)
	defer c2.Close()
	cctx, ccancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, ccancel)
	if _, err := c2.Call(cctx, testService, "Echo", encodeString("hang")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled call: %v", err)
	}
}

func TestClientServerClosed(t *testing.T) {
	l, path := listen(t)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
	}()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(conn)
	defer c.Close()
	_, err = c.Call(context.Background(), testService, "Echo", nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "broken pipe") {
		t.Errorf("call to a closed connection: %v", err)
	}
}

func BenchmarkRoundTrip(b *testing.B) {
	path := filepath.Join(b.TempDir(), "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer()
	srv.Register(testService, map[string]Handler{"Echo": func(ctx context.Context, p []byte) ([]byte, error) { return p, nil }})
	go srv.Serve(context.Background(), l)
	defer srv.Close()
	conn, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	c := NewClient(conn)
	defer c.Close()
	req := encodeString("ping")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Call(context.Background(), testService, "Echo", req); err != nil {
			b.Fatal(err)
		}
	}
}

// A connection the server closed while idle takes no further call.
func TestClientNoticesIdleClose(t *testing.T) {
	l, path := listen(t)
	srv := NewServer()
	got := make(chan string, 4)
	srv.Register(testService, map[string]Handler{"Echo": func(ctx context.Context, p []byte) ([]byte, error) {
		got <- stringValue(t, p)
		return p, nil
	}})
	go srv.Serve(context.Background(), l)
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(conn)
	defer c.Close()
	if _, err := c.Call(context.Background(), testService, "Echo", encodeString("one")); err != nil {
		t.Fatal(err)
	}
	srv.Close() // closes the connection before returning
	_, err = c.Call(context.Background(), testService, "Echo", encodeString("two"))
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "closed by the server") {
		t.Errorf("call on a closed connection: %v", err)
	}
	if v := <-got; v != "one" || len(got) != 0 {
		t.Errorf("server got %q then %d more", v, len(got))
	}
}

// code is the status code of an error of this package's client or of
// ttrpc's (Unknown when it has none).
func code(err error) codes.Code {
	var st *protorpc.StatusError
	if errors.As(err, &st) {
		return codes.Code(st.Code)
	}
	return status.Code(err)
}
