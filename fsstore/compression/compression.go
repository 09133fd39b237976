// Package compression turns a layer blob into its uncompressed tar stream.
//
// Supported layer media types are the OCI image-spec layer types (plain,
// +gzip, +zstd, and their deprecated non-distributable variants) and the
// Docker schema 2 rootfs diff types (tar, tar.gzip, foreign tar.gzip,
// tar.zstd). An empty media type means "unknown": the algorithm is then
// detected from the magic bytes.
//
// The media type decides whether a blob is a layer this package can read at
// all; the decompressor itself is always picked from the magic bytes, like
// containerd does, because tools and registries mislabel blobs (for example an
// uncompressed tar uploaded as tar.gzip). Integrity is the job of the diffID
// check done by the caller, not of the label.
//
// Memory is bounded: gzip uses a 32 KiB window plus a 4 KiB read buffer; zstd
// runs single-threaded in low-memory mode and refuses frames whose window is
// larger than MaxZstdWindow.
package compression

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/edged/edged/edged/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Algorithm is the compression of a layer blob.
type Algorithm uint8

// The algorithms. Unknown is only returned by FromMediaType for an empty media
// type, meaning "detect it from the data".
const (
	Unknown Algorithm = iota
	Uncompressed
	Gzip
	Zstd
)

// String returns "unknown", "uncompressed", "gzip" or "zstd".
func (a Algorithm) String() string {
	switch a {
	case Uncompressed:
		return "uncompressed"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	default:
		return "unknown"
	}
}

// MaxZstdWindow is the largest zstd window (history) the decoder accepts. It
// covers every standard level up to 19 and "--long" up to windowLog 25; larger
// windows would need that much RAM on the device and are refused.
const MaxZstdWindow = 32 << 20

