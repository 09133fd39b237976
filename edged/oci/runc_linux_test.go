package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// busyboxBundle makes a bundle dir whose rootfs holds the static busybox of
// the Debian busybox-static package and a few applet links.
func busyboxBundle(t *testing.T) (bundle, rootfs string) {
	t.Helper()
	const busybox = "/bin/busybox"
	out, err := exec.Command("file", "-L", busybox).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("statically linked")) {
		t.Fatalf("%s must be the static busybox (apt-get install busybox-static): %v %s", busybox, err, out)
	}
	bundle = t.TempDir()
	rootfs = filepath.Join(bundle, "rootfs")
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src, err := os.Open(busybox)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(rootfs, "bin", "busybox"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "echo", "id", "cat", "hostname", "touch"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(rootfs, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
	writeFile(t, filepath.Join(rootfs, "etc", "group"), "root:x:0:\napp:x:1000:\nextra:x:2000:app\n")
	return bundle, rootfs
}

// runcRun runs the bundle with runc in the foreground and returns its output
// and exit code. Each test gets its own runc state dir and cgroup parent,
// both removed afterwards.
func runcRun(t *testing.T, bundle, id string) (string, int) {
	t.Helper()
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatalf("runc is not installed (apt-get install runc): %v", err)
	}
	state := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, runc, "--root", state, "run", "--bundle", bundle, id)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t.Cleanup(func() { exec.Command(runc, "--root", state, "delete", "--force", id).Run() })
	err = cmd.Run()
	code := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("runc run: %v\n%s", err, out.String())
	}
	return out.String(), code
}

// removeCgroupTree removes the (empty, after runc is done) cgroup
// directories under rel in every cgroup hierarchy, deepest first.
func removeCgroupTree(t *testing.T, rel string) {
	t.Helper()
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hier {
		top := filepath.Join(h, rel)
		var dirs []string
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("removing cgroup %s: %v", dirs[i], err)
			}
		}
	}
}

func TestRuncEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runc needs root")
	}
	bundle, rootfs := busyboxBundle(t)
	parent := fmt.Sprintf("edged-ocitest-%d", os.Getpid())
	t.Cleanup(func() { removeCgroupTree(t, parent) })

	img := &ocispec.ImageConfig{
		Env: []string{"FROM_IMAGE=img", "PATH=/bin"},
		Cmd: []string{"/bin/sh", "-c", "echo should-not-run"},
	}
	script := strings.Join([]string{
		"id",
		"echo host=$(hostname)",
		"echo foo=$FOO image=$FROM_IMAGE home=$HOME",
		"if touch /probe 2>/dev/null; then echo rootfs=writable; else echo rootfs=readonly; fi",
		"touch /tmp/x 2>&1 || true",
		"echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)",
		"echo pids=$(cat /sys/fs/cgroup/pids/pids.max)",
		"echo nofile=$(ulimit -n)",
	}, "; ")
	spec, err := Generate(context.Background(), "ns1", "e2e-main", rootfs, img,
		WithArgs("/bin/sh", "-c", script),
		WithEnv("FOO=bar"),
		WithUser("1000:1000"),
		WithHostname("edge-box"),
		WithReadonlyRootfs(true),
		WithMemoryLimit(64<<20),
		WithPidsLimit(32),
		WithCgroupsPath("/"+parent+"/ns1/e2e-main"),
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteBundle(bundle, spec); err != nil {
		t.Fatal(err)
	}
	out, code := runcRun(t, bundle, fmt.Sprintf("ocitest-%d-main", os.Getpid()))
	t.Logf("container output:\n%s", out)
	if code != 0 {
		t.Fatalf("exit code %d, want 0; output:\n%s", code, out)
	}
	for _, want := range []string{
		"uid=1000(app) gid=1000(app)",
		"host=edge-box",
		"foo=bar image=img home=/home/app",
		"rootfs=readonly",
		"Read-only file system",
		fmt.Sprintf("mem=%d", 64<<20),
		"pids=32",
		"nofile=1024",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "should-not-run") {
		t.Errorf("the image Cmd ran although WithArgs replaced it:\n%s", out)
	}
	// uid:gid given explicitly: no supplementary groups from /etc/group.
	if strings.Contains(out, "2000(extra)") {
		t.Errorf("explicit group still got /etc/group memberships:\n%s", out)
	}
}

func TestRuncExitCode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runc needs root")
	}
	bundle, rootfs := busyboxBundle(t)
	parent := fmt.Sprintf("edged-ocitest-%d-exit", os.Getpid())
	t.Cleanup(func() { removeCgroupTree(t, parent) })
	spec, err := Generate(context.Background(), "ns1", "e2e-exit", rootfs,
		&ocispec.ImageConfig{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"exit 1"}},
		WithArgs("echo groups=$(id -G); exit 3"),
		WithUser("app"),
		WithCgroupsPath("/"+parent+"/e2e-exit"),
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteBundle(bundle, spec); err != nil {
		t.Fatal(err)
	}
	out, code := runcRun(t, bundle, fmt.Sprintf("ocitest-%d-exit", os.Getpid()))
	if code != 3 {
		t.Fatalf("exit code %d, want 3; output:\n%s", code, out)
	}
	// By name: primary group from passwd plus memberships from /etc/group.
	if !strings.Contains(out, "groups=1000 2000") {
		t.Errorf("output lacks groups=1000 2000:\n%s", out)
	}
}

