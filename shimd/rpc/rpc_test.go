package rpc

import (
	"context"
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
)

// The tests talk over real unix sockets to github.com/containerd/ttrpc's
// server (the implementation containerd uses) and to edged's (proto/rpc's
// Server, which the shim serves with).

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
	srv := echoServer(func(string) {})
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
	got := make(chan string, 4)
	srv := echoServer(func(v string) { got <- v })
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

// echoServer is a proto/rpc server whose Echo method reports and returns
// its request.
func echoServer(seen func(string)) *protorpc.Server {
	srv := protorpc.NewServer(protorpc.ServerConfig{})
	srv.RegisterService(testService, &protorpc.ServiceDesc{Methods: map[string]protorpc.Method{
		"Echo": func(ctx context.Context, unmarshal func(protorpc.Message) error) (protorpc.Message, error) {
			var req types.StringValue
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			seen(req.Value)
			return &req, nil
		},
	}})
	return srv
}
