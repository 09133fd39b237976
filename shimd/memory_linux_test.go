package shimd_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	taskapi "github.com/edged/edged/proto/runtime/task/v2"
)

// smapsRollup returns the private (USS) and proportional (PSS) memory of pid
// in KiB.
func smapsRollup(pid int) (uss, pss, dirty int, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		n, _ := strconv.Atoi(fields[1])
		switch fields[0] {
		case "Private_Clean:":
			uss += n
		case "Private_Dirty:":
			uss += n
		case "Anonymous:":
			dirty += n
		case "Pss:":
			pss += n
		}
	}
	return uss, pss, dirty, sc.Err()
}

// BenchmarkShimMemory measures one shim's memory hosting n running
// containers (sleep, stdout+stderr to a rotated file:// log) and reports
// USS and PSS per container. Run with -benchtime=1x:
//
//	go test ./shimd -run '^$' -bench ShimMemory -benchtime=1x
func BenchmarkShimMemory(b *testing.B) {
	for _, n := range []int{0, 1, 10, 50} {
		b.Run(fmt.Sprintf("containers=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				measureShim(b, n, false)
			}
		})
	}
	b.Run("containers=10/fifo", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			measureShim(b, 10, true)
		}
	})
}

func measureShim(b *testing.B, n int, fifos bool) {
	s := startShim(b, "/nonexistent/events.sock")
	for i := 0; i < n; i++ {
		id := randID("mem")
		bundle := newBundle(b, id, []string{"sleep", "1000"}, false, nil)
		req := &taskapi.CreateTaskRequest{Id: id, Bundle: bundle}
		if fifos {
			out, _ := fifo(b, bundle, "stdout")
			errp, _ := fifo(b, bundle, "stderr")
			req.Stdout, req.Stderr = out, errp
		} else {
			uri := "file://" + filepath.Join(bundle, "log")
			req.Stdout, req.Stderr = uri, uri
		}
		if _, err := s.task.Create(ctxT(b, 30*time.Second), req); err != nil {
			b.Fatal(err)
		}
		if _, err := s.task.Start(ctxT(b, 30*time.Second), &taskapi.StartRequest{Id: id}); err != nil {
			b.Fatal(err)
		}
	}
	// Let the shim settle: its trim (2s after the last call) and the Go
	// scavenger return freed heap, the idle event connection closes.
	time.Sleep(10 * time.Second)
	runtime.Gosched()
	uss, pss, dirty, err := smapsRollup(s.pid())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(uss), "USS-KiB")
	b.ReportMetric(float64(pss), "PSS-KiB")
	// Anonymous memory is what stays private when many shims share the
	// binary's pages (a single shim's USS also counts its text, ~5.6 MiB).
	b.ReportMetric(float64(dirty), "Anon-KiB")
	if n > 0 {
		b.ReportMetric(float64(dirty)/float64(n), "Anon-KiB/container")
	}
	if n > 0 {
		b.ReportMetric(float64(uss)/float64(n), "USS-KiB/container")
		b.ReportMetric(float64(pss)/float64(n), "PSS-KiB/container")
	}
	threads, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", s.pid()))
	b.ReportMetric(float64(len(threads)), "threads")
}
