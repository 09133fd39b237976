package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/protoconv"
	ptypesapi "github.com/edged/edged/proto/types"
)

// cpuSampleGap is how far apart --no-stream takes its two samples for CPU %.
const cpuSampleGap = 250 * time.Millisecond

// statsTimingEnv, when set to 1, makes `edgectl stats` print the duration of
// each refresh (one Tasks.Metrics call plus rendering and writing the table)
// to stderr. It is for benchmarks (hack/bench, section cgroups) and is not
// in the help.
const statsTimingEnv = "EDGECTL_STATS_TIMING"

// refreshTimer reports refresh durations to stderr when statsTimingEnv is
// set; otherwise it does nothing.
type refreshTimer struct {
	w     io.Writer
	start time.Time
	fetch time.Duration
}

func newRefreshTimer(e *env) *refreshTimer {
	if os.Getenv(statsTimingEnv) != "1" {
		return nil
	}
	return &refreshTimer{w: e.stderr}
}

// begin marks the start of a refresh.
func (t *refreshTimer) begin() {
	if t != nil {
		t.start = time.Now()
	}
}

// fetched marks the end of the Metrics call.
func (t *refreshTimer) fetched() {
	if t != nil {
		t.fetch = time.Since(t.start)
	}
}

// end prints the refresh's timing line.
func (t *refreshTimer) end(n int) {
	if t != nil {
		total := time.Since(t.start)
		fmt.Fprintf(t.w, "edgectl: stats refresh: %d containers, metrics %dus, render+write %dus, total %dus\n",
			n, t.fetch.Microseconds(), (total - t.fetch).Microseconds(), total.Microseconds())
	}
}

func idFilters(ids []string) []string {
	if len(ids) > maxIDFilters {
		return nil // all of them, narrowed by keepIDs
	}
	f := make([]string, len(ids))
	for i, id := range ids {
		f[i] = "id==" + id
	}
	return f
}

// maxIDFilters is edged/filters.MaxFilters, the most filters one request
// may carry (a test checks they agree; edgectl does not link the filter
// package): past it, stats asks for every task's metrics and keeps those of
// the IDs asked for itself.
const maxIDFilters = 32

// keepIDs narrows ms to the tasks in ids when idFilters could not.
func keepIDs(ms []*ptypesapi.Metrics, ids []string) []*ptypesapi.Metrics {
	if len(ids) <= maxIDFilters {
		return ms
	}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	out := ms[:0]
	for _, m := range ms {
		if want[m.Id] {
			out = append(out, m)
		}
	}
	return out
}

// statsCommand is `edgectl stats`: a refreshing table of the running
// containers' resource use.
func statsCommand() *command {
	return &command{
		name: "stats", usage: "[--no-stream] [--interval D] [ID...]",
		help: "live resource use of running containers (CPU, memory, pids, I/O, PSI)",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			noStream := fs.Bool("no-stream", false, "print once and exit")
			interval := fs.Duration("interval", time.Second, "refresh interval")
			return func(e *env, args []string) error {
				if *interval < 10*time.Millisecond {
					return fmt.Errorf("--interval %v: must be at least 10ms: %w", *interval, errUsage)
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				filters := idFilters(args)
				timer := newRefreshTimer(e)
				sample := func() ([]*ptypesapi.Metrics, error) {
					timer.begin()
					defer timer.fetched()
					ms, err := c.Metrics(e.ctx, filters...)
					return keepIDs(ms, args), err
				}
				if e.format == "json" {
					// Raw counters: fleet agents compute rates themselves.
					for {
						ms, err := sample()
						if err != nil {
							return err
						}
						write := writeJSONLine[*ptypesapi.Metrics] // a sample per line
						if *noStream {
							write = writeJSON[*ptypesapi.Metrics]
						}
						if err := write(e.stdout, ms, true); err != nil {
							return err
						}
						timer.end(len(ms))
						if *noStream || !sleepCtx(e, *interval) {
							return nil
						}
					}
				}
				prev, err := sample()
				if err != nil {
					return err
				}
				if *noStream {
					if !sleepCtx(e, cpuSampleGap) {
						return nil
					}
					cur, err := sample()
					if err != nil {
						return err
					}
					_, err = e.stdout.Write(renderStats(prev, cur))
					return err
				}
				clear := false
				if f, ok := e.stdout.(*os.File); ok && isTerminal(f) {
					clear = true
				}
				cur := prev
				prev = nil
				for {
					var buf bytes.Buffer
					if clear {
						buf.WriteString("\x1b[H\x1b[2J")
					}
					buf.Write(renderStats(prev, cur))
					if !clear {
						buf.WriteString("\n")
					}
					if _, err := e.stdout.Write(buf.Bytes()); err != nil {
						return err
					}
					timer.end(len(cur))
					if !sleepCtx(e, *interval) {
						return nil
					}
					next, err := sample()
					if err != nil {
						return err
					}
					prev, cur = cur, next
				}
			}
		},
	}
}

