package content

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// BenchmarkIngest measures the full ingest path (write in 32 KiB chunks as
// io.Copy does, hash, fsync, verify, rename) of a 16 MiB blob.
func BenchmarkIngest(b *testing.B) {
	ctx := context.Background()
	s, err := New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	const size = 16 << 20
	data := randBytes(size, 3)
	// Make every iteration's blob distinct so that commits never collide.
	b.SetBytes(size)
	b.ReportAllocs()
	var elapsed time.Duration
	buf := make([]byte, 32<<10)
	for i := 0; b.Loop(); i++ {
		copy(data, strconv.Itoa(i)+"-")
		dgst := digest.FromBytes(data)
		start := time.Now()
		w, err := s.Writer(ctx, "bench-"+strconv.Itoa(i), WriterOpts{Total: size})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(w, onlyReader{bytes.NewReader(data)}, buf); err != nil {
			b.Fatal(err)
		}
		if err := w.Commit(ctx, size, dgst); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
		b.StopTimer()
		if err := s.Delete(ctx, dgst); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(size)*float64(b.N)/(1<<20)/elapsed.Seconds(), "MB/s")
}

// onlyReader hides bytes.Reader's WriterTo so the copy goes through Write.
type onlyReader struct{ r *bytes.Reader }

func (r onlyReader) Read(p []byte) (int, error) { return r.r.Read(p) }

// BenchmarkResume measures re-hashing an interrupted 16 MiB ingest.
func BenchmarkResume(b *testing.B) {
	ctx := context.Background()
	s, err := New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	const size = 16 << 20
	w, err := s.Writer(ctx, "r", WriterOpts{})
	if err != nil {
		b.Fatal(err)
	}
	w.Write(randBytes(size, 5))
	w.Close()
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		w, err := s.Writer(ctx, "r", WriterOpts{})
		if err != nil {
			b.Fatal(err)
		}
		if w.Offset() != size {
			b.Fatal(w.Offset())
		}
		w.Close()
	}
}
