package rpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/proto/rpc"
)

// echoServer answers every Echo request on its one connection with the
// request's value, after *delay.
func echoServer(t *testing.T, delay *atomic.Int64) string {
	t.Helper()
	return rawServer(t, func(conn net.Conn) {
		for {
			id, req, err := readRequest(conn)
			if err != nil {
				return
			}
			var v types.StringValue
			if err := v.Unmarshal(req.Payload); err != nil {
				return
			}
			if d := time.Duration(delay.Load()); d > 0 {
				time.Sleep(d)
			}
			if _, err := conn.Write(response(id, v.Value)); err != nil {
				return
			}
		}
	})
}

func mustEcho(t *testing.T, c *rpc.Conn, v string) {
	t.Helper()
	got, err := echo(context.Background(), c, v)
	if err != nil || got != v {
		t.Fatalf("echo %q = %q, %v", v, got, err)
	}
}

func needProcs(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("busy polling needs GOMAXPROCS >= 2")
	}
}

// A call whose answer comes at once reads it while polling, without
// sleeping in the poller; with polling off (the default) no read polls.
func TestBusyPollReadsAnswer(t *testing.T) {
	needProcs(t)
	var delay atomic.Int64
	c := dial(t, echoServer(t, &delay))
	if c.BusyPoll() != 0 {
		t.Fatalf("BusyPoll() = %v by default, want 0", c.BusyPoll())
	}
	for range 10 {
		mustEcho(t, c, "off")
	}
	if polled, slept := rpc.PollCounts(c); polled != 0 || slept != 0 {
		t.Fatalf("polling off: %d reads polled, %d slept after a poll; want none", polled, slept)
	}

	c = dial(t, echoServer(t, &delay))
	// Polls of at least 20 ms (a tenth of the limit): longer than any
	// scheduling delay here.
	c.SetBusyPoll(200 * time.Millisecond)
	const n = 50
	for range n {
		mustEcho(t, c, "on")
	}
	polled, slept := rpc.PollCounts(c)
	if polled < n*9/10 {
		t.Fatalf("%d of %d answers read while polling (%d polled in vain); want nearly all", polled, n, slept)
	}
}

// Polling stops while answers take longer than the limit, and comes back
// once they are fast again.
func TestBusyPollBacksOff(t *testing.T) {
	needProcs(t)
	var delay atomic.Int64
	c := dial(t, echoServer(t, &delay))
	// A limit well above a fast answer's time even on a loaded machine,
	// well below a slow one's.
	c.SetBusyPoll(5 * time.Millisecond)
	delay.Store(int64(50 * time.Millisecond))
	for range 3 {
		mustEcho(t, c, "slow")
	}
	// The first call knew no better and polled for 5 ms in vain; its
	// 50 ms answer put the average over the limit.
	if polled, slept := rpc.PollCounts(c); polled != 0 || slept != 1 {
		t.Fatalf("slow answers: %d reads polled, %d slept after a poll; want 0 and 1", polled, slept)
	}
	delay.Store(0)
	for range 100 {
		mustEcho(t, c, "fast")
	}
	if polled, _ := rpc.PollCounts(c); polled == 0 {
		t.Fatal("fast answers again: no read polled")
	}
}

// A poll lasts twice the average answer time, at least a tenth of the
// limit: the first call's poll (10 ms) ends before its 30 ms answer, the
// later ones (about 60 ms, the average having risen) catch theirs.
func TestBusyPollWindowFollowsAnswers(t *testing.T) {
	needProcs(t)
	var delay atomic.Int64
	delay.Store(int64(30 * time.Millisecond))
	c := dial(t, echoServer(t, &delay))
	c.SetBusyPoll(100 * time.Millisecond)
	mustEcho(t, c, "first")
	if polled, slept := rpc.PollCounts(c); polled != 0 || slept != 1 {
		t.Fatalf("first call: %d reads polled, %d slept after a poll; want its 10 ms poll to miss the 30 ms answer", polled, slept)
	}
	for range 15 {
		mustEcho(t, c, "later")
	}
	if polled, _ := rpc.PollCounts(c); polled < 8 {
		t.Fatalf("%d of 15 later answers (30 ms) read while polling; want the polls to have grown to catch most", polled)
	}
}

// With one P a poll would only keep the server from running: none.
func TestBusyPollNeedsTwoProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var delay atomic.Int64
	c := dial(t, echoServer(t, &delay))
	c.SetBusyPoll(20 * time.Millisecond)
	for range 10 {
		mustEcho(t, c, "one P")
	}
	if polled, slept := rpc.PollCounts(c); polled != 0 || slept != 0 {
		t.Fatalf("GOMAXPROCS 1: %d reads polled, %d slept after a poll; want none", polled, slept)
	}
}

// A connection closed by the server ends a polling read at once, with
// ErrClosed, not at the end of the poll.
func TestBusyPollSeesClose(t *testing.T) {
	needProcs(t)
	path := rawServer(t, func(conn net.Conn) {
		readRequest(conn)
		time.Sleep(5 * time.Millisecond) // the call polls meanwhile
	})
	c := dial(t, path)
	c.SetBusyPoll(time.Second)
	start := time.Now()
	_, err := echo(context.Background(), c, "x")
	if !errors.Is(err, rpc.ErrClosed) {
		t.Fatalf("call on a connection the server closed: %v, want ErrClosed", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("the call failed after %v: the poll did not stop at the end of the connection", d)
	}
	if polled, slept := rpc.PollCounts(c); polled != 1 || slept != 0 {
		t.Fatalf("%d reads polled, %d slept after a poll; want the end of the connection read while polling", polled, slept)
	}
}

// Streams never poll; a negative limit is 0.
func TestBusyPollStreamsAndLimit(t *testing.T) {
	needProcs(t)
	path, _ := serve(t)
	c := dial(t, path)
	c.SetBusyPoll(20 * time.Millisecond)
	s, err := c.NewStream(context.Background(), &rpc.StreamDesc{StreamingServer: true}, svc, "Count", &types.Int32Value{Value: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := int32(1); i <= 3; i++ {
		var m types.Int32Value
		if err := s.RecvMsg(&m); err != nil || m.Value != i {
			t.Fatalf("message %d: %v, %v", i, m.Value, err)
		}
	}
	if err := s.RecvMsg(&types.Int32Value{}); err != io.EOF {
		t.Fatalf("after the last: %v", err)
	}
	if polled, slept := rpc.PollCounts(c); polled != 0 || slept != 0 {
		t.Fatalf("server stream: %d reads polled, %d slept after a poll; want none", polled, slept)
	}
	mustEcho(t, c, "unary")
	if polled, slept := rpc.PollCounts(c); polled+slept != 1 {
		t.Fatalf("a unary call after the stream: %d reads polled, %d slept after a poll; want one poll", polled, slept)
	}
	c.SetBusyPoll(-time.Second)
	if c.BusyPoll() != 0 {
		t.Fatalf("SetBusyPoll(-1s): BusyPoll() = %v, want 0", c.BusyPoll())
	}
}
