package oci

import (
	"context"
	"errors"
	"math/bits"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
)

// testRootfs makes a rootfs with /etc/passwd and /etc/group.
func testRootfs(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "etc", "passwd"), strings.Join([]string{
		"root:x:0:0:root:/root:/bin/sh",
		"# a comment",
		"broken line without fields",
		"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
		"app:x:1000:1000:App:/home/app:/bin/sh",
		"nohome:x:1001:1001:::/bin/sh",
		"123:x:4000:4000::/numeric:/bin/sh",
		"",
	}, "\n"))
	mustWrite(t, filepath.Join(root, "etc", "group"), strings.Join([]string{
		"root:x:0:",
		"daemon:x:1:",
		"app:x:1000:",
		"video:x:44:app,daemon",
		"audio:x:29:daemon, app",
		"staff:x:50:other",
		"dupe:x:44:app",
		"bad:x:notanumber:app",
		"",
	}, "\n"))
	return root
}

func mustWrite(t testing.TB, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func baseImage() *ocispec.ImageConfig {
	return &ocispec.ImageConfig{
		Entrypoint: []string{"/entry"},
		Cmd:        []string{"run", "--fast"},
		Env:        []string{"IMG=1", "SHARED=image"},
		WorkingDir: "/srv/app/",
		User:       "app",
	}
}

func mustGenerate(t *testing.T, rootfs string, img *ocispec.ImageConfig, opts ...SpecOpt) *specs.Spec {
	t.Helper()
	s, err := Generate(context.Background(), "default", "c1", rootfs, img, opts...)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return s
}

func TestGenerateDefaults(t *testing.T) {
	s := mustGenerate(t, testRootfs(t), &ocispec.ImageConfig{Cmd: []string{"/bin/sh"}})
	if s.Version != specs.Version {
		t.Errorf("version %q", s.Version)
	}
	p := s.Process
	if !reflect.DeepEqual(p.Args, []string{"/bin/sh"}) {
		t.Errorf("args %q", p.Args)
	}
	if p.Cwd != "/" {
		t.Errorf("cwd %q", p.Cwd)
	}
	if p.User.UID != 0 || p.User.GID != 0 || len(p.User.AdditionalGids) != 0 {
		t.Errorf("user %+v", p.User)
	}
	if !reflect.DeepEqual(p.Env, []string{"PATH=" + DefaultPath, "HOME=/root"}) {
		t.Errorf("env %q", p.Env)
	}
	if p.Terminal || !p.NoNewPrivileges || p.OOMScoreAdj != nil {
		t.Errorf("terminal %v nnp %v oom %v", p.Terminal, p.NoNewPrivileges, p.OOMScoreAdj)
	}
	wantCaps := DefaultCapabilities()
	slices.Sort(wantCaps)
	for name, set := range map[string][]string{"bounding": p.Capabilities.Bounding, "effective": p.Capabilities.Effective, "permitted": p.Capabilities.Permitted} {
		got := slices.Clone(set)
		slices.Sort(got)
		if !reflect.DeepEqual(got, wantCaps) {
			t.Errorf("%s caps %q", name, got)
		}
	}
	if len(p.Capabilities.Inheritable) != 0 || len(p.Capabilities.Ambient) != 0 {
		t.Errorf("inheritable %q ambient %q", p.Capabilities.Inheritable, p.Capabilities.Ambient)
	}
	if !reflect.DeepEqual(p.Rlimits, []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}}) {
		t.Errorf("rlimits %+v", p.Rlimits)
	}
	if *s.Root != (specs.Root{Path: "rootfs"}) {
		t.Errorf("root %+v", s.Root)
	}
	if s.Hostname != "c1" {
		t.Errorf("hostname %q", s.Hostname)
	}
	var dests []string
	for _, m := range s.Mounts {
		dests = append(dests, m.Destination+" "+m.Type+" "+strings.Join(m.Options, ","))
	}
	wantMounts := []string{
		"/proc proc nosuid,noexec,nodev",
		"/dev tmpfs nosuid,strictatime,mode=755,size=65536k",
		"/dev/pts devpts nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5",
		"/dev/shm tmpfs nosuid,noexec,nodev,mode=1777,size=65536k",
		"/dev/mqueue mqueue nosuid,noexec,nodev",
		"/sys sysfs nosuid,noexec,nodev,ro",
		"/sys/fs/cgroup cgroup nosuid,noexec,nodev,relatime,ro",
	}
	if !reflect.DeepEqual(dests, wantMounts) {
		t.Errorf("mounts:\n%s", strings.Join(dests, "\n"))
	}
	l := s.Linux
	if l.CgroupsPath != "/edged/default/c1" {
		t.Errorf("cgroups path %q", l.CgroupsPath)
	}
	var nss []string
	for _, n := range l.Namespaces {
		nss = append(nss, string(n.Type)+n.Path)
	}
	if !reflect.DeepEqual(nss, []string{"pid", "ipc", "uts", "network", "mount"}) {
		t.Errorf("namespaces %q", nss)
	}
	for _, want := range []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"} {
		if !slices.Contains(l.MaskedPaths, want) {
			t.Errorf("masked paths lack %s", want)
		}
	}
	if !reflect.DeepEqual(l.ReadonlyPaths, []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}) {
		t.Errorf("readonly paths %q", l.ReadonlyPaths)
	}
	if l.Seccomp != nil {
		t.Errorf("seccomp %+v", l.Seccomp)
	}
	r := l.Resources
	if r.Memory != nil || r.CPU != nil || r.Pids != nil {
		t.Errorf("resources %+v", r)
	}
	if len(r.Devices) == 0 || r.Devices[0].Allow || r.Devices[0].Access != "rwm" || r.Devices[0].Type != "" {
		t.Errorf("first device rule must deny all: %+v", r.Devices)
	}
	var allowed []string
	for _, d := range r.Devices[1:] {
		if !d.Allow {
			t.Errorf("rule %+v denies", d)
		}
		allowed = append(allowed, devRule(d))
	}
	wantDev := []string{"c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm"}
	if !reflect.DeepEqual(allowed, wantDev) {
		t.Errorf("device rules %q", allowed)
	}
	if s.Annotations != nil {
		t.Errorf("annotations %v", s.Annotations)
	}
}

