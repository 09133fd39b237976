package rpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/internal/ttrpcwire"
	"github.com/edged/edged/proto/rpc"
)

// drainingMsg is the status message of a request refused by a draining
// server with the default ServerConfig.
const drainingMsg = "rpc: server is shutting down"

// A request whose bytes the client had written before Shutdown began is
// answered, served or refused with Unavailable; it is never dropped with
// the connection (the client would see a reset after its request went
// out, and could not tell whether it ran). Shutdown's closing of idle
// connections used to close a connection whose reader had not yet taken
// the request, when no call was in progress on it. Raw frames, so that
// the request is on the socket before Shutdown is called; the race is
// run many times.
func TestServerShutdownAnswersRequestsSent(t *testing.T) {
	const rounds = 100
	for i := range rounds {
		ts := startServer(t, rpc.ServerConfig{})
		r := dialRaw(t, ts.path)
		r.wantEcho(1, "accepted") // the connection is served, and idle
		r.request(3, ssvc, "Echo", &types.StringValue{Value: "sent"}, 0, nil)
		shut := make(chan error, 1)
		go func() { shut <- ts.srv.Shutdown(context.Background()) }()

		r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var hbuf [ttrpcwire.HeaderLen]byte
		h, err := ttrpcwire.ReadHeader(r.c, &hbuf)
		if err != nil {
			t.Fatalf("round %d: the request sent before Shutdown was dropped with the connection: %v", i, err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r.c, p); err != nil {
			t.Fatalf("round %d: reading the answer: %v", i, err)
		}
		resp, err := ttrpcwire.DecodeResponse(p)
		if err != nil || h.Stream != 3 || h.Type != ttrpcwire.TypeResponse {
			t.Fatalf("round %d: frame %+v: %+v, %v", i, h, resp, err)
		}
		var m types.StringValue
		served := resp.Code == rpc.CodeOK && m.Unmarshal(resp.Payload) == nil && m.Value == "sent"
		refused := resp.Code == rpc.CodeUnavailable && resp.Message == drainingMsg
		if !served && !refused {
			t.Fatalf("round %d: answer %s %q %x; want the echo or Unavailable %q", i, rpc.CodeName(resp.Code), resp.Message, resp.Payload, drainingMsg)
		}
		// Then the connection ends, and Shutdown returns.
		if _, err := r.c.Read(hbuf[:1]); err == nil {
			t.Fatalf("round %d: a frame after the answer", i)
		}
		if err := waitFor(t, "Shutdown", shut); err != nil {
			t.Fatalf("round %d: Shutdown: %v", i, err)
		}
	}
}

// Once Shutdown has begun, a request on a connection it keeps open (for
// a call in progress) is refused at once with Unavailable, while that
// call, and a client stream in progress, still get what they need: the
// drain lets finish what had begun, and begins nothing new. With both
// clients, each holding its connection open across the Shutdown.
func TestServerShutdownRefusesNewCalls(t *testing.T) {
	for _, kind := range clientKinds {
		t.Run(kind, func(t *testing.T) {
			ts := startServer(t, rpc.ServerConfig{})
			c := newClient(t, kind, ts.path)
			gate := make(chan error, 1)
			go func() { gate <- gateCall(context.Background(), c.c, "a") }()
			waitFor(t, "Gate to start", ts.state.started)
			// A stream begun before the drain (Upper echoes each message
			// in upper case, then counts them).
			st, err := c.c.NewStream(tctx(t), &rpc.StreamDesc{StreamingClient: true, StreamingServer: true}, ssvc, "Upper", nil)
			if err != nil {
				t.Fatal(err)
			}
			upper := func(v, want string) {
				t.Helper()
				if err := st.SendMsg(&types.StringValue{Value: v}); err != nil {
					t.Fatalf("stream message %q: %v", v, err)
				}
				var m types.StringValue
				if err := st.RecvMsg(&m); err != nil || m.Value != want {
					t.Fatalf("stream message %q: %q, %v", v, m.Value, err)
				}
			}
			upper("a", "A")
			shut := make(chan error, 1)
			go func() { shut <- ts.srv.Shutdown(context.Background()) }()
			if err := waitFor(t, "Serve to return", ts.served); err != rpc.ErrServerClosed {
				t.Errorf("Serve: %v", err)
			}
			ts.served <- rpc.ErrServerClosed // for the cleanup

			start := time.Now()
			_, err = sEcho(tctx(t), c.c, "during the drain")
			wantStatus(t, "Echo during the drain", err, rpc.CodeUnavailable, drainingMsg)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the refusal took %v", d)
			}
			s, err := c.c.NewStream(tctx(t), &rpc.StreamDesc{StreamingServer: true}, ssvc, "Count", &types.Int32Value{Value: 3})
			if err == nil { // ttrpc's client: the status comes with the first read
				_, err = recvAll(t, s)
			}
			wantStatus(t, "a stream opened during the drain", err, rpc.CodeUnavailable, drainingMsg)

			// What had begun finishes.
			upper("b", "B")
			if err := st.CloseSend(); err != nil {
				t.Fatal(err)
			}
			var n types.StringValue
			if err := st.RecvMsg(&n); err != nil || n.Value != "2 messages" {
				t.Errorf("stream begun before the drain: %q, %v; want 2 messages", n.Value, err)
			}
			select {
			case err := <-shut:
				t.Fatalf("Shutdown returned %v with a call in progress", err)
			default:
			}
			close(ts.state.release)
			if err := waitFor(t, "Gate", gate); err != nil {
				t.Errorf("call in progress at Shutdown: %v", err)
			}
			if err := waitFor(t, "Shutdown", shut); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			waitFor(t, "the connection to close", c.done)
		})
	}
}

// ServerConfig.Draining sets the status of refused requests.
func TestServerShutdownDrainingStatus(t *testing.T) {
	want := &rpc.StatusError{Code: rpc.CodeUnavailable, Message: "edged is shutting down; try again"}
	ts := startServer(t, rpc.ServerConfig{Draining: want})
	r := dialRaw(t, ts.path)
	r.request(1, ssvc, "Gate", &types.StringValue{Value: "a"}, 0, nil)
	waitFor(t, "Gate to start", ts.state.started)
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(context.Background()) }()
	waitFor(t, "Serve to return", ts.served)
	ts.served <- rpc.ErrServerClosed
	r.request(3, ssvc, "Echo", &types.StringValue{Value: "x"}, 0, nil)
	r.wantStatus("Echo during the drain", 3, want.Code, want.Message)
	close(ts.state.release)
	resp := r.response(1)
	if resp.Code != rpc.CodeOK {
		t.Errorf("Gate: %+v", resp)
	}
	if err := waitFor(t, "Shutdown", shut); err != nil {
		t.Error(err)
	}
	var b [1]byte
	if _, err := r.c.Read(b[:]); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		t.Errorf("connection after Shutdown: %v", err)
	}
}
