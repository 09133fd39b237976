package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

// Hierarchies returns the mount points under root ("" means DefaultRoot)
// of every cgroup hierarchy of a host with layout mode: root itself on a
// unified host; on a v1 host (legacy or hybrid) every cgroup file system
// mounted directly below root, in name order — the controllers' (a
// combined one such as cpu,cpuacct once, not again through its symlinks),
// the named ones (name=systemd) and a hybrid host's cgroup2 "unified".
// runc makes a container's cgroup in each of them, where a v1 Manager
// knows only the controllers it uses: whoever removes a cgroup that runc
// made and did not record looks in all of them.
func Hierarchies(root string, mode Mode) ([]string, error) {
	if root == "" {
		root = DefaultRoot
	}
	switch mode {
	case Unified:
		return []string{root}, nil
	case Legacy, Hybrid:
	default:
		return nil, fmt.Errorf("cgroup hierarchies: cgroup mode %v: %w", mode, errdefs.ErrFailedPrecondition)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("cgroup hierarchies: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() { // symlinks (cpu -> cpu,cpuacct) and files
			continue
		}
		d := filepath.Join(root, e.Name())
		magic, err := fsMagic(d)
		switch {
		case errors.Is(err, unix.ENOENT):
			continue // removed meanwhile
		case err != nil:
			return nil, fmt.Errorf("cgroup hierarchies: %w", err)
		case magic == cgroupSuperMagic || magic == unix.CGROUP2_SUPER_MAGIC:
			out = append(out, d)
		}
	}
	return out, nil
}