// sleepCtx sleeps for d; false when the command was interrupted.
func sleepCtx(e *env, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.ctx.Done():
		return false
	}
}

// renderStats formats cur as a table; CPU % comes from the usage since prev
// ("-" for containers without an earlier sample).
func renderStats(prev, cur []*ptypesapi.Metrics) []byte {
	before := make(map[string]*ptypesapi.Metrics, len(prev))
	for _, m := range prev {
		before[m.Id] = m
	}
	var buf bytes.Buffer
	tw := newTable(&buf, "ID", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS", "BLOCK I/O", "PSI SOME10 CPU/MEM/IO")
	for _, m := range cur {
		mem, cpu, pids := m.GetMemory(), m.GetCpu(), m.GetPids()
		limit := "-"
		memPct := "-"
		if mem.GetLimit() > 0 {
			limit = humanBytes(mem.GetLimit())
			memPct = fmt.Sprintf("%.1f%%", 100*float64(mem.GetUsage())/float64(mem.GetLimit()))
		}
		cpuPct := "-"
		if p := before[m.Id]; p != nil {
			dt := protoconv.Time(m.Timestamp).Sub(protoconv.Time(p.Timestamp))
			if dt > 0 && cpu.GetUsageUsec() >= p.GetCpu().GetUsageUsec() {
				used := float64(cpu.GetUsageUsec()-p.GetCpu().GetUsageUsec()) * float64(time.Microsecond)
				cpuPct = fmt.Sprintf("%.1f%%", 100*used/float64(dt))
			}
		}
		var rb, wb uint64
		for _, d := range m.Io {
			rb += d.Rbytes
			wb += d.Wbytes
		}
		psi := "-"
		if ps := m.GetPsi(); ps.GetPresent() {
			psi = fmt.Sprintf("%.2f/%.2f/%.2f", ps.GetCpu().GetSome().GetAvg10(), ps.GetMemory().GetSome().GetAvg10(), ps.GetIo().GetSome().GetAvg10())
		}
		pidStr := fmt.Sprint(pids.GetCurrent())
		if pids.GetLimit() > 0 {
			pidStr += fmt.Sprintf(" / %d", pids.GetLimit())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s / %s\t%s\t%s\t%s / %s\t%s\n", m.Id, cpuPct, humanBytes(mem.GetUsage()), limit, memPct,
			pidStr, humanBytes(rb), humanBytes(wb), psi)
	}
	tw.Flush()
	return buf.Bytes()
}

// humanBytes formats n with a binary unit: 512B, 1.5KiB, 64MiB.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	s := fmt.Sprintf("%.1f", v)
	if v >= 100 || v == math.Trunc(v) {
		s = fmt.Sprintf("%.0f", v)
	}
	return s + [...]string{"KiB", "MiB", "GiB", "TiB", "PiB"}[i]
}

