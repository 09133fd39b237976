package fscopy

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func lst(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(p, &st))
	return st
}

func xattr(t *testing.T, p, name string) []byte {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", p, name, err)
	}
	return buf[:n]
}

func TestCopyDirPreservesEverything(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	dst := filepath.Join(t.TempDir(), "dst")
	p := func(n string) string { return filepath.Join(src, n) }
	old := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)

	must(t, os.Mkdir(src, 0o755))
	must(t, os.Mkdir(p("sticky"), 0o755))
	must(t, os.Chmod(p("sticky"), 0o777|os.ModeSticky))
	must(t, os.Chown(p("sticky"), 1000, 1001))
	must(t, os.WriteFile(p("sticky/setuid"), []byte("binary"), 0o755))
	must(t, os.Chown(p("sticky/setuid"), 0, 0))
	must(t, os.Chmod(p("sticky/setuid"), 0o755|os.ModeSetuid|os.ModeSetgid))
	must(t, os.WriteFile(p("owned"), bytes.Repeat([]byte("data"), 100000), 0o640))
	must(t, os.Chown(p("owned"), 1234, 5678))
	must(t, unix.Lsetxattr(p("owned"), "user.test", []byte("value"), 0))
	must(t, unix.Lsetxattr(p("sticky"), "trusted.overlay.opaque", []byte("y"), 0))
	// File capability: VFS_CAP_REVISION_2 | effective, CAP_NET_BIND_SERVICE.
	capv := make([]byte, 20)
	binary.LittleEndian.PutUint32(capv[0:], 0x02000001)
	binary.LittleEndian.PutUint32(capv[4:], 1<<10)
	must(t, os.WriteFile(p("capbin"), []byte("x"), 0o755))
	must(t, unix.Lsetxattr(p("capbin"), "security.capability", capv, 0))
	must(t, os.Link(p("owned"), p("hardlink")))
	must(t, os.Symlink("/nonexistent/target", p("dangling")))
	must(t, unix.Lchown(p("dangling"), 42, 43))
	must(t, unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Mknod(p("whiteout"), unix.S_IFCHR, 0))
	must(t, unix.Mkfifo(p("fifo"), 0o600))
	must(t, unix.Mknod(p("sock"), unix.S_IFSOCK|0o600, 0))
	must(t, os.Mkdir(p("empty"), 0o700))
	must(t, os.Chtimes(p("owned"), old, old))
	must(t, os.Chtimes(p("empty"), old, old))
	must(t, unix.Lutimes(p("dangling"), []unix.Timeval{unix.NsecToTimeval(old.UnixNano()), unix.NsecToTimeval(old.UnixNano())}))
	must(t, os.Chtimes(p("sticky"), old, old)) // after its entries were made

	must(t, CopyDir(context.Background(), dst, src))

	q := func(n string) string { return filepath.Join(dst, n) }
	for _, name := range []string{".", "sticky", "sticky/setuid", "owned", "hardlink", "dangling", "null", "whiteout", "fifo", "sock", "empty", "capbin"} {
		s, d := lst(t, p(name)), lst(t, q(name))
		if s.Mode != d.Mode || s.Uid != d.Uid || s.Gid != d.Gid || s.Rdev != d.Rdev || s.Size != d.Size {
			t.Errorf("%s: src mode %o uid %d gid %d rdev %d size %d; dst mode %o uid %d gid %d rdev %d size %d",
				name, s.Mode, s.Uid, s.Gid, s.Rdev, s.Size, d.Mode, d.Uid, d.Gid, d.Rdev, d.Size)
		}
		if s.Mtim != d.Mtim {
			t.Errorf("%s: mtime %v, want %v", name, d.Mtim, s.Mtim)
		}
	}
	if a, b := lst(t, q("owned")), lst(t, q("hardlink")); a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hardlink not preserved: inodes %d %d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if lst(t, q("owned")).Ino == lst(t, p("owned")).Ino {
		t.Error("copy shares the source inode")
	}
	if got, _ := os.Readlink(q("dangling")); got != "/nonexistent/target" {
		t.Errorf("symlink %q", got)
	}
	if string(xattr(t, q("owned"), "user.test")) != "value" {
		t.Error("user xattr lost")
	}
	if string(xattr(t, q("sticky"), "trusted.overlay.opaque")) != "y" {
		t.Error("trusted xattr lost")
	}
	if !bytes.Equal(xattr(t, q("capbin"), "security.capability"), capv) {
		t.Error("file capability lost")
	}
	a, _ := os.ReadFile(p("owned"))
	b, _ := os.ReadFile(q("owned"))
	if !bytes.Equal(a, b) {
		t.Error("content differs")
	}
	// The copy is independent of the source.
	must(t, os.WriteFile(q("owned"), []byte("changed"), 0o640))
	if a2, _ := os.ReadFile(p("owned")); !bytes.Equal(a2, a) {
		t.Error("writing the copy changed the source")
	}
}

func TestCopyDirErrors(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "file")
	must(t, os.WriteFile(f, nil, 0o644))
	if err := CopyDir(context.Background(), filepath.Join(dir, "d"), f); err == nil {
		t.Fatal("copying a file as a directory succeeded")
	}
	if err := CopyDir(context.Background(), filepath.Join(dir, "d"), filepath.Join(dir, "missing")); err == nil {
		t.Fatal("copying a missing source succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src := filepath.Join(dir, "src")
	must(t, os.MkdirAll(filepath.Join(src, "a"), 0o755))
	if err := CopyDir(ctx, filepath.Join(dir, "d2"), src); err != context.Canceled {
		t.Fatalf("cancelled copy: %v", err)
	}
}
