package measure

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestParseCPUTimes(t *testing.T) {
	const stat = "cpu  100 0 50 800 20 0 10 20 5 0\ncpu0 50 0 25 400 10 0 5 10 0 0\nintr 1\n"
	got, err := parseCPUTimes(strings.NewReader(stat))
	if err != nil {
		t.Fatal(err)
	}
	// guest time (5) is already in user: not counted twice.
	if want := (CPUTimes{Total: 1000, Steal: 20, Idle: 820}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if got.Busy() != 160 {
		t.Fatalf("busy %d, want 160 (user, system, softirq)", got.Busy())
	}
	for _, bad := range []string{"cpu0 1 2 3 4 5 6 7 8\n", "cpu 1 2 3 x 5 6 7 8\n", "cpu 1 2 3\n", ""} {
		if _, err := parseCPUTimes(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := parseCPUTimes(strings.NewReader("cpu 1 2 3 x 5 6 7 8\n")); err == nil || !strings.Contains(err.Error(), `cpu field 4 "x"`) {
		t.Errorf("malformed field: error %v does not name it", err)
	}
}

func TestStealShare(t *testing.T) {
	a := CPUTimes{Total: 1000, Steal: 20}
	if got := StealShare(a, CPUTimes{Total: 1200, Steal: 70}); got != 0.25 {
		t.Errorf("share = %v, want 0.25", got)
	}
	if got := StealShare(a, a); got != 0 {
		t.Errorf("no time passed: share = %v, want 0", got)
	}
}

func TestReadCPUTimes(t *testing.T) {
	c, err := ReadCPUTimes()
	if err != nil {
		t.Fatal(err)
	}
	if c.Total == 0 || c.Steal > c.Total {
		t.Fatalf("implausible %+v", c)
	}
}

// Settle does not call a machine idle while this process keeps a CPU
// busy, and gives up at max. (The idle case depends on what else runs:
// not asserted here.)
func TestSettleBusy(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	start := time.Now()
	ok := Settle(context.Background(), 300*time.Millisecond)
	close(stop)
	<-done
	if ok {
		t.Fatal("settled while a CPU was busy")
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 2*time.Second {
		t.Fatalf("gave up after %v, want about 300ms", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Settle(ctx, time.Second) {
		t.Fatal("settled with its context done")
	}
}