// TestRuncDefaultSpecConfinement runs the default (unprivileged) spec and
// checks what it confines: masked paths, read-only /proc/sys, no
// CAP_SYS_ADMIN, device cgroup.
func TestRuncDefaultSpecConfinement(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runc needs root")
	}
	bundle, rootfs := busyboxBundle(t)
	parent := fmt.Sprintf("edged-ocitest-%d-conf", os.Getpid())
	t.Cleanup(func() { removeCgroupTree(t, parent) })
	script := strings.Join([]string{
		"echo timer_list=$(cat /proc/timer_list | busybox wc -c)",   // masked: /dev/null bound over it
		"echo firmware=$(busybox ls /sys/firmware | busybox wc -l)", // masked: empty read-only tmpfs
		"if echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null; then echo procsys=writable; else echo procsys=readonly; fi",
		"if busybox mount -t tmpfs none /tmp 2>/dev/null; then echo mount=allowed; else echo mount=denied; fi",
		"if busybox mknod /dev/sda1 b 8 1 && busybox head -c1 /dev/sda1 >/dev/null 2>&1; then echo disk=readable; else echo disk=denied; fi",
		"echo null=$(echo ok > /dev/null && echo fine)",
		"busybox grep CapEff /proc/self/status",
	}, "; ")
	spec, err := Generate(context.Background(), "ns1", "e2e-conf", rootfs, nil,
		WithArgs("/bin/sh", "-c", script),
		WithCgroupsPath("/"+parent+"/e2e-conf"),
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteBundle(bundle, spec); err != nil {
		t.Fatal(err)
	}
	out, code := runcRun(t, bundle, fmt.Sprintf("ocitest-%d-conf", os.Getpid()))
	t.Logf("container output:\n%s", out)
	if code != 0 {
		t.Fatalf("exit code %d:\n%s", code, out)
	}
	for _, want := range []string{
		"timer_list=0", "firmware=0", "procsys=readonly", "mount=denied", "disk=denied", "null=fine",
		"CapEff:\t00000000a80425fb", // exactly the 14 default capabilities
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestRuncPrivilegedHostNetwork checks that runc accepts the privileged
// spec (every capability of this kernel, all devices, writable /sys) and the
// host network namespace.
func TestRuncPrivilegedHostNetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runc needs root")
	}
	bundle, rootfs := busyboxBundle(t)
	parent := fmt.Sprintf("edged-ocitest-%d-priv", os.Getpid())
	t.Cleanup(func() { removeCgroupTree(t, parent) })
	hostIfacesBefore := hostInterfaces(t)
	script := strings.Join([]string{
		"busybox grep CapEff /proc/self/status",
		"if busybox mount -t tmpfs none /tmp; then echo mount=allowed; fi",
		"busybox cat /proc/net/dev",
		"if busybox mknod /dev/loopctl c 10 237 && busybox head -c0 /dev/loopctl; then echo devices=allowed; fi",
	}, "; ")
	spec, err := Generate(context.Background(), "ns1", "e2e-priv", rootfs, nil,
		WithArgs("/bin/sh", "-c", script),
		WithPrivileged(),
		WithHostNetwork(),
		WithCgroupsPath("/"+parent+"/e2e-priv"),
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteBundle(bundle, spec); err != nil {
		t.Fatal(err)
	}
	out, code := runcRun(t, bundle, fmt.Sprintf("ocitest-%d-priv", os.Getpid()))
	t.Logf("container output:\n%s", out)
	if code != 0 {
		t.Fatalf("exit code %d:\n%s", code, out)
	}
	// The host's interfaces that existed all along (other tests running in
	// parallel add and remove veths) must all be visible inside.
	var hostIfaces []string
	after := hostInterfaces(t)
	for _, name := range hostIfacesBefore {
		if slices.Contains(after, name) {
			hostIfaces = append(hostIfaces, name)
		}
	}
	if len(hostIfaces) == 0 {
		t.Fatal("the host has no lasting network interface besides lo; cannot tell host network from a new one")
	}
	// Every capability this process holds in its bounding set (a sandbox
	// may have removed some), and no more.
	wantCapEff := fmt.Sprintf("CapEff:\t%016x", grantableCaps())
	for _, want := range append([]string{wantCapEff, "mount=allowed", "devices=allowed"}, hostIfaces...) {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// hostInterfaces lists the network interfaces of this (the host's) network
// namespace, without lo.
func hostInterfaces(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(data), "\n")[2:] {
		if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && name != "lo" {
			names = append(names, name)
		}
	}
	return names
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