// taskMetricsCommand is `edgectl task metrics ID`.
func taskMetricsCommand() *command {
	return &command{
		name: "metrics", usage: "ID", help: "show a running task's cgroup statistics",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			return func(e *env, args []string) error {
				if len(args) != 1 {
					return fmt.Errorf("metrics needs exactly one ID: %w", errUsage)
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				ms, err := c.Metrics(e.ctx, idFilters(args)...)
				if err != nil {
					return err
				}
				if len(ms) == 0 {
					return fmt.Errorf("task %q in namespace %q is not running: %w", args[0], e.namespace, errdefs.ErrNotFound)
				}
				if e.format == "json" {
					return writeJSON(e.stdout, ms[:1], false)
				}
				return writeMetrics(e.stdout, ms[0])
			}
		},
	}
}

// writeMetrics prints one task's statistics as "key value" lines.
func writeMetrics(w io.Writer, m *ptypesapi.Metrics) error {
	var buf bytes.Buffer
	tw := newTable(&buf, "METRIC", "VALUE")
	limit := func(v uint64) string {
		if v == 0 {
			return "max"
		}
		return fmt.Sprint(v)
	}
	mem, cpu, pids := m.GetMemory(), m.GetCpu(), m.GetPids()
	rows := []struct {
		k string
		v any
	}{
		{"id", m.Id}, {"cgroup_mode", m.CgroupMode}, {"timestamp", formatTime(m.Timestamp)},
		{"memory.usage", mem.GetUsage()}, {"memory.peak", mem.GetPeak()}, {"memory.limit", limit(mem.GetLimit())},
		{"memory.high", limit(mem.GetHigh())}, {"memory.swap_usage", mem.GetSwapUsage()}, {"memory.swap_limit", limit(mem.GetSwapLimit())},
		{"memory.anon", mem.GetAnon()}, {"memory.file", mem.GetFile()}, {"memory.kernel", mem.GetKernel()},
		{"memory.events.max", mem.GetEventsMax()}, {"memory.events.oom", mem.GetEventsOom()}, {"memory.events.oom_kill", mem.GetEventsOomKill()},
		{"cpu.usage_usec", cpu.GetUsageUsec()}, {"cpu.user_usec", cpu.GetUserUsec()}, {"cpu.system_usec", cpu.GetSystemUsec()},
		{"cpu.nr_throttled", cpu.GetNrThrottled()}, {"cpu.throttled_usec", cpu.GetThrottledUsec()},
		{"cpu.quota", cpu.GetQuota()}, {"cpu.period", cpu.GetPeriod()}, {"cpu.weight", cpu.GetWeight()},
		{"pids.current", pids.GetCurrent()}, {"pids.limit", limit(pids.GetLimit())},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%v\n", r.k, r.v)
	}
	for _, d := range m.Io {
		fmt.Fprintf(tw, "io.%d:%d\trbytes=%d wbytes=%d rios=%d wios=%d\n", d.Major, d.Minor, d.Rbytes, d.Wbytes, d.Rios, d.Wios)
	}
	if ps := m.GetPsi(); ps.GetPresent() {
		for _, p := range []struct {
			n string
			s *ptypesapi.PSIStat
		}{{"cpu", ps.Cpu}, {"memory", ps.Memory}, {"io", ps.Io}} {
			fmt.Fprintf(tw, "psi.%s.some\tavg10=%.2f avg60=%.2f avg300=%.2f total=%d\n", p.n, p.s.GetSome().GetAvg10(), p.s.GetSome().GetAvg60(), p.s.GetSome().GetAvg300(), p.s.GetSome().GetTotal())
			fmt.Fprintf(tw, "psi.%s.full\tavg10=%.2f avg60=%.2f avg300=%.2f total=%d\n", p.n, p.s.GetFull().GetAvg10(), p.s.GetFull().GetAvg60(), p.s.GetFull().GetAvg300(), p.s.GetFull().GetTotal())
		}
	} else {
		fmt.Fprintf(tw, "psi\tnot available\n")
	}
	tw.Flush()
	_, err := w.Write(buf.Bytes())
	return err
}

