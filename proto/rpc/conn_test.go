package rpc_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/errdefs/errgrpc"
	"github.com/edged/edged/internal/ttrpcwire"
	"github.com/edged/edged/proto/rpc"
	"github.com/edged/edged/proto/wire"
)

const svc = "edged.test.v1.Test"

// testService is served by a real github.com/containerd/ttrpc server
// (through proto/wire): Conn must interoperate with it.
func testService() *rpc.ServiceDesc {
	str := func(m rpc.Message) string { return m.(*types.StringValue).Value }
	return &rpc.ServiceDesc{
		Methods: map[string]rpc.Method{
			"Echo": func(ctx context.Context, unmarshal func(rpc.Message) error) (rpc.Message, error) {
				var req types.StringValue
				if err := unmarshal(&req); err != nil {
					return nil, err
				}
				if req.Value == "notfound" {
					return nil, errgrpc.ToGRPC(fmt.Errorf("thing %q: %w", req.Value, errdefs.ErrNotFound))
				}
				return &types.StringValue{Value: req.Value}, nil
			},
			// Meta answers with the request's metadata value of "k" and
			// the time left before its deadline.
			"Meta": func(ctx context.Context, unmarshal func(rpc.Message) error) (rpc.Message, error) {
				v, _ := rpc.GetMetadataValue(ctx, "k")
				left := "none"
				if dl, ok := ctx.Deadline(); ok {
					left = time.Until(dl).Round(time.Second).String()
				}
				return &types.StringValue{Value: v + " " + left}, nil
			},
			"Block": func(ctx context.Context, unmarshal func(rpc.Message) error) (rpc.Message, error) {
				<-ctx.Done()
				return nil, errgrpc.ToGRPC(ctx.Err())
			},
		},
		Streams: map[string]rpc.Stream{
			// Count sends 1..n, n being the request.
			"Count": {StreamingServer: true, Handler: func(ctx context.Context, s rpc.StreamServer) (rpc.Message, error) {
				var req types.Int32Value
				if err := s.RecvMsg(&req); err != nil {
					return nil, err
				}
				for i := int32(1); i <= req.Value; i++ {
					if err := s.SendMsg(&types.Int32Value{Value: i}); err != nil {
						return nil, err
					}
				}
				if req.Value < 0 {
					return nil, errgrpc.ToGRPC(fmt.Errorf("count %d: %w", req.Value, errdefs.ErrInvalidArgument))
				}
				return nil, nil
			}},
			// Join answers with the messages it received, joined by ",".
			"Join": {StreamingClient: true, Handler: func(ctx context.Context, s rpc.StreamServer) (rpc.Message, error) {
				var parts []string
				for {
					var m types.StringValue
					if err := s.RecvMsg(&m); err != nil {
						if errors.Is(err, io.EOF) {
							break
						}
						return nil, err
					}
					parts = append(parts, str(&m))
				}
				return &types.StringValue{Value: strings.Join(parts, ",")}, nil
			}},
		},
	}
}

func serve(t *testing.T) (string, *ttrpc.Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	wire.Server(srv).RegisterService(svc, testService())
	go srv.Serve(context.Background(), l)
	t.Cleanup(func() { srv.Close() })
	return path, srv
}

func dial(t *testing.T, path string) *rpc.Conn {
	t.Helper()
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := rpc.NewConn(nc)
	t.Cleanup(func() { c.Close() })
	return c
}

func echo(ctx context.Context, c rpc.Caller, v string) (string, error) {
	var resp types.StringValue
	err := c.Call(ctx, svc, "Echo", &types.StringValue{Value: v}, &resp)
	return resp.Value, err
}

func TestUnaryAndStatus(t *testing.T) {
	path, _ := serve(t)
	c := dial(t, path)
	ctx := context.Background()
	if v, err := echo(ctx, c, "hello"); err != nil || v != "hello" {
		t.Fatalf("Echo: %q, %v", v, err)
	}
	_, err := echo(ctx, c, "notfound")
	var st *rpc.StatusError
	if !errors.As(err, &st) || st.Code != 5 || st.Message != `thing "notfound": not found` {
		t.Fatalf("status: %#v", err)
	}
	if want := `rpc error: code = NotFound desc = thing "notfound": not found`; err.Error() != want {
		t.Errorf("message %q, want %q", err.Error(), want)
	}
	err = c.Call(ctx, "no.such.Service", "Echo", &types.StringValue{}, &types.StringValue{})
	if !errors.As(err, &st) || rpc.CodeName(st.Code) != "Unimplemented" {
		t.Errorf("unknown service: %v", err)
	}
	// The connection still works after errors.
	if v, err := echo(ctx, c, "again"); err != nil || v != "again" {
		t.Errorf("Echo after errors: %q, %v", v, err)
	}
}

