package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
)

// WithArgs replaces the image's Cmd with args (the image's Entrypoint, or the
// one given by WithEntrypoint, still comes first). args must not be empty.
func WithArgs(args ...string) SpecOpt {
	return func(c *config) error {
		if len(args) == 0 {
			return errdefs.InvalidArgument("WithArgs", "no arguments given")
		}
		if err := checkArgs("WithArgs", args); err != nil {
			return err
		}
		c.args, c.argsSet = append([]string(nil), args...), true
		return nil
	}
}

// WithEntrypoint replaces the image's Entrypoint and, as docker does, drops
// the image's Cmd (use WithArgs to give arguments). No arguments clears the
// entrypoint.
func WithEntrypoint(entrypoint ...string) SpecOpt {
	return func(c *config) error {
		if err := checkArgs("WithEntrypoint", entrypoint); err != nil {
			return err
		}
		c.entrypoint, c.entrypointSet = append([]string(nil), entrypoint...), true
		return nil
	}
}

// WithEnv sets environment variables, each "KEY=VALUE". They override the
// image's variables and the defaults (PATH, HOME, TERM) with the same key.
// Later calls override earlier ones.
func WithEnv(env ...string) SpecOpt {
	return func(c *config) error {
		for i, kv := range env {
			if err := checkEnv(kv); err != nil {
				return errdefs.InvalidArgument("WithEnv", "entry %d: %v", i, err)
			}
		}
		c.env = append(c.env, env...)
		return nil
	}
}

// WithUser runs the process as user, one of "uid", "uid:gid", "name",
// "name:group", "uid:group" or "name:gid", overriding the image's User.
// Names are looked up in the image's /etc/passwd and /etc/group, read
// inside the rootfs (a symlink cannot point the lookup at a host file), at
// most MaxIDFileSize bytes each. Without an explicit group the user's
// passwd group is the primary group and its /etc/group memberships become
// supplementary groups. An unknown name fails with ErrNotFound.
func WithUser(user string) SpecOpt {
	return func(c *config) error {
		if user == "" {
			return errdefs.InvalidArgument("WithUser", "empty user")
		}
		if strings.Count(user, ":") > 1 {
			return errdefs.InvalidArgument("WithUser", "%q has more than one ':'", truncate(user))
		}
		c.user, c.userSet = user, true
		return nil
	}
}

// WithAdditionalGIDs adds supplementary groups to the process.
func WithAdditionalGIDs(gids ...uint32) SpecOpt {
	return func(c *config) error {
		for _, g := range gids {
			if g == math.MaxUint32 {
				return errdefs.InvalidArgument("WithAdditionalGIDs", "gid %d is out of range", g)
			}
		}
		c.extraGIDs = append(c.extraGIDs, gids...)
		return nil
	}
}

// WithCwd sets the working directory, overriding the image's WorkingDir
// (default "/"). It must be an absolute, clean path.
func WithCwd(dir string) SpecOpt {
	return func(c *config) error {
		if err := checkContainerPath(dir); err != nil {
			return errdefs.InvalidArgument("WithCwd", "%v", err)
		}
		c.cwd = dir
		return nil
	}
}

// WithTTY gives the process a terminal and, unless set, TERM=xterm.
func WithTTY(tty bool) SpecOpt {
	return func(c *config) error {
		c.tty = tty
		return nil
	}
}

// WithHostname sets the hostname (default: the container ID, cut to 63
// characters). It is 1 to 64 ASCII letters, digits, '-', '_' or '.',
// starting with a letter or digit.
func WithHostname(hostname string) SpecOpt {
	return func(c *config) error {
		if hostname == "" || len(hostname) > maxHostname {
			return errdefs.InvalidArgument("WithHostname", "%q must be 1 to %d characters", truncate(hostname), maxHostname)
		}
		for i := 0; i < len(hostname); i++ {
			ch := hostname[i]
			alnum := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9'
			if !alnum && (i == 0 || ch != '-' && ch != '_' && ch != '.') {
				return errdefs.InvalidArgument("WithHostname", "%q: character %q is not allowed at position %d", hostname, ch, i)
			}
		}
		c.hostname = hostname
		return nil
	}
}

