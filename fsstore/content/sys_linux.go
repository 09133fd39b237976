package content

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

// flockExclusive takes a non-blocking exclusive flock on f, so that two
// processes (say a stray second daemon) never write the same ingest. The
// kernel drops it when the process dies.
func flockExclusive(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return fmt.Errorf("ref locked by another process: %w", errdefs.ErrUnavailable)
		default:
			return fmt.Errorf("flock: %w", err)
		}
	}
}

// renameNoReplace renames oldpath to newpath, failing with fs.ErrExist when
// newpath exists. Filesystems without RENAME_NOREPLACE fall back to
// link+unlink, which has the same no-clobber guarantee.
func renameNoReplace(oldpath, newpath string) error {
	for {
		err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EEXIST):
			return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrExist}
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
			if err := os.Link(oldpath, newpath); err != nil {
				return err // *LinkError wrapping EEXIST is errors.Is(fs.ErrExist)
			}
			return os.Remove(oldpath)
		default:
			return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
		}
	}
}

// lockedElsewhere reports whether the data file of the ingest in dir is
// flocked, by a Writer of another process (a registry helper) or of this
// one: such an ingest is in use, whatever its files say.
func lockedElsewhere(dir string) bool {
	f, err := os.Open(dir + "/" + fileData)
	if err != nil {
		return false
	}
	defer f.Close()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
			return false
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return errors.Is(err, unix.EWOULDBLOCK)
		}
	}
}
