//go:build linux

package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
	"golang.org/x/sys/unix"
)

// zeroReader reads zeros forever.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// countReader counts what is read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// streamTar returns the tar that write produces, generated as it is read,
// so a test can offer a layer far larger than it wants in memory.
func streamTar(t *testing.T, write func(tw *tar.Writer) error) *countReader {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := write(tw)
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	// Apply stops reading early: unblock the writer.
	t.Cleanup(func() { pr.Close() })
	return &countReader{r: pr}
}

// zeroFile writes an entry of size zero bytes.
func zeroFile(tw *tar.Writer, name string, size int64) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: testTime}); err != nil {
		return err
	}
	_, err := io.CopyN(tw, zeroReader{}, size)
	return err
}

func wantLimit(t *testing.T, err error, limit Limit, msg string) *LimitError {
	t.Helper()
	var le *LimitError
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !errors.As(err, &le) || le.Limit != limit || !strings.Contains(err.Error(), msg) {
		t.Fatalf("err = %v; want a %s LimitError (ResourceExhausted) containing %q", err, limit, msg)
	}
	return le
}

// A layer larger than MaxSize stops once the limit is crossed: neither the
// rest of the stream is read nor more than the limit written.
func TestApplyMaxSizeBomb(t *testing.T) {
	const limit = 1 << 20
	e := newEnv(t)
	r := streamTar(t, func(tw *tar.Writer) error { return zeroFile(tw, "zeros", 64<<20) })
	_, err := Apply(context.Background(), e.root, r, ApplyOptions{MaxSize: limit})
	le := wantLimit(t, err, LimitSize, "layer is larger than the 1048576 byte limit")
	if le.Value != limit {
		t.Errorf("Value = %d, want %d", le.Value, limit)
	}
	if r.n > limit+64<<10 {
		t.Errorf("read %d bytes of the layer, the limit is %d", r.n, limit)
	}
	if st := lstatT(t, filepath.Join(e.root, "zeros")); st.Size > limit {
		t.Errorf("wrote %d bytes, the limit is %d", st.Size, limit)
	}
	e.checkOutside(t)
}

// smallFS mounts a tmpfs of size bytes and returns an empty directory in it.
func smallFS(t *testing.T, size int64) (mnt, root string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mnt = t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	root = filepath.Join(mnt, "snapshots", "1", "fs")
	mustNoErr(t, os.MkdirAll(root, 0o755))
	return mnt, root
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	mustNoErr(t, unix.Statfs(dir, &st))
	return int64(st.Bavail) * int64(st.Bsize)
}

// MinFree stops a layer that would fill its filesystem before it does,
// whether it writes one big file or many small ones (each takes a page of
// tmpfs), and names the filesystem's mount point.
func TestApplyMinFree(t *testing.T) {
	const fsSize, minFree = 32 << 20, 16 << 20
	for _, tc := range []struct {
		name  string
		write func(tw *tar.Writer) error
	}{
		{"one big file", func(tw *tar.Writer) error { return zeroFile(tw, "zeros", 256<<20) }},
		{"many small files", func(tw *tar.Writer) error {
			for i := range 20000 {
				if err := zeroFile(tw, fmt.Sprintf("f%d", i), 1); err != nil {
					return err
				}
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt, root := smallFS(t, fsSize)
			_, err := Apply(context.Background(), root, streamTar(t, tc.write), ApplyOptions{MinFree: minFree})
			le := wantLimit(t, err, LimitFree, fmt.Sprintf("layer would leave less than %d bytes free on %s", minFree, mnt))
			if le.Path != mnt {
				t.Errorf("Path = %q, want the mount point %q", le.Path, mnt)
			}
			if errors.Is(err, unix.ENOSPC) {
				t.Errorf("the filesystem filled up: %v", err)
			}
			if free := freeBytes(t, mnt); free < minFree-MinFreeInterval {
				t.Errorf("%d bytes left free, want at least MinFree - MinFreeInterval = %d", free, minFree-MinFreeInterval)
			}
		})
	}
}

// A filesystem already below MinFree refuses the layer before writing
// anything; one with room takes it.
func TestApplyMinFreeBeforeStart(t *testing.T) {
	mnt, root := smallFS(t, 8<<20)
	layer := tarOf(t, file("a", "a"))
	_, err := Apply(context.Background(), root, strings.NewReader(string(layer)), ApplyOptions{MinFree: 16 << 20})
	wantLimit(t, err, LimitFree, "free on "+mnt)
	if ents, err := os.ReadDir(root); err != nil || len(ents) != 0 {
		t.Fatalf("root holds %v (%v), want nothing", ents, err)
	}
	if _, err := Apply(context.Background(), root, strings.NewReader(string(layer)), ApplyOptions{MinFree: 1 << 20}); err != nil {
		t.Fatalf("with room: %v", err)
	}
	if got := readFile(t, filepath.Join(root, "a")); got != "a" {
		t.Errorf("a = %q", got)
	}
}