// WithMounts adds mounts of type "bind" or "tmpfs". Destination must be an
// absolute, clean path other than "/"; a mount at the destination of a
// default mount (e.g. /dev/shm) replaces it. A bind mount's Source must be
// an absolute, clean host path that exists; "rbind" is added unless "bind"
// is given. A tmpfs mount's Source is "tmpfs". Options are checked against
// the ones each type allows (ro, rw, nosuid, nodev, noexec, propagation,
// atime flags; tmpfs also size=, mode=, uid=, gid=, nr_inodes=).
func WithMounts(mounts ...specs.Mount) SpecOpt {
	return func(c *config) error {
		for i, m := range mounts {
			m, err := checkMount(m)
			if err != nil {
				return fmt.Errorf("WithMounts: mount %d: %w", i, err)
			}
			for _, prev := range c.mounts {
				if prev.Destination == m.Destination {
					return errdefs.InvalidArgument("WithMounts", "mount %d: destination %s is already mounted", i, m.Destination)
				}
			}
			c.mounts = append(c.mounts, m)
		}
		return nil
	}
}

// checkMount validates one mount and returns it normalised (with its own
// option slice).
func checkMount(m specs.Mount) (specs.Mount, error) {
	if err := checkContainerPath(m.Destination); err != nil {
		return m, errdefs.InvalidArgument("destination", "%v", err)
	}
	if m.Destination == "/" {
		return m, errdefs.InvalidArgument("destination", "cannot mount over /")
	}
	opts := append([]string(nil), m.Options...)
	var hasRO, hasRW, hasBind bool
	for _, o := range opts {
		switch {
		case o == "ro":
			hasRO = true
		case o == "rw":
			hasRW = true
		case o == "bind" || o == "rbind":
			hasBind = true
		}
	}
	if hasRO && hasRW {
		return m, errdefs.InvalidArgument("options", "both ro and rw given")
	}
	switch m.Type {
	case "bind":
		if err := checkHostPath(m.Source); err != nil {
			return m, errdefs.InvalidArgument("source", "%v", err)
		}
		if _, err := os.Stat(m.Source); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return m, fmt.Errorf("source %s: %w", m.Source, errdefs.ErrNotFound)
			}
			return m, fmt.Errorf("source %s: %w", m.Source, err)
		}
		for _, o := range opts {
			if !bindOption(o) {
				return m, errdefs.InvalidArgument("options", "%q is not a bind mount option", truncate(o))
			}
		}
		if !hasBind {
			opts = append(opts, "rbind")
		}
	case "tmpfs":
		if m.Source != "" && m.Source != "tmpfs" {
			return m, errdefs.InvalidArgument("source", "a tmpfs mount's source must be \"tmpfs\" or empty, not %q", truncate(m.Source))
		}
		m.Source = "tmpfs"
		for _, o := range opts {
			if err := tmpfsOption(o); err != nil {
				return m, errdefs.InvalidArgument("options", "%v", err)
			}
		}
	default:
		return m, errdefs.InvalidArgument("type", "%q is not supported (bind or tmpfs)", truncate(m.Type))
	}
	m.Options = opts
	return m, nil
}

// checkContainerPath requires an absolute, clean path without "..".
func checkContainerPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("%q contains a NUL byte", truncate(p))
	case !path.IsAbs(p):
		return fmt.Errorf("%q is not an absolute path", truncate(p))
	case hasDotDot(p):
		return fmt.Errorf("%q contains \"..\"", truncate(p))
	case path.Clean(p) != p:
		return fmt.Errorf("%q is not clean (want %q)", truncate(p), path.Clean(p))
	}
	return nil
}

// checkHostPath is checkContainerPath for host paths.
func checkHostPath(p string) error { return checkContainerPath(p) }