// Layer media types understood by FromMediaType.
const (
	MediaTypeOCILayer                   = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeOCILayerGzip               = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeOCILayerZstd               = "application/vnd.oci.image.layer.v1.tar+zstd"
	MediaTypeOCILayerNonDistributable   = "application/vnd.oci.image.layer.nondistributable.v1.tar"
	MediaTypeOCILayerNonDistributableGz = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	MediaTypeOCILayerNonDistributableZs = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
	MediaTypeDockerLayer                = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerLayerGzip            = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerLayerZstd            = "application/vnd.docker.image.rootfs.diff.tar.zstd"
	MediaTypeDockerLayerForeignGzip     = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// FromMediaType returns the compression a layer media type declares. An empty
// media type returns Unknown and no error. Any other unrecognised type (for
// example an encrypted layer or a non-layer blob) returns an error wrapping
// errdefs.ErrNotImplemented that names the type.
func FromMediaType(mediaType string) (Algorithm, error) {
	switch mediaType {
	case "":
		return Unknown, nil
	case MediaTypeOCILayer, MediaTypeOCILayerNonDistributable, MediaTypeDockerLayer:
		return Uncompressed, nil
	case MediaTypeOCILayerGzip, MediaTypeOCILayerNonDistributableGz, MediaTypeDockerLayerGzip, MediaTypeDockerLayerForeignGzip:
		return Gzip, nil
	case MediaTypeOCILayerZstd, MediaTypeOCILayerNonDistributableZs, MediaTypeDockerLayerZstd:
		return Zstd, nil
	}
	return Unknown, fmt.Errorf("layer media type %q is not supported (want an OCI or Docker tar, tar+gzip or tar+zstd layer): %w",
		mediaType, errdefs.ErrNotImplemented)
}

var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicBzip2 = []byte("BZh")
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// magicLen is how many leading bytes Detect looks at.
const magicLen = 6

// Detect returns the compression of a blob from its first bytes (at least 6
// are needed to tell all formats apart; fewer are treated as uncompressed).
// Anything that is neither gzip nor zstd is reported as Uncompressed; the tar
// reader then rejects it if it is not a tar. bzip2 and xz, which old Docker
// accepted, return an error wrapping errdefs.ErrNotImplemented.
func Detect(head []byte) (Algorithm, error) {
	switch {
	case bytes.HasPrefix(head, magicGzip):
		return Gzip, nil
	case bytes.HasPrefix(head, magicZstd), isZstdSkippable(head):
		return Zstd, nil
	case bytes.HasPrefix(head, magicBzip2):
		return Unknown, fmt.Errorf("bzip2-compressed layers are not supported: %w", errdefs.ErrNotImplemented)
	case bytes.HasPrefix(head, magicXz):
		return Unknown, fmt.Errorf("xz-compressed layers are not supported: %w", errdefs.ErrNotImplemented)
	}
	return Uncompressed, nil
}

// isZstdSkippable reports a zstd skippable frame (magic 0x184D2A50..5F, little endian).
func isZstdSkippable(head []byte) bool {
	return len(head) >= 4 && head[0]&0xf0 == 0x50 && head[1] == 0x2a && head[2] == 0x4d && head[3] == 0x18
}

// NewReader checks mediaType with FromMediaType, detects the actual
// compression from the first bytes of r and returns the decompressed stream
// and the algorithm used. The caller must Close the returned reader (it frees
// the zstd decoder); Close does not close r.
//
// Errors while reading: errors returned by r itself come back unchanged. A
// stream that ends early returns an error wrapping io.ErrUnexpectedEOF and
// errdefs.ErrDataLoss; corrupt data returns an error wrapping
// errdefs.ErrDataLoss; a zstd window above MaxZstdWindow returns an error
// wrapping errdefs.ErrResourceExhausted.
func NewReader(r io.Reader, mediaType string) (io.ReadCloser, Algorithm, error) {
	if _, err := FromMediaType(mediaType); err != nil {
		return nil, Unknown, err
	}
	src := &taggedReader{r: r}
	br := bufio.NewReaderSize(src, 4096)
	head, err := br.Peek(magicLen)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, Unknown, untag(err)
	}
	alg, err := Detect(head)
	if err != nil {
		return nil, Unknown, err
	}
	switch alg {
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, alg, streamError(alg, err)
		}
		return &reader{alg: alg, r: zr, close: zr.Close}, alg, nil
	case Zstd:
		zr, err := zstd.NewReader(br,
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(MaxZstdWindow),
		)
		if err != nil {
			return nil, alg, fmt.Errorf("zstd decoder: %w", err)
		}
		return &reader{alg: alg, r: zr, close: func() error { zr.Close(); return nil }}, alg, nil
	default:
		return &reader{alg: alg, r: br, close: func() error { return nil }}, Uncompressed, nil
	}
}

// reader classifies the decoder's errors.
type reader struct {
	alg   Algorithm
	r     io.Reader
	close func() error
	err   error
}

func (d *reader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		d.err = streamError(d.alg, err)
		return n, d.err
	}
	return n, err
}

func (d *reader) Close() error { return d.close() }

// streamError maps a decoder error: errors of the source pass through
// unchanged, everything else is the blob's fault.
func streamError(alg Algorithm, err error) error {
	var se *sourceError
	if errors.As(err, &se) {
		return se.err
	}
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fmt.Errorf("%s stream is truncated: %w: %w", alg, io.ErrUnexpectedEOF, errdefs.ErrDataLoss)
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return fmt.Errorf("%s stream needs a window larger than %d MiB: %v: %w", alg, MaxZstdWindow>>20, err, errdefs.ErrResourceExhausted)
	}
	return fmt.Errorf("%s stream is corrupt: %v: %w", alg, err, errdefs.ErrDataLoss)
}

// sourceError marks an error produced by the caller's reader, so it is not
// mistaken for corrupt data after passing through a decoder.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

func untag(err error) error {
	var se *sourceError
	if errors.As(err, &se) {
		return se.err
	}
	return err
}

type taggedReader struct{ r io.Reader }

func (t *taggedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		err = &sourceError{err: err}
	}
	return n, err
}
