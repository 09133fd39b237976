package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"
	"google.golang.org/grpc/status"

	"github.com/edged/edged/internal/ttrpcwire"
	"github.com/edged/edged/proto/rpc"
	"github.com/edged/edged/proto/wire"
)

// ssvc is the service of the tests of rpc.Server.
const ssvc = "edged.test.v1.Server"

// srvState is what the handlers of serverService share with a test.
type srvState struct {
	started chan string           // Gate's request value, as each call starts
	release chan struct{}         // closed to let Gate calls return
	ended   chan error            // the context error Gate, Block and Wait end with
	leaked  chan rpc.StreamServer // Leak's stream, kept past its handler
}

func newSrvState() *srvState {
	return &srvState{
		started: make(chan string, 100),
		release: make(chan struct{}),
		ended:   make(chan error, 100),
		leaked:  make(chan rpc.StreamServer, 1),
	}
}

// failErr returns the error the Fail method returns for kind.
func failErr(kind string) error {
	switch kind {
	case "status":
		return &rpc.StatusError{Code: rpc.CodeAlreadyExists, Message: "it exists"}
	case "wrapped status":
		return fmt.Errorf("create: %w", &rpc.StatusError{Code: rpc.CodeAborted, Message: "conflict"})
	case "eof":
		return io.EOF
	case "unexpected eof":
		return io.ErrUnexpectedEOF
	case "invalid":
		return os.ErrInvalid
	case "canceled":
		return context.Canceled
	case "deadline":
		return context.DeadlineExceeded
	case "notexist":
		return &os.PathError{Op: "open", Path: "/x", Err: os.ErrNotExist}
	case "notexist wrapped":
		// os.IsNotExist (what ttrpc uses) does not follow %w.
		return fmt.Errorf("thing: %w", os.ErrNotExist)
	case "exist":
		return &os.PathError{Op: "mkdir", Path: "/x", Err: os.ErrExist}
	case "permission":
		return &os.PathError{Op: "open", Path: "/x", Err: os.ErrPermission}
	case "rewrite":
		return errors.New("rewrite me")
	}
	return errors.New("boom: " + kind)
}

