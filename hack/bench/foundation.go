package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/hack/bench/measure"
)

// Budgets of the foundation issue.
const (
	budgetIdleRSSMiB     = 8
	budgetVersionMs      = 5
	budgetEdgedMiB       = 16
	budgetEdgectlMiB     = 8
	budgetCreateDelete   = 2000 // per second
	budgetRSSAfterMiB    = 12
	budgetWriteKiBPerOp  = 16
	containerdWriteKiBOp = 507 // containerd 1.6 bolt, one `ctr run --rm`, measured for the issue
)

// foundation measures the budgets of the foundation issue.
func foundation(ctx context.Context, e *Env) ([]Row, error) {
	for _, b := range []string{"edged", "edgectl"} {
		if _, err := os.Stat(e.Bin(b)); err != nil {
			return nil, fmt.Errorf("%v: run `make build` first or pass -bin", err)
		}
	}
	var rows []Row
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		var load float64
		if _, err := fmt.Sscan(string(data), &load); err == nil {
			rows = append(rows, info("host load average (1 min) at start", load, "").
				with("", fmt.Sprintf("%d CPUs; latency and throughput figures are only meaningful on an otherwise idle host", runtime.NumCPU())))
		}
	}
	ref := e.measureContainerd(ctx)
	if ref.Err != nil {
		rows = append(rows, skipped("containerd comparison", ref.Err.Error()))
	}
	rows = append(rows, binarySizes(e, ref)...)

	idle, err := idleAndLatency(ctx, e, ref)
	rows = append(rows, idle...)
	if err != nil {
		return rows, err
	}
	if e.Containers == 0 {
		return append(rows, skipped("container create+delete", "-containers 0")), nil
	}
	tp, err := throughput(ctx, e)
	rows = append(rows, tp...)
	return rows, err
}

func binarySizes(e *Env, ref *containerdRef) []Row {
	var rows []Row
	for _, b := range []struct {
		name   string
		limit  float64
		cmp    string
		exists bool
	}{
		{"edged", budgetEdgedMiB, cmp("containerd", ref.DaemonSize > 0, "%.1f MiB", measure.MiB(ref.DaemonSize>>10)), true},
		{"edgectl", budgetEdgectlMiB, cmp("ctr", ref.CtrSize > 0, "%.1f MiB", measure.MiB(ref.CtrSize>>10)), true},
		{"edged-shim", 0, cmp("shim-runc-v2", ref.ShimSize > 0, "%.1f MiB", measure.MiB(ref.ShimSize>>10)), false},
		// The registry client, run by edged for each pull or push.
		{"edged-remote", 0, "", false},
	} {
		name := b.name + " binary size"
		bi, err := measure.InspectBinary(e.Bin(b.name))
		if err != nil {
			if !b.exists && os.IsNotExist(err) {
				rows = append(rows, skipped(name, "not built yet"))
				continue
			}
			rows = append(rows, failed(name, err))
			continue
		}
		v := float64(bi.Size) / (1 << 20)
		var r Row
		if b.limit > 0 {
			r = budget(name, v, "MiB", "<=", b.limit)
		} else {
			r = info(name, v, "MiB")
		}
		note := ""
		if !bi.Static || !bi.Stripped {
			note = bi.Linkage() + " (the budget is for static stripped builds: make build)"
			if r.Status == Pass {
				r.Status, r.OK = Fail, false
			}
		}
		rows = append(rows, r.with(b.cmp, note))
	}
	return rows
}

