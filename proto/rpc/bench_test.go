package rpc_test

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/proto/rpc"
)

// benchServer serves serverService on a unix socket for a benchmark and
// returns a client connected to it.
func benchServer(b *testing.B) *rpc.Conn {
	b.Helper()
	srv := rpc.NewServer(rpc.ServerConfig{})
	srv.RegisterService(ssvc, serverService(newSrvState()))
	path := filepath.Join(b.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	b.Cleanup(func() { srv.Close() })
	nc, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	c := rpc.NewConn(nc)
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkServerEcho is one small unary call, client and server in the
// process: the per-RPC cost of the frame reading and writing paths.
func BenchmarkServerEcho(b *testing.B) {
	for _, size := range []int{16, 64 << 10} {
		b.Run(sizeName(size), func(b *testing.B) {
			c := benchServer(b)
			ctx := context.Background()
			req := &types.StringValue{Value: strings.Repeat("x", size)}
			var resp types.StringValue
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Call(ctx, ssvc, "Echo", req, &resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func sizeName(n int) string {
	if n >= 1<<10 {
		return "size=" + strconv.Itoa(n>>10) + "KiB"
	}
	return "size=" + strconv.Itoa(n) + "B"
}
