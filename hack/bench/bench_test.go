package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/hack/bench/measure"
)

// buildBinaries builds edged and edgectl the way `make build` does
// (static, stripped) into a temp dir, so the benchmarks measure the
// current source rather than whatever bin/ holds. $EDGED_BENCH_BIN names a
// directory of prebuilt binaries to use instead.
func buildBinaries(b *testing.B) string {
	b.Helper()
	if dir := os.Getenv("EDGED_BENCH_BIN"); dir != "" {
		return dir
	}
	dir := b.TempDir()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", dir+"/", "../../cmd/edged", "../../cmd/edgectl")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// startEdged builds and starts edged for one benchmark.
func startEdged(b *testing.B) (bin string, d *measure.Daemon) {
	b.Helper()
	bin = buildBinaries(b)
	d, err := measure.StartEdged(context.Background(), filepath.Join(bin, "edged"), b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := d.Stop(); err != nil {
			b.Errorf("stop edged: %v", err)
		}
	})
	return bin, d
}

// BenchmarkVersionRoundTrip runs the whole `edgectl version` process
// (fork, exec, connect, call, exit) per iteration. Budget: median ≤ 5 ms.
func BenchmarkVersionRoundTrip(b *testing.B) {
	bin, d := startEdged(b)
	edgectl := filepath.Join(bin, "edgectl")
	runs := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		out, err := exec.Command(edgectl, "--address", d.Socket, "version").Output()
		if err != nil {
			b.Fatalf("edgectl version: %v", err)
		}
		runs = append(runs, time.Since(start))
		if len(out) == 0 {
			b.Fatal("edgectl version printed nothing")
		}
	}
	b.ReportMetric(measure.Ms(measure.Percentile(runs, 50)), "median-ms")
	b.ReportMetric(measure.Ms(measure.Percentile(runs, 90)), "p90-ms")
}

// BenchmarkClientVersion is one Version call over an open connection: the
// RPC without the process cost of BenchmarkVersionRoundTrip.
func BenchmarkClientVersion(b *testing.B) {
	_, d := startEdged(b)
	ctx := context.Background()
	c, err := client.New(ctx, d.Socket)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Version(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// Idle RSS is not a per-operation cost and has no benchmark here: the
// budget table (go run ./hack/bench) measures it, and
// go run ./hack/bench/memstudy compares variants.

// BenchmarkContainerCreateDelete creates and deletes one container (with
// a 3 KiB OCI spec) per iteration through the Go client, with 1 and with 4
// concurrent clients. Budgets: ≥ 2,000 per second, ≤ 16 KiB written to
// disk per create+delete, edged RSS ≤ 12 MiB after.
func BenchmarkContainerCreateDelete(b *testing.B) {
	for _, clients := range []int{1, 4} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			_, d := startEdged(b)
			ctx := context.Background()
			spec, err := measure.BenchSpec()
			if err != nil {
				b.Fatal(err)
			}
			before, err := measure.ReadIO(d.PID())
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			tp, err := measure.CreateDelete(ctx, d.Socket, "bench", b.N, clients, max(1, min(1000, b.N/10)), spec)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			after, err := measure.ReadIO(d.PID())
			if err != nil {
				b.Fatal(err)
			}
			m, err := measure.ReadMemory(d.PID())
			if err != nil {
				b.Fatal(err)
			}
			io := after.Sub(before)
			b.ReportMetric(tp.Rate(), "ops/s")
			b.ReportMetric(tp.SlowestRate(max(1, min(1000, b.N/10))), "slowest-window-ops/s")
			b.ReportMetric(float64(io.WriteBytes)/float64(b.N), "disk-B/op")
			b.ReportMetric(measure.MiB(m.RSS), "rss-MiB")
		})
	}
}
