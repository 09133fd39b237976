package images

import (
	"context"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/edged/edged/edged/images/testimage"
)

// procField reads a numeric field ("VmHWM:", "write_bytes:") of a /proc
// file of this process.
func procField(b testing.TB, file, field string) int64 {
	data, err := os.ReadFile(file)
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("%s: no %s", file, field)
	return 0
}

// resetPeakRSS resets VmHWM to the current RSS (Linux ≥ 4.0).
func resetPeakRSS(b testing.TB) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Fatal(err)
	}
}

// benchImport imports the archive at path b.N times into a real stack
// (fsync on), deleting the image and collecting between iterations with
// the timer stopped. It reports MB/s (of archive), peak RSS of the process
// during the imports, and bytes written to disk per archive byte.
func benchImport(b *testing.B, path string, opts Options) {
	ctx := context.Background()
	e := newEnv(b, envOpts{sync: true, opts: opts})
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	b.ReportAllocs()
	var written int64
	debug.FreeOSMemory() // drop the archive builder's garbage
	resetPeakRSS(b)
	base := procField(b, "/proc/self/status", "VmRSS:")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		w0 := procField(b, "/proc/self/io", "write_bytes:")
		imgs, err := e.s.Import(ctx, "default", f, ImportOptions{})
		written += procField(b, "/proc/self/io", "write_bytes:") - w0
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for _, im := range imgs {
			if err := e.s.DeleteImage(ctx, "default", im.Name, true, false); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	peak := procField(b, "/proc/self/status", "VmHWM:")
	b.ReportMetric(float64(peak)/1024, "peakRSS_MiB")
	b.ReportMetric(float64(peak-base)/1024, "addedRSS_MiB")
	b.ReportMetric(float64(written)/float64(fi.Size())/float64(b.N), "written/B")
}

func BenchmarkImportSmall(b *testing.B) {
	if _, err := os.Stat(testimage.DefaultBusybox); err != nil {
		b.Skip("busybox-static is not installed")
	}
	img, err := testimage.Busybox(testimage.DefaultBusybox, linuxAmd64)
	if err != nil {
		b.Fatal(err)
	}
	l := testimage.NewLayout()
	l.AddImage(img, map[string]string{AnnotationRefName: testimage.DemoName})
	path := filepath.Join(b.TempDir(), "busybox.tar")
	if err := os.WriteFile(path, l.Bytes(testimage.TarOptions{}), 0o644); err != nil {
		b.Fatal(err)
	}
	benchImport(b, path, Options{})
}

func bigArchive(b *testing.B) string {
	dir := b.TempDir()
	layer, err := testimage.WriteRandomLayer(dir, 100<<20, 42)
	if err != nil {
		b.Fatal(err)
	}
	img := testimage.MustBuild(testimage.Image{Platform: linuxAmd64, Layers: []testimage.Layer{layer}})
	l := testimage.NewLayout()
	l.AddImage(img, map[string]string{AnnotationRefName: "big:1"})
	path := filepath.Join(dir, "big.tar")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := l.WriteTar(f, testimage.TarOptions{}); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	os.Remove(layer.Blob.Path)
	return path
}

func BenchmarkImportBig(b *testing.B) {
	benchImport(b, bigArchive(b), Options{})
}

func BenchmarkImportBigDiscardLayers(b *testing.B) {
	benchImport(b, bigArchive(b), Options{DiscardLayers: true})
}
