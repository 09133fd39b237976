package cgroups

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

// cfile is the absolute path of a cgroup file, NUL-terminated, built once so
// that reading it needs no allocation.
type cfile []byte

func newCfile(dir, name string) cfile {
	b := make([]byte, 0, len(dir)+len(name)+2)
	b = append(b, dir...)
	b = append(b, '/')
	b = append(b, name...)
	return append(b, 0)
}

// String returns the path without the terminating NUL.
func (f cfile) String() string { return string(f[:len(f)-1]) }

// open opens f read-only, retrying on EINTR. It calls openat directly with the
// prebuilt NUL-terminated path to avoid the allocation unix.Open makes.
func (f cfile) open() (int, error) {
	cwd := unix.AT_FDCWD
	for {
		fd, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(cwd), uintptr(unsafe.Pointer(&f[0])),
			uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
		switch e {
		case 0:
			return int(fd), nil
		case unix.EINTR:
			continue
		default:
			return -1, &fs.PathError{Op: "open", Path: f.String(), Err: e}
		}
	}
}

// nlink returns the link count of f (a directory: on cgroupfs 2 + its
// number of subdirectories) with one statx(2) on the prebuilt path, which
// allocates nothing. Where statx is missing (kernels < 4.11, a seccomp
// filter) it opens and fstats f.
func (f cfile) nlink() (uint64, error) {
	cwd := unix.AT_FDCWD
	var stx unix.Statx_t
	for {
		_, _, e := unix.Syscall6(unix.SYS_STATX, uintptr(cwd), uintptr(unsafe.Pointer(&f[0])),
			uintptr(unix.AT_SYMLINK_NOFOLLOW), uintptr(unix.STATX_NLINK), uintptr(unsafe.Pointer(&stx)), 0)
		switch e {
		case 0:
			return uint64(stx.Nlink), nil
		case unix.EINTR:
			continue
		case unix.ENOSYS, unix.EPERM:
			return f.nlinkFstat()
		default:
			return 0, &fs.PathError{Op: "statx", Path: f.String(), Err: e}
		}
	}
}

func (f cfile) nlinkFstat() (uint64, error) {
	fd, err := f.open()
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	for {
		err = unix.Fstat(fd, &st)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return 0, &fs.PathError{Op: "fstat", Path: f.String(), Err: err}
	}
	return uint64(st.Nlink), nil
}

// readInto reads the whole of f into *buf (grown when too small) and returns
// the bytes read, which stay valid until the next use of buf.
//
// Only for cgroup files shown as one seq_file record (every statistics and
// limit file; not cgroup.procs or tasks): the kernel produces such a file
// whole, so a read that leaves room in buf has read all of it, and the
// read that would return 0 is skipped — a third of the system calls of a
// Stat.
func (f cfile) readInto(buf *[]byte) ([]byte, error) {
	fd, err := f.open()
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if cap(*buf) < 1024 {
		// Enough for every statistics file (memory.stat is the largest:
		// about 1 KiB on v1, 2-3 KiB on v2); it grows when not.
		*buf = make([]byte, 4096)
	}
	b := (*buf)[:cap(*buf)]
	n := 0
	for {
		if n == len(b) {
			nb := make([]byte, 2*len(b))
			copy(nb, b)
			b = nb
			*buf = b
		}
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: f.String(), Err: err}
		}
		if m == 0 {
			return b[:n], nil
		}
		n += m
		if n < len(b) {
			return b[:n], nil
		}
	}
}

// readUint reads a file holding one unsigned number or "max" (Unlimited).
func (f cfile) readUint(buf *[]byte) (uint64, error) {
	b, err := f.readInto(buf)
	if err != nil {
		return 0, err
	}
	v, ok := parseUintOrMax(trimSpace(b))
	if !ok {
		return 0, fmt.Errorf("%s: unexpected content %q: %w", f.String(), trimSpace(b), errdefs.ErrDataLoss)
	}
	return v, nil
}

// readString reads a small cgroup file as a trimmed string.
func readString(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// readPids parses a cgroup.procs file.
func readPids(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		line = trimSpace(line)
		if len(line) == 0 {
			continue
		}
		v, ok := parseUint(line)
		if !ok {
			return nil, fmt.Errorf("%s/cgroup.procs: bad pid %q: %w", dir, line, errdefs.ErrDataLoss)
		}
		pids = append(pids, int(v))
	}
	return pids, nil
}
