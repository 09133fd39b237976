// Package oci generates OCI runtime specs (config.json) for runc from an
// image config and options, and reads and writes runtime bundles.
//
// Generate starts from containerd-like defaults: pid, ipc, uts, mount and
// network namespaces; /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys and
// /sys/fs/cgroup mounts; the default capability set; masked and read-only
// /proc and /sys paths; a device cgroup that denies everything but the
// standard devices; no-new-privileges; RLIMIT_NOFILE 1024. Options change
// that, and every option validates its input.
//
// Seccomp: Generate builds no seccomp profile; WithSeccomp installs one made
// elsewhere.
package oci

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
)

// SpecOpt is an option of Generate. It validates its input and records it;
// Generate builds the spec once every option has been applied, so options
// may come in any order unless documented otherwise.
type SpecOpt func(*config) error

// nsMode says how a container gets one kind of namespace.
type nsMode uint8

const (
	nsNew  nsMode = iota // a new namespace (the default)
	nsHost               // the host's (runtime's) namespace
	nsPath               // join the namespace at a path
)

type nsSetting struct {
	mode nsMode
	path string
}

// Indexes into config.ns.
const (
	nsPID = iota
	nsIPC
	nsUTS
	nsNet
	nsCount
)

// config collects the options of one Generate call.
type config struct {
	args          []string
	argsSet       bool
	entrypoint    []string
	entrypointSet bool
	env           []string
	user          string
	userSet       bool
	extraGIDs     []uint32
	cwd           string
	tty           bool
	hostname      string
	mounts        []specs.Mount
	readonlyRoot  bool

	memLimit       *int64
	memReservation *int64
	memSwap        *int64
	cpuQuota       *int64
	cpuShares      *uint64
	cpusetCPUs     string
	cpusetMems     string
	pidsLimit      *int64

	ns       [nsCount]nsSetting
	cgroupNS bool

	privileged  bool
	capAdd      []string
	capDrop     []string
	cgroupsPath string
	rlimits     []specs.POSIXRlimit
	annotations map[string]string
	noNewPrivs  bool
	oomScoreAdj *int
	seccomp     *specs.LinuxSeccomp
}

// Generate builds the runtime spec of container id in namespace ns from the
// image config img (nil for none) and opts.
//
// rootfs is the host path of the container's mounted root filesystem. It is
// read only to resolve user and group names through its /etc/passwd and
// /etc/group, always inside the rootfs (see WithUser). It may be "" when the
// user is numeric; a name then fails with ErrInvalidArgument.
//
// The spec's Root is {Path: "rootfs"}, relative to the bundle that
// WriteBundle writes. Errors are ErrInvalidArgument naming the option or
// image field at fault, or ErrNotFound for a missing user, group, rootfs,
// bind mount source or namespace path.
func Generate(ctx context.Context, ns, id, rootfs string, img *ocispec.ImageConfig, opts ...SpecOpt) (*specs.Spec, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := identifiers.Validate("namespace", ns); err != nil {
		return nil, err
	}
	if err := identifiers.Validate("container id", id); err != nil {
		return nil, err
	}
	if rootfs != "" && !path.IsAbs(rootfs) {
		return nil, errdefs.InvalidArgument("rootfs", "%q is not an absolute path", rootfs)
	}
	if img == nil {
		img = &ocispec.ImageConfig{}
	}
	c := config{noNewPrivs: true}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	if err := c.check(); err != nil {
		return nil, err
	}

	args, err := c.processArgs(img)
	if err != nil {
		return nil, err
	}
	cwd := c.cwd
	if cwd == "" {
		cwd, err = imageWorkingDir(img.WorkingDir)
		if err != nil {
			return nil, err
		}
	}

	userField, userSpec := "WithUser", c.user
	if !c.userSet {
		userField, userSpec = "image config User", img.User
	}
	r := newRootFS(rootfs)
	defer r.close()
	u, err := resolveUser(r, userField, userSpec, c.extraGIDs)
	if err != nil {
		return nil, err
	}

	env, err := c.processEnv(img.Env, u.home)
	if err != nil {
		return nil, err
	}

	hostname := c.hostname
	if hostname == "" && c.ns[nsUTS].mode == nsNew {
		hostname = id
		if len(hostname) > maxHostname-1 {
			hostname = hostname[:maxHostname-1]
		}
	}

	cgroupsPath := c.cgroupsPath
	if cgroupsPath == "" {
		cgroupsPath = DefaultCgroupParent + "/" + ns + "/" + id
	}

	caps := c.capabilities()

	spec := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Terminal:        c.tty,
			User:            u.user,
			Args:            args,
			Env:             env,
			Cwd:             cwd,
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			Rlimits:         c.processRlimits(),
			NoNewPrivileges: c.noNewPrivs,
			OOMScoreAdj:     c.oomScoreAdj,
		},
		Root:        &specs.Root{Path: "rootfs", Readonly: c.readonlyRoot},
		Hostname:    hostname,
		Mounts:      c.allMounts(),
		Annotations: c.annotations,
		Linux: &specs.Linux{
			Resources:   c.resources(),
			CgroupsPath: cgroupsPath,
			Namespaces:  c.namespaces(),
			Seccomp:     c.seccomp,
		},
	}
	if !c.privileged {
		spec.Linux.MaskedPaths = defaultMaskedPaths()
		spec.Linux.ReadonlyPaths = defaultReadonlyPaths()
	}
	return spec, nil
}

