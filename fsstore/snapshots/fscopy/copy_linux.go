// Package fscopy copies a directory tree exactly: file contents (reflinked
// when the filesystem can), modes including setuid/setgid/sticky, owners,
// extended attributes (including security.capability and trusted.overlay.*),
// hardlinks, symlinks, device nodes, FIFOs, sockets and timestamps. It never
// follows symlinks and never leaves the source filesystem's tree.
package fscopy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

type inode struct {
	dev uint64
	ino uint64
}

type copier struct {
	links map[inode]string // first destination path of multiply-linked files
}

// CopyDir copies the tree at src into dst. dst must not exist or be an empty
// directory; it gets src's owner, mode, xattrs and times.
func CopyDir(ctx context.Context, dst, src string) error {
	var st unix.Stat_t
	if err := lstat(src, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("copy %s: not a directory", src)
	}
	if err := os.Mkdir(dst, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("copy: %w", err)
	}
	c := &copier{links: make(map[inode]string)}
	if err := c.copyDir(ctx, dst, src); err != nil {
		return err
	}
	return copyMeta(dst, src, &st)
}

func lstat(path string, st *unix.Stat_t) error {
	for {
		err := unix.Lstat(path, st)
		if !errors.Is(err, unix.EINTR) {
			if err != nil {
				return &fs.PathError{Op: "lstat", Path: path, Err: err}
			}
			return nil
		}
	}
}

// copyDir copies the entries of src into the existing directory dst. A
// directory's metadata is applied after its entries, so that its times are
// not disturbed by their creation.
func (c *copier) copyDir(ctx context.Context, dst, src string) error {
	d, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer d.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		names, rerr := d.Readdirnames(256)
		for _, name := range names {
			if err := c.copyEntry(ctx, filepath.Join(dst, name), filepath.Join(src, name)); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("copy: read dir %s: %w", src, rerr)
		}
	}
}

func (c *copier) copyEntry(ctx context.Context, dst, src string) error {
	var st unix.Stat_t
	if err := lstat(src, &st); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := os.Mkdir(dst, 0o700); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		if err := c.copyDir(ctx, dst, src); err != nil {
			return err
		}
	case unix.S_IFREG:
		if st.Nlink > 1 {
			key := inode{uint64(st.Dev), st.Ino}
			if first, ok := c.links[key]; ok {
				if err := os.Link(first, dst); err != nil {
					return fmt.Errorf("copy: hardlink: %w", err)
				}
				return nil // shares metadata with the first link
			}
			c.links[key] = dst
		}
		if err := c.copyFile(dst, src); err != nil {
			return err
		}
	case unix.S_IFLNK:
		link, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		if err := os.Symlink(link, dst); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("copy: mknod %s: %w", dst, err)
		}
	default:
		return fmt.Errorf("copy: %s: unsupported file type %#o", src, st.Mode&unix.S_IFMT)
	}
	return copyMeta(dst, src, &st)
}

func (c *copier) copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer out.Close()
	// A reflink shares the blocks (btrfs, xfs); otherwise io.Copy uses
	// copy_file_range, which stays in the kernel.
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		if _, err := io.Copy(out, in); err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	return nil
}

// copyMeta applies owner, mode, xattrs and times of src (stat st) to dst, in
// the order that keeps them: chown clears setuid bits and file capabilities,
// so it comes first.
func copyMeta(dst, src string, st *unix.Stat_t) error {
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("copy: chown %s: %w", dst, err)
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	if !isLink {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return fmt.Errorf("copy: chmod %s: %w", dst, err)
		}
	}
	if err := copyXattrs(dst, src); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("copy: utimes %s: %w", dst, err)
	}
	return nil
}

func copyXattrs(dst, src string) error {
	size, err := unix.Llistxattr(src, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return fmt.Errorf("copy: listxattr %s: %w", src, err)
	}
	if size == 0 {
		return nil
	}
	names := make([]byte, size)
	size, err = unix.Llistxattr(src, names)
	if err != nil {
		return fmt.Errorf("copy: listxattr %s: %w", src, err)
	}
	var val []byte
	for _, name := range splitNull(names[:size]) {
		n, err := unix.Lgetxattr(src, name, nil)
		if err != nil {
			return fmt.Errorf("copy: getxattr %s %s: %w", src, name, err)
		}
		if cap(val) < n {
			val = make([]byte, n)
		}
		n, err = unix.Lgetxattr(src, name, val[:n])
		if err != nil {
			return fmt.Errorf("copy: getxattr %s %s: %w", src, name, err)
		}
		if err := unix.Lsetxattr(dst, name, val[:n], 0); err != nil {
			return fmt.Errorf("copy: setxattr %s %s: %w", dst, name, err)
		}
	}
	return nil
}

func splitNull(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}
