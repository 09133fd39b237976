//go:build !race

package rpc

import (
	"sync"
	"testing"
)

// A raw write and read allocate nothing: they run on every RPC, both
// sides (net.Conn's Read and Write allocate nothing either).
func TestRawIONoAllocs(t *testing.T) {
	c, s := unixPair(t)
	rc, rs := readWriter(c), readWriter(s)
	buf := make([]byte, 64)
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := rc.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.Read(buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per raw write and read, want 0", n)
	}
}

// A pooled read allocates nothing either once the pool has a buffer: the
// server's reader takes and gives back its buffer around every wait.
func TestRawIOReadPooledNoAllocs(t *testing.T) {
	c, s := unixPair(t)
	rc, rs := readWriter(c), readWriter(s).(pooledReader)
	pool := sync.Pool{New: func() any { return new(readBuf) }}
	var buf *readBuf
	msg := make([]byte, 64)
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := rc.Write(msg); err != nil {
			t.Fatal(err)
		}
		if n, err := rs.readPooled(&buf, &pool); err != nil || n != len(msg) {
			t.Fatal(n, err)
		}
		pool.Put(buf)
		buf = nil
	}); n != 0 {
		t.Fatalf("%v allocations per pooled read, want 0", n)
	}
}