func hasDotDot(p string) bool {
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return true
		}
	}
	return false
}

func commonOption(o string) bool {
	switch o {
	case "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
		"relatime", "norelatime", "noatime", "atime", "strictatime", "nostrictatime", "nodiratime", "diratime",
		"private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable":
		return true
	}
	return false
}

func bindOption(o string) bool {
	return o == "bind" || o == "rbind" || commonOption(o)
}

func tmpfsOption(o string) error {
	if commonOption(o) {
		return nil
	}
	k, v, ok := cutByte(o, '=')
	if !ok {
		return fmt.Errorf("%q is not a tmpfs option", truncate(o))
	}
	switch k {
	case "size", "nr_inodes":
		if !sizeValue(v, k == "size") {
			return fmt.Errorf("%s=%q is not a size (digits with an optional k, m or g suffix)", k, truncate(v))
		}
	case "mode":
		if len(v) == 0 || len(v) > 4 {
			return fmt.Errorf("mode=%q is not an octal mode", truncate(v))
		}
		for i := 0; i < len(v); i++ {
			if v[i] < '0' || v[i] > '7' {
				return fmt.Errorf("mode=%q is not an octal mode", truncate(v))
			}
		}
	case "uid", "gid":
		if _, err := strconv.ParseUint(v, 10, 32); err != nil {
			return fmt.Errorf("%s=%q is not a number", k, truncate(v))
		}
	default:
		return fmt.Errorf("%q is not a tmpfs option", truncate(o))
	}
	return nil
}

// sizeValue accepts digits with an optional k, m, g suffix (and % when
// percent).
func sizeValue(v string, percent bool) bool {
	if v == "" {
		return false
	}
	switch v[len(v)-1] {
	case 'k', 'K', 'm', 'M', 'g', 'G':
		v = v[:len(v)-1]
	case '%':
		if !percent {
			return false
		}
		v = v[:len(v)-1]
	}
	if v == "" || len(v) > 19 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

// BindMount returns a bind mount of the host path source at destination.
func BindMount(source, destination string, readonly bool) specs.Mount {
	mode := "rw"
	if readonly {
		mode = "ro"
	}
	return specs.Mount{Type: "bind", Source: source, Destination: destination, Options: []string{"rbind", mode}}
}

// TmpfsMount returns a tmpfs mount of at most sizeBytes at destination
// (nosuid, nodev, mode 1777).
func TmpfsMount(destination string, sizeBytes int64) specs.Mount {
	return specs.Mount{Type: "tmpfs", Source: "tmpfs", Destination: destination,
		Options: []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(sizeBytes, 10)}}
}

// WithReadonlyRootfs makes the root filesystem read-only.
func WithReadonlyRootfs(readonly bool) SpecOpt {
	return func(c *config) error {
		c.readonlyRoot = readonly
		return nil
	}
}

// WithMemoryLimit limits the container's memory to bytes (at least
// MinMemoryLimit).
func WithMemoryLimit(bytes int64) SpecOpt {
	return func(c *config) error {
		if bytes < MinMemoryLimit {
			return errdefs.InvalidArgument("WithMemoryLimit", "%d bytes is below the minimum of %d", bytes, MinMemoryLimit)
		}
		c.memLimit = ptr(bytes)
		return nil
	}
}

// WithMemoryReservation sets the memory soft limit, at most the memory limit.
func WithMemoryReservation(bytes int64) SpecOpt {
	return func(c *config) error {
		if bytes <= 0 {
			return errdefs.InvalidArgument("WithMemoryReservation", "%d bytes is not positive", bytes)
		}
		c.memReservation = ptr(bytes)
		return nil
	}
}

// WithMemorySwap limits memory plus swap to bytes, at least the memory limit
// (so it needs WithMemoryLimit); -1 means unlimited swap.
func WithMemorySwap(bytes int64) SpecOpt {
	return func(c *config) error {
		if bytes <= 0 && bytes != -1 {
			return errdefs.InvalidArgument("WithMemorySwap", "%d bytes is neither positive nor -1 (unlimited)", bytes)
		}
		c.memSwap = ptr(bytes)
		return nil
	}
}

