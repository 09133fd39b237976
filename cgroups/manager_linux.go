package cgroups

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

const cgroupSuperMagic = unix.CGROUP_SUPER_MAGIC

// New returns the Manager of the cgroup at path (relative to the hierarchy
// root, e.g. from PathConfig.ContainerPath) on a host with layout mode
// (see DetectMode); root "" means DefaultRoot. Hybrid hosts use v1. New
// touches nothing: call Create to make the cgroup.
func New(root string, mode Mode, path string) (Manager, error) {
	if root == "" {
		root = DefaultRoot
	}
	if err := validPath("cgroup path", path); err != nil {
		return nil, err
	}
	if path == "/" {
		return nil, errdefs.InvalidArgument("cgroup path", "the root cgroup cannot be managed")
	}
	switch mode {
	case Unified:
		return newV2(root, path), nil
	case Legacy, Hybrid:
		paths := map[string]string{}
		for _, c := range strings.Fields(v1Controllers) {
			paths[c] = path
		}
		return newV1(root, path, paths), nil
	}
	return nil, fmt.Errorf("cgroup mode %v: %w", mode, errdefs.ErrFailedPrecondition)
}

// Load returns the Manager of the cgroup process pid is in, read from
// /proc/<pid>/cgroup (on v1 each controller may have its own path). It
// fails with ErrNotFound when the process does not exist.
func Load(root string, mode Mode, pid int) (Manager, error) {
	if root == "" {
		root = DefaultRoot
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("process %d: %w", pid, errdefs.ErrNotFound)
		}
		return nil, err
	}
	unified, v1paths, err := parseProcCgroup(b)
	if err != nil {
		return nil, fmt.Errorf("/proc/%d/cgroup: %w", pid, err)
	}
	switch mode {
	case Unified:
		if unified == "" {
			return nil, fmt.Errorf("/proc/%d/cgroup has no cgroup v2 entry: %w", pid, errdefs.ErrNotFound)
		}
		return newV2(root, unified), nil
	case Legacy, Hybrid:
		main := v1paths["memory"]
		if main == "" {
			for _, c := range strings.Fields(v1Controllers) {
				if main = v1paths[c]; main != "" {
					break
				}
			}
		}
		if main == "" {
			return nil, fmt.Errorf("/proc/%d/cgroup has no cgroup v1 controller entry: %w", pid, errdefs.ErrNotFound)
		}
		return newV1(root, main, v1paths), nil
	}
	return nil, fmt.Errorf("cgroup mode %v: %w", mode, errdefs.ErrFailedPrecondition)
}

// parseProcCgroup parses /proc/<pid>/cgroup: "0::/path" is the v2 entry,
// "N:ctrl1,ctrl2:/path" v1 entries (named hierarchies such as
// name=systemd are skipped). Paths must be clean absolute paths.
func parseProcCgroup(b []byte) (unified string, v1 map[string]string, err error) {
	v1 = map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return "", nil, fmt.Errorf("malformed line %q: %w", line, errdefs.ErrDataLoss)
		}
		p := parts[2]
		// A cgroup whose directory was removed reads "/path (deleted)".
		p = strings.TrimSuffix(p, " (deleted)")
		if err := validPath("cgroup path", p); err != nil {
			return "", nil, fmt.Errorf("line %q: %w", line, err)
		}
		if parts[0] == "0" && parts[1] == "" {
			unified = p
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c != "" && !strings.HasPrefix(c, "name=") {
				v1[c] = p
			}
		}
	}
	return unified, v1, nil
}
