package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

// DefaultRoot is where the cgroup hierarchies are mounted.
const DefaultRoot = "/sys/fs/cgroup"

// Mode is the cgroup layout of a host.
type Mode int

const (
	// Unavailable means no cgroup file system is mounted at the root.
	Unavailable Mode = iota
	// Legacy means only v1 hierarchies: <root> is a tmpfs holding one
	// mount per controller and no cgroup2 mount at <root>/unified.
	Legacy
	// Hybrid means v1 hierarchies for the controllers plus a cgroup2 mount
	// at <root>/unified (usually without controllers). Managers use v1.
	Hybrid
	// Unified means <root> itself is cgroup2.
	Unified
)

// String returns the lower-case name of the mode.
func (m Mode) String() string {
	switch m {
	case Legacy:
		return "legacy"
	case Hybrid:
		return "hybrid"
	case Unified:
		return "unified"
	default:
		return "unavailable"
	}
}

// fsMagic returns the file system magic of path, retrying on EINTR.
func fsMagic(path string) (int64, error) {
	var st unix.Statfs_t
	for {
		err := unix.Statfs(path, &st)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &fs.PathError{Op: "statfs", Path: path, Err: err}
		}
		return int64(st.Type), nil
	}
}

// DetectMode reports the cgroup layout under root ("" means DefaultRoot) from
// the file system magic of root and of root/unified.
func DetectMode(root string) (Mode, error) {
	if root == "" {
		root = DefaultRoot
	}
	magic, err := fsMagic(root)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return Unavailable, fmt.Errorf("cgroup root %s: %w", root, errdefs.ErrNotFound)
		}
		return Unavailable, err
	}
	switch magic {
	case unix.CGROUP2_SUPER_MAGIC:
		return Unified, nil
	case unix.TMPFS_MAGIC:
		// The usual v1 layout: one mount per controller below a tmpfs.
	default:
		return Unavailable, fmt.Errorf("cgroup root %s: unexpected file system magic %#x: %w", root, magic, errdefs.ErrFailedPrecondition)
	}
	um, err := fsMagic(filepath.Join(root, "unified"))
	if err == nil && um == unix.CGROUP2_SUPER_MAGIC {
		return Hybrid, nil
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return Unavailable, err
	}
	return Legacy, nil
}