// WithCPUs limits the container to cpus CPUs (0.01 to 1024) of CFS time:
// quota cpus*100000 µs per 100000 µs period, so 1.5 gives 150000/100000.
func WithCPUs(cpus float64) SpecOpt {
	return func(c *config) error {
		if math.IsNaN(cpus) || cpus < 0.01 || cpus > maxCPUs {
			return errdefs.InvalidArgument("WithCPUs", "%v is outside 0.01 to %d", cpus, maxCPUs)
		}
		c.cpuQuota = ptr(int64(math.Round(cpus * cpuPeriod)))
		return nil
	}
}

// WithCPUShares sets the relative CPU weight (2 to 262144; the kernel
// default is 1024).
func WithCPUShares(shares uint64) SpecOpt {
	return func(c *config) error {
		if shares < 2 || shares > 262144 {
			return errdefs.InvalidArgument("WithCPUShares", "%d is outside 2 to 262144", shares)
		}
		c.cpuShares = ptr(shares)
		return nil
	}
}

// WithCPUSet pins the container to the CPUs and memory nodes in cpus and
// mems, lists like "0-2,4"; "" leaves one unset.
func WithCPUSet(cpus, mems string) SpecOpt {
	return func(c *config) error {
		if cpus == "" && mems == "" {
			return errdefs.InvalidArgument("WithCPUSet", "both cpus and mems are empty")
		}
		if err := checkCPUList(cpus); err != nil {
			return errdefs.InvalidArgument("WithCPUSet", "cpus: %v", err)
		}
		if err := checkCPUList(mems); err != nil {
			return errdefs.InvalidArgument("WithCPUSet", "mems: %v", err)
		}
		c.cpusetCPUs, c.cpusetMems = cpus, mems
		return nil
	}
}

// checkCPUList accepts "" or a list like "0-3,5".
func checkCPUList(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > 1024 {
		return fmt.Errorf("list is %d bytes long", len(s))
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := cutByte(part, '-')
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.ParseUint(hi, 10, 16)
		}
		if err1 != nil || err2 != nil || b < a {
			return fmt.Errorf("%q is not a number or a range lo-hi", truncate(part))
		}
	}
	return nil
}

// WithPidsLimit limits the number of tasks in the container (at least 1).
func WithPidsLimit(limit int64) SpecOpt {
	return func(c *config) error {
		if limit < 1 {
			return errdefs.InvalidArgument("WithPidsLimit", "%d is not positive", limit)
		}
		c.pidsLimit = ptr(limit)
		return nil
	}
}

func nsIndex(t specs.LinuxNamespaceType) int {
	switch t {
	case specs.PIDNamespace:
		return nsPID
	case specs.IPCNamespace:
		return nsIPC
	case specs.UTSNamespace:
		return nsUTS
	case specs.NetworkNamespace:
		return nsNet
	}
	return -1
}

// WithHostNamespace makes the container share the runtime's namespace of type
// t (pid, ipc, uts or network) instead of getting a new one.
func WithHostNamespace(t specs.LinuxNamespaceType) SpecOpt {
	return namespaceOpt("WithHostNamespace", t, nsSetting{mode: nsHost})
}

// WithNamespacePath makes the container join the namespace of type t (pid,
// ipc, uts or network) at p, e.g. a bind-mounted /run/netns/x or
// /proc/<pid>/ns/net. p must be an absolute, clean path that exists.
func WithNamespacePath(t specs.LinuxNamespaceType, p string) SpecOpt {
	return namespaceOpt("WithNamespacePath", t, nsSetting{mode: nsPath, path: p})
}

