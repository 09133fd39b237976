package cgroups

import (
	"path"
	"strings"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
)

// DefaultParent is the parent of the container cgroups when none is set.
const DefaultParent = "/edged"

// PathConfig says where container cgroups live.
type PathConfig struct {
	// Parent is the cgroup under which "<namespace>/<id>" is created;
	// DefaultParent when empty. Ignored when Systemd is set.
	Parent string
	// Systemd selects the systemd naming convention
	// "edged-<namespace>.slice:edged:<id>", which maps to
	// /edged.slice/edged-<namespace>.slice/edged-<id>.scope.
	Systemd bool
}

// ContainerPath returns the cgroup path (relative to a hierarchy root, with a
// leading '/') of container id in namespace.
func (c PathConfig) ContainerPath(namespace, id string) (string, error) {
	if err := identifiers.Validate("namespace", namespace); err != nil {
		return "", err
	}
	if err := identifiers.Validate("id", id); err != nil {
		return "", err
	}
	if c.Systemd {
		return SystemdPath("edged-" + namespace + ".slice:edged:" + id)
	}
	parent := c.Parent
	if parent == "" {
		parent = DefaultParent
	}
	if err := validPath("parent", parent); err != nil {
		return "", err
	}
	return path.Join(parent, namespace, id), nil
}

// SystemdPath expands a systemd cgroups path "slice:prefix:name" (runc's
// syntax) into a cgroup path: every '-' in the slice name opens a parent
// slice, so "edged-default.slice:edged:c1" becomes
// /edged.slice/edged-default.slice/edged-c1.scope. An empty slice means
// system.slice.
func SystemdPath(s string) (string, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return "", errdefs.InvalidArgument("cgroupsPath", "%q is not slice:prefix:name", s)
	}
	slice, prefix, name := parts[0], parts[1], parts[2]
	if slice == "" {
		slice = "system.slice"
	}
	dir, err := expandSlice(slice)
	if err != nil {
		return "", err
	}
	unit := name
	if !strings.HasSuffix(name, ".slice") {
		if prefix != "" {
			unit = prefix + "-" + name
		}
		unit += ".scope"
	}
	if unit == ".scope" || strings.ContainsAny(unit, "/\x00") || strings.HasPrefix(unit, ".") {
		return "", errdefs.InvalidArgument("cgroupsPath", "bad unit name %q", unit)
	}
	return path.Join(dir, unit), nil
}

// expandSlice turns "a-b-c.slice" into /a.slice/a-b.slice/a-b-c.slice.
func expandSlice(slice string) (string, error) {
	base, ok := strings.CutSuffix(slice, ".slice")
	if !ok || base == "" || strings.ContainsAny(base, "/\x00") ||
		strings.HasPrefix(base, "-") || strings.HasSuffix(base, "-") || strings.Contains(base, "--") {
		return "", errdefs.InvalidArgument("cgroupsPath", "bad slice name %q", slice)
	}
	var b strings.Builder
	prefix := ""
	for _, comp := range strings.Split(base, "-") {
		b.WriteString("/")
		b.WriteString(prefix)
		b.WriteString(comp)
		b.WriteString(".slice")
		prefix += comp + "-"
	}
	return b.String(), nil
}

// validPath checks that p is an absolute, clean cgroup path without "..".
func validPath(field, p string) error {
	if p == "" || p[0] != '/' {
		return errdefs.InvalidArgument(field, "cgroup path %q is not absolute", p)
	}
	if path.Clean(p) != p {
		return errdefs.InvalidArgument(field, "cgroup path %q is not clean", p)
	}
	for _, c := range strings.Split(p[1:], "/") {
		if c == ".." || c == "." {
			return errdefs.InvalidArgument(field, "cgroup path %q has %q", p, c)
		}
	}
	if strings.ContainsRune(p, 0) {
		return errdefs.InvalidArgument(field, "cgroup path %q has a NUL byte", p)
	}
	return nil
}
