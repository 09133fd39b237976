package remotes

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/fsstore/content"
)

// BenchmarkPull100MiB pulls an image with one 100 MiB layer from a local
// docker-registry into a fresh store per iteration. It reports the speed,
// the growth of this process's peak RSS during the pull (VmHWM after minus
// VmRSS before, with the peak reset through /proc/self/clear_refs), and
// the whole peak RSS of a separate process doing the same pull.
func BenchmarkPull100MiB(b *testing.B) {
	reg := startRegistry(b, "")
	img := publish(b, reg.addr, "bench/big:v1", "", []ocispec.Platform{linuxAMD64}, []int64{100 << 20})
	res := plainResolver(b, "", reg.addr)
	ref := reg.addr + "/bench/big:v1"
	ctx := ctxTimeout(b)
	b.SetBytes(img.layers[0][0].Size)
	var maxDelta int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := filepath.Join(b.TempDir(), "content")
		store, err := content.New(dir)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		debug.FreeOSMemory()
		resetHWM(b)
		before := vmRSS(b)
		b.StartTimer()
		if _, _, err := Pull(ctx, ref, store, PullOptions{Resolver: res}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if d := vmHWM(b) - before; d > maxDelta {
			maxDelta = d
		}
		os.RemoveAll(dir)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(maxDelta), "peakRSS-delta-KiB")

	out, err := helperCmd(b, ref, filepath.Join(b.TempDir(), "content"), reg.addr).Output()
	if err != nil {
		b.Fatalf("helper: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM-KiB="); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			b.ReportMetric(float64(n), "child-peakRSS-KiB")
		}
	}
}