func TestMetadataAndDeadline(t *testing.T) {
	path, _ := serve(t)
	c := dial(t, path)
	ctx := rpc.WithMetadata(context.Background(), rpc.MD{"k": {"v1"}})
	var resp types.StringValue
	if err := c.Call(ctx, svc, "Meta", &types.Empty{}, &resp); err != nil || resp.Value != "v1 none" {
		t.Fatalf("without deadline: %q, %v", resp.Value, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 7*time.Second)
	defer cancel()
	if err := c.Call(ctx, svc, "Meta", &types.Empty{}, &resp); err != nil || resp.Value != "v1 7s" {
		t.Fatalf("with deadline: %q, %v", resp.Value, err)
	}
}

func TestServerStream(t *testing.T) {
	path, _ := serve(t)
	c := dial(t, path)
	ctx := context.Background()
	s, err := c.NewStream(ctx, &rpc.StreamDesc{StreamingServer: true}, svc, "Count", &types.Int32Value{Value: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := int32(1); i <= 3; i++ {
		var m types.Int32Value
		if err := s.RecvMsg(&m); err != nil || m.Value != i {
			t.Fatalf("message %d: %v, %v", i, m.Value, err)
		}
	}
	for range 2 {
		if err := s.RecvMsg(&types.Int32Value{}); err != io.EOF {
			t.Fatalf("after the last: %v", err)
		}
	}
	// A stream that ends with an error: the messages, then the status.
	s, err = c.NewStream(ctx, &rpc.StreamDesc{StreamingServer: true}, svc, "Count", &types.Int32Value{Value: -1})
	if err != nil {
		t.Fatal(err)
	}
	err = s.RecvMsg(&types.Int32Value{})
	var st *rpc.StatusError
	if !errors.As(err, &st) || rpc.CodeName(st.Code) != "InvalidArgument" || st.Message != "count -1: invalid argument" {
		t.Fatalf("failing stream: %v", err)
	}
	if err := s.RecvMsg(&types.Int32Value{}); err != io.EOF {
		t.Errorf("after the status: %v", err)
	}
	if err := s.SendMsg(&types.Int32Value{}); err == nil || !strings.Contains(err.Error(), "without a streaming client") {
		t.Errorf("send on a server stream: %v", err)
	}
}

// A receiver that does not read a server stream for over a second while
// more than its buffer (64 messages) arrives loses the stream, so that the
// connection's other calls keep moving.
func TestSlowReceiverLosesStream(t *testing.T) {
	path, _ := serve(t)
	c := dial(t, path)
	s, err := c.NewStream(context.Background(), &rpc.StreamDesc{StreamingServer: true}, svc, "Count", &types.Int32Value{Value: 200})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	n := 0
	for {
		err = s.RecvMsg(&types.Int32Value{})
		if err != nil {
			break
		}
		n++
	}
	if !errors.Is(err, rpc.ErrStreamFull) || err.Error() != "rpc: stream receiver fell behind" || n == 0 || n >= 200 {
		t.Fatalf("after %d messages: %v", n, err)
	}
	if v, err := echo(context.Background(), c, "after"); err != nil || v != "after" {
		t.Errorf("Echo after a lost stream: %q, %v", v, err)
	}
}

func TestClientStream(t *testing.T) {
	path, _ := serve(t)
	c := dial(t, path)
	s, err := c.NewStream(context.Background(), &rpc.StreamDesc{StreamingClient: true}, svc, "Join", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"a", "", "c"} {
		if err := s.SendMsg(&types.StringValue{Value: v}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := s.SendMsg(&types.StringValue{Value: "late"}); !errors.Is(err, rpc.ErrClosed) {
		t.Errorf("send after CloseSend: %v", err)
	}
	var resp types.StringValue
	if err := s.RecvMsg(&resp); err != nil || resp.Value != "a,,c" {
		t.Fatalf("Join: %q, %v", resp.Value, err)
	}
	if err := s.RecvMsg(&resp); err != io.EOF {
		t.Errorf("after the response: %v", err)
	}
}

func TestCancelAndDeadline(t *testing.T) {
	path, _ := serve(t)
	c := dial(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if err := c.Call(ctx, svc, "Block", &types.Empty{}, &types.Empty{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	// The server ends the call at the deadline the client sent.
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Call(ctx, svc, "Block", &types.Empty{}, &types.Empty{})
	var st *rpc.StatusError
	if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &st) && rpc.CodeName(st.Code) == "DeadlineExceeded") {
		t.Fatalf("call past its deadline: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("deadline took %v", d)
	}
	if v, err := echo(context.Background(), c, "still"); err != nil || v != "still" {
		t.Errorf("Echo after cancelled calls: %q, %v", v, err)
	}
	// A stream ends with its context.
	sctx, scancel := context.WithCancel(context.Background())
	s, err := c.NewStream(sctx, &rpc.StreamDesc{StreamingClient: true}, svc, "Join", nil)
	if err != nil {
		t.Fatal(err)
	}
	scancel()
	if err := s.RecvMsg(&types.StringValue{}); !errors.Is(err, context.Canceled) {
		t.Errorf("RecvMsg on a cancelled stream: %v", err)
	}
}

func TestLimits(t *testing.T) {
	path, _ := serve(t)
	c := dial(t, path)
	_, err := echo(context.Background(), c, strings.Repeat("x", 4<<20))
	if err == nil || !strings.Contains(err.Error(), "is over the 4194304 byte limit") {
		t.Fatalf("oversized request: %v", err)
	}
	if v, err := echo(context.Background(), c, "small"); err != nil || v != "small" {
		t.Errorf("Echo after an oversized request: %q, %v", v, err)
	}
}

func TestConcurrentCalls(t *testing.T) {
	path, _ := serve(t)
	c := dial(t, path)
	var wg sync.WaitGroup
	errc := make(chan error, 20)
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				want := fmt.Sprintf("%d-%d", g, i)
				if v, err := echo(context.Background(), c, want); err != nil || v != want {
					errc <- fmt.Errorf("Echo %s: %q, %v", want, v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestClosed(t *testing.T) {
	path, srv := serve(t)
	c := dial(t, path)
	if _, err := echo(context.Background(), c, "x"); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the server closed the connection")
	}
	if _, err := echo(context.Background(), c, "x"); !errors.Is(err, rpc.ErrClosed) {
		t.Errorf("call on a closed connection: %v", err)
	}
	c2 := dial(t, mustServe(t))
	c2.Close()
	if _, err := echo(context.Background(), c2, "x"); !errors.Is(err, rpc.ErrClosed) {
		t.Errorf("call after Close: %v", err)
	}
}

func mustServe(t *testing.T) string {
	path, _ := serve(t)
	return path
}

// A server that breaks the protocol: the client fails the call with
// ErrProtocol instead of misreading it. (No ttrpc server sends these; the
// raw server here is the only way to cause them.)
func TestProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(id uint32) []byte
		want  string
	}{
		{"data frame for a unary call", func(id uint32) []byte { return frame(0, id, 3, 0) }, "in answer to a unary call"},
		{"oversized frame", func(id uint32) []byte { return frame(5<<20, id, 2, 0) }, "over the 4194304 byte limit"},
		{"truncated response", func(id uint32) []byte { return append(frame(2, id, 2, 0), 0x0a, 0x05) }, "truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "raw.sock")
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				var h [10]byte
				if _, err := io.ReadFull(conn, h[:]); err != nil {
					return
				}
				if _, err := io.CopyN(io.Discard, conn, int64(binary.BigEndian.Uint32(h[:4]))); err != nil {
					return
				}
				conn.Write(tc.reply(binary.BigEndian.Uint32(h[4:8])))
				io.Copy(io.Discard, conn)
			}()
			c := dial(t, path)
			_, err = echo(context.Background(), c, "x")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(tc.want, "byte limit") && !errors.Is(err, rpc.ErrProtocol) {
				t.Errorf("%v is not ErrProtocol", err)
			}
		})
	}
}

func frame(length, stream uint32, typ, flags byte) []byte {
	b := make([]byte, 10)
	binary.BigEndian.PutUint32(b[0:4], length)
	binary.BigEndian.PutUint32(b[4:8], stream)
	b[8], b[9] = typ, flags
	return b
}

// rawServer accepts one connection at path and runs fn on it.
func rawServer(t *testing.T, fn func(conn net.Conn)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raw.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		fn(conn)
	}()
	return path
}

// readRequest reads one request frame and returns its stream id and
// decoded request.
func readRequest(conn net.Conn) (uint32, ttrpcwire.Request, error) {
	h, err := ttrpcwire.ReadHeader(conn, new([ttrpcwire.HeaderLen]byte))
	if err != nil {
		return 0, ttrpcwire.Request{}, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(conn, p); err != nil {
		return 0, ttrpcwire.Request{}, err
	}
	req, err := ttrpcwire.DecodeRequest(p)
	return h.Stream, req, err
}

// response returns the response frame answering stream id with a
// StringValue.
func response(id uint32, v string) []byte {
	payload, _ := (&types.StringValue{Value: v}).Marshal()
	size := ttrpcwire.ResponseSize(0, "", payload)
	return ttrpcwire.AppendResponse(ttrpcwire.NewFrame(id, ttrpcwire.TypeResponse, 0, size), 0, "", payload)
}

// A call reads its own answer when no other call reads the connection.
// Cancelled while its answer is half read, it leaves the half it read for
// the next reader: the next call on the connection still gets its answer
// (no goroutine reads the connection in the background to make up for a
// reader that lost what it had read).
func TestCancelledReaderLeavesHalfAFrame(t *testing.T) {
	halfSent := make(chan struct{})
	path := rawServer(t, func(conn net.Conn) {
		a, _, err := readRequest(conn)
		if err != nil {
			return
		}
		fa := response(a, "answer to a cancelled call")
		conn.Write(fa[:14]) // the header and 4 bytes of the payload
		close(halfSent)
		b, req, err := readRequest(conn)
		if err != nil {
			return
		}
		var v types.StringValue
		v.Unmarshal(req.Payload)
		conn.Write(fa[14:])
		conn.Write(response(b, "b got "+v.Value))
		io.Copy(io.Discard, conn)
	})
	c := dial(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := echo(ctx, c, "a")
		errc <- err
	}()
	<-halfSent
	time.Sleep(50 * time.Millisecond) // the caller has read the half
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a call reading its answer was not interrupted by its cancellation")
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if v, err := echo(ctx, c, "b"); err != nil || v != "b got b" {
		t.Fatalf("call after a cancelled reader: %q, %v", v, err)
	}
}

// The end of a connection that no call has used is seen (Done) without a
// call to see it.
func TestDoneWithoutCalls(t *testing.T) {
	path := rawServer(t, func(conn net.Conn) {})
	c := dial(t, path)
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the server closed an unused connection")
	}
	if _, err := echo(context.Background(), c, "x"); !errors.Is(err, rpc.ErrClosed) {
		t.Errorf("call on the ended connection: %v", err)
	}
}

// Close ends a call that is reading its answer, and calls that wait for
// theirs while it reads.
func TestCloseDuringCalls(t *testing.T) {
	path, _ := serve(t)
	c := dial(t, path)
	errc := make(chan error, 3)
	for range 3 {
		go func() { errc <- c.Call(context.Background(), svc, "Block", &types.Empty{}, &types.Empty{}) }()
	}
	time.Sleep(100 * time.Millisecond)
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	for range 3 {
		select {
		case err := <-errc:
			if !errors.Is(err, rpc.ErrClosed) {
				t.Errorf("call in progress at Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a call in progress did not end at Close")
		}
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
}

// Calls that give up (their deadlines end while they read or wait) mixed
// with calls that do not, on one connection: every call that does not
// give up gets its own answer, and idle gaps (the idle reader taking the
// read turn) do not lose answers either.
func TestConcurrentCallsWithCancels(t *testing.T) {
	path, _ := serve(t)
	c := dial(t, path)
	var wg sync.WaitGroup
	errc := make(chan error, 10)
	for g := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				if i%4 == 0 {
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+i%3)*time.Millisecond)
					err := c.Call(ctx, svc, "Block", &types.Empty{}, &types.Empty{})
					cancel()
					var st *rpc.StatusError
					if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &st) && rpc.CodeName(st.Code) == "DeadlineExceeded") {
						errc <- fmt.Errorf("Block past its deadline: %v", err)
						return
					}
					continue
				}
				if g == 0 && i%10 == 5 {
					time.Sleep(80 * time.Millisecond) // longer than the idle read delay
				}
				want := fmt.Sprintf("%d-%d", g, i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				v, err := echo(ctx, c, want)
				cancel()
				if err != nil || v != want {
					errc <- fmt.Errorf("Echo %s: %q, %v", want, v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
