//go:build !race

package rpc_test

import (
	"context"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/internal/ttrpcwire"
	"github.com/edged/edged/proto/rpc"
)

// inUse returns the heap and stack memory in use after a collection.
func inUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// dialN opens n connections to path; with echo, each makes one call
// first (by hand: the test's own client would count).
func dialN(t *testing.T, path string, n int, echo bool) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	req := ttrpcwire.AppendRequest(nil, ssvc, "Echo", marshalMsg(&types.StringValue{Value: "x"}), 0, nil)
	frame := append(ttrpcwire.NewFrame(1, ttrpcwire.TypeRequest, 0, len(req)), req...)
	buf := make([]byte, 256)
	for range n {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if echo {
			if _, err := c.Write(frame); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(buf); err != nil {
				t.Fatal(err)
			}
		}
	}
	return conns
}

// TestServerIdleConnMemory measures what an idle connection costs the
// server (heap and goroutine stack), over what the sockets themselves
// cost (the same connections held by a bare accept loop), and keeps it
// under a bound. Run with -v to see the figures. Measured on linux/amd64
// (Go 1.26), bytes per connection: fresh 6860, after a call 7864 with a
// 4 KiB read buffer each; 2540 and 3720 with the buffer lent only while
// there are bytes to read (what is left is mostly the reader's stack: 2
// KiB, 4 KiB once it has dispatched a request).
func TestServerIdleConnMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	const n = 2000
	const bound = 5 << 10 // bytes per connection

	// The sockets alone: a listener whose accepted connections are kept.
	bare := func() uint64 {
		l, err := net.Listen("unix", filepath.Join(sockDir(t), "b.sock"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var mu sync.Mutex
		var held []net.Conn
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		}()
		before := inUse()
		conns := dialN(t, l.Addr().String(), n, false)
		for {
			mu.Lock()
			k := len(held)
			mu.Unlock()
			if k == n {
				break
			}
			time.Sleep(time.Millisecond)
		}
		used := inUse() - before
		for _, c := range conns {
			c.Close()
		}
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
		return used
	}()

	for _, echo := range []bool{false, true} {
		name := "fresh"
		if echo {
			name = "after a call"
		}
		ts := startServer(t, rpc.ServerConfig{})
		// Warm up: workers and the service's first call.
		dialN(t, ts.path, 10, true)
		before := inUse()
		conns := dialN(t, ts.path, n, echo)
		time.Sleep(100 * time.Millisecond) // every reader waits
		used := inUse() - before
		per := (int64(used) - int64(bare)) / n
		t.Logf("%s: %d idle connections: %d KiB in use, %d bytes each over the bare sockets (%d bytes each)", name, n, used>>10, per, bare/n)
		if per > bound {
			t.Errorf("%s: an idle connection costs the server %d bytes; want at most %d", name, per, bound)
		}
		for _, c := range conns {
			c.Close()
		}
		ts.srv.Shutdown(context.Background())
	}
}