// WithHostNetwork shares the host's network namespace (no network namespace
// in the spec).
func WithHostNetwork() SpecOpt {
	return namespaceOpt("WithHostNetwork", specs.NetworkNamespace, nsSetting{mode: nsHost})
}

// WithNetNSPath joins the network namespace at p.
func WithNetNSPath(p string) SpecOpt {
	return namespaceOpt("WithNetNSPath", specs.NetworkNamespace, nsSetting{mode: nsPath, path: p})
}

func namespaceOpt(option string, t specs.LinuxNamespaceType, s nsSetting) SpecOpt {
	return func(c *config) error {
		i := nsIndex(t)
		if i < 0 {
			return errdefs.InvalidArgument(option, "namespace type %q cannot be shared or joined (pid, ipc, uts or network)", truncate(string(t)))
		}
		if s.mode == nsPath {
			if err := checkHostPath(s.path); err != nil {
				return errdefs.InvalidArgument(option, "%s namespace path: %v", t, err)
			}
			if _, err := os.Stat(s.path); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("%s: %s namespace path %s: %w", option, t, s.path, errdefs.ErrNotFound)
				}
				return fmt.Errorf("%s: %s namespace path %s: %w", option, t, s.path, err)
			}
		}
		if prev := c.ns[i]; prev.mode != nsNew && prev != s {
			return errdefs.InvalidArgument(option, "the %s namespace was already set by an earlier option", t)
		}
		c.ns[i] = s
		return nil
	}
}

// WithCgroupNamespace gives the container its own cgroup namespace (useful
// on cgroup v2 hosts, where it hides the host's cgroup tree).
func WithCgroupNamespace(on bool) SpecOpt {
	return func(c *config) error {
		c.cgroupNS = on
		return nil
	}
}

// WithPrivileged gives the container every capability the kernel knows,
// access to all devices in the device cgroup, writable /sys and
// /sys/fs/cgroup, and no masked or read-only paths. Host device nodes are not
// added to /dev.
func WithPrivileged() SpecOpt {
	return func(c *config) error {
		c.privileged = true
		return nil
	}
}

// WithCapabilities adds and drops capabilities from the default set (all of
// them when privileged). Names are case-insensitive, with or without the
// CAP_ prefix; "ALL" adds or drops every capability. Drops apply before
// adds, so drop ALL plus add NET_ADMIN leaves only CAP_NET_ADMIN. A
// capability both added and dropped is an error.
func WithCapabilities(add, drop []string) SpecOpt {
	return func(c *config) error {
		a, err := canonicalCaps(add)
		if err != nil {
			return errdefs.InvalidArgument("WithCapabilities", "add: %v", err)
		}
		d, err := canonicalCaps(drop)
		if err != nil {
			return errdefs.InvalidArgument("WithCapabilities", "drop: %v", err)
		}
		for _, x := range a {
			for _, y := range d {
				if x == y && x != "ALL" {
					return errdefs.InvalidArgument("WithCapabilities", "%s is both added and dropped", x)
				}
			}
		}
		c.capAdd = append(c.capAdd, a...)
		c.capDrop = append(c.capDrop, d...)
		return nil
	}
}

func canonicalCaps(names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	for _, n := range names {
		u := strings.ToUpper(n)
		if u == "ALL" {
			out = append(out, u)
			continue
		}
		if !strings.HasPrefix(u, "CAP_") {
			u = "CAP_" + u
		}
		if capIndex(u) < 0 {
			return nil, fmt.Errorf("unknown capability %q", truncate(n))
		}
		out = append(out, u)
	}
	return out, nil
}