// idleAndLatency starts edged, makes e.Calls API calls, lets it idle,
// measures its memory, then times `edgectl version`.
func idleAndLatency(ctx context.Context, e *Env, ref *containerdRef) ([]Row, error) {
	dir, err := e.Dir("edged-idle")
	if err != nil {
		return nil, err
	}
	e.Progress("edged: start, %d API calls, idle %s", e.Calls, e.Idle)
	d, err := measure.StartEdged(ctx, e.Bin("edged"), dir, e.EdgedEnv)
	if err != nil {
		return nil, err
	}
	defer d.Stop()
	time.Sleep(e.Idle)
	atStart, err := measure.ReadMemory(d.PID())
	if err != nil {
		return nil, err
	}
	spec, err := measure.BenchSpec()
	if err != nil {
		return nil, err
	}
	c, err := client.New(ctx, d.Socket)
	if err != nil {
		return nil, err
	}
	err = measure.APICalls(ctx, c, e.Calls, spec, "")
	c.Close()
	if err != nil {
		return nil, err
	}
	time.Sleep(e.Idle)
	m, err := measure.ReadMemory(d.PID())
	if err != nil {
		return nil, err
	}
	hasRef := ref.IdleRSS > 0
	rows := []Row{
		info("edged RSS right after start (+idle)", measure.MiB(atStart.RSS), "MiB").
			with(cmp("containerd", hasRef, "%.1f MiB", measure.MiB(ref.IdleRSS)), ""),
		budget(fmt.Sprintf("edged idle RSS after %d API calls", e.Calls/10*10), measure.MiB(m.RSS), "MiB", "<=", budgetIdleRSSMiB).
			with(cmp("containerd idle", hasRef, "%.1f MiB", measure.MiB(ref.IdleRSS)),
				fmt.Sprintf("VmRSS from smaps_rollup after %s idle; anon %.2f MiB + file-backed %.2f MiB; %d threads",
					e.Idle, measure.MiB(m.PSSAnon), measure.MiB(m.PSSFile), m.Threads)),
		info("  PSS", measure.MiB(m.PSS), "MiB").with(cmp("containerd", ref.IdlePSS > 0, "%.1f MiB", measure.MiB(ref.IdlePSS)), ""),
		info("  anonymous (Pss_Anon)", measure.MiB(m.PSSAnon), "MiB").
			with(cmp("containerd", hasRef, "%.1f MiB", measure.MiB(ref.IdleAnon)), ""),
		info("  file-backed (Pss_File)", measure.MiB(m.PSSFile), "MiB").
			with(cmp("containerd", hasRef, "%.1f MiB", measure.MiB(ref.IdleFile)), ""),
		info("  peak RSS (VmHWM)", measure.MiB(m.HWM), "MiB"),
	}

	// What the idle release ([memory] idle_release, page_out_code) costs:
	// the first calls after it read the code they run back in, page by page.
	cold, faults, err := listCalls(ctx, d)
	if err != nil {
		return rows, err
	}
	warm, _, err := listCalls(ctx, d)
	if err != nil {
		return rows, err
	}
	rows = append(rows,
		info("  first calls after the idle release", measure.Ms(cold), "ms").
			with("", fmt.Sprintf("connect, Version, ListNamespaces, ListContainers: %d page faults read from disk (%.2f ms when repeated at once)", faults, measure.Ms(warm))))

	if e.Runs == 0 {
		return append(rows, skipped("edgectl version round trip", "-runs 0")), d.Alive()
	}
	e.Progress("edgectl version x%d", e.Runs)
	runs, err := measure.RoundTrips(ctx, e.Runs, "Server:", e.Bin("edgectl"), "--address", d.Socket, "version")
	if err != nil {
		return rows, err
	}
	hasCtr := ref.CtrMedian > 0
	rows = append(rows,
		budget("edgectl version round trip, median", measure.Ms(measure.Percentile(runs, 50)), "ms", "<=", budgetVersionMs).
			with(cmp("ctr version", hasCtr, "%.2f ms", measure.Ms(ref.CtrMedian)),
				fmt.Sprintf("%d runs of the whole process (fork, exec, connect, call, exit)", len(runs))),
		info("edgectl version round trip, p90", measure.Ms(measure.Percentile(runs, 90)), "ms").
			with(cmp("ctr version", hasCtr, "%.2f ms", measure.Ms(ref.CtrP90)), ""),
	)

	// The same call without the process: what the RPC itself costs.
	c, err = client.New(ctx, d.Socket)
	if err != nil {
		return rows, err
	}
	defer c.Close()
	calls := make([]time.Duration, 0, 1000)
	for range 1000 {
		start := time.Now()
		if _, err := c.Version(ctx); err != nil {
			return rows, err
		}
		calls = append(calls, time.Since(start))
	}
	rows = append(rows, info("Version call over an open connection, median", float64(measure.Percentile(calls, 50))/1e3, "µs"))
	return rows, d.Alive()
}

// listCalls times a new connection's Version, ListNamespaces and
// ListContainers calls and counts the major page faults edged took meanwhile.
func listCalls(ctx context.Context, d *measure.Daemon) (time.Duration, int64, error) {
	f0, err := measure.MajorFaults(d.PID())
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	c, err := client.New(ctx, d.Socket)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if _, err := c.Version(ctx); err != nil {
		return 0, 0, err
	}
	if _, err := c.ListNamespaces(ctx); err != nil {
		return 0, 0, err
	}
	if _, err := c.ListContainers(c.WithNamespace(ctx, "bench")); err != nil {
		return 0, 0, err
	}
	elapsed := time.Since(start)
	f1, err := measure.MajorFaults(d.PID())
	return elapsed, f1 - f0, err
}

