package measure

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and a parenthesis, as proc(5) allows.
	line := "4242 (a b) c) S 1 4242 4242 0 -1 4194560 811 0 7 0 123 45 0 0 20 0 7 0 100 1000 200\n"
	fields, err := parseStat(4242, []byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if got := fields[majfltField-3]; got != "7" {
		t.Errorf("majflt field %q, want 7", got)
	}
	if u, s := fields[utimeField-3], fields[stimeField-3]; u != "123" || s != "45" {
		t.Errorf("utime, stime %q, %q, want 123, 45", u, s)
	}
	for _, bad := range []string{"4242 no parenthesis", "4242 (x) S 1 2"} {
		if _, err := parseStat(4242, []byte(bad)); err == nil || err.Error() != "/proc/4242/stat: malformed" {
			t.Errorf("parseStat(%q): %v, want /proc/4242/stat: malformed", bad, err)
		}
	}
}

// ProcessCPU and SelfCPU count the CPU time this process burns.
func TestProcessCPU(t *testing.T) {
	p0, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	s0, err := SelfCPU()
	if err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); time.Since(start) < 100*time.Millisecond; {
	}
	p1, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	s1, err := SelfCPU()
	if err != nil {
		t.Fatal(err)
	}
	// 100 ms of spinning; USER_HZ ticks are 10 ms, and a busy host may
	// take some of the time away.
	if d := p1 - p0; d < 30*time.Millisecond || d > 2*time.Second {
		t.Errorf("ProcessCPU grew by %v over 100 ms of spinning", d)
	}
	if d := s1 - s0; d < 30*time.Millisecond || d > 2*time.Second {
		t.Errorf("SelfCPU grew by %v over 100 ms of spinning", d)
	}
	if _, err := ProcessCPU(1 << 30); err == nil {
		t.Error("ProcessCPU of a pid that does not exist: no error")
	}
}
