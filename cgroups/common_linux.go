package cgroups

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

// reader reads optional cgroup files during Stat: a missing file reads as
// absent, any other error is kept (the first one wins).
type reader struct {
	buf     *[]byte
	err     error
	missing bool
}

// read returns the content of f, or nil when f is missing or unreadable.
func (r *reader) read(f cfile) []byte {
	if f == nil {
		// The controller is not mounted (v1).
		return nil
	}
	b, err := f.readInto(r.buf)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EOPNOTSUPP) {
			r.missing = true
		} else if r.err == nil {
			r.err = err
		}
		return nil
	}
	return b
}

// uint reads a one-number file; 0 when absent.
func (r *reader) uint(f cfile) uint64 {
	b := r.read(f)
	if b == nil {
		return 0
	}
	v, ok := parseUintOrMax(trimSpace(b))
	if !ok && r.err == nil {
		r.err = fmt.Errorf("%s: unexpected content %q: %w", f.String(), trimSpace(b), errdefs.ErrDataLoss)
	}
	return v
}

// done returns the Stat error: ErrNotFound when the cgroup directory is gone.
func (r *reader) done(dir string) error {
	if r.missing && !exists(dir) {
		return fmt.Errorf("cgroup %s: %w", dir, errdefs.ErrNotFound)
	}
	return r.err
}

// writeKind classifies a failed write to a cgroup file.
func writeKind(err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return errdefs.ErrNotImplemented
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ERANGE):
		return errdefs.ErrInvalidArgument
	case errors.Is(err, unix.EBUSY):
		return errdefs.ErrFailedPrecondition
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return errdefs.ErrPermissionDenied
	}
	return errdefs.ErrUnknown
}

// write writes value to dir/name; the error names the file and value and
// carries both the errno and an errdefs kind.
func write(dir, name, value string) error {
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(value)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("write %q to %s: %w: %w", value, p, err, writeKind(err))
	}
	return nil
}

// mkdir creates dir; an existing directory is fine.
func mkdir(dir string) error {
	err := os.Mkdir(dir, 0o755)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create cgroup: %w", err)
	}
	return nil
}

// rmdirAll removes dir and the cgroup directories below it, deepest first.
// Cgroup directories hold only kernel files, which rmdir takes with them.
// A cgroup without sub-cgroups (the common case) is removed at once; dir
// is listed only when that fails.
func rmdirAll(dir string) error {
	if err := rmdir(dir); err == nil || !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := rmdirAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return rmdir(dir)
}

// rmdir removes the directory dir; a missing one is fine.
func rmdir(dir string) error {
	for {
		err := unix.Rmdir(dir)
		switch err {
		case nil, unix.ENOENT:
			return nil
		case unix.EINTR:
			continue
		}
		return &fs.PathError{Op: "rmdir", Path: dir, Err: err}
	}
}

// RemoveDirs deletes the cgroup directories dirs and the cgroups below
// them, retrying while they are busy (see removeDirs): for callers that
// know a container's cgroup paths but have no Manager, like the shim
// removing an exited runc container.
func RemoveDirs(ctx context.Context, dirs ...string) error {
	return removeDirs(ctx, dirs, func() ([]int, error) { return nil, nil })
}

// removeDirs deletes the cgroup directories dirs, retrying EBUSY (a process
// that just exited is still being released) with a growing pause, about
// half a second in all. procs lists what remains for the error message.
func removeDirs(ctx context.Context, dirs []string, procs func() ([]int, error)) error {
	delay := 5 * time.Millisecond
	for attempt := 0; ; attempt++ {
		var err error
		for _, d := range dirs {
			if err = rmdirAll(d); err != nil {
				break
			}
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || attempt == 6 {
			if errors.Is(err, unix.EBUSY) {
				if pids, perr := procs(); perr == nil && len(pids) > 0 {
					return fmt.Errorf("delete cgroup: %d processes remain %v: %w: %w", len(pids), pids, err, errdefs.ErrFailedPrecondition)
				}
				return fmt.Errorf("delete cgroup: %w: %w", err, errdefs.ErrFailedPrecondition)
			}
			return fmt.Errorf("delete cgroup: %w", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("delete cgroup: %w (last error: %v)", ctx.Err(), err)
		case <-t.C:
		}
		delay *= 2
	}
}

// waitFor polls check with a growing pause (1 ms to 50 ms) until it returns
// true, an error, or ctx ends. Used for freezer state transitions.
func waitFor(ctx context.Context, what string, check func() (bool, error)) error {
	delay := time.Millisecond
	for {
		ok, err := check()
		if err != nil || ok {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// validPageSize checks a hugetlb page size such as "2MB" or "1GB".
func validPageSize(ps string) error {
	if len(ps) < 3 || !strings.HasSuffix(ps, "B") || !strings.ContainsRune("KMG", rune(ps[len(ps)-2])) {
		return errdefs.InvalidArgument("hugepageLimits.pageSize", "%q is not <number><K|M|G>B", ps)
	}
	if _, ok := parseUint([]byte(ps[:len(ps)-2])); !ok {
		return errdefs.InvalidArgument("hugepageLimits.pageSize", "%q is not <number><K|M|G>B", ps)
	}
	return nil
}
