//go:build linux

package archive

import (
	"archive/tar"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

const benchLayerSize = 100 << 20

// writeBenchLayer writes a compressed layer of files with random content
// (total benchLayerSize bytes, fileSize each) to path and returns its diffID.
func writeBenchLayer(b *testing.B, path string, fileSize int, compress func(io.Writer) io.WriteCloser) digest.Digest {
	b.Helper()
	f, err := os.Create(path)
	mustNoErr(b, err)
	defer f.Close()
	zw := compress(f)
	dg := digest.Canonical.Digester()
	tw := tar.NewWriter(io.MultiWriter(zw, dg.Hash()))
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, fileSize)
	for i := 0; i < benchLayerSize/fileSize; i++ {
		_, _ = rng.Read(buf)
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "data/" + strconv.Itoa(i%100) + "/f" + strconv.Itoa(i), Mode: 0o644, Size: int64(fileSize), ModTime: testTime}
		mustNoErr(b, tw.WriteHeader(hdr))
		_, err := tw.Write(buf)
		mustNoErr(b, err)
	}
	mustNoErr(b, tw.Close())
	mustNoErr(b, zw.Close())
	return dg.Digest()
}

func gzipWriter(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) }

func zstdWriter(w io.Writer) io.WriteCloser {
	zw, _ := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
	return zw
}

func benchApply(b *testing.B, mediaType string, fileSize int, compress func(io.Writer) io.WriteCloser) {
	dir := b.TempDir()
	blobPath := filepath.Join(dir, "layer.blob")
	diffID := writeBenchLayer(b, blobPath, fileSize, compress)
	blob, err := os.Open(blobPath)
	mustNoErr(b, err)
	defer blob.Close()

	b.SetBytes(benchLayerSize) // MB/s is of the uncompressed content
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root := filepath.Join(dir, "root")
		mustNoErr(b, os.Mkdir(root, 0o755))
		_, err := blob.Seek(0, io.SeekStart)
		mustNoErr(b, err)
		b.StartTimer()

		if _, err := ApplyVerified(context.Background(), root, blob, mediaType, diffID, ApplyOptions{}); err != nil {
			b.Fatal(err)
		}

		b.StopTimer()
		mustNoErr(b, os.RemoveAll(root))
		b.StartTimer()
	}
}

// BenchmarkApplyGzip100MiB applies a 100 MiB layer of 1 MiB random files from
// gzip. Compare with BenchmarkDiskWrite100MiB for the disk's own speed.
func BenchmarkApplyGzip100MiB(b *testing.B) {
	benchApply(b, "application/vnd.oci.image.layer.v1.tar+gzip", 1<<20, gzipWriter)
}

// BenchmarkApplyZstd100MiB is the same layer compressed with zstd.
func BenchmarkApplyZstd100MiB(b *testing.B) {
	benchApply(b, "application/vnd.oci.image.layer.v1.tar+zstd", 1<<20, zstdWriter)
}

// BenchmarkApplyGzipSmallFiles100MiB uses 16 KiB files (6400 entries), where
// per-entry system calls dominate.
func BenchmarkApplyGzipSmallFiles100MiB(b *testing.B) {
	benchApply(b, "application/vnd.oci.image.layer.v1.tar+gzip", 16<<10, gzipWriter)
}

// BenchmarkDiskWrite100MiB is the baseline: writing the same amount of data
// as 1 MiB files with plain write(2), no tar, no decompression, no hashing.
func BenchmarkDiskWrite100MiB(b *testing.B) {
	dir := b.TempDir()
	buf := make([]byte, 1<<20)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(buf)
	b.SetBytes(benchLayerSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root := filepath.Join(dir, "root")
		mustNoErr(b, os.Mkdir(root, 0o755))
		b.StartTimer()
		for j := 0; j < benchLayerSize/len(buf); j++ {
			sub := filepath.Join(root, strconv.Itoa(j%100))
			if j < 100 {
				mustNoErr(b, os.Mkdir(sub, 0o755))
			}
			mustNoErr(b, os.WriteFile(filepath.Join(sub, "f"+strconv.Itoa(j)), buf, 0o644))
		}
		b.StopTimer()
		mustNoErr(b, os.RemoveAll(root))
		b.StartTimer()
	}
}
