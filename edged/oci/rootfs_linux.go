package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

// rootFS reads files inside a container root filesystem on the host without
// ever leaving it: every path, and every symlink met on the way, is resolved
// as if the rootfs were "/" (openat2 with RESOLVE_IN_ROOT), so an image whose
// /etc/passwd is a symlink to /etc/shadow or ../../../etc/passwd reads its
// own files, never the host's.
//
// On kernels without openat2 (before 5.6) it falls back to os.Root, which is
// stricter: a symlink that would leave the rootfs, absolute ones included,
// fails instead of being resolved inside it.
type rootFS struct {
	path      string
	dirFd     int // O_PATH descriptor of path, -1 until first use
	osRoot    *os.Root
	noOpenat2 bool
	scanBuf   []byte
}

func newRootFS(path string) *rootFS {
	return &rootFS{path: path, dirFd: -1}
}

// close releases the descriptors held by r.
func (r *rootFS) close() {
	if r.dirFd >= 0 {
		unix.Close(r.dirFd)
		r.dirFd = -1
	}
	if r.osRoot != nil {
		r.osRoot.Close()
		r.osRoot = nil
	}
}

// open opens the regular file name (absolute, relative to the rootfs) for
// reading. A missing file gives an error matching fs.ErrNotExist; anything
// but a regular file gives ErrInvalidArgument.
func (r *rootFS) open(name string) (*os.File, error) {
	if r.path == "" {
		return nil, errNoRootfs
	}
	if !r.noOpenat2 {
		f, err := r.openInRoot(name)
		if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EPERM) {
			return f, err
		}
		// openat2 is missing (old kernel) or filtered by seccomp.
		r.noOpenat2 = true
	}
	return r.openOSRoot(name)
}

// openInRoot opens name with openat2(RESOLVE_IN_ROOT).
func (r *rootFS) openInRoot(name string) (*os.File, error) {
	if r.dirFd < 0 {
		fd, err := retryEINTR(func() (int, error) {
			return unix.Open(r.path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		})
		if err != nil {
			return nil, rootfsError(r.path, err)
		}
		r.dirFd = fd
	}
	// O_PATH first: it opens without side effects (no FIFO blocking, no
	// device open), and the inode found is then checked and reopened.
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	pfd, err := retryEINTR(func() (int, error) { return unix.Openat2(r.dirFd, name, &how) })
	if err != nil {
		return nil, &fs.PathError{Op: "openat2", Path: name, Err: err}
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := fstat(pfd, &st); err != nil {
		return nil, &fs.PathError{Op: "fstat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, errNotRegular(name)
	}
	// Reopening through /proc/self/fd opens the very inode checked above
	// without resolving name again.
	fd, err := retryEINTR(func() (int, error) {
		return unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_RDONLY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, &fs.PathError{Op: "reopen", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// openOSRoot opens name with os.Root, the fallback for kernels without
// openat2.
func (r *rootFS) openOSRoot(name string) (*os.File, error) {
	if r.osRoot == nil {
		root, err := os.OpenRoot(r.path)
		if err != nil {
			return nil, rootfsError(r.path, err)
		}
		r.osRoot = root
	}
	rel := name
	for len(rel) > 0 && rel[0] == '/' {
		rel = rel[1:]
	}
	fi, err := r.osRoot.Stat(rel)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errNotRegular(name)
	}
	f, err := r.osRoot.OpenFile(rel, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, errNotRegular(name)
	}
	return f, nil
}

func rootfsError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rootfs %s: %w", path, errdefs.ErrNotFound)
	}
	return fmt.Errorf("rootfs %s: %w", path, err)
}

func errNotRegular(name string) error {
	return fmt.Errorf("image file %s is not a regular file: %w", name, errdefs.ErrInvalidArgument)
}

func fstat(fd int, st *unix.Stat_t) error {
	_, err := retryEINTR(func() (int, error) { return 0, unix.Fstat(fd, st) })
	return err
}

// retryEINTR calls fn until it fails with something other than EINTR.
func retryEINTR(fn func() (int, error)) (int, error) {
	for {
		n, err := fn()
		if err != unix.EINTR {
			return n, err
		}
	}
}

// grantableCaps returns the capabilities a container can be given: the
// bounding set of this process (runc, started by edged, can grant no more),
// as a bit mask by capability number. If /proc cannot tell, every capability
// edged knows is assumed.
func grantableCaps() uint64 {
	all := uint64(1)<<numCaps - 1
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return all
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return all
			}
			return mask & all
		}
	}
	return all
}
