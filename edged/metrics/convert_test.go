package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/edged/errdefs"
)

func TestFromStats(t *testing.T) {
	at := time.Unix(1700000000, 5)
	s := &cgroups.Stats{Version: 2}
	s.Memory = cgroups.MemoryStats{Usage: 100, Limit: cgroups.Unlimited, High: 4096, SwapLimit: cgroups.Unlimited, Anon: 7,
		Events: cgroups.MemoryEvents{OOM: 2, OOMKill: 1}}
	s.Pids = cgroups.PidsStats{Current: 3, Limit: cgroups.Unlimited}
	s.IO = []cgroups.IOStats{{Major: 8, Minor: 0, ReadBytes: 10, WriteBytes: 20, ReadIOs: 1, WriteIOs: 2}}
	m := FromStats("c1", "unified", at, s, CPULimits{Quota: -1, Period: 100000, Weight: 100})
	if m.Id != "c1" || m.CgroupMode != "unified" || m.Timestamp.Seconds != 1700000000 || m.Timestamp.Nanos != 5 {
		t.Fatalf("header %+v", m)
	}
	if m.Memory.Limit != 0 || m.Memory.SwapLimit != 0 || m.Memory.High != 4096 || m.Memory.Usage != 100 || m.Memory.Stat["anon"] != 7 {
		t.Fatalf("memory %+v", m.Memory)
	}
	if m.Memory.EventsOom != 2 || m.Memory.EventsOomKill != 1 || m.Pids.Limit != 0 || m.Pids.Current != 3 {
		t.Fatalf("events/pids %+v %+v", m.Memory, m.Pids)
	}
	if m.Cpu.Quota != -1 || m.Cpu.Period != 100000 || m.Cpu.Weight != 100 {
		t.Fatalf("cpu %+v", m.Cpu)
	}
	if len(m.Io) != 1 || m.Io[0].Rbytes != 10 || m.Io[0].Wios != 2 {
		t.Fatalf("io %+v", m.Io)
	}
	if m.Psi.Present || m.Psi.Cpu != nil {
		t.Fatalf("psi without data: %+v", m.Psi)
	}
	s.PSI = cgroups.PSIStats{Available: true, Memory: cgroups.Pressure{Some: cgroups.PSIData{Avg10: 1.5, Total: 9}}}
	m = FromStats("c1", "unified", at, s, CPULimits{})
	if !m.Psi.Present || m.Psi.Memory.Some.Avg10 != 1.5 || m.Psi.Memory.Some.Total != 9 || m.Psi.Cpu == nil {
		t.Fatalf("psi %+v", m.Psi)
	}
}

func TestReaderErrors(t *testing.T) {
	r, err := New("")
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	if _, err := r.Metrics(t.Context(), "default", "x", 0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("pid 0: %v", err)
	}
	// A pid that does not exist (beyond pid_max).
	_, err = r.Metrics(t.Context(), "default", "x", 1<<30)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `task "x"`) {
		t.Fatalf("missing process: %v", err)
	}
}
