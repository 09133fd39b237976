package measure

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPUTimes are the host's aggregate CPU times from the "cpu" line of
// /proc/stat, in clock ticks.
type CPUTimes struct {
	Total, Steal uint64
	Idle         uint64 // idle plus iowait
}

// Busy is the time the CPUs ran something of this machine's: neither
// idle nor taken by the hypervisor.
func (t CPUTimes) Busy() uint64 { return t.Total - t.Idle - t.Steal }

// ReadCPUTimes reads the host's CPU times.
func ReadCPUTimes() (CPUTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return CPUTimes{}, err
	}
	defer f.Close()
	return parseCPUTimes(f)
}

func parseCPUTimes(r io.Reader) (CPUTimes, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 9 || fields[0] != "cpu" {
			continue
		}
		var t CPUTimes
		// user nice system idle iowait irq softirq steal [guest guest_nice,
		// which are already counted in user and nice].
		for i, s := range fields[1:9] {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return CPUTimes{}, fmt.Errorf("/proc/stat: cpu field %d %q: %w", i+1, s, err)
			}
			t.Total += v
			switch i {
			case 3, 4:
				t.Idle += v
			case 7:
				t.Steal = v
			}
		}
		return t, nil
	}
	if err := sc.Err(); err != nil {
		return CPUTimes{}, err
	}
	return CPUTimes{}, fmt.Errorf("/proc/stat: no cpu line")
}

// StealShare is the share (0 to 1) of the CPU time between a and b that
// the hypervisor gave to other guests: on a virtual machine whose host is
// busy, a latency or throughput figure measured meanwhile reads low by
// about that much or more. 0 when no time passed.
func StealShare(a, b CPUTimes) float64 {
	if b.Total <= a.Total || b.Steal < a.Steal {
		return 0
	}
	return float64(b.Steal-a.Steal) / float64(b.Total-a.Total)
}

// Settle waits until the machine is idle, the background work of what ran
// before done (an edged replacing a spare shim or network attachment, a
// CNI release): a window of settleWindow in which the CPUs ran at most one
// clock tick (10 ms) of anything, or until max passed (false then). A
// latency measured right after another run otherwise pays for that run's
// background work, whichever side of a ratio it is on.
func Settle(ctx context.Context, max time.Duration) bool {
	deadline := time.Now().Add(max)
	a, err := ReadCPUTimes()
	if err != nil {
		return false
	}
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(settleWindow):
		}
		b, err := ReadCPUTimes()
		if err != nil {
			return false
		}
		if b.Busy()-a.Busy() <= 1 {
			return true
		}
		a = b
	}
	return false
}

const settleWindow = 150 * time.Millisecond