// check validates the options that depend on each other.
func (c *config) check() error {
	if c.memReservation != nil && c.memLimit != nil && *c.memReservation > *c.memLimit {
		return errdefs.InvalidArgument("WithMemoryReservation", "reservation %d is above the memory limit %d", *c.memReservation, *c.memLimit)
	}
	if c.hostname != "" && c.ns[nsUTS].mode != nsNew {
		return errdefs.InvalidArgument("WithHostname", "a hostname needs a new uts namespace, not the host's or a joined one")
	}
	if c.memSwap != nil {
		if c.memLimit == nil {
			return errdefs.InvalidArgument("WithMemorySwap", "needs WithMemoryLimit")
		}
		if *c.memSwap != -1 && *c.memSwap < *c.memLimit {
			return errdefs.InvalidArgument("WithMemorySwap", "memory+swap %d is below the memory limit %d", *c.memSwap, *c.memLimit)
		}
	}
	return nil
}

// processArgs combines the image's Entrypoint and Cmd with the overrides, as
// docker does: WithEntrypoint replaces Entrypoint and drops the image's Cmd;
// WithArgs replaces Cmd.
func (c *config) processArgs(img *ocispec.ImageConfig) ([]string, error) {
	entrypoint, cmd := img.Entrypoint, img.Cmd
	if err := checkArgs("image config Entrypoint", entrypoint); err != nil {
		return nil, err
	}
	if err := checkArgs("image config Cmd", cmd); err != nil {
		return nil, err
	}
	if c.entrypointSet {
		entrypoint, cmd = c.entrypoint, nil
	}
	if c.argsSet {
		cmd = c.args
	}
	if len(entrypoint)+len(cmd) == 0 {
		return nil, errdefs.InvalidArgument("process args", "no command: the image has no Entrypoint or Cmd and none was given")
	}
	args := make([]string, 0, len(entrypoint)+len(cmd))
	args = append(args, entrypoint...)
	args = append(args, cmd...)
	if args[0] == "" {
		return nil, errdefs.InvalidArgument("process args", "the command is an empty string")
	}
	return args, nil
}

func checkArgs(field string, args []string) error {
	for i, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return errdefs.InvalidArgument(field, "argument %d contains a NUL byte", i)
		}
	}
	return nil
}

func imageWorkingDir(dir string) (string, error) {
	if dir == "" {
		return "/", nil
	}
	if !path.IsAbs(dir) || strings.IndexByte(dir, 0) >= 0 {
		return "", errdefs.InvalidArgument("image config WorkingDir", "%q is not an absolute path", dir)
	}
	return path.Clean(dir), nil
}

// processEnv merges the image env, the defaults and the WithEnv overrides.
// A key appears once; a later value for the same key replaces the earlier
// one in place.
func (c *config) processEnv(imageEnv []string, home string) ([]string, error) {
	env := make([]string, 0, len(imageEnv)+len(c.env)+3)
	for i, kv := range imageEnv {
		if err := checkEnv(kv); err != nil {
			return nil, errdefs.InvalidArgument("image config Env", "entry %d: %v", i, err)
		}
		env = setEnv(env, kv)
	}
	for _, kv := range c.env {
		env = setEnv(env, kv)
	}
	if !hasEnv(env, "PATH") {
		env = append(env, "PATH="+DefaultPath)
	}
	if !hasEnv(env, "HOME") {
		env = append(env, "HOME="+home)
	}
	if c.tty && !hasEnv(env, "TERM") {
		env = append(env, "TERM=xterm")
	}
	return env, nil
}

func envKey(kv string) string {
	k, _, _ := cutByte(kv, '=')
	return k
}

func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if envKey(e) == key {
			return true
		}
	}
	return false
}

func setEnv(env []string, kv string) []string {
	key := envKey(kv)
	for i, e := range env {
		if envKey(e) == key {
			env[i] = kv
			return env
		}
	}
	return append(env, kv)
}

