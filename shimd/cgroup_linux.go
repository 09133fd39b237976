package shimd

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/edged/edged/cgroups"
)

// bundleCgroup is the cgroup that a bundle's config.json names
// (linux.cgroupsPath), as the shim found it before runc ran.
type bundleCgroup struct {
	// path is relative to the hierarchies' root; "" when the shim cannot
	// tell which cgroup runc will use.
	path string
	// dirs are its directories, one per hierarchy (cgroups.Hierarchies).
	dirs []string
	// existed is set when one of dirs was there before runc ran: the
	// cgroup is not the container's alone.
	existed bool
}

// cgroupHierarchies returns the host's cgroup hierarchies, found on the
// first call; nil without cgroups.
func (s *Service) cgroupHierarchies() []string {
	s.hierOnce.Do(func() {
		mode, err := cgroups.DetectMode("")
		if err == nil {
			s.hier, err = cgroups.Hierarchies("", mode)
		}
		if err != nil {
			s.cfg.Log.Warn("cgroup hierarchies not found: the cgroup of a create killed at its deadline is left", "error", err)
		}
	})
	return s.hier
}

// bundleCgroup reads the cgroup of bundle's config.json before runc creates
// the container, as runc resolves it: with the systemd driver (systemd)
// slice:prefix:name, otherwise an absolute path. A relative path, which
// runc resolves against its own cgroup, or none (runc picks one) is
// unknown: the zero bundleCgroup.
func (s *Service) bundleCgroup(bundle string, systemd bool) bundleCgroup {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return bundleCgroup{}
	}
	var spec struct {
		Linux *struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	}
	if json.Unmarshal(data, &spec) != nil || spec.Linux == nil {
		return bundleCgroup{}
	}
	path := spec.Linux.CgroupsPath
	switch {
	case systemd:
		if path, err = cgroups.SystemdPath(path); err != nil {
			return bundleCgroup{}
		}
	case strings.HasPrefix(path, "/"):
		path = filepath.Clean(path) // as runc does
		if path == "/" {
			return bundleCgroup{}
		}
	default:
		return bundleCgroup{}
	}
	cg := bundleCgroup{path: path}
	for _, h := range s.cgroupHierarchies() {
		d := filepath.Join(h, path)
		cg.dirs = append(cg.dirs, d)
		if !cg.existed {
			_, err := os.Lstat(d)
			cg.existed = !errors.Is(err, fs.ErrNotExist)
		}
	}
	return cg
}