func devRule(d specs.LinuxDeviceCgroup) string {
	n := func(p *int64) string {
		if p == nil {
			return "*"
		}
		return strconv.FormatInt(*p, 10)
	}
	return d.Type + " " + n(d.Major) + ":" + n(d.Minor) + " " + d.Access
}

func TestGenerateOptions(t *testing.T) {
	rootfs := testRootfs(t)
	netns := filepath.Join(t.TempDir(), "netns")
	mustWrite(t, netns, "")
	bindSrc := t.TempDir()

	tests := []struct {
		name  string
		img   *ocispec.ImageConfig
		opts  []SpecOpt
		check func(t *testing.T, s *specs.Spec)
	}{
		{"image config", baseImage(), nil, func(t *testing.T, s *specs.Spec) {
			wantStrings(t, "args", s.Process.Args, "/entry", "run", "--fast")
			wantStrings(t, "env", s.Process.Env, "IMG=1", "SHARED=image", "PATH="+DefaultPath, "HOME=/home/app")
			if s.Process.Cwd != "/srv/app" {
				t.Errorf("cwd %q", s.Process.Cwd)
			}
			u := s.Process.User
			if u.UID != 1000 || u.GID != 1000 || !reflect.DeepEqual(u.AdditionalGids, []uint32{44, 29}) {
				t.Errorf("user %+v", u)
			}
		}},
		{"args replace cmd", baseImage(), []SpecOpt{WithArgs("x", "y")}, func(t *testing.T, s *specs.Spec) {
			wantStrings(t, "args", s.Process.Args, "/entry", "x", "y")
		}},
		{"entrypoint drops cmd", baseImage(), []SpecOpt{WithEntrypoint("/other")}, func(t *testing.T, s *specs.Spec) {
			wantStrings(t, "args", s.Process.Args, "/other")
		}},
		{"entrypoint and args", baseImage(), []SpecOpt{WithArgs("a"), WithEntrypoint("/other", "-v")}, func(t *testing.T, s *specs.Spec) {
			wantStrings(t, "args", s.Process.Args, "/other", "-v", "a")
		}},
		{"empty entrypoint clears it", baseImage(), []SpecOpt{WithEntrypoint(), WithArgs("/bin/true")}, func(t *testing.T, s *specs.Spec) {
			wantStrings(t, "args", s.Process.Args, "/bin/true")
		}},
		{"env overrides by key in place", baseImage(), []SpecOpt{WithEnv("SHARED=user", "NEW=2"), WithEnv("PATH=/x", "NEW=3")}, func(t *testing.T, s *specs.Spec) {
			wantStrings(t, "env", s.Process.Env, "IMG=1", "SHARED=user", "NEW=3", "PATH=/x", "HOME=/home/app")
		}},
		{"image env duplicate keys", &ocispec.ImageConfig{Cmd: []string{"x"}, Env: []string{"A=1", "B=2", "A=3", "HOME=/h", "EMPTY="}}, nil, func(t *testing.T, s *specs.Spec) {
			wantStrings(t, "env", s.Process.Env, "A=3", "B=2", "HOME=/h", "EMPTY=", "PATH="+DefaultPath)
		}},
		{"tty sets TERM", baseImage(), []SpecOpt{WithTTY(true)}, func(t *testing.T, s *specs.Spec) {
			if !s.Process.Terminal || !slices.Contains(s.Process.Env, "TERM=xterm") {
				t.Errorf("terminal %v env %q", s.Process.Terminal, s.Process.Env)
			}
		}},
		{"tty keeps TERM", baseImage(), []SpecOpt{WithTTY(true), WithEnv("TERM=vt100")}, func(t *testing.T, s *specs.Spec) {
			if slices.Contains(s.Process.Env, "TERM=xterm") || !slices.Contains(s.Process.Env, "TERM=vt100") {
				t.Errorf("env %q", s.Process.Env)
			}
		}},
		{"cwd", baseImage(), []SpecOpt{WithCwd("/work")}, func(t *testing.T, s *specs.Spec) {
			if s.Process.Cwd != "/work" {
				t.Errorf("cwd %q", s.Process.Cwd)
			}
		}},
		{"user uid:gid", baseImage(), []SpecOpt{WithUser("1000:1000")}, func(t *testing.T, s *specs.Spec) {
			u := s.Process.User
			if u.UID != 1000 || u.GID != 1000 || len(u.AdditionalGids) != 0 {
				t.Errorf("user %+v", u)
			}
		}},
		{"additional gids", baseImage(), []SpecOpt{WithUser("1000:1000"), WithAdditionalGIDs(7, 8, 7)}, func(t *testing.T, s *specs.Spec) {
			if !reflect.DeepEqual(s.Process.User.AdditionalGids, []uint32{7, 8}) {
				t.Errorf("gids %v", s.Process.User.AdditionalGids)
			}
		}},
		{"hostname", baseImage(), []SpecOpt{WithHostname("edge-01.local")}, func(t *testing.T, s *specs.Spec) {
			if s.Hostname != "edge-01.local" {
				t.Errorf("hostname %q", s.Hostname)
			}
		}},
		{"readonly rootfs", baseImage(), []SpecOpt{WithReadonlyRootfs(true)}, func(t *testing.T, s *specs.Spec) {
			if !s.Root.Readonly || s.Root.Path != "rootfs" {
				t.Errorf("root %+v", s.Root)
			}
		}},
		{"memory", baseImage(), []SpecOpt{WithMemoryLimit(64 << 20), WithMemoryReservation(32 << 20), WithMemorySwap(128 << 20)}, func(t *testing.T, s *specs.Spec) {
			m := s.Linux.Resources.Memory
			if *m.Limit != 64<<20 || *m.Reservation != 32<<20 || *m.Swap != 128<<20 {
				t.Errorf("memory %d %d %d", *m.Limit, *m.Reservation, *m.Swap)
			}
		}},
		{"memory swap unlimited", baseImage(), []SpecOpt{WithMemorySwap(-1), WithMemoryLimit(8 << 20)}, func(t *testing.T, s *specs.Spec) {
			if *s.Linux.Resources.Memory.Swap != -1 {
				t.Errorf("swap %d", *s.Linux.Resources.Memory.Swap)
			}
		}},
		{"cpus 1.5", baseImage(), []SpecOpt{WithCPUs(1.5)}, func(t *testing.T, s *specs.Spec) {
			c := s.Linux.Resources.CPU
			if *c.Quota != 150000 || *c.Period != 100000 || c.Shares != nil {
				t.Errorf("cpu quota %d period %d", *c.Quota, *c.Period)
			}
		}},
		{"cpus 0.01", baseImage(), []SpecOpt{WithCPUs(0.01)}, func(t *testing.T, s *specs.Spec) {
			if *s.Linux.Resources.CPU.Quota != 1000 {
				t.Errorf("quota %d", *s.Linux.Resources.CPU.Quota)
			}
		}},
		{"cpu shares and cpuset", baseImage(), []SpecOpt{WithCPUShares(512), WithCPUSet("0-1,3", "0")}, func(t *testing.T, s *specs.Spec) {
			c := s.Linux.Resources.CPU
			if *c.Shares != 512 || c.Cpus != "0-1,3" || c.Mems != "0" || c.Quota != nil || c.Period != nil {
				t.Errorf("cpu %+v", c)
			}
		}},
		{"pids", baseImage(), []SpecOpt{WithPidsLimit(100)}, func(t *testing.T, s *specs.Spec) {
			if *s.Linux.Resources.Pids.Limit != 100 {
				t.Errorf("pids %d", *s.Linux.Resources.Pids.Limit)
			}
		}},
		{"host network", baseImage(), []SpecOpt{WithHostNetwork()}, func(t *testing.T, s *specs.Spec) {
			wantNamespaces(t, s, "pid", "ipc", "uts", "mount")
		}},
		{"host network twice is fine", baseImage(), []SpecOpt{WithHostNetwork(), WithHostNamespace(specs.NetworkNamespace)}, func(t *testing.T, s *specs.Spec) {
			wantNamespaces(t, s, "pid", "ipc", "uts", "mount")
		}},
		{"netns path", baseImage(), []SpecOpt{WithNetNSPath(netns)}, func(t *testing.T, s *specs.Spec) {
			wantNamespaces(t, s, "pid", "ipc", "uts", "network="+netns, "mount")
		}},
		{"pid and ipc shared", baseImage(), []SpecOpt{WithNamespacePath(specs.PIDNamespace, netns), WithHostNamespace(specs.IPCNamespace)}, func(t *testing.T, s *specs.Spec) {
			wantNamespaces(t, s, "pid="+netns, "uts", "network", "mount")
		}},
		{"host uts keeps host hostname", baseImage(), []SpecOpt{WithHostNamespace(specs.UTSNamespace)}, func(t *testing.T, s *specs.Spec) {
			wantNamespaces(t, s, "pid", "ipc", "network", "mount")
			if s.Hostname != "" {
				t.Errorf("hostname %q with the host's uts namespace", s.Hostname)
			}
		}},
		{"cgroup namespace", baseImage(), []SpecOpt{WithCgroupNamespace(true)}, func(t *testing.T, s *specs.Spec) {
			wantNamespaces(t, s, "pid", "ipc", "uts", "network", "mount", "cgroup")
		}},
		{"privileged", baseImage(), []SpecOpt{WithPrivileged()}, func(t *testing.T, s *specs.Spec) {
			if n := len(s.Process.Capabilities.Bounding); n != bits.OnesCount64(grantableCaps()) || n < 38 {
				t.Errorf("%d capabilities, want %d", n, bits.OnesCount64(grantableCaps()))
			}
			if !slices.Contains(s.Process.Capabilities.Effective, "CAP_SYS_ADMIN") {
				t.Errorf("no CAP_SYS_ADMIN")
			}
			if s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil {
				t.Errorf("masked %q ro %q", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
			}
			if !reflect.DeepEqual(s.Linux.Resources.Devices, []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}) {
				t.Errorf("devices %+v", s.Linux.Resources.Devices)
			}
			for _, m := range s.Mounts {
				if (m.Destination == "/sys" || m.Destination == "/sys/fs/cgroup") && !slices.Contains(m.Options, "rw") {
					t.Errorf("%s not writable: %q", m.Destination, m.Options)
				}
			}
		}},
		{"caps add and drop", baseImage(), []SpecOpt{WithCapabilities([]string{"net_admin", "CAP_SYS_TIME"}, []string{"MKNOD", "cap_net_raw"})}, func(t *testing.T, s *specs.Spec) {
			c := s.Process.Capabilities.Effective
			if !slices.Contains(c, "CAP_NET_ADMIN") || !slices.Contains(c, "CAP_SYS_TIME") || slices.Contains(c, "CAP_MKNOD") || slices.Contains(c, "CAP_NET_RAW") || len(c) != 14 {
				t.Errorf("caps %q", c)
			}
		}},
		{"caps drop all add one", baseImage(), []SpecOpt{WithCapabilities([]string{"NET_BIND_SERVICE"}, []string{"ALL"})}, func(t *testing.T, s *specs.Spec) {
			wantStrings(t, "caps", s.Process.Capabilities.Permitted, "CAP_NET_BIND_SERVICE")
		}},
		{"caps add all", baseImage(), []SpecOpt{WithCapabilities([]string{"all"}, nil)}, func(t *testing.T, s *specs.Spec) {
			if len(s.Process.Capabilities.Bounding) != bits.OnesCount64(grantableCaps()) {
				t.Errorf("caps %q", s.Process.Capabilities.Bounding)
			}
		}},
		{"privileged drop", baseImage(), []SpecOpt{WithPrivileged(), WithCapabilities(nil, []string{"SYS_ADMIN"})}, func(t *testing.T, s *specs.Spec) {
			if slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") || len(s.Process.Capabilities.Bounding) != bits.OnesCount64(grantableCaps())-1 {
				t.Errorf("caps %q", s.Process.Capabilities.Bounding)
			}
		}},
		{"cgroups path", baseImage(), []SpecOpt{WithCgroupsPath("/custom/x")}, func(t *testing.T, s *specs.Spec) {
			if s.Linux.CgroupsPath != "/custom/x" {
				t.Errorf("cgroups path %q", s.Linux.CgroupsPath)
			}
		}},
		{"systemd cgroups path", baseImage(), []SpecOpt{WithCgroupsPath("edged.slice:edged:c1")}, func(t *testing.T, s *specs.Spec) {
			if s.Linux.CgroupsPath != "edged.slice:edged:c1" {
				t.Errorf("cgroups path %q", s.Linux.CgroupsPath)
			}
		}},
		{"rlimits", baseImage(), []SpecOpt{WithRlimits(specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Soft: 4096, Hard: 8192}, specs.POSIXRlimit{Type: "RLIMIT_CORE"}), WithRlimits(specs.POSIXRlimit{Type: "RLIMIT_CORE", Soft: 1, Hard: 2})}, func(t *testing.T, s *specs.Spec) {
			want := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 4096, Hard: 8192}, {Type: "RLIMIT_CORE", Soft: 1, Hard: 2}}
			if !reflect.DeepEqual(s.Process.Rlimits, want) {
				t.Errorf("rlimits %+v", s.Process.Rlimits)
			}
		}},
		{"annotations", baseImage(), []SpecOpt{WithAnnotations(map[string]string{"a": "1", "b": "2"}), WithAnnotations(map[string]string{"b": "3"})}, func(t *testing.T, s *specs.Spec) {
			if !reflect.DeepEqual(s.Annotations, map[string]string{"a": "1", "b": "3"}) {
				t.Errorf("annotations %v", s.Annotations)
			}
		}},
		{"no new privileges off", baseImage(), []SpecOpt{WithNoNewPrivileges(false)}, func(t *testing.T, s *specs.Spec) {
			if s.Process.NoNewPrivileges {
				t.Error("no_new_privs still set")
			}
		}},
		{"oom score adj", baseImage(), []SpecOpt{WithOOMScoreAdj(-500)}, func(t *testing.T, s *specs.Spec) {
			if *s.Process.OOMScoreAdj != -500 {
				t.Errorf("oom %d", *s.Process.OOMScoreAdj)
			}
		}},
		{"seccomp hook", baseImage(), []SpecOpt{WithSeccomp(&specs.LinuxSeccomp{DefaultAction: specs.ActErrno})}, func(t *testing.T, s *specs.Spec) {
			if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno {
				t.Errorf("seccomp %+v", s.Linux.Seccomp)
			}
		}},
		{"mounts", baseImage(), []SpecOpt{WithMounts(
			BindMount(bindSrc, "/data/sub", true),
			specs.Mount{Type: "bind", Source: bindSrc, Destination: "/data", Options: []string{"bind", "nosuid"}},
			TmpfsMount("/dev/shm", 1<<20),
			specs.Mount{Type: "tmpfs", Destination: "/run", Options: []string{"size=10m", "mode=755", "uid=0", "gid=0", "nr_inodes=1k", "noexec"}},
		)}, func(t *testing.T, s *specs.Spec) {
			var got []string
			for _, m := range s.Mounts {
				got = append(got, m.Destination+" "+m.Type+" "+m.Source+" "+strings.Join(m.Options, ","))
			}
			want := []string{
				"/proc proc proc nosuid,noexec,nodev",
				"/dev tmpfs tmpfs nosuid,strictatime,mode=755,size=65536k",
				"/dev/pts devpts devpts nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5",
				"/dev/mqueue mqueue mqueue nosuid,noexec,nodev",
				"/sys sysfs sysfs nosuid,noexec,nodev,ro",
				"/sys/fs/cgroup cgroup cgroup nosuid,noexec,nodev,relatime,ro",
				"/data bind " + bindSrc + " bind,nosuid",
				"/run tmpfs tmpfs size=10m,mode=755,uid=0,gid=0,nr_inodes=1k,noexec",
				"/data/sub bind " + bindSrc + " rbind,ro",
				"/dev/shm tmpfs tmpfs nosuid,nodev,mode=1777,size=1048576",
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("mounts:\n%s", strings.Join(got, "\n"))
			}
		}},
		{"bind without bind option gets rbind", baseImage(), []SpecOpt{WithMounts(specs.Mount{Type: "bind", Source: bindSrc, Destination: "/d", Options: []string{"ro"}})}, func(t *testing.T, s *specs.Spec) {
			m := s.Mounts[len(s.Mounts)-1]
			if !reflect.DeepEqual(m.Options, []string{"ro", "rbind"}) {
				t.Errorf("options %q", m.Options)
			}
		}},
		{"nil image and nil option", nil, []SpecOpt{nil, WithArgs("/x")}, func(t *testing.T, s *specs.Spec) {
			wantStrings(t, "args", s.Process.Args, "/x")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, mustGenerate(t, rootfs, tc.img, tc.opts...))
		})
	}
}

