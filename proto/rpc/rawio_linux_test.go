package rpc

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// unixPair returns both ends of a connection on a unix socket.
func unixPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// A unix socket is read and written raw; a connection without a socket
// (net.Pipe) through its own methods.
func TestReadWriterChoice(t *testing.T) {
	c, _ := unixPair(t)
	if _, ok := readWriter(c).(*rawIO); !ok {
		t.Fatalf("readWriter of a unix socket is %T, want *rawIO", readWriter(c))
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if rw := readWriter(p1); rw != io.ReadWriter(p1) {
		t.Fatalf("readWriter of net.Pipe is %T, want the conn itself", rw)
	}
}

// rawIO behaves as net.Conn's Read and Write do: all of a write larger
// than the socket's buffer arrives (the writer waits in the poller for
// room), the peer's close reads as io.EOF, a read deadline interrupts a
// read with os.ErrDeadlineExceeded and a closed connection fails with
// net.ErrClosed, a write to a closed peer fails with EPIPE (and does not
// kill the process with SIGPIPE).
func TestRawIO(t *testing.T) {
	c, s := unixPair(t)
	rc, rs := readWriter(c), readWriter(s)

	// 4 MiB: many times the socket buffer.
	big := bytes.Repeat([]byte("0123456789abcdef"), 256<<10)
	done := make(chan error, 1)
	go func() {
		n, err := rc.Write(big)
		if err == nil && n != len(big) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(rs, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("the bytes read differ from those written")
	}
	if n, err := rs.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}

	// A read deadline interrupts a read waiting for data.
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := rs.Read(got[:10])
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the deadline interrupted the read after %v", d)
	}
	s.SetReadDeadline(time.Time{})

	// The peer's close is the end of the stream.
	if _, err := rc.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n, err := io.ReadFull(rs, got[:4]); err != nil || string(got[:n]) != "last" {
		t.Fatalf("read after the peer's close: %q, %v", got[:n], err)
	}
	if _, err := rs.Read(got); err != io.EOF {
		t.Fatalf("read at the end: %v, want io.EOF", err)
	}
	// Writing to the closed peer: EPIPE (or ECONNRESET), not a signal.
	var werr error
	for i := 0; i < 10 && werr == nil; i++ {
		_, werr = rs.Write([]byte("x"))
	}
	if !errors.Is(werr, syscall.EPIPE) && !errors.Is(werr, syscall.ECONNRESET) {
		t.Fatalf("write to the closed peer: %v, want EPIPE", werr)
	}
	// A closed connection.
	s.Close()
	if _, err := rs.Read(got); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read of a closed connection: %v, want net.ErrClosed", err)
	}
	if _, err := rs.Write(got[:1]); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write to a closed connection: %v, want net.ErrClosed", err)
	}
}
