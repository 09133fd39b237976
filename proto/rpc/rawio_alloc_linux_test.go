//go:build !race

package rpc

import "testing"

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
