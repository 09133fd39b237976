package metadata

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// procIO returns write_bytes (bytes this process caused to be written to
// storage) and wchar (bytes passed to write syscalls) from /proc/self/io.
func procIO(tb testing.TB) (writeBytes, wchar int64) {
	tb.Helper()
	f := procIOFields(tb)
	return f["write_bytes"], f["wchar"]
}

// procIOFields returns the counters of /proc/self/io by name.
func procIOFields(tb testing.TB) map[string]int64 {
	tb.Helper()
	f, err := os.Open("/proc/self/io")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	fields := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			tb.Fatalf("/proc/self/io: %q: %v", sc.Text(), err)
		}
		fields[k] = n
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return fields
}

// procStatusKiB returns a "VmRSS"-style field of /proc/self/status in KiB.
func procStatusKiB(tb testing.TB, field string) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	tb.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// cpuTime returns the user+system CPU time of the whole process. On a
// loaded machine wall time mostly measures waiting for a CPU; CPU time per
// operation gives the rate one free core would sustain.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// syncFS flushes dirty pages so that write_bytes deltas are measured from
// a clean page cache.
func syncFS(tb testing.TB) {
	f, err := os.Open("/")
	if err == nil {
		defer f.Close()
		_ = f.Sync()
	}
}

// createDelete does what the Containers service does for a Create and a
// Delete request: each runs under its own cancelable request context (as
// ttrpc gives a handler), and the delete reads and removes the row with
// TakeContainer.
func createDelete(tb testing.TB, ctx context.Context, db *DB, c Container) {
	rctx, cancel := context.WithCancel(ctx)
	err := db.Update(rctx, func(tx *Tx) error {
		_, err := tx.CreateContainer(rctx, "default", c)
		return err
	})
	cancel()
	if err != nil {
		tb.Fatal(err)
	}
	rctx, cancel = context.WithCancel(ctx)
	err = db.Update(rctx, func(tx *Tx) error {
		_, err := tx.TakeContainer(rctx, "default", c.ID)
		return err
	})
	cancel()
	if err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkContainerCreateDelete measures one container create plus one
// delete, each its own write transaction as two API calls would be.
// Metrics: ops/s (create+delete pairs per second), write-B/op (from
// /proc/self/io write_bytes, what reaches the disk including WAL
// checkpoints), wchar-B/op (bytes given to write(2)).
func BenchmarkContainerCreateDelete(b *testing.B) {
	ctx := context.Background()
	db, _ := openTest(b, benchOptions())
	c := testContainer(b, "bench")
	b.ReportMetric(float64(len(c.Spec)), "spec-B")
	// Warm up: statements prepared, pages allocated.
	for i := 0; i < 100; i++ {
		createDelete(b, ctx, db, c)
	}
	syncFS(b)
	wb0, wc0 := procIO(b)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime(b)
	for i := 0; i < b.N; i++ {
		c.ID = "c" + strconv.Itoa(i)
		createDelete(b, ctx, db, c)
	}
	elapsed, cpu := time.Since(start), cpuTime(b)-cpu0
	b.StopTimer()
	// Count what the page cache still holds dirty for these writes.
	syncFS(b)
	wb1, wc1 := procIO(b)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(wb1-wb0)/float64(b.N), "write-B/op")
	b.ReportMetric(float64(wc1-wc0)/float64(b.N), "wchar-B/op")
}

// BenchmarkCreateDelete10k creates 10,000 containers and deletes them
// again (one transaction each), then reports the rate and the process RSS.
// Run with -benchtime=1x.
func BenchmarkCreateDelete10k(b *testing.B) {
	ctx := context.Background()
	const n = 10000
	db, _ := openTest(b, benchOptions())
	base := testContainer(b, "bench")
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("container-%05d", i)
	}
	syncFS(b)
	wb0, _ := procIO(b)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime(b)
	for it := 0; it < b.N; it++ {
		for _, id := range ids {
			c := base
			c.ID = id
			if err := db.Update(ctx, func(tx *Tx) error {
				_, err := tx.CreateContainer(ctx, "default", c)
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
		for _, id := range ids {
			if err := db.Update(ctx, func(tx *Tx) error {
				return tx.DeleteContainer(ctx, "default", id)
			}); err != nil {
				b.Fatal(err)
			}
		}
	}
	elapsed, cpu := time.Since(start), cpuTime(b)-cpu0
	b.StopTimer()
	syncFS(b)
	wb1, _ := procIO(b)
	b.ReportMetric(float64(b.N*n)/elapsed.Seconds(), "pairs/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*n), "cpu-µs/pair")
	b.ReportMetric(float64(wb1-wb0)/float64(b.N*n), "write-B/pair")
	b.ReportMetric(float64(procStatusKiB(b, "VmRSS"))/1024, "RSS-MiB")
	b.ReportMetric(float64(procStatusKiB(b, "VmHWM"))/1024, "peakRSS-MiB")
	b.ReportMetric(float64(procStatusKiB(b, "RssAnon"))/1024, "RssAnon-MiB")
	runtime.GC()
	debug.FreeOSMemory()
	b.ReportMetric(float64(procStatusKiB(b, "VmRSS"))/1024, "RSS-after-GC-MiB")
}

// benchOptions lets a benchmark run compare settings:
// EDGED_BENCH_PAGESIZE, EDGED_BENCH_CACHEKIB, EDGED_BENCH_READCONNS,
// EDGED_BENCH_PLAINVFS=1 (SQLite's default VFS instead of walVFS).
func benchOptions() Options {
	o := Options{Logger: slog.New(slog.DiscardHandler)}
	o.pageSize, _ = strconv.Atoi(os.Getenv("EDGED_BENCH_PAGESIZE"))
	o.CacheSizeKiB, _ = strconv.Atoi(os.Getenv("EDGED_BENCH_CACHEKIB"))
	o.checkpoint, _ = strconv.Atoi(os.Getenv("EDGED_BENCH_CHECKPOINT"))
	o.ReadConns, _ = strconv.Atoi(os.Getenv("EDGED_BENCH_READCONNS"))
	o.plainVFS = os.Getenv("EDGED_BENCH_PLAINVFS") == "1"
	return o
}