// WithCgroupsPath sets the container's cgroup: an absolute, clean path
// relative to the cgroup mount (default "/edged/<ns>/<id>"), or, for runc's
// systemd driver, "slice:prefix:name" (slice ending in ".slice" or empty,
// no '/').
func WithCgroupsPath(p string) SpecOpt {
	return func(c *config) error {
		if strings.HasPrefix(p, "/") {
			if err := checkContainerPath(p); err != nil {
				return errdefs.InvalidArgument("WithCgroupsPath", "%v", err)
			}
			if p == "/" {
				return errdefs.InvalidArgument("WithCgroupsPath", "the root cgroup cannot hold a container")
			}
		} else {
			parts := strings.Split(p, ":")
			if len(parts) != 3 {
				return errdefs.InvalidArgument("WithCgroupsPath", "%q is neither an absolute path nor slice:prefix:name", truncate(p))
			}
			if parts[0] != "" && !strings.HasSuffix(parts[0], ".slice") {
				return errdefs.InvalidArgument("WithCgroupsPath", "slice %q does not end in .slice", truncate(parts[0]))
			}
			if parts[2] == "" {
				return errdefs.InvalidArgument("WithCgroupsPath", "%q has an empty name", truncate(p))
			}
			for _, part := range parts {
				if strings.ContainsAny(part, "/\x00 \t\n") {
					return errdefs.InvalidArgument("WithCgroupsPath", "%q contains '/', whitespace or NUL", truncate(part))
				}
			}
		}
		c.cgroupsPath = p
		return nil
	}
}

// WithRlimits sets process rlimits (RLIMIT_*), replacing the default
// RLIMIT_NOFILE or an earlier setting of the same type. Soft must not exceed
// Hard.
func WithRlimits(rlimits ...specs.POSIXRlimit) SpecOpt {
	return func(c *config) error {
		for i, rl := range rlimits {
			if !validRlimit(rl.Type) {
				return errdefs.InvalidArgument("WithRlimits", "unknown rlimit type %q", truncate(rl.Type))
			}
			if rl.Soft > rl.Hard {
				return errdefs.InvalidArgument("WithRlimits", "%s: soft limit %d is above hard limit %d", rl.Type, rl.Soft, rl.Hard)
			}
			for _, prev := range rlimits[:i] {
				if prev.Type == rl.Type {
					return errdefs.InvalidArgument("WithRlimits", "%s given twice", rl.Type)
				}
			}
		}
		for _, rl := range rlimits {
			replaced := false
			for j := range c.rlimits {
				if c.rlimits[j].Type == rl.Type {
					c.rlimits[j], replaced = rl, true
				}
			}
			if !replaced {
				c.rlimits = append(c.rlimits, rl)
			}
		}
		return nil
	}
}

// WithAnnotations adds annotations to the spec; keys must not be empty.
func WithAnnotations(annotations map[string]string) SpecOpt {
	return func(c *config) error {
		for k := range annotations {
			if k == "" {
				return errdefs.InvalidArgument("WithAnnotations", "empty key")
			}
		}
		if c.annotations == nil && len(annotations) > 0 {
			c.annotations = make(map[string]string, len(annotations))
		}
		for k, v := range annotations {
			c.annotations[k] = v
		}
		return nil
	}
}

// WithNoNewPrivileges sets no_new_privs on the process (default true): setuid
// binaries and file capabilities then grant nothing.
func WithNoNewPrivileges(on bool) SpecOpt {
	return func(c *config) error {
		c.noNewPrivs = on
		return nil
	}
}

// WithOOMScoreAdj sets the process's oom_score_adj (-1000 to 1000).
func WithOOMScoreAdj(adj int) SpecOpt {
	return func(c *config) error {
		if adj < -1000 || adj > 1000 {
			return errdefs.InvalidArgument("WithOOMScoreAdj", "%d is outside -1000 to 1000", adj)
		}
		c.oomScoreAdj = ptr(adj)
		return nil
	}
}

// WithSeccomp installs a seccomp profile built elsewhere (edged builds
// none); nil removes it. The profile is checked only for a default action.
func WithSeccomp(profile *specs.LinuxSeccomp) SpecOpt {
	return func(c *config) error {
		if profile != nil && profile.DefaultAction == "" {
			return errdefs.InvalidArgument("WithSeccomp", "the profile has no default action")
		}
		c.seccomp = profile
		return nil
	}
}
