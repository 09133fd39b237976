package shimd

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var sink []byte

// trimHeap collects only when the garbage is worth the collection.
func TestTrimHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no collections but ours
	runtime.GC()
	before := gcCycles()
	for i := 0; i < 64; i++ { // 64 KiB of garbage: not worth it
		sink = make([]byte, 1<<10)
	}
	trimHeap()
	if n := gcCycles() - before; n != 0 {
		t.Fatalf("trimHeap collected %d times for 64 KiB of garbage", n)
	}
	for i := 0; i < 1024; i++ { // 1 MiB of garbage
		sink = make([]byte, 1<<10)
	}
	trimHeap()
	if n := gcCycles() - before; n != 1 {
		t.Fatalf("trimHeap collected %d times for 1 MiB of garbage, want 1", n)
	}
}
