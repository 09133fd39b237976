package cgroups

import "testing"

// BenchmarkStat reads the full Stats of a cgroup with a process in it.
func BenchmarkStat(b *testing.B) {
	mode := hostMode(b)
	m := newCgroup(b, mode, "bench")
	var s Stats
	if err := m.Stat(&s); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := m.Stat(&s); err != nil {
			b.Fatal(err)
		}
	}
}
