//go:build linux

package archive

import (
	"archive/tar"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// A filesystem whose statfs fails (a FUSE filesystem whose server answers
// STATFS with EIO, as one over a broken network link does) fails the layer
// before anything is written, with a message naming the root and the
// check, and the system's error kept.
func TestApplyMinFreeStatfsFails(t *testing.T) {
	mnt := statfsFailingFS(t)
	_, err := Apply(context.Background(), mnt, strings.NewReader(string(tarOf(t, file("a", "a")))), ApplyOptions{MinFree: 1 << 20})
	want := "check free space on " + mnt + " (MinFree): statfs: input/output error"
	if err == nil || err.Error() != want || !errors.Is(err, unix.EIO) {
		t.Fatalf("err = %v; want %q wrapping EIO", err, want)
	}
	// Without MinFree there is no statfs: the same root opens, and the
	// layer fails only at its first entry (this filesystem creates
	// nothing), which shows the statfs was what failed above.
	_, err = Apply(context.Background(), mnt, strings.NewReader(string(tarOf(t, file("a", "a")))), ApplyOptions{})
	if err == nil || strings.Contains(err.Error(), "statfs") || !strings.Contains(err.Error(), `layer entry "a"`) {
		t.Fatalf("without MinFree: %v; want a failure of entry \"a\"", err)
	}
}

// statfsFailingFS mounts a minimal FUSE filesystem, served by this test,
// and returns its mount point: an empty root directory that can be opened,
// whose STATFS fails with EIO, and that answers ENOSYS to everything else.
// It is a real kernel filesystem; only its server is this small one, since
// no filesystem the kernel has fails statfs on demand.
func statfsFailingFS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a FUSE filesystem needs root")
	}
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no FUSE: %v", err)
	}
	mnt := t.TempDir()
	if err := unix.Mount("edged-test", mnt, "fuse", unix.MS_NOSUID|unix.MS_NODEV,
		fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", dev)); err != nil {
		unix.Close(dev)
		t.Skipf("mount FUSE: %v", err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		serveStatfsFailing(dev)
	}()
	t.Cleanup(func() {
		// Unmounting ends the connection: the server's read fails.
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Errorf("FUSE server still running after unmount")
		}
		unix.Close(dev)
	})
	return mnt
}

// The FUSE protocol (linux/fuse.h) as far as statfsFailingFS needs it.
const (
	fuseGetattr     = 3
	fuseStatfs      = 17
	fuseForget      = 2
	fuseInit        = 26
	fuseOpendir     = 27
	fuseReleasedir  = 29
	fuseBatchForget = 42
	fuseInHeaderLen = 40
)

func serveStatfsFailing(dev int) {
	buf := make([]byte, 1<<17)
	for {
		n, err := unix.Read(dev, buf)
		if err == unix.EINTR || err == unix.ENOENT {
			continue
		}
		if err != nil || n < fuseInHeaderLen {
			return // ENODEV: unmounted
		}
		le := binary.LittleEndian
		opcode, unique := le.Uint32(buf[4:]), le.Uint64(buf[8:])
		var errno int32
		var out []byte
		switch opcode {
		case fuseForget, fuseBatchForget:
			continue // no reply
		case fuseInit:
			// fuse_init_out: major 7, minor 31, max_write 4096, time_gran 1.
			out = make([]byte, 64)
			le.PutUint32(out[0:], 7)
			le.PutUint32(out[4:], 31)
			le.PutUint32(out[20:], 4096)
			le.PutUint32(out[24:], 1)
		case fuseGetattr:
			// fuse_attr_out: attr_valid 0, then fuse_attr of the root:
			// ino 1, mode dir 0755, nlink 2.
			out = make([]byte, 104)
			attr := out[16:]
			le.PutUint64(attr[0:], 1)
			le.PutUint32(attr[60:], unix.S_IFDIR|0o755)
			le.PutUint32(attr[64:], 2)
		case fuseOpendir:
			out = make([]byte, 16) // fuse_open_out: fh 0
		case fuseReleasedir:
		case fuseStatfs:
			errno = -int32(unix.EIO)
		default:
			errno = -int32(unix.ENOSYS)
		}
		reply := make([]byte, 16+len(out))
		le.PutUint32(reply[0:], uint32(len(reply)))
		le.PutUint32(reply[4:], uint32(errno))
		le.PutUint64(reply[8:], unique)
		copy(reply[16:], out)
		unix.Write(dev, reply) // ENOENT: the request was interrupted
	}
}
