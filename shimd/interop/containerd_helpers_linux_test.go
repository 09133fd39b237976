package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/edged/edged/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Runtime names as ctr --runtime takes them.
const (
	runtimeRunc  = "io.containerd.runc.v2"
	runtimeEdged = "io.containerd.edged.v2"
	// edgedShimName is the binary containerd resolves for runtimeEdged.
	edgedShimName = "containerd-shim-edged-v2"
	testImage     = "docker.io/library/busybox:test"
)

// containerd is a private containerd 1.x daemon with its own root, state,
// sockets and namespace, and edged-shim installed as containerd-shim-edged-v2
// first in its PATH.
type containerd struct {
	t       *testing.T
	dir     string // temporary root of everything
	sock    string // grpc socket
	ns      string // containerd namespace of the test (unique per run)
	shimBin string // the installed edged shim
	logPath string
	cfgPath string
	binDir  string
	cmd     *exec.Cmd     // the current daemon process
	exited  chan struct{} // closed when cmd has exited
}

// requireTools skips the test when the containerd package is not installed.
func requireTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: containerd, runc and overlay mounts")
	}
	for _, b := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed (Debian packages containerd, runc): %v", b, err)
		}
	}
}

// busyboxPath returns the static busybox (Debian busybox-static): an ELF
// executable without an interpreter (PT_INTERP) runs in an empty rootfs.
func busyboxPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if static {
			return p
		}
	}
	t.Skip("static busybox not installed (Debian package busybox-static)")
	return ""
}

// buildShim builds ./cmd/edged-shim into dir as containerd-shim-edged-v2.
func buildShim(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(dir, edgedShimName)
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", out, "github.com/edged/edged/cmd/edged-shim")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build edged-shim: %v\n%s", err, b)
	}
	return out
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// startContainerd builds and installs the shim, writes a minimal config and
// starts containerd; everything is torn down in t.Cleanup: tasks killed and
// deleted, shims and containerd stopped, mounts under the root unmounted,
// runc state and cgroups of the namespace removed, the root deleted.
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	requireTools(t)
	// /var/tmp, not /tmp: /tmp may be an overlay or tmpfs where overlayfs
	// upper dirs do not work.
	dir, err := os.MkdirTemp("/var/tmp", "edged-interop-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{
		t:    t,
		dir:  dir,
		sock: filepath.Join(dir, "state", "c.sock"),
		ns:   "edged-interop-" + randHex(4),
	}
	t.Cleanup(c.cleanup)
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	c.shimBin = buildShim(t, bin)

	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  # io.containerd.runtime.v1.linux stays: the 1.6 tasks service requires it.
]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
  [plugins."io.containerd.gc.v1.scheduler"]
    startup_delay = "100ms"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc", filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c.cfgPath, c.binDir = cfgPath, bin
	c.logPath = filepath.Join(dir, "containerd.log")
	c.start()
	return c
}