// updateCommand is `edgectl update`: change a running container's limits.
func updateCommand() *command {
	return &command{
		name: "update", usage: "[--memory SIZE] [--memory-swap SIZE] [--cpus N] [--cpu-shares N] [--pids-limit N] ID...",
		help: "change the resource limits of running containers",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			memory := fs.String("memory", "", "memory limit, e.g. 64m, 1g (-1: unlimited)")
			swap := fs.String("memory-swap", "", "memory+swap limit (-1: unlimited)")
			cpus := fs.Float64("cpus", 0, "CPU limit, e.g. 0.5 (CFS quota per 100ms period)")
			shares := fs.Uint64("cpu-shares", 0, "relative CPU weight (2-262144)")
			pids := fs.Int64("pids-limit", 0, "maximum number of processes (-1: unlimited)")
			return func(e *env, args []string) error {
				if len(args) == 0 {
					return fmt.Errorf("update needs at least one ID: %w", errUsage)
				}
				res, err := updateResources(*memory, *swap, *cpus, *shares, *pids)
				if err != nil {
					return err
				}
				done := names{e: e}
				return done.flush(e.eachArg(args, "update needs at least one ID", func(c *client.Client, id string) error {
					if err := c.UpdateResources(e.ctx, id, res); err != nil {
						return err
					}
					done.add(id)
					return nil
				}))
			}
		},
	}
}

// updateResources builds the LinuxResources of an update from the flags.
func updateResources(memory, swap string, cpus float64, shares uint64, pids int64) (*specs.LinuxResources, error) {
	res := &specs.LinuxResources{}
	set := false
	if memory != "" || swap != "" {
		res.Memory = &specs.LinuxMemory{}
		if memory != "" {
			n, err := parseSize(memory)
			if err != nil {
				return nil, err
			}
			if n == 0 || (n > 0 && n < 4<<20) {
				return nil, fmt.Errorf("--memory %s: must be -1 or at least 4m: %w", memory, errUsage)
			}
			res.Memory.Limit = &n
		}
		if swap != "" {
			n, err := parseSize(swap)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				return nil, fmt.Errorf("--memory-swap %s: must be -1 or positive: %w", swap, errUsage)
			}
			res.Memory.Swap = &n
		}
		if l, sw := res.Memory.Limit, res.Memory.Swap; l != nil && sw != nil && *sw != -1 && (*l == -1 || *sw < *l) {
			return nil, fmt.Errorf("--memory-swap %s is below --memory %s (it limits memory plus swap): %w", swap, memory, errUsage)
		}
		set = true
	}
	if cpus != 0 || shares != 0 {
		res.CPU = &specs.LinuxCPU{}
		if cpus != 0 {
			if math.IsNaN(cpus) || cpus < 0.01 || cpus > 1024 {
				return nil, fmt.Errorf("--cpus %v: must be 0.01 to 1024: %w", cpus, errUsage)
			}
			quota, period := int64(math.Round(cpus*100000)), uint64(100000)
			res.CPU.Quota, res.CPU.Period = &quota, &period
		}
		if shares != 0 {
			if shares < 2 || shares > 262144 {
				return nil, fmt.Errorf("--cpu-shares %d: must be 2 to 262144: %w", shares, errUsage)
			}
			res.CPU.Shares = &shares
		}
		set = true
	}
	if pids != 0 {
		if pids < -1 {
			return nil, fmt.Errorf("--pids-limit %d: must be -1 or positive: %w", pids, errUsage)
		}
		res.Pids = &specs.LinuxPids{Limit: &pids}
		set = true
	}
	if !set {
		return nil, fmt.Errorf("nothing to update: give --memory, --memory-swap, --cpus, --cpu-shares or --pids-limit: %w", errUsage)
	}
	return res, nil
}