// checkEnv checks one "KEY=VALUE" entry.
func checkEnv(kv string) error {
	k, _, ok := cutByte(kv, '=')
	switch {
	case !ok:
		return fmt.Errorf("%q is not KEY=VALUE", truncate(kv))
	case k == "":
		return fmt.Errorf("%q has an empty key", truncate(kv))
	case strings.IndexByte(kv, 0) >= 0:
		return fmt.Errorf("%q contains a NUL byte", truncate(k))
	}
	return nil
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// capabilities computes the capability set: the defaults (when privileged,
// every capability this process may grant), minus the dropped ones, plus the
// added ones ("ALL" meaning every grantable one).
func (c *config) capabilities() []string {
	var grantable uint64
	var grantableRead bool
	addAll := func(set *[numCaps]bool) {
		if !grantableRead {
			grantable, grantableRead = grantableCaps(), true
		}
		for i := range set {
			if grantable&(1<<i) != 0 {
				set[i] = true
			}
		}
	}
	var set [numCaps]bool
	if c.privileged {
		addAll(&set)
	} else {
		for _, name := range DefaultCapabilities() {
			set[capIndex(name)] = true
		}
	}
	for _, name := range c.capDrop {
		if name == "ALL" {
			set = [numCaps]bool{}
			continue
		}
		set[capIndex(name)] = false
	}
	for _, name := range c.capAdd {
		if name == "ALL" {
			addAll(&set)
			continue
		}
		set[capIndex(name)] = true
	}
	names := knownCaps()
	out := make([]string, 0, numCaps)
	for i, on := range set {
		if on {
			out = append(out, names[i])
		}
	}
	return out
}

// capIndex returns the number of the canonical capability name, -1 if
// unknown.
func capIndex(name string) int {
	names := knownCaps()
	for i, n := range names {
		if n == name {
			return i
		}
	}
	return -1
}

func (c *config) processRlimits() []specs.POSIXRlimit {
	out := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: DefaultNofile, Soft: DefaultNofile}}
	for _, rl := range c.rlimits {
		replaced := false
		for i := range out {
			if out[i].Type == rl.Type {
				out[i], replaced = rl, true
				break
			}
		}
		if !replaced {
			out = append(out, rl)
		}
	}
	return out
}

// allMounts returns the default mounts, except those a user mount replaces,
// followed by the user mounts sorted so that a parent is mounted before
// what is mounted inside it.
func (c *config) allMounts() []specs.Mount {
	defaults := defaultMounts(c.privileged)
	out := make([]specs.Mount, 0, len(defaults)+len(c.mounts))
	for _, m := range defaults {
		replaced := false
		for _, u := range c.mounts {
			if u.Destination == m.Destination {
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, m)
		}
	}
	n := len(out)
	out = append(out, c.mounts...)
	user := out[n:]
	sort.SliceStable(user, func(i, j int) bool {
		return pathDepth(user[i].Destination) < pathDepth(user[j].Destination)
	})
	return out
}

func pathDepth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

func (c *config) resources() *specs.LinuxResources {
	res := &specs.LinuxResources{}
	if c.privileged {
		res.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		res.Devices = defaultDeviceRules()
	}
	if c.memLimit != nil || c.memReservation != nil || c.memSwap != nil {
		res.Memory = &specs.LinuxMemory{Limit: c.memLimit, Reservation: c.memReservation, Swap: c.memSwap}
	}
	if c.cpuQuota != nil || c.cpuShares != nil || c.cpusetCPUs != "" || c.cpusetMems != "" {
		res.CPU = &specs.LinuxCPU{Shares: c.cpuShares, Cpus: c.cpusetCPUs, Mems: c.cpusetMems}
		if c.cpuQuota != nil {
			res.CPU.Quota = c.cpuQuota
			res.CPU.Period = ptr(uint64(cpuPeriod))
		}
	}
	if c.pidsLimit != nil {
		res.Pids = &specs.LinuxPids{Limit: c.pidsLimit}
	}
	return res
}

func (c *config) namespaces() []specs.LinuxNamespace {
	out := make([]specs.LinuxNamespace, 0, 6)
	types := [nsCount]specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace}
	for i, t := range types {
		switch c.ns[i].mode {
		case nsNew:
			out = append(out, specs.LinuxNamespace{Type: t})
		case nsPath:
			out = append(out, specs.LinuxNamespace{Type: t, Path: c.ns[i].path})
		}
	}
	out = append(out, specs.LinuxNamespace{Type: specs.MountNamespace})
	if c.cgroupNS {
		out = append(out, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	return out
}
