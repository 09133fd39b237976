package compression

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func payload() []byte {
	return bytes.Repeat([]byte("layer data 0123456789 "), 5000)
}

func gzipOf(t testing.TB, data []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdOf(t testing.TB, data []byte, opts ...zstd.EOption) []byte {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestFromMediaType(t *testing.T) {
	for mt, want := range map[string]Algorithm{
		"":                                       Unknown,
		"application/vnd.oci.image.layer.v1.tar": Uncompressed,
		"application/vnd.oci.image.layer.v1.tar+gzip":                  Gzip,
		"application/vnd.oci.image.layer.v1.tar+zstd":                  Zstd,
		"application/vnd.oci.image.layer.nondistributable.v1.tar":      Uncompressed,
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": Gzip,
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": Zstd,
		"application/vnd.docker.image.rootfs.diff.tar":                 Uncompressed,
		"application/vnd.docker.image.rootfs.diff.tar.gzip":            Gzip,
		"application/vnd.docker.image.rootfs.diff.tar.zstd":            Zstd,
		"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":    Gzip,
	} {
		got, err := FromMediaType(mt)
		if err != nil || got != want {
			t.Errorf("FromMediaType(%q) = %v, %v; want %v", mt, got, err, want)
		}
	}
	for _, mt := range []string{
		"application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
		"application/vnd.oci.image.manifest.v1+json",
		"application/octet-stream",
	} {
		_, err := FromMediaType(mt)
		if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), mt) {
			t.Errorf("FromMediaType(%q) err = %v", mt, err)
		}
	}
}

func TestDetect(t *testing.T) {
	data := payload()
	for _, tc := range []struct {
		name string
		head []byte
		want Algorithm
		err  string
	}{
		{"gzip", gzipOf(t, data), Gzip, ""},
		{"zstd", zstdOf(t, data), Zstd, ""},
		{"zstd skippable frame", []byte{0x5a, 0x2a, 0x4d, 0x18, 0, 0}, Zstd, ""},
		{"tar", append([]byte("etc/"), make([]byte, 508)...), Uncompressed, ""},
		{"short", []byte{0x1f}, Uncompressed, ""},
		{"empty", nil, Uncompressed, ""},
		{"bzip2", []byte("BZh91AY&SY"), Unknown, "bzip2"},
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0, 0}, Unknown, "xz"},
	} {
		got, err := Detect(tc.head)
		if tc.err != "" {
			if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v", tc.name, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: Detect = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}

func TestNewReaderRoundTrip(t *testing.T) {
	data := payload()
	for _, tc := range []struct {
		name, mediaType string
		blob            []byte
		want            Algorithm
	}{
		{"gzip", MediaTypeOCILayerGzip, gzipOf(t, data), Gzip},
		{"zstd", MediaTypeOCILayerZstd, zstdOf(t, data), Zstd},
		{"plain", MediaTypeOCILayer, data, Uncompressed},
		{"detect gzip", "", gzipOf(t, data), Gzip},
		{"detect zstd", "", zstdOf(t, data), Zstd},
		{"mislabelled plain as gzip", MediaTypeDockerLayerGzip, data, Uncompressed},
		{"multi-member gzip", MediaTypeOCILayerGzip, append(gzipOf(t, data[:1000]), gzipOf(t, data[1000:])...), Gzip},
		{"empty plain", MediaTypeOCILayer, nil, Uncompressed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, alg, err := NewReader(bytes.NewReader(tc.blob), tc.mediaType)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if alg != tc.want {
				t.Errorf("algorithm %v, want %v", alg, tc.want)
			}
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			want := data
			if tc.blob == nil {
				want = nil
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got %d bytes, want %d", len(got), len(want))
			}
		})
	}
}

func readAll(t *testing.T, blob []byte, mediaType string) error {
	t.Helper()
	rc, _, err := NewReader(bytes.NewReader(blob), mediaType)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

func TestNewReaderErrors(t *testing.T) {
	data := payload()
	gz, zs := gzipOf(t, data), zstdOf(t, data)
	t.Run("truncated", func(t *testing.T) {
		for name, blob := range map[string][]byte{
			"gzip half": gz[:len(gz)/2], "gzip header only": gz[:10], "gzip no trailer": gz[:len(gz)-8],
			"zstd half": zs[:len(zs)/2], "zstd header only": zs[:6], "zstd no checksum": zs[:len(zs)-2],
		} {
			err := readAll(t, blob, "")
			if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), "truncated") {
				t.Errorf("%s: err = %v", name, err)
			}
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		badGz := bytes.Clone(gz)
		badGz[len(badGz)-5] ^= 0xff // CRC32
		badZs := bytes.Clone(zs)
		badZs[len(badZs)/2] ^= 0xff
		for name, blob := range map[string][]byte{"gzip": badGz, "zstd": badZs} {
			err := readAll(t, blob, "")
			if !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), name) {
				t.Errorf("%s: err = %v", name, err)
			}
		}
	})
	t.Run("unknown media type", func(t *testing.T) {
		err := readAll(t, gz, "application/x-foo")
		if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), `"application/x-foo"`) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("bzip2 data", func(t *testing.T) {
		err := readAll(t, []byte("BZh91AY&SY..."), MediaTypeDockerLayer)
		if !errors.Is(err, errdefs.ErrNotImplemented) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("zstd window too large", func(t *testing.T) {
		big := make([]byte, 3*MaxZstdWindow)
		for i := range big {
			big[i] = byte(i*7 + i>>13)
		}
		blob := zstdOf(t, big, zstd.WithWindowSize(2*MaxZstdWindow), zstd.WithEncoderLevel(zstd.SpeedFastest))
		err := readAll(t, blob, "")
		if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "window") {
			t.Errorf("err = %v", err)
		}
	})
}

// failingReader returns data then a transport error.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

// TestSourceErrorPassesThrough: an error of the caller's reader is not
// reported as corrupt data.
func TestSourceErrorPassesThrough(t *testing.T) {
	data := payload()
	boom := errors.New("connection reset by registry")
	for name, blob := range map[string][]byte{"gzip": gzipOf(t, data), "zstd": zstdOf(t, data), "plain": data} {
		rc, _, err := NewReader(&failingReader{data: blob[:len(blob)/2], err: boom}, "")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if !errors.Is(err, boom) || errors.Is(err, errdefs.ErrDataLoss) {
			t.Errorf("%s: err = %v; want the source error unchanged", name, err)
		}
	}
	_, _, err := NewReader(&failingReader{err: boom}, "")
	if !errors.Is(err, boom) {
		t.Errorf("error during detection: %v", err)
	}
}