// formatMD writes the metadata of ctx as "k=v1,v2;x=y", or "none".
func formatMD(ctx context.Context) string {
	md, ok := rpc.GetMetadata(ctx)
	if !ok {
		return "none"
	}
	var parts []string
	for k, v := range md {
		parts = append(parts, k+"="+strings.Join(v, ","))
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}

// formatDeadline writes the time left before the deadline of ctx, in
// seconds, or "none".
func formatDeadline(ctx context.Context) string {
	dl, ok := ctx.Deadline()
	if !ok {
		return "none"
	}
	return time.Until(dl).Round(time.Second).String()
}

func serverService(st *srvState) *rpc.ServiceDesc {
	return &rpc.ServiceDesc{
		Methods: map[string]rpc.Method{
			"Echo": func(ctx context.Context, unmarshal func(rpc.Message) error) (rpc.Message, error) {
				var req types.StringValue
				if err := unmarshal(&req); err != nil {
					return nil, err
				}
				return &types.StringValue{Value: req.Value}, nil
			},
			"Empty": func(ctx context.Context, unmarshal func(rpc.Message) error) (rpc.Message, error) {
				var req types.Empty
				if err := unmarshal(&req); err != nil {
					return nil, err
				}
				return &types.Empty{}, nil
			},
			"Fail": func(ctx context.Context, unmarshal func(rpc.Message) error) (rpc.Message, error) {
				var req types.StringValue
				if err := unmarshal(&req); err != nil {
					return nil, err
				}
				return nil, failErr(req.Value)
			},
			"Meta": func(ctx context.Context, unmarshal func(rpc.Message) error) (rpc.Message, error) {
				return &types.StringValue{Value: formatMD(ctx)}, nil
			},
			"Deadline": func(ctx context.Context, unmarshal func(rpc.Message) error) (rpc.Message, error) {
				return &types.StringValue{Value: formatDeadline(ctx)}, nil
			},
			"Block": func(ctx context.Context, unmarshal func(rpc.Message) error) (rpc.Message, error) {
				<-ctx.Done()
				st.ended <- ctx.Err()
				return nil, ctx.Err()
			},
			"Gate": func(ctx context.Context, unmarshal func(rpc.Message) error) (rpc.Message, error) {
				var req types.StringValue
				if err := unmarshal(&req); err != nil {
					return nil, err
				}
				st.started <- req.Value
				select {
				case <-st.release:
					return &types.StringValue{Value: "released " + req.Value}, nil
				case <-ctx.Done():
					st.ended <- ctx.Err()
					return nil, ctx.Err()
				}
			},
			// Big answers with a string of n bytes, n being the request.
			"Big": func(ctx context.Context, unmarshal func(rpc.Message) error) (rpc.Message, error) {
				var req types.Int32Value
				if err := unmarshal(&req); err != nil {
					return nil, err
				}
				return &types.StringValue{Value: strings.Repeat("x", int(req.Value))}, nil
			},
		},
		Streams: map[string]rpc.Stream{
			// Count sends 1..|n|, n being the request, then fails if n < 0.
			"Count": {StreamingServer: true, Handler: func(ctx context.Context, s rpc.StreamServer) (rpc.Message, error) {
				var req types.Int32Value
				if err := s.RecvMsg(&req); err != nil {
					return nil, err
				}
				n := max(req.Value, -req.Value)
				for i := int32(1); i <= n; i++ {
					if err := s.SendMsg(&types.Int32Value{Value: i}); err != nil {
						return nil, err
					}
				}
				if req.Value < 0 {
					return nil, &rpc.StatusError{Code: rpc.CodeFailedPrecondition, Message: fmt.Sprintf("count %d", req.Value)}
				}
				return nil, nil
			}},
			// Zeros sends 0, 7, 0: the zeros encode as nothing.
			"Zeros": {StreamingServer: true, Handler: func(ctx context.Context, s rpc.StreamServer) (rpc.Message, error) {
				var req types.Empty
				if err := s.RecvMsg(&req); err != nil {
					return nil, err
				}
				for _, v := range []int32{0, 7, 0} {
					if err := s.SendMsg(&types.Int32Value{Value: v}); err != nil {
						return nil, err
					}
				}
				return nil, nil
			}},
			// StreamFail sends its request back, then fails with
			// failErr(request).
			"StreamFail": {StreamingServer: true, Handler: func(ctx context.Context, s rpc.StreamServer) (rpc.Message, error) {
				var req types.StringValue
				if err := s.RecvMsg(&req); err != nil {
					return nil, err
				}
				if err := s.SendMsg(&req); err != nil {
					return nil, err
				}
				return nil, failErr(req.Value)
			}},
			// BigStream sends a string of n bytes, n being the request, and
			// fails with SendMsg's error.
			"BigStream": {StreamingServer: true, Handler: func(ctx context.Context, s rpc.StreamServer) (rpc.Message, error) {
				var req types.Int32Value
				if err := s.RecvMsg(&req); err != nil {
					return nil, err
				}
				return nil, s.SendMsg(&types.StringValue{Value: strings.Repeat("x", int(req.Value))})
			}},
			// Join answers with the count and the messages it received.
			"Join": {StreamingClient: true, Handler: func(ctx context.Context, s rpc.StreamServer) (rpc.Message, error) {
				var parts []string
				for {
					var m types.StringValue
					if err := s.RecvMsg(&m); err != nil {
						if err == io.EOF {
							break
						}
						return nil, err
					}
					parts = append(parts, m.Value)
				}
				return &types.StringValue{Value: fmt.Sprintf("%d:%s", len(parts), strings.Join(parts, ","))}, nil
			}},
			// Upper echoes each message in upper case, then ends with a
			// message counting them.
			"Upper": {StreamingClient: true, StreamingServer: true, Handler: func(ctx context.Context, s rpc.StreamServer) (rpc.Message, error) {
				n := 0
				for {
					var m types.StringValue
					if err := s.RecvMsg(&m); err != nil {
						if err == io.EOF {
							break
						}
						return nil, err
					}
					n++
					if err := s.SendMsg(&types.StringValue{Value: strings.ToUpper(m.Value)}); err != nil {
						return nil, err
					}
				}
				return &types.StringValue{Value: fmt.Sprintf("%d messages", n)}, nil
			}},
			// Wait ends with its context.
			"Wait": {StreamingServer: true, Handler: func(ctx context.Context, s rpc.StreamServer) (rpc.Message, error) {
				if err := s.RecvMsg(&types.Empty{}); err != nil {
					return nil, err
				}
				if err := s.SendMsg(&types.StringValue{Value: "waiting"}); err != nil {
					return nil, err
				}
				<-ctx.Done()
				st.ended <- ctx.Err()
				return nil, ctx.Err()
			}},
			// StreamMeta sends the stream's metadata and deadline.
			"StreamMeta": {StreamingServer: true, Handler: func(ctx context.Context, s rpc.StreamServer) (rpc.Message, error) {
				if err := s.RecvMsg(&types.Empty{}); err != nil {
					return nil, err
				}
				if err := s.SendMsg(&types.StringValue{Value: formatMD(ctx)}); err != nil {
					return nil, err
				}
				return nil, s.SendMsg(&types.StringValue{Value: formatDeadline(ctx)})
			}},
			// Hold waits for release, then answers with the number of
			// messages it received.
			"Hold": {StreamingClient: true, Handler: func(ctx context.Context, s rpc.StreamServer) (rpc.Message, error) {
				select {
				case <-st.release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				n := int32(0)
				for {
					if err := s.RecvMsg(&types.StringValue{}); err != nil {
						if err == io.EOF {
							break
						}
						return nil, err
					}
					n++
				}
				return &types.Int32Value{Value: n}, nil
			}},
			// Leak hands its stream to the test and returns.
			"Leak": {StreamingServer: true, Handler: func(ctx context.Context, s rpc.StreamServer) (rpc.Message, error) {
				st.leaked <- s
				return nil, nil
			}},
		},
	}
}

// testServer is an rpc.Server serving serverService on a unix socket.
type testServer struct {
	srv    *rpc.Server
	path   string
	state  *srvState
	served chan error // Serve's result
}

// sockDir returns a short temporary directory (a unix socket path is
// limited to 108 bytes; t.TempDir's may be longer).
func sockDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rpc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startServer starts a testServer; setup functions see its server before
// it serves.
func startServer(t *testing.T, cfg rpc.ServerConfig, setup ...func(*rpc.Server)) *testServer {
	return startServerCtx(t, context.Background(), cfg, setup...)
}

func startServerCtx(t *testing.T, ctx context.Context, cfg rpc.ServerConfig, setup ...func(*rpc.Server)) *testServer {
	t.Helper()
	ts := &testServer{srv: rpc.NewServer(cfg), path: filepath.Join(sockDir(t), "s.sock"), state: newSrvState(), served: make(chan error, 1)}
	ts.srv.RegisterService(ssvc, serverService(ts.state))
	for _, f := range setup {
		f(ts.srv)
	}
	l, err := net.Listen("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { ts.served <- ts.srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		ts.srv.Close()
		select {
		case <-ts.served:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return ts
}

// serveTTRPC serves serverService with github.com/containerd/ttrpc's own
// server, to compare with.
func serveTTRPC(t *testing.T) string {
	t.Helper()
	path := filepath.Join(sockDir(t), "t.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	wire.Server(srv).RegisterService(ssvc, serverService(newSrvState()))
	go srv.Serve(context.Background(), l)
	t.Cleanup(func() { srv.Close() })
	return path
}

// testClient is one of the two clients: ttrpc's own (through proto/wire,
// which only adapts the messages) or rpc.Conn.
type testClient struct {
	name  string
	c     rpc.Caller
	done  <-chan struct{} // closed when the connection has ended
	close func()
}

func dialTTRPC(t *testing.T, path string) *ttrpc.Client {
	t.Helper()
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(nc)
	t.Cleanup(func() { c.Close() })
	return c
}

func newClient(t *testing.T, kind, path string) testClient {
	t.Helper()
	if kind == "ttrpc" {
		c := dialTTRPC(t, path)
		done := make(chan struct{})
		go func() {
			c.UserOnCloseWait(context.Background())
			close(done)
		}()
		return testClient{kind, wire.Client(c), done, func() { c.Close() }}
	}
	c := dial(t, path)
	return testClient{kind, c, c.Done(), func() { c.Close() }}
}

var clientKinds = []string{"ttrpc", "rpc.Conn"}

// forClients runs f as a subtest with each client on a connection to path.
func forClients(t *testing.T, path string, f func(t *testing.T, c testClient)) {
	for _, kind := range clientKinds {
		t.Run(kind, func(t *testing.T) { f(t, newClient(t, kind, path)) })
	}
}

// statusCode returns the status of a failed call, from either client.
func statusCode(err error) (code uint32, msg string, ok bool) {
	if err == nil {
		return 0, "", false
	}
	var se *rpc.StatusError
	if errors.As(err, &se) {
		return se.Code, se.Message, true
	}
	if st, ok := status.FromError(err); ok {
		return uint32(st.Code()), st.Message(), true
	}
	return 0, "", false
}

// wantStatus fails t unless err is the status code and msg.
func wantStatus(t *testing.T, what string, err error, code uint32, msg string) {
	t.Helper()
	c, m, ok := statusCode(err)
	if !ok || c != code || m != msg {
		t.Errorf("%s: got %v (%T), want status %s %q", what, err, err, rpc.CodeName(code), msg)
	}
}

func isClosed(err error) bool {
	return errors.Is(err, rpc.ErrClosed) || errors.Is(err, ttrpc.ErrClosed)
}

func sEcho(ctx context.Context, c rpc.Caller, v string) (string, error) {
	var resp types.StringValue
	err := c.Call(ctx, ssvc, "Echo", &types.StringValue{Value: v}, &resp)
	return resp.Value, err
}

// gateCall calls Gate with v and checks the answer of a released call.
func gateCall(ctx context.Context, c rpc.Caller, v string) error {
	var resp types.StringValue
	err := c.Call(ctx, ssvc, "Gate", &types.StringValue{Value: v}, &resp)
	if err == nil && resp.Value != "released "+v {
		err = fmt.Errorf("Gate %s: %q", v, resp.Value)
	}
	return err
}

func wantEcho(t *testing.T, c rpc.Caller, v string) {
	t.Helper()
	if got, err := sEcho(tctx(t), c, v); err != nil || got != v {
		t.Fatalf("Echo %q: %q, %v", v, got, err)
	}
}

// tctx bounds the calls of a test, so that a failure does not hang it.
func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func waitFor[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

func TestServerUnary(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	forClients(t, ts.path, func(t *testing.T, c testClient) {
		ctx := tctx(t)
		wantEcho(t, c.c, "hello")
		wantEcho(t, c.c, "")
		wantEcho(t, c.c, strings.Repeat("é", 100000))
		// An empty response (a zero-length payload).
		if err := c.c.Call(ctx, ssvc, "Empty", &types.Empty{}, &types.Empty{}); err != nil {
			t.Errorf("Empty: %v", err)
		}
		// An empty response decodes as the empty message: resp is reset.
		resp := types.StringValue{Value: "stale"}
		if err := c.c.Call(ctx, ssvc, "Echo", &types.StringValue{}, &resp); err != nil || resp.Value != "" {
			t.Errorf("Echo of an empty string: %q, %v", resp.Value, err)
		}
		err := c.c.Call(ctx, "no.such.Service", "Echo", &types.StringValue{}, &types.StringValue{})
		wantStatus(t, "unknown service", err, rpc.CodeUnimplemented, "service no.such.Service")
		err = c.c.Call(ctx, ssvc, "Nope", &types.StringValue{}, &types.StringValue{})
		wantStatus(t, "unknown method", err, rpc.CodeUnimplemented, "method Nope")
		s, err := c.c.NewStream(ctx, &rpc.StreamDesc{StreamingServer: true}, ssvc, "NoStream", &types.Empty{})
		if err == nil {
			err = s.RecvMsg(&types.Empty{})
		}
		wantStatus(t, "unknown stream method", err, rpc.CodeUnimplemented, "method NoStream")
		wantEcho(t, c.c, "after errors")
	})
}

// ttrpc's own client, without proto/wire's Caller: the messages only
// wrapped for its codec.
func TestServerTTRPCClientDirect(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	c := dialTTRPC(t, ts.path)
	var resp types.StringValue
	if err := c.Call(context.Background(), ssvc, "Echo", wire.Of(&types.StringValue{Value: "direct"}), wire.Of(&resp)); err != nil || resp.Value != "direct" {
		t.Fatalf("Echo: %q, %v", resp.Value, err)
	}
	err := c.Call(context.Background(), ssvc, "Fail", wire.Of(&types.StringValue{Value: "status"}), wire.Of(&resp))
	st, ok := status.FromError(err)
	if !ok || st.Code() != 6 || st.Message() != "it exists" {
		t.Errorf("Fail: %v", err)
	}
	if want := "rpc error: code = AlreadyExists desc = it exists"; err == nil || err.Error() != want {
		t.Errorf("Fail: %v, want %s", err, want)
	}
}

var failCases = []struct {
	kind string
	code uint32
	msg  string
}{
	{"status", rpc.CodeAlreadyExists, "it exists"},
	{"wrapped status", rpc.CodeAborted, "conflict"},
	{"eof", rpc.CodeOutOfRange, "EOF"},
	{"unexpected eof", rpc.CodeFailedPrecondition, "unexpected EOF"},
	{"invalid", rpc.CodeInvalidArgument, "invalid argument"},
	{"canceled", rpc.CodeCanceled, "context canceled"},
	{"deadline", rpc.CodeDeadlineExceeded, "context deadline exceeded"},
	{"notexist", rpc.CodeNotFound, "open /x: file does not exist"},
	{"notexist wrapped", rpc.CodeUnknown, "thing: file does not exist"},
	{"exist", rpc.CodeAlreadyExists, "mkdir /x: file already exists"},
	{"permission", rpc.CodePermissionDenied, "open /x: permission denied"},
	{"other", rpc.CodeUnknown, "boom: other"},
}

func TestServerErrors(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	forClients(t, ts.path, func(t *testing.T, c testClient) {
		for _, tc := range failCases {
			err := c.c.Call(context.Background(), ssvc, "Fail", &types.StringValue{Value: tc.kind}, &types.StringValue{})
			wantStatus(t, tc.kind, err, tc.code, tc.msg)
		}
	})
}

// A plain error gets the status ttrpc's own server gives it.
func TestServerErrorsAsTTRPC(t *testing.T) {
	ours := dial(t, startServer(t, rpc.ServerConfig{}).path)
	theirs := dial(t, serveTTRPC(t))
	for _, tc := range failCases {
		if strings.Contains(tc.kind, "status") {
			continue // a StatusError is edged's, ttrpc knows gRPC's
		}
		req := &types.StringValue{Value: tc.kind}
		err1 := ours.Call(context.Background(), ssvc, "Fail", req, &types.StringValue{})
		err2 := theirs.Call(context.Background(), ssvc, "Fail", req, &types.StringValue{})
		c1, m1, _ := statusCode(err1)
		c2, m2, ok := statusCode(err2)
		if !ok || c1 != c2 || m1 != m2 {
			t.Errorf("%s: rpc.Server %v, ttrpc %v", tc.kind, err1, err2)
		}
	}
	for _, m := range [][2]string{{"no.such.Service", "Echo"}, {ssvc, "Nope"}} {
		err1 := ours.Call(context.Background(), m[0], m[1], &types.Empty{}, &types.Empty{})
		err2 := theirs.Call(context.Background(), m[0], m[1], &types.Empty{}, &types.Empty{})
		c1, m1, _ := statusCode(err1)
		c2, m2, ok := statusCode(err2)
		if !ok || c1 != c2 || m1 != m2 {
			t.Errorf("%s/%s: rpc.Server %v, ttrpc %v", m[0], m[1], err1, err2)
		}
	}
}

func TestServerMetadata(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	want := "k=v1,v2,v3;other=x"

	t.Run("ttrpc", func(t *testing.T) {
		c := dialTTRPC(t, ts.path)
		call := func(ctx context.Context) string {
			var resp types.StringValue
			if err := c.Call(ctx, ssvc, "Meta", wire.Of(&types.Empty{}), wire.Of(&resp)); err != nil {
				t.Fatalf("Meta: %v", err)
			}
			return resp.Value
		}
		if got := call(context.Background()); got != "none" {
			t.Errorf("without metadata: %q", got)
		}
		md := ttrpc.MD{}
		md.Set("k", "v1", "v2")
		md.Append("k", "v3")
		md.Set("other", "x")
		if got := call(ttrpc.WithMetadata(context.Background(), md)); got != want {
			t.Errorf("metadata: %q, want %q", got, want)
		}
	})
	t.Run("rpc.Conn", func(t *testing.T) {
		c := dial(t, ts.path)
		meta := func(ctx context.Context, c rpc.Caller) string {
			t.Helper()
			var resp types.StringValue
			if err := c.Call(ctx, ssvc, "Meta", &types.Empty{}, &resp); err != nil {
				t.Fatalf("Meta: %v", err)
			}
			return resp.Value
		}
		if got := meta(context.Background(), c); got != "none" {
			t.Errorf("without metadata: %q", got)
		}
		ctx := rpc.WithMetadata(context.Background(), rpc.MD{"k": {"v1", "v2", "v3"}, "other": {"x"}})
		if got := meta(ctx, c); got != want {
			t.Errorf("metadata: %q, want %q", got, want)
		}
		// A stream's too (ttrpc's client sends none with a stream).
		dctx, cancel := context.WithTimeout(ctx, 9*time.Second)
		defer cancel()
		s, err := c.NewStream(dctx, &rpc.StreamDesc{StreamingServer: true}, ssvc, "StreamMeta", &types.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			var m types.StringValue
			if err := s.RecvMsg(&m); err != nil {
				if err != io.EOF {
					t.Fatal(err)
				}
				break
			}
			got = append(got, m.Value)
		}
		if !slices.Equal(got, []string{want, "9s"}) {
			t.Errorf("stream metadata and deadline: %q", got)
		}
	})
}

func TestServerDeadline(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	forClients(t, ts.path, func(t *testing.T, c testClient) {
		deadline := func(ctx context.Context) string {
			t.Helper()
			var resp types.StringValue
			if err := c.c.Call(ctx, ssvc, "Deadline", &types.Empty{}, &resp); err != nil {
				t.Fatalf("Deadline: %v", err)
			}
			return resp.Value
		}
		if got := deadline(context.Background()); got != "none" {
			t.Errorf("without a deadline: %q", got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
		defer cancel()
		if got := deadline(ctx); got != "7s" {
			t.Errorf("with a deadline in 7s: %q", got)
		}
		// A handler waiting for its context ends at the client's deadline.
		ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := c.c.Call(ctx, ssvc, "Block", &types.Empty{}, &types.Empty{})
		if c, _, _ := statusCode(err); !errors.Is(err, context.DeadlineExceeded) && c != rpc.CodeDeadlineExceeded {
			t.Errorf("Block: %v", err)
		}
		if err := waitFor(t, "Block to end", ts.state.ended); err != context.DeadlineExceeded {
			t.Errorf("Block's context ended with %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Block took %v", d)
		}
		wantEcho(t, c.c, "after the deadline")
	})
}

// The server's status for a call past its deadline, seen on the wire (a
// client gives up at the same deadline).
func TestServerDeadlineStatus(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	r := dialRaw(t, ts.path)
	r.request(1, ssvc, "Block", nil, int64(100*time.Millisecond), nil)
	resp := r.response(1)
	if resp.Code != rpc.CodeDeadlineExceeded || resp.Message != "context deadline exceeded" || resp.Payload != nil {
		t.Errorf("Block: %+v", resp)
	}
	if err := waitFor(t, "Block to end", ts.state.ended); err != context.DeadlineExceeded {
		t.Errorf("Block's context ended with %v", err)
	}
}

// ttrpc's client sends the time left before its deadline as it is, so a
// call made after its deadline has a negative timeout_nano; ttrpc's
// server then runs the handler with a context already past its deadline
// (context.WithTimeout for any non-zero timeout).
func TestServerNegativeTimeout(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	r := dialRaw(t, ts.path)
	r.timeout = 3 * time.Second
	r.request(1, ssvc, "Block", nil, -int64(time.Second), nil)
	resp := r.response(1)
	if resp.Code != rpc.CodeDeadlineExceeded || resp.Message != "context deadline exceeded" {
		t.Errorf("Block with a negative timeout: %+v", resp)
	}
}

func TestServerInterceptors(t *testing.T) {
	var mu sync.Mutex
	var unary []string
	var streams []rpc.StreamServerInfo
	ts := startServer(t, rpc.ServerConfig{
		Unary: func(ctx context.Context, unmarshal func(rpc.Message) error, info *rpc.UnaryServerInfo, m rpc.Method) (rpc.Message, error) {
			mu.Lock()
			unary = append(unary, info.FullMethod)
			mu.Unlock()
			if info.FullMethod == "/"+ssvc+"/Echo" {
				// The interceptor may read the request and answer itself.
				var req types.StringValue
				if err := unmarshal(&req); err != nil {
					return nil, err
				}
				if req.Value == "intercept" {
					return &types.StringValue{Value: "intercepted"}, nil
				}
			}
			resp, err := m(ctx, unmarshal)
			if err != nil && err.Error() == "rewrite me" {
				return nil, &rpc.StatusError{Code: rpc.CodePermissionDenied, Message: "rewritten: " + err.Error()}
			}
			return resp, err
		},
		Stream: func(ctx context.Context, s rpc.StreamServer, info *rpc.StreamServerInfo, h rpc.StreamHandler) (rpc.Message, error) {
			mu.Lock()
			streams = append(streams, *info)
			mu.Unlock()
			resp, err := h(ctx, s)
			if err != nil && err.Error() == "rewrite me" {
				return nil, &rpc.StatusError{Code: rpc.CodePermissionDenied, Message: "rewritten stream: " + err.Error()}
			}
			return resp, err
		},
	})
	forClients(t, ts.path, func(t *testing.T, c testClient) {
		mu.Lock()
		unary, streams = nil, nil
		mu.Unlock()
		ctx := tctx(t)
		wantEcho(t, c.c, "plain")
		if got, err := sEcho(ctx, c.c, "intercept"); err != nil || got != "intercepted" {
			t.Errorf("intercepted Echo: %q, %v", got, err)
		}
		err := c.c.Call(ctx, ssvc, "Fail", &types.StringValue{Value: "rewrite"}, &types.StringValue{})
		wantStatus(t, "rewritten error", err, rpc.CodePermissionDenied, "rewritten: rewrite me")
		err = c.c.Call(ctx, ssvc, "Fail", &types.StringValue{Value: "eof"}, &types.StringValue{})
		wantStatus(t, "error passed through", err, rpc.CodeOutOfRange, "EOF")

		// A server stream, a client stream and a bidirectional one.
		s, err := c.c.NewStream(ctx, &rpc.StreamDesc{StreamingServer: true}, ssvc, "StreamFail", &types.StringValue{Value: "rewrite"})
		if err != nil {
			t.Fatal(err)
		}
		var m types.StringValue
		if err := s.RecvMsg(&m); err != nil || m.Value != "rewrite" {
			t.Fatalf("StreamFail's message: %q, %v", m.Value, err)
		}
		wantStatus(t, "rewritten stream error", s.RecvMsg(&m), rpc.CodePermissionDenied, "rewritten stream: rewrite me")
		s, err = c.c.NewStream(ctx, &rpc.StreamDesc{StreamingClient: true}, ssvc, "Join", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if err := s.RecvMsg(&m); err != nil || m.Value != "0:" {
			t.Fatalf("Join: %q, %v", m.Value, err)
		}
		s, err = c.c.NewStream(ctx, &rpc.StreamDesc{StreamingClient: true, StreamingServer: true}, ssvc, "Upper", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if err := s.RecvMsg(&m); err != nil || m.Value != "0 messages" {
			t.Fatalf("Upper: %q, %v", m.Value, err)
		}
		if err := s.RecvMsg(&m); err != io.EOF {
			t.Fatalf("Upper's end: %v", err)
		}

		mu.Lock()
		defer mu.Unlock()
		p := "/" + ssvc + "/"
		if want := []string{p + "Echo", p + "Echo", p + "Fail", p + "Fail"}; !slices.Equal(unary, want) {
			t.Errorf("unary interceptor saw %q, want %q", unary, want)
		}
		want := []rpc.StreamServerInfo{
			{FullMethod: p + "StreamFail", StreamingServer: true},
			{FullMethod: p + "Join", StreamingClient: true},
			{FullMethod: p + "Upper", StreamingClient: true, StreamingServer: true},
		}
		if !slices.Equal(streams, want) {
			t.Errorf("stream interceptor saw %+v, want %+v", streams, want)
		}
	})
}

func recvAll(t *testing.T, s rpc.ClientStream) ([]int32, error) {
	t.Helper()
	var got []int32
	for {
		var m types.Int32Value
		if err := s.RecvMsg(&m); err != nil {
			return got, err
		}
		got = append(got, m.Value)
	}
}

func TestServerStreamToClient(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	forClients(t, ts.path, func(t *testing.T, c testClient) {
		ctx := tctx(t)
		desc := &rpc.StreamDesc{StreamingServer: true}
		for _, n := range []int32{0, 1, 5, 100} {
			s, err := c.c.NewStream(ctx, desc, ssvc, "Count", &types.Int32Value{Value: n})
			if err != nil {
				t.Fatal(err)
			}
			got, err := recvAll(t, s)
			var want []int32
			for i := int32(1); i <= n; i++ {
				want = append(want, i)
			}
			if err != io.EOF || !slices.Equal(got, want) {
				t.Errorf("Count %d: %v, then %v", n, got, err)
			}
			if err := s.RecvMsg(&types.Int32Value{}); err != io.EOF {
				t.Errorf("Count %d: after the end: %v", n, err)
			}
		}
		// A stream whose handler fails: its messages, then its status.
		s, err := c.c.NewStream(ctx, desc, ssvc, "Count", &types.Int32Value{Value: -3})
		if err != nil {
			t.Fatal(err)
		}
		got, err := recvAll(t, s)
		if !slices.Equal(got, []int32{1, 2, 3}) {
			t.Errorf("Count -3: %v", got)
		}
		wantStatus(t, "Count -3", err, rpc.CodeFailedPrecondition, "count -3")
		// A plain error, mapped as for a unary call.
		s, err = c.c.NewStream(ctx, desc, ssvc, "StreamFail", &types.StringValue{Value: "eof"})
		if err != nil {
			t.Fatal(err)
		}
		var m types.StringValue
		if err := s.RecvMsg(&m); err != nil || m.Value != "eof" {
			t.Fatalf("StreamFail: %q, %v", m.Value, err)
		}
		wantStatus(t, "StreamFail eof", s.RecvMsg(&m), rpc.CodeOutOfRange, "EOF")
		// Empty messages are messages, not the end.
		s, err = c.c.NewStream(ctx, desc, ssvc, "Zeros", &types.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := recvAll(t, s); err != io.EOF || !slices.Equal(got, []int32{0, 7, 0}) {
			t.Errorf("Zeros: %v, then %v", got, err)
		}
		wantEcho(t, c.c, "after streams")
	})
}

func TestServerStreamFromClient(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	forClients(t, ts.path, func(t *testing.T, c testClient) {
		ctx := tctx(t)
		for _, msgs := range [][]string{nil, {""}, {"a", "", "c"}, strings.Split(strings.Repeat("m", 200), "")} {
			s, err := c.c.NewStream(ctx, &rpc.StreamDesc{StreamingClient: true}, ssvc, "Join", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range msgs {
				if err := s.SendMsg(&types.StringValue{Value: v}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.CloseSend(); err != nil {
				t.Fatal(err)
			}
			var resp types.StringValue
			if err := s.RecvMsg(&resp); err != nil {
				t.Fatalf("Join %q: %v", msgs, err)
			}
			if want := fmt.Sprintf("%d:%s", len(msgs), strings.Join(msgs, ",")); resp.Value != want {
				t.Errorf("Join: %q, want %q", resp.Value, want)
			}
			if err := s.RecvMsg(&resp); err != io.EOF {
				t.Errorf("Join: after the response: %v", err)
			}
		}
	})
}

func TestServerStreamBidirectional(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	forClients(t, ts.path, func(t *testing.T, c testClient) {
		s, err := c.c.NewStream(tctx(t), &rpc.StreamDesc{StreamingClient: true, StreamingServer: true}, ssvc, "Upper", nil)
		if err != nil {
			t.Fatal(err)
		}
		// In lock step: each answer before the next message.
		for _, v := range []string{"a", "", "hello"} {
			if err := s.SendMsg(&types.StringValue{Value: v}); err != nil {
				t.Fatal(err)
			}
			var m types.StringValue
			if err := s.RecvMsg(&m); err != nil || m.Value != strings.ToUpper(v) {
				t.Fatalf("Upper %q: %q, %v", v, m.Value, err)
			}
		}
		// Then a burst.
		for i := range 50 {
			if err := s.SendMsg(&types.StringValue{Value: fmt.Sprintf("m%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			var m types.StringValue
			if err := s.RecvMsg(&m); err != nil || m.Value != fmt.Sprintf("M%d", i) {
				t.Fatalf("Upper burst %d: %q, %v", i, m.Value, err)
			}
		}
		var m types.StringValue
		if err := s.RecvMsg(&m); err != nil || m.Value != "53 messages" {
			t.Fatalf("Upper's last message: %q, %v", m.Value, err)
		}
		if err := s.RecvMsg(&m); err != io.EOF {
			t.Fatalf("Upper's end: %v", err)
		}
	})
}

// SendMsg after the handler has returned fails.
func TestServerStreamSendAfterEnd(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	c := dial(t, ts.path)
	s, err := c.NewStream(tctx(t), &rpc.StreamDesc{StreamingServer: true}, ssvc, "Leak", &types.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RecvMsg(&types.Empty{}); err != io.EOF {
		t.Fatalf("Leak: %v", err)
	}
	ss := waitFor(t, "the stream", ts.state.leaked)
	if err := ss.SendMsg(&types.Empty{}); err == nil || err.Error() != "rpc: stream closed" {
		t.Errorf("SendMsg after the end: %v", err)
	}
}

// The wire shapes of responses and streams, as ttrpc's server sends them.
func TestServerFrames(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	r := dialRaw(t, ts.path)
	// A unary response: status (empty) then payload.
	r.request(1, ssvc, "Echo", &types.StringValue{Value: "ab"}, 0, nil)
	h, p := r.next()
	if want := []byte{0x0a, 0x00, 0x12, 0x04, 0x0a, 0x02, 'a', 'b'}; h.Type != ttrpcwire.TypeResponse || h.Stream != 1 || h.Flags != 0 || string(p) != string(want) {
		t.Errorf("Echo: %+v % x", h, p)
	}
	// An empty response: the status only.
	r.request(3, ssvc, "Empty", nil, 0, nil)
	if h, p := r.next(); h.Type != ttrpcwire.TypeResponse || h.Stream != 3 || string(p) != "\x0a\x00" {
		t.Errorf("Empty: %+v % x", h, p)
	}
	// A server stream: Data frames, an empty message as a frame of length
	// zero, and the end as a Data frame with remote closed and no data.
	r.writeRequest(5, ttrpcwire.FlagRemoteClosed, ssvc, "Zeros", nil, 0, nil)
	for i, want := range []struct {
		flags byte
		p     string
	}{{0, ""}, {0, "\x08\x07"}, {0, ""}, {ttrpcwire.FlagRemoteClosed | ttrpcwire.FlagNoData, ""}} {
		h, p := r.next()
		if h.Type != ttrpcwire.TypeData || h.Stream != 5 || h.Flags != want.flags || string(p) != want.p {
			t.Errorf("Zeros frame %d: %+v % x", i, h, p)
		}
	}
	// A stream ending with a message: remote closed with data.
	r.writeRequest(7, ttrpcwire.FlagRemoteOpen, ssvc, "Upper", nil, 0, nil)
	r.write(7, ttrpcwire.TypeData, 0, marshalMsg(&types.StringValue{Value: "x"}))
	if h, p := r.next(); h.Type != ttrpcwire.TypeData || h.Stream != 7 || h.Flags != 0 || string(p) != "\x0a\x01X" {
		t.Errorf("Upper's answer: %+v % x", h, p)
	}
	r.write(7, ttrpcwire.TypeData, ttrpcwire.FlagRemoteClosed|ttrpcwire.FlagNoData, nil)
	if h, p := r.next(); h.Type != ttrpcwire.TypeData || h.Stream != 7 || h.Flags != ttrpcwire.FlagRemoteClosed || string(p) != "\x0a\x0a1 messages" {
		t.Errorf("Upper's end: %+v %q", h, p)
	}
	// A client's last message may carry remote closed.
	r.writeRequest(9, ttrpcwire.FlagRemoteOpen, ssvc, "Join", nil, 0, nil)
	r.write(9, ttrpcwire.TypeData, 0, marshalMsg(&types.StringValue{Value: "a"}))
	r.write(9, ttrpcwire.TypeData, ttrpcwire.FlagRemoteClosed, marshalMsg(&types.StringValue{Value: "b"}))
	if resp := r.response(9); resp.Code != 0 || string(resp.Payload) != "\x0a\x052:a,b" {
		t.Errorf("Join: %+v", resp)
	}
	// A client stream's request may carry the first message.
	r.writeRequest(11, ttrpcwire.FlagRemoteOpen, ssvc, "Join", marshalMsg(&types.StringValue{Value: "first"}), 0, nil)
	r.write(11, ttrpcwire.TypeData, ttrpcwire.FlagRemoteClosed|ttrpcwire.FlagNoData, nil)
	if resp := r.response(11); resp.Code != 0 || string(resp.Payload) != "\x0a\x071:first" {
		t.Errorf("Join with the request's message: %+v", resp)
	}
	// Frames of unknown types are ignored.
	r.write(13, 0x07, 0, []byte("future"))
	r.request(15, ssvc, "Echo", &types.StringValue{Value: "still"}, 0, nil)
	if resp := r.response(15); resp.Code != 0 || string(resp.Payload) != "\x0a\x05still" {
		t.Errorf("Echo after an unknown frame type: %+v", resp)
	}
}

// rawConn speaks the wire protocol by hand.
type rawConn struct {
	t       *testing.T
	c       net.Conn
	timeout time.Duration // to read a frame
}

func dialRaw(t *testing.T, path string) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t, c, 10 * time.Second}
}

func marshalMsg(m rpc.Message) []byte {
	b := make([]byte, m.Size())
	n, err := m.MarshalTo(b)
	if err != nil {
		panic(err)
	}
	return b[:n]
}

func (r *rawConn) write(id uint32, typ, flags byte, p []byte) {
	r.t.Helper()
	if _, err := r.c.Write(append(ttrpcwire.NewFrame(id, typ, flags, len(p)), p...)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) writeRequest(id uint32, flags byte, service, method string, payload []byte, timeout int64, md []ttrpcwire.KeyValue) {
	r.t.Helper()
	r.write(id, ttrpcwire.TypeRequest, flags, ttrpcwire.AppendRequest(nil, service, method, payload, timeout, md))
}

// request sends a unary request.
func (r *rawConn) request(id uint32, service, method string, req rpc.Message, timeout int64, md []ttrpcwire.KeyValue) {
	r.t.Helper()
	var p []byte
	if req != nil {
		p = marshalMsg(req)
	}
	r.writeRequest(id, 0, service, method, p, timeout, md)
}

// next reads a frame.
func (r *rawConn) next() (ttrpcwire.Header, []byte) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(r.timeout))
	var hbuf [ttrpcwire.HeaderLen]byte
	h, err := ttrpcwire.ReadHeader(r.c, &hbuf)
	if err != nil {
		r.t.Fatalf("reading a frame: %v", err)
	}
	if h.Length > ttrpcwire.MaxMessage {
		r.t.Fatalf("frame of %d bytes", h.Length)
	}
	var p []byte
	if h.Length > 0 {
		p = make([]byte, h.Length)
		if _, err := io.ReadFull(r.c, p); err != nil {
			r.t.Fatalf("reading a frame: %v", err)
		}
	}
	return h, p
}

// response reads a Response frame for id.
func (r *rawConn) response(id uint32) ttrpcwire.Response {
	r.t.Helper()
	h, p := r.next()
	if h.Type != ttrpcwire.TypeResponse || h.Stream != id || h.Flags != 0 {
		r.t.Fatalf("got frame %+v % x, want a response on stream %d", h, p, id)
	}
	resp, err := ttrpcwire.DecodeResponse(p)
	if err != nil {
		r.t.Fatalf("response %x: %v", p, err)
	}
	return resp
}

func (r *rawConn) wantStatus(what string, id uint32, code uint32, msg string) {
	r.t.Helper()
	resp := r.response(id)
	if resp.Code != code || resp.Message != msg || resp.Payload != nil {
		r.t.Errorf("%s: got %s %q (payload %x), want %s %q", what, rpc.CodeName(resp.Code), resp.Message, resp.Payload, rpc.CodeName(code), msg)
	}
}

func (r *rawConn) wantEcho(id uint32, v string) {
	r.t.Helper()
	r.request(id, ssvc, "Echo", &types.StringValue{Value: v}, 0, nil)
	resp := r.response(id)
	var m types.StringValue
	if err := m.Unmarshal(resp.Payload); resp.Code != 0 || err != nil || m.Value != v {
		r.t.Errorf("Echo %q on stream %d: %+v", v, id, resp)
	}
}

func TestServerProtocolViolations(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	r := dialRaw(t, ts.path)
	inv := uint32(rpc.CodeInvalidArgument)

	r.request(2, ssvc, "Echo", &types.StringValue{Value: "x"}, 0, nil)
	r.wantStatus("even stream id", 2, inv, "StreamID must be odd for client initiated streams")
	r.write(4, ttrpcwire.TypeData, 0, nil)
	r.wantStatus("data on an even stream id", 4, inv, "StreamID must be odd for client initiated streams")

	r.wantEcho(5, "five")
	r.request(3, ssvc, "Echo", &types.StringValue{Value: "x"}, 0, nil)
	r.wantStatus("lower stream id", 3, inv, "StreamID cannot be re-used and must increment")
	r.request(5, ssvc, "Echo", &types.StringValue{Value: "x"}, 0, nil)
	r.wantStatus("re-used stream id", 5, inv, "StreamID cannot be re-used and must increment")

	r.write(7, ttrpcwire.TypeData, 0, marshalMsg(&types.StringValue{Value: "x"}))
	r.wantStatus("data for an unknown stream", 7, inv, "StreamID is no longer active")
	r.write(5, ttrpcwire.TypeData, 0, nil)
	r.wantStatus("data for a finished call", 5, inv, "StreamID is no longer active")

	r.write(9, ttrpcwire.TypeRequest, 0, []byte{0x0a, 0x05, 'a'})
	r.wantStatus("malformed request", 9, inv, "unmarshal request error: truncated protobuf message")

	r.writeRequest(11, 0, ssvc, "Echo", []byte{0x0a, 0x05, 'a'}, 0, nil)
	r.wantStatus("malformed request payload", 11, rpc.CodeInternal, "ttrpc: error unmarshalling payload: unexpected EOF")

	// An oversized frame is read and dropped.
	n := ttrpcwire.MaxMessage + 1
	f := ttrpcwire.NewFrame(13, ttrpcwire.TypeRequest, 0, n)
	if _, err := r.c.Write(f[:ttrpcwire.HeaderLen+n]); err != nil {
		t.Fatal(err)
	}
	r.wantStatus("oversized frame", 13, rpc.CodeResourceExhausted, "message length 4194305 exceed maximum message size of 4194304")
	r.wantEcho(15, "after an oversized frame")

	// A request of exactly the largest size is served.
	l := ttrpcwire.MaxMessage - 100
	size := func() int {
		return ttrpcwire.RequestSize(ssvc, "Echo", marshalMsg(&types.StringValue{Value: strings.Repeat("y", l)}), 0, nil)
	}
	l += ttrpcwire.MaxMessage - size()
	if size() != ttrpcwire.MaxMessage {
		t.Fatalf("request of %d bytes", size())
	}
	r.wantEcho(17, strings.Repeat("y", l))
	r.wantEcho(19, "end")
}

// A client stream whose handler does not read: the 64 messages of its
// buffer wait, the next one is dropped after a second with a status (the
// connection's other calls then move again); data after the client closed
// its side is refused.
func TestServerClientStreamFull(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	r := dialRaw(t, ts.path)
	r.writeRequest(1, ttrpcwire.FlagRemoteOpen, ssvc, "Hold", nil, 0, nil)
	m := marshalMsg(&types.StringValue{Value: "m"})
	for range 65 {
		r.write(1, ttrpcwire.TypeData, 0, m)
	}
	start := time.Now()
	r.request(3, ssvc, "Echo", &types.StringValue{Value: "x"}, 0, nil)
	r.wantStatus("65th message", 1, rpc.CodeInvalidArgument, "data handling error: rpc: stream receiver fell behind")
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("a full stream refused a message after %v", d)
	}
	if resp := r.response(3); resp.Code != 0 || string(resp.Payload) != "\x0a\x01x" {
		t.Errorf("Echo: %+v", resp)
	}
	r.write(1, ttrpcwire.TypeData, ttrpcwire.FlagRemoteClosed|ttrpcwire.FlagNoData, nil)
	r.write(1, ttrpcwire.TypeData, 0, m)
	r.wantStatus("message after the client's end", 1, rpc.CodeInvalidArgument, "data handling error: rpc: stream closed")
	close(ts.state.release)
	if resp := r.response(1); resp.Code != 0 || string(resp.Payload) != "\x08\x40" {
		t.Errorf("Hold: %+v", resp)
	}
}

// A response over the 4 MiB limit fails the call with ResourceExhausted
// and leaves the connection working.
func TestServerResponseTooLarge(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	forClients(t, ts.path, func(t *testing.T, c testClient) {
		ctx := tctx(t)
		// The largest response that fits: a status of 2 bytes, the
		// payload's tag and length 5, the message's tag and length 5.
		n := int32(ttrpcwire.MaxMessage - 2 - 5 - 5)
		var resp types.StringValue
		if err := c.c.Call(ctx, ssvc, "Big", &types.Int32Value{Value: n}, &resp); err != nil || len(resp.Value) != int(n) {
			t.Fatalf("Big %d: %d bytes, %v", n, len(resp.Value), err)
		}
		// One more byte: 4194305 bytes.
		err := c.c.Call(ctx, ssvc, "Big", &types.Int32Value{Value: n + 1}, &resp)
		wantStatus(t, "Big", err, rpc.CodeResourceExhausted, "message length 4194305 exceed maximum message size of 4194304")
		// 4 MiB of string: 1 + 4 + 4194304 bytes of message, 2 + 1 + 4
		// of envelope.
		err = c.c.Call(ctx, ssvc, "Big", &types.Int32Value{Value: 4 << 20}, &resp)
		wantStatus(t, "Big", err, rpc.CodeResourceExhausted, "message length 4194316 exceed maximum message size of 4194304")
		wantEcho(t, c.c, "after a large response")
		// In a stream, SendMsg fails with the status (here returned by the
		// handler).
		s, err := c.c.NewStream(ctx, &rpc.StreamDesc{StreamingServer: true}, ssvc, "BigStream", &types.Int32Value{Value: 4 << 20})
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, "BigStream", s.RecvMsg(&resp), rpc.CodeResourceExhausted, "message length 4194309 exceed maximum message size of 4194304")
		wantEcho(t, c.c, "after a large stream message")
	})
}

// MaxCalls bounds the calls in progress on a connection.
func TestServerMaxCalls(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{MaxCalls: 2})
	c := dial(t, ts.path)
	ctx := tctx(t)
	results := make(chan error, 2)
	for _, v := range []string{"a", "b"} {
		go func() { results <- gateCall(ctx, c, v) }()
	}
	waitFor(t, "a call to start", ts.state.started)
	waitFor(t, "a call to start", ts.state.started)
	_, err := sEcho(ctx, c, "third")
	wantStatus(t, "call beyond MaxCalls", err, rpc.CodeResourceExhausted, "too many calls in progress on this connection (limit 2)")
	// Another connection has its own.
	wantEcho(t, dial(t, ts.path), "other connection")
	close(ts.state.release)
	for range 2 {
		if err := waitFor(t, "Gate", results); err != nil {
			t.Error(err)
		}
	}
	wantEcho(t, c, "after")
}

func TestServerConcurrent(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	forClients(t, ts.path, func(t *testing.T, c testClient) {
		var wg sync.WaitGroup
		errc := make(chan error, 30)
		for g := range 20 {
			wg.Go(func() {
				for i := range 50 {
					want := fmt.Sprintf("%d-%d-%s", g, i, strings.Repeat("z", i*g))
					if v, err := sEcho(context.Background(), c.c, want); err != nil || v != want {
						errc <- fmt.Errorf("Echo %d-%d: %d bytes, %v", g, i, len(v), err)
						return
					}
				}
			})
		}
		for g := range 5 {
			wg.Go(func() {
				for i := range 10 {
					n := int32(g*10 + i)
					s, err := c.c.NewStream(tctx(t), &rpc.StreamDesc{StreamingServer: true}, ssvc, "Count", &types.Int32Value{Value: n})
					if err != nil {
						errc <- err
						return
					}
					got, err := recvAll(t, s)
					if err != io.EOF || len(got) != int(n) || (n > 0 && got[n-1] != n) {
						errc <- fmt.Errorf("Count %d: %v, %v", n, got, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}
	})
}

// Shutdown waits for the calls in progress, which get their responses.
func TestServerShutdownWaits(t *testing.T) {
	for _, kind := range clientKinds {
		t.Run(kind, func(t *testing.T) {
			ts := startServer(t, rpc.ServerConfig{})
			c := newClient(t, kind, ts.path)
			idle := newClient(t, kind, ts.path)
			wantEcho(t, idle.c, "idle")
			results := make(chan error, 1)
			go func() { results <- gateCall(context.Background(), c.c, "a") }()
			waitFor(t, "Gate to start", ts.state.started)
			shut := make(chan error, 1)
			go func() { shut <- ts.srv.Shutdown(context.Background()) }()
			if err := waitFor(t, "Serve to return", ts.served); err != rpc.ErrServerClosed {
				t.Errorf("Serve: %v", err)
			}
			if nc, err := net.Dial("unix", ts.path); err == nil {
				nc.Close()
				t.Error("a connection accepted after Shutdown")
			}
			// The idle connection is closed at once.
			waitFor(t, "the idle connection to close", idle.done)
			select {
			case err := <-shut:
				t.Fatalf("Shutdown returned %v with a call in progress", err)
			case <-time.After(200 * time.Millisecond):
			}
			close(ts.state.release)
			if err := waitFor(t, "Gate", results); err != nil {
				t.Errorf("call in progress at Shutdown: %v", err)
			}
			if err := waitFor(t, "Shutdown", shut); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			waitFor(t, "the connection to close", c.done)
			if _, err := sEcho(tctx(t), c.c, "x"); !isClosed(err) {
				t.Errorf("call after Shutdown: %v", err)
			}
			ts.served <- rpc.ErrServerClosed // for the cleanup
		})
	}
}

// Shutdown with a context that ends first closes the connections.
func TestServerShutdownTimeout(t *testing.T) {
	for _, kind := range clientKinds {
		t.Run(kind, func(t *testing.T) {
			ts := startServer(t, rpc.ServerConfig{})
			c := newClient(t, kind, ts.path)
			results := make(chan error, 1)
			go func() {
				results <- c.c.Call(context.Background(), ssvc, "Gate", &types.StringValue{Value: "a"}, &types.StringValue{})
			}()
			waitFor(t, "Gate to start", ts.state.started)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			if err := ts.srv.Shutdown(ctx); err != context.DeadlineExceeded {
				t.Errorf("Shutdown: %v", err)
			}
			if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
				t.Errorf("Shutdown took %v", d)
			}
			if err := waitFor(t, "Gate", results); !isClosed(err) {
				t.Errorf("call in progress: %v", err)
			}
			if err := waitFor(t, "Gate's context", ts.state.ended); err != context.Canceled {
				t.Errorf("Gate's context ended with %v", err)
			}
			waitFor(t, "the connection to close", c.done)
			if err := waitFor(t, "Serve to return", ts.served); err != rpc.ErrServerClosed {
				t.Errorf("Serve: %v", err)
			}
			ts.served <- rpc.ErrServerClosed
		})
	}
}

func TestServerClose(t *testing.T) {
	for _, kind := range clientKinds {
		t.Run(kind, func(t *testing.T) {
			ts := startServer(t, rpc.ServerConfig{})
			c := newClient(t, kind, ts.path)
			wantEcho(t, c.c, "before")
			if err := ts.srv.Close(); err != nil {
				t.Fatal(err)
			}
			if err := waitFor(t, "Serve to return", ts.served); err != rpc.ErrServerClosed {
				t.Errorf("Serve: %v", err)
			}
			waitFor(t, "the connection to close", c.done)
			if _, err := sEcho(tctx(t), c.c, "after"); !isClosed(err) {
				t.Errorf("call after Close: %v", err)
			}
			ts.served <- rpc.ErrServerClosed
		})
	}
}

// Serve called after Stop, Shutdown or Close (as when the server is
// stopped before the goroutine running Serve has started) returns
// ErrServerClosed at once, and closes its listener as it does when stopped
// while serving (as net/http's and ttrpc's Serve do): a listener left open
// would take connections into its backlog that no one accepts.
func TestServerServeAfterStop(t *testing.T) {
	for _, stop := range []string{"Stop", "Shutdown", "Close"} {
		t.Run(stop, func(t *testing.T) {
			srv := rpc.NewServer(rpc.ServerConfig{})
			srv.RegisterService(ssvc, serverService(newSrvState()))
			switch stop {
			case "Stop":
				srv.Stop()
			case "Shutdown":
				if err := srv.Shutdown(context.Background()); err != nil {
					t.Fatal(err)
				}
			case "Close":
				srv.Close()
			}
			path := filepath.Join(sockDir(t), "s.sock")
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			served := make(chan error, 1)
			go func() { served <- srv.Serve(context.Background(), l) }()
			if err := waitFor(t, "Serve", served); err != rpc.ErrServerClosed {
				t.Errorf("Serve: %v", err)
			}
			if nc, err := net.Dial("unix", path); err == nil {
				nc.Close()
				t.Errorf("Serve after %s left its listener open", stop)
			}
		})
	}
}

// Stop stops accepting; connections keep being served.
func TestServerStop(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	c := dial(t, ts.path)
	wantEcho(t, c, "before Stop") // the connection is accepted
	ts.srv.Stop()
	if err := waitFor(t, "Serve to return", ts.served); err != rpc.ErrServerClosed {
		t.Errorf("Serve: %v", err)
	}
	ts.served <- rpc.ErrServerClosed
	if nc, err := net.Dial("unix", ts.path); err == nil {
		nc.Close()
		t.Error("a connection accepted after Stop")
	}
	wantEcho(t, c, "after Stop")
}

// Calls' contexts end with Serve's.
func TestServerServeContext(t *testing.T) {
	for _, kind := range clientKinds {
		t.Run(kind, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ts := startServerCtx(t, ctx, rpc.ServerConfig{})
			c := newClient(t, kind, ts.path)
			s, err := c.c.NewStream(tctx(t), &rpc.StreamDesc{StreamingServer: true}, ssvc, "Wait", &types.Empty{})
			if err != nil {
				t.Fatal(err)
			}
			var m types.StringValue
			if err := s.RecvMsg(&m); err != nil || m.Value != "waiting" {
				t.Fatalf("Wait: %q, %v", m.Value, err)
			}
			unary := make(chan error, 1)
			go func() {
				unary <- c.c.Call(context.Background(), ssvc, "Gate", &types.StringValue{Value: "g"}, &types.StringValue{})
			}()
			waitFor(t, "Gate to start", ts.state.started)
			cancel()
			wantStatus(t, "Wait", s.RecvMsg(&m), rpc.CodeCanceled, "context canceled")
			wantStatus(t, "Gate", waitFor(t, "Gate", unary), rpc.CodeCanceled, "context canceled")
			for range 2 {
				if err := waitFor(t, "a context to end", ts.state.ended); err != context.Canceled {
					t.Errorf("context ended with %v", err)
				}
			}
			// Later calls start with their context ended.
			err = c.c.Call(tctx(t), ssvc, "Block", &types.Empty{}, &types.Empty{})
			wantStatus(t, "Block", err, rpc.CodeCanceled, "context canceled")
			if err := waitFor(t, "Block to end", ts.state.ended); err != context.Canceled {
				t.Errorf("Block's context ended with %v", err)
			}
		})
	}
}

// A connection closed by its client ends its calls' contexts.
func TestServerClientGone(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	forClients(t, ts.path, func(t *testing.T, c testClient) {
		go c.c.Call(context.Background(), ssvc, "Gate", &types.StringValue{Value: "g"}, &types.Empty{})
		waitFor(t, "Gate to start", ts.state.started)
		c.close()
		if err := waitFor(t, "Gate to end", ts.state.ended); err != context.Canceled {
			t.Errorf("Gate's context ended with %v", err)
		}
	})
}

// WaitIdle waits for handlers, also those of connections Close closed
// (their contexts are cancelled), and says how many run when ctx ends.
func TestServerWaitIdle(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	if err := ts.srv.WaitIdle(tctx(t)); err != nil {
		t.Fatalf("WaitIdle without calls: %v", err)
	}
	c := newClient(t, "rpc.Conn", ts.path)
	results := make(chan error, 1)
	go func() {
		results <- c.c.Call(context.Background(), ssvc, "Gate", &types.StringValue{Value: "a"}, &types.StringValue{})
	}()
	waitFor(t, "Gate to start", ts.state.started)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := ts.srv.WaitIdle(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 calls still running") {
		t.Fatalf("WaitIdle with Gate running: %v", err)
	}
	if err := ts.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.WaitIdle(tctx(t)); err != nil {
		t.Fatalf("WaitIdle after Close: %v", err)
	}
	// Gate returned before WaitIdle did: its end was already reported.
	select {
	case err := <-ts.state.ended:
		if err != context.Canceled {
			t.Errorf("Gate's context ended with %v", err)
		}
	default:
		t.Error("WaitIdle returned before Gate's handler did")
	}
	if err := waitFor(t, "Gate", results); !isClosed(err) {
		t.Errorf("call in progress at Close: %v", err)
	}
	waitFor(t, "Serve to return", ts.served)
	ts.served <- rpc.ErrServerClosed
}

// waitIdleWorkers waits until n workers wait for calls.
func waitIdleWorkers(t *testing.T, srv *rpc.Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for srv.IdleWorkers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle workers, want %d", srv.IdleWorkers(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Unary calls run on pooled workers: the pool bounds the idle ones, not
// the calls in progress; Stop sends the idle ones away, and calls on the
// connections still open are served after it.
func TestServerWorkers(t *testing.T) {
	ts := startServer(t, rpc.ServerConfig{})
	c := dial(t, ts.path)
	ctx := tctx(t)
	n := 3 * rpc.MaxIdleWorkers
	results := make(chan error, n)
	for i := range n {
		go func() { results <- gateCall(ctx, c, strconv.Itoa(i)) }()
	}
	for range n {
		waitFor(t, "a call to start", ts.state.started)
	}
	if got := ts.srv.IdleWorkers(); got != 0 {
		t.Errorf("%d idle workers while every call is in progress", got)
	}
	close(ts.state.release)
	for range n {
		if err := waitFor(t, "Gate", results); err != nil {
			t.Error(err)
		}
	}
	waitIdleWorkers(t, ts.srv, rpc.MaxIdleWorkers)
	for i := range 50 {
		wantEcho(t, c, strconv.Itoa(i))
	}
	waitIdleWorkers(t, ts.srv, rpc.MaxIdleWorkers)

	ts.srv.Stop()
	waitIdleWorkers(t, ts.srv, 0)
	wantEcho(t, c, "after Stop")
	waitIdleWorkers(t, ts.srv, 0)
}