// throughput creates and deletes e.Containers containers sequentially with
// one client, then with e.Clients concurrent clients, on a fresh edged.
func throughput(ctx context.Context, e *Env) ([]Row, error) {
	dir, err := e.Dir("edged-throughput")
	if err != nil {
		return nil, err
	}
	d, err := measure.StartEdged(ctx, e.Bin("edged"), dir, e.EdgedEnv)
	if err != nil {
		return nil, err
	}
	defer d.Stop()
	spec, err := measure.BenchSpec()
	if err != nil {
		return nil, err
	}
	c, err := client.New(ctx, d.Socket)
	if err != nil {
		return nil, err
	}
	_, err = c.CreateNamespace(ctx, "bench", nil)
	c.Close()
	if err != nil {
		return nil, err
	}

	// The last phase repeats the sequential one with the client's busy
	// polling off (client.WithBusyPoll(0)), for comparison: the budget
	// rows measure the client as fleet agents get it.
	type phase struct {
		clients int
		pollOff bool
	}
	var rows []Row
	phases := []phase{{clients: 1}}
	if e.Clients > 0 {
		phases = append(phases, phase{clients: e.Clients})
	}
	phases = append(phases, phase{clients: 1, pollOff: true})
	for _, ph := range phases {
		clients := ph.clients
		label := "sequential, 1 client"
		if clients > 1 {
			label = fmt.Sprintf("%d concurrent clients", clients)
		}
		var opts []client.Opt
		if ph.pollOff {
			label = "sequential, client busy poll off"
			opts = append(opts, client.WithBusyPoll(0))
		}
		e.Progress("edged: %d container create+delete, %s", e.Containers, label)
		before, err := measure.ReadIO(d.PID())
		if err != nil {
			return rows, err
		}
		cpu0, _ := measure.ReadCPUTimes()
		edgedCPU0, err := measure.ProcessCPU(d.PID())
		if err != nil {
			return rows, err
		}
		selfCPU0, err := measure.SelfCPU()
		if err != nil {
			return rows, err
		}
		tp, err := measure.CreateDelete(ctx, d.Socket, "bench", e.Containers, clients, e.Window, spec, opts...)
		if err != nil {
			return rows, err
		}
		cpu1, _ := measure.ReadCPUTimes()
		steal := measure.StealShare(cpu0, cpu1)
		edgedCPU1, err := measure.ProcessCPU(d.PID())
		if err != nil {
			return rows, err
		}
		selfCPU1, err := measure.SelfCPU()
		if err != nil {
			return rows, err
		}
		after, err := measure.ReadIO(d.PID())
		if err != nil {
			return rows, err
		}
		m, err := measure.ReadMemory(d.PID())
		if err != nil {
			return rows, err
		}
		io := after.Sub(before)
		n := float64(tp.Ops)
		if ph.pollOff {
			rows = append(rows,
				info(fmt.Sprintf("container create+delete, %s", label), tp.Rate(), "ops/s").
					with("", fmt.Sprintf("for comparison: the sequential phase with client.WithBusyPoll(0); %d containers in %.2f s%s",
						tp.Ops, tp.Elapsed.Seconds(), stealNote(steal))),
				info(fmt.Sprintf("  slowest %d-op window", e.Window), tp.SlowestRate(e.Window), "ops/s").
					with("", "each window's rate, in order: "+windowRates(tp, e.Window)),
				info("  edged CPU time per create+delete", float64(edgedCPU1-edgedCPU0)/n/1e3, "µs"),
				info("  client CPU time per create+delete", float64(selfCPU1-selfCPU0)/n/1e3, "µs"),
			)
			continue
		}
		rows = append(rows,
			budget(fmt.Sprintf("container create+delete, %s", label), tp.Rate(), "ops/s", ">=", budgetCreateDelete).
				with("", fmt.Sprintf("%d containers (%d-byte OCI spec, 2 labels) in %.2f s through the Go client (default options: busy poll %v)%s",
					tp.Ops, len(spec), tp.Elapsed.Seconds(), client.DefaultBusyPoll, stealNote(steal))),
			budget(fmt.Sprintf("  slowest %d-op window", e.Window), tp.SlowestRate(e.Window), "ops/s", ">=", budgetCreateDelete).
				with("", "each window's rate, in order: "+windowRates(tp, e.Window)),
			info("  edged CPU time per create+delete", float64(edgedCPU1-edgedCPU0)/n/1e3, "µs").
				with("", "user + system, all threads (/proc/PID/stat); steadier than the rate on a busy host"),
			info("  client CPU time per create+delete", float64(selfCPU1-selfCPU0)/n/1e3, "µs").
				with("", "the benchmark process, which runs only the Go client meanwhile (getrusage)"),
			budget("  disk write_bytes per create+delete", float64(io.WriteBytes)/n/1024, "KiB", "<=", budgetWriteKiBPerOp).
				with(fmt.Sprintf("containerd ≈ %d KiB (ctr run --rm, issue)", containerdWriteKiBOp),
					"/proc/PID/io write_bytes: page-cache pages dirtied, i.e. what reaches the device"),
			info("  bytes passed to write(2) per create+delete", float64(io.WChar)/n/1024, "KiB").
				with("", fmt.Sprintf("wchar; %.1f write calls per operation", float64(io.SyscW)/n)),
			budget("  edged RSS after", measure.MiB(m.RSS), "MiB", "<=", budgetRSSAfterMiB).
				with("", fmt.Sprintf("right after the last call: anon %.2f MiB + file-backed %.2f MiB (code and read-only data of the binary)",
					measure.MiB(m.PSSAnon), measure.MiB(m.PSSFile))),
		)
	}
	root := filepath.Join(dir, "root")
	rows = append(rows, info("meta.db + WAL size after", float64(measure.FileSize(filepath.Join(root, "meta.db"))+measure.FileSize(filepath.Join(root, "meta.db-wal")))/1024, "KiB"))
	return rows, d.Alive()
}

// windowRates lists the rate of each window of tp, in ops/s.
func windowRates(tp measure.Throughput, window int) string {
	var b strings.Builder
	for i, w := range tp.Windows {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.0f", float64(window)/w.Seconds())
	}
	return b.String()
}