func wantStrings(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func wantNamespaces(t *testing.T, s *specs.Spec, want ...string) {
	t.Helper()
	var got []string
	for _, n := range s.Linux.Namespaces {
		if n.Path != "" {
			got = append(got, string(n.Type)+"="+n.Path)
		} else {
			got = append(got, string(n.Type))
		}
	}
	wantStrings(t, "namespaces", got, want...)
}

func TestGenerateDefaultHostnameTruncated(t *testing.T) {
	id := strings.Repeat("a", 76)
	s, err := Generate(context.Background(), "default", id, "", &ocispec.ImageConfig{Cmd: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Hostname != strings.Repeat("a", 63) {
		t.Errorf("hostname %q (%d)", s.Hostname, len(s.Hostname))
	}
}

func TestGenerateErrors(t *testing.T) {
	rootfs := testRootfs(t)
	img := baseImage()
	missing := filepath.Join(t.TempDir(), "missing")
	src := t.TempDir()
	ctx := context.Background()
	canceled, cancel := context.WithCancel(ctx)
	cancel()

	tests := []struct {
		name   string
		ctx    context.Context
		ns, id string
		rootfs string
		img    *ocispec.ImageConfig
		opts   []SpecOpt
		kind   error
		msg    string
	}{
		{name: "canceled", ctx: canceled, kind: context.Canceled, msg: "context canceled"},
		{name: "bad namespace", ns: "../x", kind: errdefs.ErrInvalidArgument, msg: "namespace: "},
		{name: "bad id", id: "a/b", kind: errdefs.ErrInvalidArgument, msg: "container id: "},
		{name: "relative rootfs", rootfs: "rel/rootfs", kind: errdefs.ErrInvalidArgument, msg: `rootfs: "rel/rootfs" is not an absolute path`},
		{name: "missing rootfs", rootfs: missing, kind: errdefs.ErrNotFound, msg: "rootfs " + missing},
		{name: "no command", img: &ocispec.ImageConfig{}, kind: errdefs.ErrInvalidArgument, msg: "process args: no command"},
		{name: "empty command", img: &ocispec.ImageConfig{Cmd: []string{""}}, kind: errdefs.ErrInvalidArgument, msg: "the command is an empty string"},
		{name: "entrypoint cleared, no args", opts: []SpecOpt{WithEntrypoint()}, kind: errdefs.ErrInvalidArgument, msg: "no command"},
		{name: "NUL in image cmd", img: &ocispec.ImageConfig{Cmd: []string{"a\x00b"}}, kind: errdefs.ErrInvalidArgument, msg: "image config Cmd: argument 0 contains a NUL byte"},
		{name: "NUL in image entrypoint", img: &ocispec.ImageConfig{Entrypoint: []string{"x", "\x00"}}, kind: errdefs.ErrInvalidArgument, msg: "image config Entrypoint: argument 1"},
		{name: "bad image env", img: &ocispec.ImageConfig{Cmd: []string{"x"}, Env: []string{"OK=1", "NOEQUALS"}}, kind: errdefs.ErrInvalidArgument, msg: `image config Env: entry 1: "NOEQUALS" is not KEY=VALUE`},
		{name: "relative image workdir", img: &ocispec.ImageConfig{Cmd: []string{"x"}, WorkingDir: "app"}, kind: errdefs.ErrInvalidArgument, msg: `image config WorkingDir: "app" is not an absolute path`},
		{name: "unknown image user", img: &ocispec.ImageConfig{Cmd: []string{"x"}, User: "ghost"}, kind: errdefs.ErrNotFound, msg: `image config User: user "ghost" not found`},
		{name: "args empty", opts: []SpecOpt{WithArgs()}, kind: errdefs.ErrInvalidArgument, msg: "WithArgs: no arguments given"},
		{name: "args NUL", opts: []SpecOpt{WithArgs("a", "b\x00")}, kind: errdefs.ErrInvalidArgument, msg: "WithArgs: argument 1 contains a NUL byte"},
		{name: "entrypoint NUL", opts: []SpecOpt{WithEntrypoint("\x00")}, kind: errdefs.ErrInvalidArgument, msg: "WithEntrypoint: argument 0"},
		{name: "env no equals", opts: []SpecOpt{WithEnv("A=1", "B")}, kind: errdefs.ErrInvalidArgument, msg: `WithEnv: entry 1: "B" is not KEY=VALUE`},
		{name: "env empty key", opts: []SpecOpt{WithEnv("=v")}, kind: errdefs.ErrInvalidArgument, msg: "WithEnv: entry 0: \"=v\" has an empty key"},
		{name: "env NUL", opts: []SpecOpt{WithEnv("K=a\x00")}, kind: errdefs.ErrInvalidArgument, msg: `WithEnv: entry 0: "K" contains a NUL byte`},
		{name: "user empty", opts: []SpecOpt{WithUser("")}, kind: errdefs.ErrInvalidArgument, msg: "WithUser: empty user"},
		{name: "user two colons", opts: []SpecOpt{WithUser("a:b:c")}, kind: errdefs.ErrInvalidArgument, msg: `WithUser: "a:b:c" has more than one ':'`},
		{name: "user empty group", opts: []SpecOpt{WithUser("app:")}, kind: errdefs.ErrInvalidArgument, msg: "WithUser: empty group"},
		{name: "user empty name", opts: []SpecOpt{WithUser(":1")}, kind: errdefs.ErrInvalidArgument, msg: "WithUser: empty user"},
		{name: "user bad char", opts: []SpecOpt{WithUser("a/b")}, kind: errdefs.ErrInvalidArgument, msg: `WithUser: user "a/b" contains a forbidden character '/'`},
		{name: "user too long", opts: []SpecOpt{WithUser(strings.Repeat("u", 257))}, kind: errdefs.ErrInvalidArgument, msg: "WithUser: user is 257 bytes long"},
		{name: "uid out of range", opts: []SpecOpt{WithUser("4294967295")}, kind: errdefs.ErrInvalidArgument, msg: "WithUser: uid 4294967295 is out of range"},
		{name: "uid overflow", opts: []SpecOpt{WithUser("99999999999")}, kind: errdefs.ErrInvalidArgument, msg: "WithUser: uid 99999999999 is out of range"},
		{name: "gid out of range", opts: []SpecOpt{WithUser("1:4294967296")}, kind: errdefs.ErrInvalidArgument, msg: "WithUser: gid 4294967296 is out of range"},
		{name: "unknown user", opts: []SpecOpt{WithUser("ghost")}, kind: errdefs.ErrNotFound, msg: `WithUser: user "ghost" not found in the image's /etc/passwd`},
		{name: "unknown group", opts: []SpecOpt{WithUser("app:ghosts")}, kind: errdefs.ErrNotFound, msg: `WithUser: group "ghosts" not found in the image's /etc/group`},
		{name: "name without rootfs", rootfs: "-", opts: []SpecOpt{WithUser("app")}, kind: errdefs.ErrInvalidArgument, msg: `WithUser: user name "app" cannot be resolved without a rootfs`},
		{name: "group without rootfs", rootfs: "-", opts: []SpecOpt{WithUser("1:app")}, kind: errdefs.ErrInvalidArgument, msg: `WithUser: group name "app" cannot be resolved without a rootfs`},
		{name: "additional gid", opts: []SpecOpt{WithAdditionalGIDs(1, 4294967295)}, kind: errdefs.ErrInvalidArgument, msg: "WithAdditionalGIDs: gid 4294967295 is out of range"},
		{name: "cwd relative", opts: []SpecOpt{WithCwd("work")}, kind: errdefs.ErrInvalidArgument, msg: `WithCwd: "work" is not an absolute path`},
		{name: "cwd dotdot", opts: []SpecOpt{WithCwd("/a/../b")}, kind: errdefs.ErrInvalidArgument, msg: `WithCwd: "/a/../b" contains ".."`},
		{name: "cwd unclean", opts: []SpecOpt{WithCwd("/a//b/")}, kind: errdefs.ErrInvalidArgument, msg: `WithCwd: "/a//b/" is not clean (want "/a/b")`},
		{name: "cwd empty", opts: []SpecOpt{WithCwd("")}, kind: errdefs.ErrInvalidArgument, msg: "WithCwd: empty path"},
		{name: "hostname empty", opts: []SpecOpt{WithHostname("")}, kind: errdefs.ErrInvalidArgument, msg: "WithHostname: \"\" must be 1 to 64 characters"},
		{name: "hostname long", opts: []SpecOpt{WithHostname(strings.Repeat("h", 65))}, kind: errdefs.ErrInvalidArgument, msg: "must be 1 to 64 characters"},
		{name: "hostname char", opts: []SpecOpt{WithHostname("a b")}, kind: errdefs.ErrInvalidArgument, msg: `WithHostname: "a b": character ' ' is not allowed at position 1`},
		{name: "hostname leading dash", opts: []SpecOpt{WithHostname("-a")}, kind: errdefs.ErrInvalidArgument, msg: "position 0"},
		{name: "hostname with host uts", opts: []SpecOpt{WithHostname("h"), WithHostNamespace(specs.UTSNamespace)}, kind: errdefs.ErrInvalidArgument, msg: "WithHostname: a hostname needs a new uts namespace"},
		{name: "mount relative dest", opts: []SpecOpt{WithMounts(BindMount(src, "data", false))}, kind: errdefs.ErrInvalidArgument, msg: `WithMounts: mount 0: destination: "data" is not an absolute path`},
		{name: "mount dotdot dest", opts: []SpecOpt{WithMounts(TmpfsMount("/tmp", 1), BindMount(src, "/x/../etc", false))}, kind: errdefs.ErrInvalidArgument, msg: `WithMounts: mount 1: destination: "/x/../etc" contains ".."`},
		{name: "mount root dest", opts: []SpecOpt{WithMounts(BindMount(src, "/", false))}, kind: errdefs.ErrInvalidArgument, msg: "cannot mount over /"},
		{name: "mount unclean dest", opts: []SpecOpt{WithMounts(BindMount(src, "/data/", false))}, kind: errdefs.ErrInvalidArgument, msg: `"/data/" is not clean`},
		{name: "mount missing source", opts: []SpecOpt{WithMounts(BindMount(missing, "/data", false))}, kind: errdefs.ErrNotFound, msg: "WithMounts: mount 0: source " + missing},
		{name: "mount relative source", opts: []SpecOpt{WithMounts(BindMount("src", "/data", false))}, kind: errdefs.ErrInvalidArgument, msg: `WithMounts: mount 0: source: "src" is not an absolute path`},
		{name: "mount dotdot source", opts: []SpecOpt{WithMounts(BindMount(src+"/../..", "/data", false))}, kind: errdefs.ErrInvalidArgument, msg: `contains ".."`},
		{name: "mount ro and rw", opts: []SpecOpt{WithMounts(specs.Mount{Type: "bind", Source: src, Destination: "/d", Options: []string{"ro", "rw"}})}, kind: errdefs.ErrInvalidArgument, msg: "options: both ro and rw given"},
		{name: "mount bad bind option", opts: []SpecOpt{WithMounts(specs.Mount{Type: "bind", Source: src, Destination: "/d", Options: []string{"size=1"}})}, kind: errdefs.ErrInvalidArgument, msg: `options: "size=1" is not a bind mount option`},
		{name: "mount bad tmpfs option", opts: []SpecOpt{WithMounts(specs.Mount{Type: "tmpfs", Destination: "/d", Options: []string{"bind"}})}, kind: errdefs.ErrInvalidArgument, msg: `options: "bind" is not a tmpfs option`},
		{name: "mount bad tmpfs size", opts: []SpecOpt{WithMounts(specs.Mount{Type: "tmpfs", Destination: "/d", Options: []string{"size=lots"}})}, kind: errdefs.ErrInvalidArgument, msg: `size="lots" is not a size`},
		{name: "mount bad tmpfs mode", opts: []SpecOpt{WithMounts(specs.Mount{Type: "tmpfs", Destination: "/d", Options: []string{"mode=999"}})}, kind: errdefs.ErrInvalidArgument, msg: `mode="999" is not an octal mode`},
		{name: "mount bad tmpfs uid", opts: []SpecOpt{WithMounts(specs.Mount{Type: "tmpfs", Destination: "/d", Options: []string{"uid=x"}})}, kind: errdefs.ErrInvalidArgument, msg: `uid="x" is not a number`},
		{name: "mount unknown tmpfs key", opts: []SpecOpt{WithMounts(specs.Mount{Type: "tmpfs", Destination: "/d", Options: []string{"huge=always"}})}, kind: errdefs.ErrInvalidArgument, msg: `"huge=always" is not a tmpfs option`},
		{name: "mount tmpfs source", opts: []SpecOpt{WithMounts(specs.Mount{Type: "tmpfs", Source: "/etc", Destination: "/d"})}, kind: errdefs.ErrInvalidArgument, msg: `source: a tmpfs mount's source must be "tmpfs" or empty, not "/etc"`},
		{name: "mount type", opts: []SpecOpt{WithMounts(specs.Mount{Type: "overlay", Destination: "/d"})}, kind: errdefs.ErrInvalidArgument, msg: `type: "overlay" is not supported`},
		{name: "mount duplicate", opts: []SpecOpt{WithMounts(TmpfsMount("/d", 1)), WithMounts(BindMount(src, "/d", true))}, kind: errdefs.ErrInvalidArgument, msg: "WithMounts: mount 0: destination /d is already mounted"},
		{name: "memory small", opts: []SpecOpt{WithMemoryLimit(1024)}, kind: errdefs.ErrInvalidArgument, msg: "WithMemoryLimit: 1024 bytes is below the minimum of 4194304"},
		{name: "reservation zero", opts: []SpecOpt{WithMemoryReservation(0)}, kind: errdefs.ErrInvalidArgument, msg: "WithMemoryReservation: 0 bytes is not positive"},
		{name: "reservation above limit", opts: []SpecOpt{WithMemoryReservation(16 << 20), WithMemoryLimit(8 << 20)}, kind: errdefs.ErrInvalidArgument, msg: "WithMemoryReservation: reservation 16777216 is above the memory limit 8388608"},
		{name: "swap bad", opts: []SpecOpt{WithMemorySwap(-2)}, kind: errdefs.ErrInvalidArgument, msg: "WithMemorySwap: -2 bytes is neither positive nor -1"},
		{name: "swap without limit", opts: []SpecOpt{WithMemorySwap(1 << 30)}, kind: errdefs.ErrInvalidArgument, msg: "WithMemorySwap: needs WithMemoryLimit"},
		{name: "swap below limit", opts: []SpecOpt{WithMemoryLimit(64 << 20), WithMemorySwap(32 << 20)}, kind: errdefs.ErrInvalidArgument, msg: "WithMemorySwap: memory+swap 33554432 is below the memory limit 67108864"},
		{name: "cpus zero", opts: []SpecOpt{WithCPUs(0)}, kind: errdefs.ErrInvalidArgument, msg: "WithCPUs: 0 is outside 0.01 to 1024"},
		{name: "cpus too small", opts: []SpecOpt{WithCPUs(0.001)}, kind: errdefs.ErrInvalidArgument, msg: "WithCPUs: 0.001 is outside"},
		{name: "cpus NaN", opts: []SpecOpt{WithCPUs(nan())}, kind: errdefs.ErrInvalidArgument, msg: "WithCPUs: NaN is outside"},
		{name: "cpus huge", opts: []SpecOpt{WithCPUs(1e9)}, kind: errdefs.ErrInvalidArgument, msg: "WithCPUs: 1e+09 is outside"},
		{name: "cpu shares", opts: []SpecOpt{WithCPUShares(1)}, kind: errdefs.ErrInvalidArgument, msg: "WithCPUShares: 1 is outside 2 to 262144"},
		{name: "cpuset empty", opts: []SpecOpt{WithCPUSet("", "")}, kind: errdefs.ErrInvalidArgument, msg: "WithCPUSet: both cpus and mems are empty"},
		{name: "cpuset bad", opts: []SpecOpt{WithCPUSet("0-", "")}, kind: errdefs.ErrInvalidArgument, msg: `WithCPUSet: cpus: "0-" is not a number or a range lo-hi`},
		{name: "cpuset reversed", opts: []SpecOpt{WithCPUSet("3-1", "")}, kind: errdefs.ErrInvalidArgument, msg: `"3-1" is not a number`},
		{name: "cpuset mems bad", opts: []SpecOpt{WithCPUSet("0", "a")}, kind: errdefs.ErrInvalidArgument, msg: `WithCPUSet: mems: "a"`},
		{name: "pids zero", opts: []SpecOpt{WithPidsLimit(0)}, kind: errdefs.ErrInvalidArgument, msg: "WithPidsLimit: 0 is not positive"},
		{name: "netns missing", opts: []SpecOpt{WithNetNSPath(missing)}, kind: errdefs.ErrNotFound, msg: "WithNetNSPath: network namespace path " + missing},
		{name: "netns relative", opts: []SpecOpt{WithNetNSPath("run/netns/x")}, kind: errdefs.ErrInvalidArgument, msg: `WithNetNSPath: network namespace path: "run/netns/x" is not an absolute path`},
		{name: "host and path network", opts: []SpecOpt{WithHostNetwork(), WithNetNSPath(src)}, kind: errdefs.ErrInvalidArgument, msg: "WithNetNSPath: the network namespace was already set by an earlier option"},
		{name: "host mount ns", opts: []SpecOpt{WithHostNamespace(specs.MountNamespace)}, kind: errdefs.ErrInvalidArgument, msg: `WithHostNamespace: namespace type "mount" cannot be shared or joined`},
		{name: "join user ns", opts: []SpecOpt{WithNamespacePath(specs.UserNamespace, src)}, kind: errdefs.ErrInvalidArgument, msg: `WithNamespacePath: namespace type "user"`},
		{name: "cap unknown", opts: []SpecOpt{WithCapabilities([]string{"CAP_FLY"}, nil)}, kind: errdefs.ErrInvalidArgument, msg: `WithCapabilities: add: unknown capability "CAP_FLY"`},
		{name: "cap unknown drop", opts: []SpecOpt{WithCapabilities(nil, []string{"root"})}, kind: errdefs.ErrInvalidArgument, msg: `WithCapabilities: drop: unknown capability "root"`},
		{name: "cap add and drop", opts: []SpecOpt{WithCapabilities([]string{"chown"}, []string{"CAP_CHOWN"})}, kind: errdefs.ErrInvalidArgument, msg: "WithCapabilities: CAP_CHOWN is both added and dropped"},
		{name: "cgroups relative", opts: []SpecOpt{WithCgroupsPath("edged/x")}, kind: errdefs.ErrInvalidArgument, msg: `WithCgroupsPath: "edged/x" is neither an absolute path nor slice:prefix:name`},
		{name: "cgroups root", opts: []SpecOpt{WithCgroupsPath("/")}, kind: errdefs.ErrInvalidArgument, msg: "WithCgroupsPath: the root cgroup cannot hold a container"},
		{name: "cgroups dotdot", opts: []SpecOpt{WithCgroupsPath("/edged/../../x")}, kind: errdefs.ErrInvalidArgument, msg: `WithCgroupsPath: "/edged/../../x" contains ".."`},
		{name: "cgroups slice suffix", opts: []SpecOpt{WithCgroupsPath("edged:p:n")}, kind: errdefs.ErrInvalidArgument, msg: `WithCgroupsPath: slice "edged" does not end in .slice`},
		{name: "cgroups slice empty name", opts: []SpecOpt{WithCgroupsPath("edged.slice:p:")}, kind: errdefs.ErrInvalidArgument, msg: "has an empty name"},
		{name: "cgroups slice slash", opts: []SpecOpt{WithCgroupsPath("a.slice:p:../x")}, kind: errdefs.ErrInvalidArgument, msg: `"../x" contains '/'`},
		{name: "rlimit type", opts: []SpecOpt{WithRlimits(specs.POSIXRlimit{Type: "NOFILE"})}, kind: errdefs.ErrInvalidArgument, msg: `WithRlimits: unknown rlimit type "NOFILE"`},
		{name: "rlimit soft above hard", opts: []SpecOpt{WithRlimits(specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Soft: 2, Hard: 1})}, kind: errdefs.ErrInvalidArgument, msg: "WithRlimits: RLIMIT_NOFILE: soft limit 2 is above hard limit 1"},
		{name: "rlimit twice", opts: []SpecOpt{WithRlimits(specs.POSIXRlimit{Type: "RLIMIT_CORE"}, specs.POSIXRlimit{Type: "RLIMIT_CORE"})}, kind: errdefs.ErrInvalidArgument, msg: "WithRlimits: RLIMIT_CORE given twice"},
		{name: "annotation key", opts: []SpecOpt{WithAnnotations(map[string]string{"": "v"})}, kind: errdefs.ErrInvalidArgument, msg: "WithAnnotations: empty key"},
		{name: "oom", opts: []SpecOpt{WithOOMScoreAdj(1001)}, kind: errdefs.ErrInvalidArgument, msg: "WithOOMScoreAdj: 1001 is outside -1000 to 1000"},
		{name: "seccomp without action", opts: []SpecOpt{WithSeccomp(&specs.LinuxSeccomp{})}, kind: errdefs.ErrInvalidArgument, msg: "WithSeccomp: the profile has no default action"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, ns, id, rfs, im := ctx, "default", "c1", rootfs, img
			if tc.ctx != nil {
				c = tc.ctx
			}
			if tc.ns != "" {
				ns = tc.ns
			}
			if tc.id != "" {
				id = tc.id
			}
			switch tc.rootfs {
			case "":
			case "-":
				rfs = ""
			default:
				rfs = tc.rootfs
			}
			if tc.img != nil {
				im = tc.img
			}
			s, err := Generate(c, ns, id, rfs, im, tc.opts...)
			if err == nil {
				t.Fatalf("no error; spec %+v", s)
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("error %q is not %v", err, tc.kind)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q lacks %q", err, tc.msg)
			}
			if s != nil {
				t.Errorf("spec returned with an error")
			}
		})
	}
}

func nan() float64 {
	var zero float64
	return zero / zero
}
