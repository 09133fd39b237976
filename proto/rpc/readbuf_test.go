package rpc_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/proto/rpc"
)

// plainListener hands out its connections without their sockets (no
// syscall.Conn, no *net.UnixConn), as a TLS or an in-memory connection
// would be: the server then reads through one buffer of its own, and
// Shutdown closes idle connections instead of shutting their reading down.
type plainListener struct{ net.Listener }

type plainConn struct{ net.Conn }

func (l plainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return plainConn{c}, nil
}

func TestServerPlainConn(t *testing.T) {
	srv := rpc.NewServer(rpc.ServerConfig{})
	srv.RegisterService(ssvc, serverService(newSrvState()))
	path := filepath.Join(sockDir(t), "p.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), plainListener{l}) }()
	t.Cleanup(func() { srv.Close() })
	forClients(t, path, func(t *testing.T, c testClient) {
		// Small, and larger than the read buffer (read straight into
		// the payload).
		for _, n := range []int{1, 4095, 4096, 70000, 1 << 20} {
			v := strings.Repeat("p", n)
			var resp types.StringValue
			if err := c.c.Call(tctx(t), ssvc, "Echo", &types.StringValue{Value: v}, &resp); err != nil || resp.Value != v {
				t.Fatalf("Echo of %d bytes: %d bytes back, %v", n, len(resp.Value), err)
			}
		}
	})
	c := newClient(t, "rpc.Conn", path)
	wantEcho(t, c.c, "idle")
	if err := srv.Shutdown(tctx(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	waitFor(t, "the idle connection to close", c.done)
	if err := waitFor(t, "Serve", served); err != rpc.ErrServerClosed {
		t.Errorf("Serve: %v", err)
	}
}
