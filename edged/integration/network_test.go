package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/internal/testutil"
	containersapi "github.com/edged/edged/proto/services/containers/v1"
)

// netEnv is a daemon with a bridge and subnet of its own, so that tests
// (and other daemons on the host) never share addresses or interfaces.
type netEnv struct {
	t      *testing.T
	d      *testutil.Daemon
	cli    cli
	cl     *client.Client
	dir    string
	bridge string
	prefix string // "10.214.N." of the /24 subnet
	rootfs string
	cfg    string // the config file
}

func requireCNI(t *testing.T) {
	t.Helper()
	requireRunc(t)
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/portmap"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("CNI plugins are required (Debian package containernetworking-plugins): %v", err)
		}
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		t.Fatalf("iptables is required (Debian package iptables): %v", err)
	}
}

func newNetEnv(t *testing.T, spares int) *netEnv {
	t.Helper()
	requireCNI(t)
	n := int(time.Now().UnixNano()/1000+int64(os.Getpid()))%200 + 20
	e := &netEnv{t: t, dir: testutil.ShortTempDir(t), bridge: fmt.Sprintf("edt%d", n), prefix: fmt.Sprintf("10.214.%d.", n)}
	cfg := filepath.Join(e.dir, "edged.toml")
	e.cfg = cfg
	conf := fmt.Sprintf("[network]\nsubnet = \"%s0/24\"\nbridge = %q\nbridge_spares = %d\n", e.prefix, e.bridge, spares)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// Runs after the daemon stopped (cleanups run last-in first-out).
	t.Cleanup(func() {
		for _, m := range []string{"state/netns", "state/network/netns"} {
			syscall.Unmount(filepath.Join(e.dir, m), syscall.MNT_DETACH)
		}
		exec.Command("ip", "link", "del", e.bridge).Run()
	})
	e.d = testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: e.dir, Args: []string{"--config", cfg}})
	e.cli = cli{t: t, env: []string{"EDGED_ADDRESS=" + e.d.Address, "EDGED_NAMESPACE="}}
	e.cl = newClient(t, e.d)
	e.rootfs = busybox(t)
	www := filepath.Join(e.rootfs, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("hello from edged\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// runD starts a detached container with edgectl: run -d --rootfs R
// FLAGS... ID CMD...
func (e *netEnv) runD(flags []string, id string, cmd ...string) {
	e.t.Helper()
	args := append([]string{"run", "-d", "--rootfs", e.rootfs}, flags...)
	e.cli.ok(append(append(args, id), cmd...)...)
}

// ips returns the addresses edgectl task ls shows for id.
func (e *netEnv) ips(id string) []string {
	e.t.Helper()
	p, err := e.cl.GetTask(ctxT(e.t), id, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return p.Ips
}

func (e *netEnv) rm(id string) {
	e.t.Helper()
	ctx := ctxT(e.t)
	if _, err := e.cl.DeleteTask(ctx, id, true); err != nil && !errdefs.IsNotFound(err) {
		e.t.Fatalf("delete task %s: %v", id, err)
	}
	if err := e.cl.DeleteContainer(ctx, id); err != nil {
		e.t.Fatalf("delete container %s: %v", id, err)
	}
}

func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	var err error
	for i := 0; i < 100; i++ {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// leftovers lists what of the test's network remains on the host: veths
// on the bridge, attachment namespaces, host-local allocations, container
// records, and iptables rules naming an address of the subnet.
func (e *netEnv) leftovers() []string {
	var out []string
	if ents, err := os.ReadDir("/sys/class/net/" + e.bridge + "/brif"); err == nil {
		for _, en := range ents {
			out = append(out, "veth "+en.Name())
		}
	}
	for _, d := range []string{"state/network/netns", "state/network/containers/default", "state/network/spares"} {
		ents, _ := os.ReadDir(filepath.Join(e.dir, d))
		for _, en := range ents {
			out = append(out, d+"/"+en.Name())
		}
	}
	ents, _ := os.ReadDir(filepath.Join(e.dir, "state/network/cni/networks/edged"))
	for _, en := range ents {
		if en.Name() != "lock" && !strings.HasPrefix(en.Name(), "last_reserved_ip") {
			out = append(out, "allocation "+en.Name())
		}
	}
	for _, bin := range []string{"iptables-save"} {
		b, err := exec.Command(bin).Output()
		if err != nil {
			e.t.Fatalf("%s: %v", bin, err)
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			// Per-container rules name the container's /32; the bridge's
			// own rules name the subnet (e.prefix+"0/24") and may stay.
			if strings.Contains(sc.Text(), e.prefix) && !strings.Contains(sc.Text(), e.prefix+"0/24") {
				out = append(out, "iptables: "+sc.Text())
			}
		}
	}
	return out
}

func (e *netEnv) assertNoLeftovers() {
	e.t.Helper()
	eventually(e.t, "leftovers", func() error {
		if l := e.leftovers(); len(l) > 0 {
			return fmt.Errorf("%d left:\n%s", len(l), strings.Join(l, "\n"))
		}
		return nil
	})
}

// TestNetworkBridge: a bridged httpd is reachable from the host on its
// address and on a published port at 127.0.0.1; its /etc/hosts and
// /etc/resolv.conf are edged's; deleting the task releases everything.
func TestNetworkBridge(t *testing.T) {
	e := newNetEnv(t, 0) // no spare: every leftover would be the test's
	port := freeTCPPort(t)
	e.runD([]string{"--net", "bridge", "-p", fmt.Sprintf("%d:80", port), "--hostname", "web1"}, "web", "httpd", "-f", "-p", "80", "-h", "/www")
	ips := e.ips("web")
	if len(ips) != 1 || !strings.HasPrefix(ips[0], e.prefix) {
		t.Fatalf("task ips = %v, want one address in %s0/24", ips, e.prefix)
	}
	if out := e.cli.ok("task", "ls"); !strings.Contains(out, ips[0]) {
		t.Fatalf("task ls does not show %s:\n%s", ips[0], out)
	}
	if out := e.cli.ok("containers", "info", "web"); !strings.Contains(out, `"ips": [`) || !strings.Contains(out, ips[0]) || !strings.Contains(out, `"status": "RUNNING"`) {
		t.Fatalf("containers info does not show the task and its address %s:\n%s", ips[0], out)
	}
	eventually(t, "GET on the container's address", func() error {
		body, err := httpGet("http://" + ips[0] + ":80/index.html")
		if err == nil && body != "hello from edged\n" {
			err = fmt.Errorf("body %q", body)
		}
		return err
	})
	body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/index.html", port))
	if err != nil || body != "hello from edged\n" {
		t.Fatalf("GET on published port 127.0.0.1:%d: %q, %v", port, body, err)
	}

	// A second bridged container sees its own address in /etc/hosts and
	// reaches the first one over the bridge.
	out := e.cli.ok("run", "--rm", "--rootfs", e.rootfs, "--net", "bridge", "--hostname", "probe", "probe",
		"sh", "-c", "cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo ---; wget -q -O - http://"+ips[0]+"/index.html; ip -o -4 addr show eth0")
	parts := strings.Split(out, "---\n")
	if len(parts) != 3 {
		t.Fatalf("probe output: %q", out)
	}
	if !strings.Contains(parts[0], "127.0.0.1\tlocalhost") || !strings.Contains(parts[0], "\tprobe\n") || !strings.Contains(parts[0], e.prefix) {
		t.Fatalf("/etc/hosts in a bridged container:\n%s", parts[0])
	}
	if !strings.Contains(parts[1], "nameserver ") || strings.Contains(parts[1], "nameserver 127.") {
		t.Fatalf("/etc/resolv.conf in a bridged container:\n%s", parts[1])
	}
	if !strings.Contains(parts[2], "hello from edged") || !strings.Contains(parts[2], "inet "+e.prefix) {
		t.Fatalf("probe: %q", parts[2])
	}

	e.rm("web")
	e.assertNoLeftovers()
	if _, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
		t.Fatal("the published port still answers after the container was deleted")
	}
}

// TestNetworkModes: none has loopback only, host sees the host's
// interfaces, ns:NAME joins a named namespace, container:ID shares
// localhost with a running container.
func TestNetworkModes(t *testing.T) {
	e := newNetEnv(t, 0)

	out := e.cli.ok("run", "--rm", "--rootfs", e.rootfs, "--net", "none", "n1", "cat", "/proc/net/dev", "/etc/hosts")
	if ifs := devNames(out); len(ifs) != 1 || ifs[0] != "lo" {
		t.Fatalf("--net none interfaces = %v, want [lo]\n%s", ifs, out)
	}
	if !strings.Contains(out, "127.0.0.1\tlocalhost") {
		t.Fatalf("--net none /etc/hosts:\n%s", out)
	}
	// Default is none.
	if ifs := devNames(e.cli.ok("run", "--rm", "--rootfs", e.rootfs, "n2", "cat", "/proc/net/dev")); len(ifs) != 1 {
		t.Fatalf("default network interfaces = %v, want [lo]", ifs)
	}
	// container:ID of a none container: its loopback-only namespace and
	// its hosts file, which lives in its bundle (none keeps no record).
	e.runD([]string{"--net", "none", "--hostname", "nbox"}, "lonely", "sleep", "60")
	if _, err := os.Stat(filepath.Join(e.d.State, "network/containers/default/lonely")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("--net none left a network record: %v", err)
	}
	out = e.cli.ok("run", "--rm", "--rootfs", e.rootfs, "--net", "container:lonely", "n4", "cat", "/proc/net/dev", "/etc/hosts")
	if ifs := devNames(out); len(ifs) != 1 || ifs[0] != "lo" {
		t.Fatalf("container:lonely interfaces = %v, want [lo]\n%s", ifs, out)
	}
	if !strings.Contains(out, "\tnbox") {
		t.Fatalf("container:lonely /etc/hosts does not name the joined container's host nbox:\n%s", out)
	}
	e.rm("lonely")

	hostIfs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	out = e.cli.ok("run", "--rm", "--rootfs", e.rootfs, "--net", "host", "h1", "cat", "/proc/net/dev")
	got := strings.Join(devNames(out), " ")
	// Only the interfaces that lasted through the run: tests of other
	// packages running in parallel add and remove veths on the host.
	hostIfsAfter, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	lasting := 0
	for _, i := range hostIfs {
		if !slices.ContainsFunc(hostIfsAfter, func(a net.Interface) bool { return a.Name == i.Name }) {
			continue
		}
		lasting++
		if !strings.Contains(" "+got+" ", " "+i.Name+" ") {
			t.Fatalf("--net host: interface %s missing from %q", i.Name, got)
		}
	}
	if lasting < 2 { // lo and at least one real interface
		t.Fatalf("only %d host interfaces lasted through the run; cannot tell the host network", lasting)
	}

	// ns:NAME: a veth pair added to the named namespace is visible.
	e.cli.ok("netns", "create", "lab")
	if out := e.cli.ok("netns", "ls"); !strings.Contains(out, "lab") || !strings.Contains(out, filepath.Join(e.d.State, "netns", "lab")) {
		t.Fatalf("netns ls:\n%s", out)
	}
	if b, err := exec.Command("nsenter", "--net="+filepath.Join(e.d.State, "netns", "lab"), "ip", "link", "add", "labveth0", "type", "veth", "peer", "name", "labveth1").CombinedOutput(); err != nil {
		t.Fatalf("add a veth pair in the named namespace: %v %s", err, b)
	}
	e.runD([]string{"--net", "ns:lab"}, "innet", "sleep", "60")
	e.cli.fails(1, "used by the tasks of default/innet", "netns", "rm", "lab")
	out = e.cli.ok("run", "--rm", "--rootfs", e.rootfs, "--net", "ns:lab", "n3", "cat", "/proc/net/dev")
	if ifs := strings.Join(devNames(out), " "); ifs != "labveth0 labveth1 lo" {
		t.Fatalf("--net ns:lab interfaces = %q", ifs)
	}
	e.rm("innet")
	e.cli.ok("netns", "rm", "lab")
	if out := e.cli.ok("netns", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("netns ls after rm: %q", out)
	}

	// container:ID: the second container reaches the first one's
	// 127.0.0.1 listener (the first one is bridged, so its address shows
	// for both).
	e.runD([]string{"--net", "bridge"}, "pod", "httpd", "-f", "-p", "127.0.0.1:8081", "-h", "/www")
	time.Sleep(200 * time.Millisecond)
	var body string
	eventually(t, "wget from the joined container", func() error {
		out, errOut, code := e.cli.run("run", "--rm", "--rootfs", e.rootfs, "--net", "container:pod", "side", "wget", "-q", "-O", "-", "http://127.0.0.1:8081/index.html")
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, errOut)
		}
		body = out
		return nil
	})
	if body != "hello from edged\n" {
		t.Fatalf("container:pod got %q", body)
	}

	// The joined bridged container's network outlives its task while a
	// container that joined it runs.
	e.runD([]string{"--net", "container:pod"}, "side2", "sleep", "60")
	if ips, pod := e.ips("side2"), e.ips("pod"); len(ips) != 1 || len(pod) != 1 || ips[0] != pod[0] {
		t.Fatalf("joined container ips %v, pod ips %v", ips, pod)
	}
	e.rm("pod")
	if _, err := os.Stat(filepath.Join(e.d.State, "network/containers/default/pod/state.json")); err != nil {
		t.Fatalf("pod's network was released while side2 uses it: %v", err)
	}
	e.rm("side2")
	e.assertNoLeftovers()
}

var devLine = regexp.MustCompile(`(?m)^\s*([A-Za-z0-9_.@-]+):\s+\d+\s+\d+`)

// devNames returns the interface names in /proc/net/dev output.
func devNames(out string) []string {
	var names []string
	for _, m := range devLine.FindAllStringSubmatch(out, -1) {
		names = append(names, m[1])
	}
	sort.Strings(names)
	return names
}

// TestNetworkErrors: unknown netns, a container:ID that is not running,
// bad -p, -p without bridge, a bad mode.
func TestNetworkErrors(t *testing.T) {
	e := newNetEnv(t, 0)
	e.cli.fails(1, `netns "nope" does not exist`, "run", "--rm", "--rootfs", e.rootfs, "--net", "ns:nope", "e1", "true")
	e.cli.fails(1, `container "ghost" has no running task`, "run", "--rm", "--rootfs", e.rootfs, "--net", "container:ghost", "e2", "true")
	e.cli.fails(2, "ports must be 1-65535", "run", "--rm", "--rootfs", e.rootfs, "--net", "bridge", "-p", "0:80", "e3", "true")
	e.cli.fails(2, "protocol must be tcp or udp", "run", "--rm", "--rootfs", e.rootfs, "--net", "bridge", "-p", "80:80/icmp", "e4", "true")
	e.cli.fails(1, "publishing ports needs --net bridge", "run", "--rm", "--rootfs", e.rootfs, "-p", "8080:80", "e5", "true")
	e.cli.fails(1, "must be host, none, bridge, ns:NAME or container:ID", "run", "--rm", "--rootfs", e.rootfs, "--net", "wifi", "e6", "true")
	e.cli.fails(1, "netns name", "run", "--rm", "--rootfs", e.rootfs, "--net", "ns:../x", "e7", "true")
	e.cli.fails(1, `"nope": not found`, "netns", "rm", "nope")
	e.cli.fails(1, "name", "netns", "create", "a/b")

	// A stopped container's network cannot be joined.
	e.cli.ok("run", "--rootfs", e.rootfs, "--net", "bridge", "stopped", "true")
	ctx := ctxT(t)
	_, err := e.cl.CreateFromImage(ctx, &containersapi.CreateFromImageRequest{Id: "j", RootfsPath: e.rootfs,
		Options: &containersapi.SpecOptions{Network: "container:stopped", Args: []string{"true"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.cl.CreateTask(ctx, "j", client.TaskOpts{})
	wantErr(t, err, errdefs.ErrFailedPrecondition, `container "stopped" has no running task`)
	// Duplicate published ports through the API.
	_, err = e.cl.CreateFromImage(ctx, &containersapi.CreateFromImageRequest{Id: "dup", RootfsPath: e.rootfs,
		Options: &containersapi.SpecOptions{Network: "bridge", Args: []string{"true"}, PortMappings: []*containersapi.PortMapping{
			{HostPort: 8080, ContainerPort: 80}, {HostPort: 8080, ContainerPort: 81}}}})
	wantErr(t, err, errdefs.ErrInvalidArgument, "host port 8080/tcp is published twice")
	e.assertNoLeftovers()
}

// TestNetworkCycles creates and deletes 100 bridged containers through
// edged and checks that nothing is left: no veth, namespace, address,
// record or iptables rule.
func TestNetworkCycles(t *testing.T) {
	e := newNetEnv(t, 1)
	ctx := context.Background()
	start := time.Now()
	const cycles = 100
	for i := 0; i < cycles; i++ {
		id := fmt.Sprintf("c%d", i)
		if _, err := e.cl.CreateFromImage(ctx, &containersapi.CreateFromImageRequest{Id: id, RootfsPath: e.rootfs,
			Options: &containersapi.SpecOptions{Network: "bridge", Args: []string{"true"}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.cl.CreateTask(ctx, id, client.TaskOpts{}); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if len(e.ips(id)) != 1 {
			t.Fatalf("cycle %d: no address", i)
		}
		if _, err := e.cl.StartTask(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := e.cl.Wait(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
		e.rm(id)
	}
	t.Logf("%d bridged create/start/delete cycles through edged in %v", cycles, time.Since(start))
	// While edged runs, only the spare attachment may remain.
	eventually(t, "only the spare left", func() error {
		var veths, netnss, allocs, records []string
		for _, l := range e.leftovers() {
			switch {
			case strings.HasPrefix(l, "veth "):
				veths = append(veths, l)
			case strings.HasPrefix(l, "state/network/netns/"):
				netnss = append(netnss, l)
			case strings.HasPrefix(l, "allocation "):
				allocs = append(allocs, l)
			case strings.HasPrefix(l, "state/network/containers/"):
				records = append(records, l)
			}
		}
		if len(veths) > 1 || len(netnss) > 1 || len(allocs) > 1 || len(records) > 0 {
			return fmt.Errorf("want at most the spare's veth, namespace and address: %v %v %v %v", veths, netnss, allocs, records)
		}
		return nil
	})
	e.d.Stop(t)
	e.assertNoLeftovers()
}

// TestNetworkCleanupAfterCrash: edged is killed, then the bridged
// container and its shim die; the next edged releases the network.
func TestNetworkCleanupAfterCrash(t *testing.T) {
	e := newNetEnv(t, 0)
	e.runD([]string{"--net", "bridge"}, "victim", "sleep", "60")
	p, err := e.cl.GetTask(ctxT(t), "victim", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(e.leftovers()) == 0 {
		t.Fatal("nothing of the bridged container is visible: the leftover check would prove nothing")
	}
	shim := shimOf(t, int(p.Pid))
	e.d.Kill()
	syscall.Kill(int(p.Pid), syscall.SIGKILL)
	syscall.Kill(shim, syscall.SIGKILL)
	d2 := testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: e.dir, Args: []string{"--config", e.cfg}})
	waitLog(t, d2, "cleaning up after a task that is gone")
	e.assertNoLeftovers()
}