// start starts containerd (its log appended to logPath) and waits until it
// serves.
func (c *containerd) start() {
	t := c.t
	t.Helper()
	logf, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("containerd", "--config", c.cfgPath, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(envWithout(os.Environ(), "PATH", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"),
		"PATH="+c.binDir+":"+os.Getenv("PATH"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	c.cmd, c.exited = cmd, exited

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("containerd exited at start:\n%s", c.logTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := exec.CommandContext(ctx, "ctr", "-a", c.sock, "version").Run()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd not serving on %s after 30s: %v\n%s", c.sock, err, c.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends containerd with SIGTERM (SIGKILL after 10s); shims stay.
func (c *containerd) stop() {
	if c.cmd == nil {
		return
	}
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

func envWithout(env []string, keys ...string) []string {
	out := env[:0:0]
next:
	for _, kv := range env {
		for _, k := range keys {
			if strings.HasPrefix(kv, k+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// logTail returns the end of containerd's log (its shims log there too).
func (c *containerd) logTail() string {
	data, _ := os.ReadFile(c.logPath)
	if len(data) > 16<<10 {
		data = data[len(data)-16<<10:]
	}
	return string(data)
}

// result is one ctr invocation.
type result struct {
	args           []string
	stdout, stderr string
	code           int // exit code; -1 if killed by a signal or not run
}

func (r result) String() string {
	return fmt.Sprintf("ctr %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// run runs ctr against the daemon in the test's namespace.
func (c *containerd) run(timeout time.Duration, args ...string) result {
	return c.runInput(timeout, "", args...)
}

// runInput runs ctr with stdin as its standard input.
func (c *containerd) runInput(timeout time.Duration, stdin string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"-a", c.sock, "-n", c.ns}, args...)
	cmd := exec.CommandContext(ctx, "ctr", full...)
	cmd.Stdin = strings.NewReader(stdin)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := result{args: args, stdout: so.String(), stderr: se.String(), code: -1}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.code = 0
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		r.stderr += "\n(run error: " + err.Error() + ")"
	}
	if ctx.Err() != nil {
		r.stderr += "\n(timed out after " + timeout.String() + ")"
	}
	return r
}

// must runs ctr and fails the test unless it exits 0.
func (c *containerd) must(args ...string) string {
	c.t.Helper()
	r := c.run(60*time.Second, args...)
	if r.code != 0 {
		c.t.Fatalf("%v\ncontainerd log:\n%s", r, c.logTail())
	}
	return r.stdout
}

// taskInfo is a row of `ctr task ls`.
type taskInfo struct {
	pid    int
	status string
}

// task returns the row of `ctr task ls` for id; ok is false if absent.
func (c *containerd) task(id string) (taskInfo, bool) {
	c.t.Helper()
	out := c.must("task", "ls")
	for _, line := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err != nil {
				c.t.Fatalf("task ls: pid %q: %v", f[1], err)
			}
			return taskInfo{pid: pid, status: f[2]}, true
		}
	}
	return taskInfo{}, false
}

// waitTask polls `ctr task ls` until id has status.
func (c *containerd) waitTask(id, status string, timeout time.Duration) taskInfo {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ti, ok := c.task(id)
		if ok && ti.status == status {
			return ti
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("task %s: want %s, have %+v (listed %v) after %v\n%s", id, status, ti, ok, timeout, c.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shimPids returns the pids of shim processes (any runtime) serving this
// containerd: their command line carries "-address <sock>".
func (c *containerd) shimPids() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == c.sock {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// events runs `ctr events` in the background and collects its lines.
type events struct {
	mu    sync.Mutex
	lines []string
	cmd   *exec.Cmd
	done  chan struct{}
}

func (c *containerd) watchEvents() *events {
	c.t.Helper()
	ev := &events{done: make(chan struct{})}
	ev.cmd = exec.Command("ctr", "-a", c.sock, "events")
	out, err := ev.cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := ev.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		defer close(ev.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			ev.mu.Lock()
			ev.lines = append(ev.lines, sc.Text())
			ev.mu.Unlock()
		}
	}()
	c.t.Cleanup(func() {
		_ = ev.cmd.Process.Kill()
		<-ev.done
		_ = ev.cmd.Wait()
	})
	return ev
}

// wait returns the first line that has all of parts, waiting up to timeout.
func (ev *events) wait(timeout time.Duration, parts ...string) (string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		ev.mu.Lock()
		for _, l := range ev.lines {
			ok := true
			for _, p := range parts {
				if !strings.Contains(l, p) {
					ok = false
					break
				}
			}
			if ok {
				ev.mu.Unlock()
				return l, true
			}
		}
		ev.mu.Unlock()
		if time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (ev *events) all() string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return strings.Join(ev.lines, "\n")
}

// cleanup tears everything down; it logs what it could not undo.
func (c *containerd) cleanup() {
	t := c.t
	if t.Failed() && c.logPath != "" {
		t.Logf("containerd log (tail):\n%s", c.logTail())
	}
	running := false
	if c.cmd != nil {
		select {
		case <-c.exited:
		default:
			running = true
		}
	}
	if running {
		// Kill and delete what the test left, through containerd.
		out := c.run(10*time.Second, "task", "ls", "-q").stdout
		for _, id := range strings.Fields(out) {
			c.run(10*time.Second, "task", "kill", "-s", "SIGKILL", id)
			for i := 0; i < 50; i++ {
				if r := c.run(10*time.Second, "task", "rm", id); r.code == 0 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		out = c.run(10*time.Second, "container", "ls", "-q").stdout
		for _, id := range strings.Fields(out) {
			c.run(10*time.Second, "container", "rm", id)
		}
	}
	// Shims outlive containerd by design; end the ones serving it.
	for _, pid := range c.shimPids() {
		t.Logf("cleanup: killing leftover shim %d", pid)
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	c.stop()
	// runc state of the namespace (containers of killed shims).
	runcRoot := filepath.Join("/run/containerd/runc", c.ns)
	if out, err := exec.Command("runc", "--root", runcRoot, "list", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			t.Logf("cleanup: runc delete --force %s", id)
			_ = exec.Command("runc", "--root", runcRoot, "delete", "--force", id).Run()
		}
	}
	_ = os.RemoveAll(runcRoot)
	// ctr run puts containers in cgroup /<namespace>/<id>.
	if dirs, err := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", c.ns)); err == nil {
		for _, d := range dirs {
			_ = unix.Rmdir(d)
		}
	}
	if c.dir == "" {
		return
	}
	if err := unmountUnder(c.dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if err := os.RemoveAll(c.dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// mountsUnder returns the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mps []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	return mps, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for space...) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unmountUnder(dir string) error {
	mps, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		for {
			err = unix.Unmount(mp, unix.MNT_DETACH)
			if err != unix.EINTR {
				break
			}
		}
		if err != nil && err != unix.EINVAL && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// memUsage is from /proc/PID/smaps_rollup, in KiB.
type memUsage struct {
	RSS, PSS, USS int64
}

func readMem(pid int) (memUsage, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return memUsage{}, err
	}
	var m memUsage
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "Rss:":
			m.RSS = v
		case "Pss:":
			m.PSS = v
		case "Private_Clean:", "Private_Dirty:":
			m.USS += v
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("/proc/%d/smaps_rollup: no Rss line", pid)
	}
	return m, nil
}

// parentPid returns the PPid of pid.
func parentPid(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no PPid", pid)
}

// exePath returns the resolved executable of pid.
func exePath(pid int) string {
	p, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return p
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// runTTY runs ctr in the test's namespace with a new pseudo-terminal as its
// controlling terminal and stdio, and returns what it wrote there and its
// exit code.
func (c *containerd) runTTY(t *testing.T, timeout time.Duration, args ...string) (string, int) {
	t.Helper()
	master, slave, err := openPty()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"-a", c.sock, "-n", c.ns}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Start()
	slave.Close()
	if err != nil {
		t.Fatal(err)
	}
	outc := make(chan string, 1)
	go func() {
		var b bytes.Buffer
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			b.Write(buf[:n])
			if err != nil { // EIO once ctr, the last holder of the slave, exits
				outc <- b.String()
				return
			}
		}
	}()
	err = cmd.Wait()
	var out string
	select {
	case out = <-outc:
	case <-time.After(5 * time.Second):
		t.Fatalf("terminal of ctr %v not closed after it exited", args)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out, 0
	case errors.As(err, &ee):
		return out, ee.ExitCode()
	default:
		t.Fatalf("ctr %v: %v (output %q)", args, err, out)
		return "", -1
	}
}

// openPty opens a new pseudo-terminal pair.
func openPty() (master, slave *os.File, err error) { return testutil.OpenPty() }

// syncEvents returns once ev's `ctr events` is subscribed: ctr subscribes
// asynchronously, so a namespace label is updated until it prints the event.
func (c *containerd) syncEvents(ev *events) {
	c.t.Helper()
	for i := 0; i <= 50; i++ {
		c.must("namespaces", "label", c.ns, fmt.Sprintf("edged-interop=sync%d", i))
		if _, ok := ev.wait(200*time.Millisecond, "/namespaces/update", fmt.Sprintf(`"labels":{"edged-interop":"sync%d"}`, i)); ok {
			return
		}
	}
	c.t.Fatalf("ctr events printed no /namespaces/update:\n%s", ev.all())
}
