package shimd

import (
	"runtime/debug"
	"runtime/metrics"
)

// trimMinGarbage is how much garbage the heap must hold before trimHeap
// collects it. A shim's first garbage collection makes the Go runtime set
// aside bookkeeping it never returns (a span-set block for every size class
// in use, about 0.3 MiB in a shim), more than the garbage of starting a
// container (about 0.15 MiB); the collection that the heap goal triggers
// still bounds the heap when no trim runs.
const trimMinGarbage = 512 << 10

// trimHeap reads the heap with runtime/metrics, not runtime.ReadMemStats:
// ReadMemStats flushes every mcache like a collection does, which costs a
// shim the same span-set bookkeeping (measured: +0.39 MiB USS per shim).
//
// trimHeap returns the garbage of a burst of lifecycle calls to the OS once
// there is enough of it (see trimMinGarbage).
func trimHeap() {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"}, // live and garbage
		{Name: "/gc/heap/live:bytes"},                // live at the last GC (0 before it)
	}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		debug.FreeOSMemory() // metric unknown to this runtime: trim as before
		return
	}
	if objects, live := s[0].Value.Uint64(), s[1].Value.Uint64(); objects < live+trimMinGarbage {
		return
	}
	debug.FreeOSMemory()
}
