package cni

import (
	"bufio"
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"

	cniconf "github.com/edged/edged/configs/cni"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/netns"
)

// The tests use their own bridges and /24s inside edged's 10.213.0.0/16, so
// that they do not disturb a running edged on edged0.
const (
	testBridge = "edgedt0"
	testSubnet = "10.213.254.0/24"
	testGW     = "10.213.254.1"
)

type env struct {
	t        testing.TB
	ns       *netns.Manager
	net      *Network
	stateDir string
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("CNI tests need root")
	}
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		if _, err := invoke.FindInPath(p, DefaultPluginDirs()); err != nil {
			t.Skipf("CNI plugin %s not installed (apt-get install containernetworking-plugins): %v", p, err)
		}
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		t.Skip("iptables not installed (apt-get install iptables)")
	}
}

func newEnv(t testing.TB, bridge, subnet string) *env {
	t.Helper()
	requireRoot(t)
	ctx := context.Background()
	base := t.TempDir()
	m, err := netns.New(filepath.Join(base, "netns"))
	if err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(base, "cni")
	n, err := New(ctx, Config{StateDir: stateDir, BridgeName: bridge, Subnet: subnet})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		// Namespaces a failed test left, then the manager dir's own mount.
		if l, err := m.List(ctx); err == nil {
			for _, ns := range l {
				_ = m.Delete(ctx, ns.Name)
			}
		}
		_ = exec.Command("umount", "-l", m.Dir()).Run()
		// The bridge plugin never deletes bridges; the test's one goes.
		_ = exec.Command("ip", "link", "del", bridge).Run()
	})
	return &env{t: t, ns: m, net: n, stateDir: stateDir}
}

func freePort(t testing.TB) uint32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint32(l.Addr().(*net.TCPAddr).Port)
}

// serveIn listens on port inside the namespace and answers every connection
// with reply. The listener is closed at cleanup.
func serveIn(t testing.TB, nsPath string, port int, reply string) {
	t.Helper()
	var l net.Listener
	err := netns.Do(context.Background(), nsPath, func() error {
		var err error
		l, err = net.Listen("tcp", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		t.Fatalf("listen in netns: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, reply)
			c.Close()
		}
	}()
}

func dialRead(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func iptablesSave(t testing.TB) string {
	t.Helper()
	var all strings.Builder
	for _, bin := range []string{"iptables-save", "ip6tables-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			continue
		}
		out, err := exec.Command(bin).Output()
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		all.Write(out)
	}
	return all.String()
}

// chains returns the names of the iptables chains declared in save output.
func chains(save string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(save))
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, ":") {
			out = append(out, strings.Fields(line[1:])[0])
		}
	}
	sort.Strings(out)
	return out
}

// containerChains returns the iptables chains the plugins create for one
// container: the bridge plugin's masquerade chain and portmap's DNAT chain,
// named (like containernetworking/plugins' utils.FormatChainName) after a
// hash of network name and container ID.
func containerChains(netName, id string) []string {
	sum := sha512.Sum512([]byte(netName + id))
	var out []string
	for _, prefix := range []string{"", "DN-"} {
		out = append(out, fmt.Sprintf("CNI-%s%x", prefix, sum)[:28])
	}
	return out
}

// assertNoLeftovers checks that nothing of container id remains on the
// host: the host-side veth, allocation files of host-local, libcni cache
// entries, iptables rules or the per-container chains of chainIDs. Only
// this test's own chains are checked: other packages' tests create and
// remove chains on the same host at the same time.
func (e *env) assertNoLeftovers(id string, ip netip.Addr, hostIfs []string, chainIDs []string) {
	t := e.t
	t.Helper()
	for _, ifname := range hostIfs {
		if _, err := os.Lstat("/sys/class/net/" + ifname); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("host interface %s still exists (%v)", ifname, err)
		}
	}
	netDir := filepath.Join(e.stateDir, "networks", e.net.Name())
	entries, _ := os.ReadDir(netDir)
	for _, en := range entries {
		if en.Name() != "lock" && !strings.HasPrefix(en.Name(), "last_reserved_ip") {
			b, _ := os.ReadFile(filepath.Join(netDir, en.Name()))
			t.Errorf("host-local allocation left: %s (%q)", en.Name(), b)
		}
	}
	if ip.IsValid() {
		if _, err := os.Lstat(filepath.Join(netDir, ip.String())); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("allocation file for %s still exists", ip)
		}
	}
	var cached []string
	_ = filepath.WalkDir(filepath.Join(e.stateDir, "cache"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), id) {
			cached = append(cached, p)
		}
		return nil
	})
	if len(cached) > 0 {
		t.Errorf("libcni cache entries left: %v", cached)
	}
	save := iptablesSave(t)
	// The plugins tag their rules `name: "<net>" id: "<id>"`; a cycles test
	// passes a prefix and checks every id starting with it.
	if mention := `id: \"` + id; strings.Contains(save, mention) {
		t.Errorf("iptables rules mention container %s after teardown:\n%s", id, grepLines(save, mention))
	}
	if ip.IsValid() {
		for _, s := range []string{ip.String() + "/", ip.String() + ":"} {
			if strings.Contains(save, s) {
				t.Errorf("iptables rules mention container IP %s after teardown:\n%s", ip, grepLines(save, s))
			}
		}
	}
	present := map[string]bool{}
	for _, c := range chains(save) {
		present[c] = true
	}
	for _, cid := range chainIDs {
		for _, c := range containerChains(e.net.Name(), cid) {
			if present[c] {
				t.Errorf("iptables chain %s of container %s left after teardown", c, cid)
			}
		}
	}
}

// teardownAtCleanup makes sure a failing test does not leave the
// container's rules on the host (Teardown is idempotent).
func (e *env) teardownAtCleanup(id, nsPath string) {
	e.t.Cleanup(func() {
		if err := e.net.Teardown(context.Background(), id, nsPath, Options{}); err != nil {
			e.t.Errorf("cleanup Teardown %s: %v", id, err)
		}
	})
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func hostIfaces(r *Result) []string {
	var out []string
	for _, i := range r.Interfaces {
		if i.Sandbox == "" && strings.HasPrefix(i.Name, "veth") {
			out = append(out, i.Name)
		}
	}
	return out
}

// warmUp runs one full cycle so that the global chains the plugins create
// on first use (CNI-HOSTPORT-*, CNI-FORWARD, ...) exist, and returns the
// chain list to compare against later.
func (e *env) warmUp() []string {
	e.t.Helper()
	ctx := context.Background()
	ns, err := e.ns.Create(ctx, "warmup")
	if err != nil {
		e.t.Fatal(err)
	}
	opts := Options{PortMappings: []PortMapping{{HostPort: freePort(e.t), ContainerPort: 80}}}
	if _, err := e.net.Setup(ctx, "warmup", ns.Path, opts); err != nil {
		e.t.Fatalf("warm-up Setup: %v", err)
	}
	if err := e.net.Teardown(ctx, "warmup", ns.Path, opts); err != nil {
		e.t.Fatal(err)
	}
	if err := e.ns.Delete(ctx, "warmup"); err != nil {
		e.t.Fatal(err)
	}
	return chains(iptablesSave(e.t))
}

func TestDefaultConfList(t *testing.T) {
	var list struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
		Plugins    []struct {
			Type         string          `json:"type"`
			Bridge       string          `json:"bridge"`
			IsGateway    bool            `json:"isGateway"`
			IPMasq       bool            `json:"ipMasq"`
			HairpinMode  bool            `json:"hairpinMode"`
			Capabilities map[string]bool `json:"capabilities"`
			IPAM         struct {
				Type   string `json:"type"`
				Ranges [][]struct {
					Subnet string `json:"subnet"`
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(cniconf.Bridge(), &list); err != nil {
		t.Fatal(err)
	}
	if list.Name != "edged" || list.CNIVersion != "1.0.0" || len(list.Plugins) != 3 {
		t.Fatalf("conflist = %+v", list)
	}
	b := list.Plugins[0]
	if b.Type != "bridge" || b.Bridge != "edged0" || !b.IsGateway || !b.IPMasq || !b.HairpinMode ||
		b.IPAM.Type != "host-local" || len(b.IPAM.Ranges) != 1 || b.IPAM.Ranges[0][0].Subnet != "10.213.0.0/16" {
		t.Fatalf("bridge plugin = %+v", b)
	}
	if list.Plugins[1].Type != "portmap" || !list.Plugins[1].Capabilities["portMappings"] || list.Plugins[2].Type != "firewall" {
		t.Fatalf("chained plugins = %+v", list.Plugins[1:])
	}

	// New with the default: dataDir goes to the state dir, nothing else changes.
	requireRoot(t)
	state := t.TempDir()
	n, err := New(context.Background(), Config{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	if n.Name() != "edged" {
		t.Fatalf("Name = %q", n.Name())
	}
	eff := string(n.ConfList())
	for _, want := range []string{`"dataDir":"` + filepath.Join(state, "networks") + `"`, `"bridge":"edged0"`, `"subnet":"10.213.0.0/16"`, `"type":"firewall"`} {
		if !strings.Contains(eff, want) {
			t.Errorf("effective conflist lacks %s: %s", want, eff)
		}
	}
	// The same file from disk gives the same result.
	n2, err := New(context.Background(), Config{StateDir: state, ConfListPath: "../../configs/cni/edged-bridge.conflist"})
	if err != nil {
		t.Fatal(err)
	}
	if string(n2.ConfList()) != eff {
		t.Fatalf("conflist from file differs:\n%s\n%s", n2.ConfList(), eff)
	}
}

func TestSetupPortMappingTeardown(t *testing.T) {
	e := newEnv(t, testBridge, testSubnet)
	e.warmUp()
	ctx := context.Background()
	id := "portmap-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	ns, err := e.ns.Create(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	hostPort := freePort(t)
	opts := Options{PortMappings: []PortMapping{{HostPort: hostPort, ContainerPort: 8080, Protocol: "tcp"}}}
	res, err := e.net.Setup(ctx, id, ns.Path, opts)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	e.teardownAtCleanup(id, ns.Path)
	ip := res.IPv4()
	if !netip.MustParsePrefix(testSubnet).Contains(ip) || ip == netip.MustParseAddr(testGW) {
		t.Fatalf("container IP %v not a host address of %s", ip, testSubnet)
	}
	if res.Gateway != netip.MustParseAddr(testGW) {
		t.Fatalf("Gateway = %v, want %s", res.Gateway, testGW)
	}
	if len(res.IPs) != 1 || res.IPs[0].Interface != "eth0" || res.IPs[0].Address.Bits() != 24 {
		t.Fatalf("IPs = %+v", res.IPs)
	}
	var sandbox bool
	for _, i := range res.Interfaces {
		if i.Name == "eth0" && i.Sandbox == ns.Path && i.MAC != "" {
			sandbox = true
		}
	}
	veths := hostIfaces(res)
	if !sandbox || len(veths) != 1 {
		t.Fatalf("Interfaces = %+v", res.Interfaces)
	}
	if _, err := os.Stat("/sys/class/net/" + veths[0]); err != nil {
		t.Fatalf("host veth missing: %v", err)
	}
	if err := e.net.Check(ctx, id, ns.Path, Options{}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	// A second Setup is refused and leaves the first one working.
	if _, err := e.net.Setup(ctx, id, ns.Path, opts); !errors.Is(err, errdefs.ErrAlreadyExists) || !strings.Contains(err.Error(), "already on network") {
		t.Fatalf("second Setup = %v, want already exists", err)
	}
	if err := e.net.Check(ctx, id, ns.Path, Options{}); err != nil {
		t.Fatalf("Check after refused Setup: %v", err)
	}

	// Inside: eth0 has the address and a default route via the gateway.
	err = netns.Do(ctx, ns.Path, func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		addrs, _ := ifc.Addrs()
		if len(addrs) == 0 || addrs[0].String() != res.IPs[0].Address.String() {
			return fmt.Errorf("eth0 addresses %v, want %s", addrs, res.IPs[0].Address)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	reply := "hello from " + id + "\n"
	serveIn(t, ns.Path, 8080, reply)
	for _, addr := range []string{
		net.JoinHostPort(ip.String(), "8080"),                      // the container directly
		net.JoinHostPort("127.0.0.1", strconv.Itoa(int(hostPort))), // through portmap
	} {
		got, err := dialRead(addr)
		if err != nil || got != reply {
			t.Fatalf("dial %s = %q, %v; want %q", addr, got, err, reply)
		}
	}
	if save := iptablesSave(t); !strings.Contains(save, id) {
		t.Fatal("no iptables rule mentions the container while set up: the leftover check below would prove nothing")
	} else {
		present := strings.Join(chains(save), ",")
		for _, c := range containerChains(e.net.Name(), id) {
			if !strings.Contains(present, c) {
				t.Fatalf("chain %s of the container is missing while set up: the chain check below would prove nothing", c)
			}
		}
	}

	if err := e.net.Teardown(ctx, id, ns.Path, opts); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	e.assertNoLeftovers(id, ip, veths, []string{id})
	if _, err := dialRead(net.JoinHostPort("127.0.0.1", strconv.Itoa(int(hostPort)))); err == nil {
		t.Fatal("port mapping still answers after Teardown")
	}
	// Idempotent.
	if err := e.net.Teardown(ctx, id, ns.Path, opts); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
	if err := e.net.Check(ctx, id, ns.Path, Options{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Check after Teardown = %v, want not found", err)
	}
	// The namespace is intact and usable again.
	res2, err := e.net.Setup(ctx, id, ns.Path, Options{})
	if err != nil {
		t.Fatalf("Setup again: %v", err)
	}
	if err := e.net.Teardown(ctx, id, ns.Path, Options{}); err != nil {
		t.Fatal(err)
	}
	e.assertNoLeftovers(id, res2.IPv4(), hostIfaces(res2), []string{id})
	if err := e.ns.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func TestTeardownWithoutNetns(t *testing.T) {
	e := newEnv(t, testBridge, testSubnet)
	e.warmUp()
	ctx := context.Background()

	// Never set up, namespace never existed.
	if err := e.net.Teardown(ctx, "never", "/nonexistent/netns/never", Options{}); err != nil {
		t.Fatalf("Teardown of unknown container: %v", err)
	}

	ns, err := e.ns.Create(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{PortMappings: []PortMapping{{HostPort: freePort(t), ContainerPort: 80, Protocol: "udp"}}}
	res, err := e.net.Setup(ctx, "gone", ns.Path, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.teardownAtCleanup("gone", ns.Path)
	// The namespace disappears before the network is torn down (crash,
	// operator): Teardown must still succeed and clean everything. Options
	// are empty on purpose: the cached ones are used.
	if err := e.ns.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := e.net.Teardown(ctx, "gone", ns.Path, Options{}); err != nil {
		t.Fatalf("Teardown with netns gone: %v", err)
	}
	// The veth dies with the namespace, asynchronously.
	deadline := time.Now().Add(5 * time.Second)
	for _, v := range hostIfaces(res) {
		for time.Now().Before(deadline) {
			if _, err := os.Lstat("/sys/class/net/" + v); errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	e.assertNoLeftovers("gone", res.IPv4(), hostIfaces(res), []string{"gone"})
	if err := e.net.Teardown(ctx, "gone", ns.Path, Options{}); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
}

func TestSetupErrors(t *testing.T) {
	e := newEnv(t, testBridge, testSubnet)
	ctx := context.Background()
	ns, err := e.ns.Create(ctx, "errs")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id, path string
		opts     Options
		kind     error
		msg      string
	}{
		{"", ns.Path, Options{}, errdefs.ErrInvalidArgument, "container id"},
		{"../x", ns.Path, Options{}, errdefs.ErrInvalidArgument, "container id"},
		{"ok", "relative", Options{}, errdefs.ErrInvalidArgument, "absolute"},
		{"ok", "", Options{}, errdefs.ErrInvalidArgument, "netns path"},
		{"ok", "/nonexistent/ns", Options{}, errdefs.ErrNotFound, "/nonexistent/ns"},
		{"ok", ns.Path, Options{IfName: "a/b"}, errdefs.ErrInvalidArgument, "interface name"},
		{"ok", ns.Path, Options{IfName: "sixteen-chars-xx"}, errdefs.ErrInvalidArgument, "interface name"},
		{"ok", ns.Path, Options{PortMappings: []PortMapping{{HostPort: 0, ContainerPort: 80}}}, errdefs.ErrInvalidArgument, "host port 0"},
		{"ok", ns.Path, Options{PortMappings: []PortMapping{{HostPort: 80, ContainerPort: 70000}}}, errdefs.ErrInvalidArgument, "container port 70000"},
		{"ok", ns.Path, Options{PortMappings: []PortMapping{{HostPort: 80, ContainerPort: 80, Protocol: "icmp"}}}, errdefs.ErrInvalidArgument, `protocol "icmp"`},
		{"ok", ns.Path, Options{PortMappings: []PortMapping{{HostPort: 80, ContainerPort: 80, HostIP: "nope"}}}, errdefs.ErrInvalidArgument, `host IP "nope"`},
	} {
		_, err := e.net.Setup(ctx, tc.id, tc.path, tc.opts)
		if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Setup(%q, %q, %+v) = %v; want %v containing %q", tc.id, tc.path, tc.opts, err, tc.kind, tc.msg)
		}
	}
	if err := e.net.Teardown(ctx, "../x", ns.Path, Options{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Teardown(bad id) = %v", err)
	}
	if err := e.net.Check(ctx, "never", ns.Path, Options{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Check(never set up) = %v, want not found", err)
	}
	// A path that exists but is no namespace: the plugin's error comes back
	// and nothing stays allocated.
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.net.Setup(ctx, "plain", plain, Options{}); err == nil || !strings.Contains(err.Error(), "plain") {
		t.Errorf("Setup(plain file) = %v, want plugin error", err)
	}
	e.assertNoLeftovers("plain", netip.Addr{}, nil, nil)
	if err := e.ns.Delete(ctx, "errs"); err != nil {
		t.Fatal(err)
	}
}

func TestNewErrors(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	state := t.TempDir()
	for _, tc := range []struct {
		cfg  Config
		kind error
		msg  string
	}{
		{Config{}, errdefs.ErrInvalidArgument, "state dir"},
		{Config{StateDir: "rel"}, errdefs.ErrInvalidArgument, "state dir"},
		{Config{StateDir: state, ConfList: []byte("{")}, errdefs.ErrInvalidArgument, "not valid JSON"},
		{Config{StateDir: state, ConfList: []byte(`{"cniVersion":"1.0.0","name":"x","plugins":[]}`)}, errdefs.ErrInvalidArgument, "no \"plugins\""},
		{Config{StateDir: state, ConfList: []byte(`{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"../bridge"}]}`)}, errdefs.ErrInvalidArgument, "valid \"type\""},
		{Config{StateDir: state, ConfListPath: "/nonexistent.conflist"}, errdefs.ErrNotFound, "/nonexistent.conflist"},
		{Config{StateDir: state, Subnet: "10.213.0.1/16"}, errdefs.ErrInvalidArgument, "cni subnet"},
		{Config{StateDir: state, Subnet: "banana"}, errdefs.ErrInvalidArgument, "cni subnet"},
		{Config{StateDir: state, BridgeName: "much-too-long-bridge"}, errdefs.ErrInvalidArgument, "bridge name"},
		{Config{StateDir: state, PluginDirs: []string{t.TempDir()}}, errdefs.ErrFailedPrecondition, `plugin "bridge" not found`},
		{Config{StateDir: state, ConfList: []byte(`{"cniVersion":"9.9.9","name":"x","plugins":[{"type":"bridge"}]}`)}, errdefs.ErrFailedPrecondition, "9.9.9"},
	} {
		_, err := New(ctx, tc.cfg)
		if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("New(%+v) = %v; want %v containing %q", tc.cfg, err, tc.kind, tc.msg)
		}
	}
	// Optional plugins that are missing are left out instead.
	dir := t.TempDir()
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		src, _ := invoke.FindInPath(p, DefaultPluginDirs())
		if err := os.Symlink(src, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := New(ctx, Config{StateDir: state, PluginDirs: []string{dir}})
	if err != nil {
		t.Fatalf("New without firewall plugin: %v", err)
	}
	if strings.Contains(string(n.ConfList()), "firewall") {
		t.Fatalf("firewall kept although not installed: %s", n.ConfList())
	}
}

func TestAddressExhaustionRollsBack(t *testing.T) {
	// A /30 leaves one address for containers besides the gateway.
	e := newEnv(t, "edgedt1", "10.213.253.0/30")
	ctx := context.Background()
	a, err := e.ns.Create(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.ns.Create(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.net.Setup(ctx, "a", a.Path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.teardownAtCleanup("a", a.Path)
	e.teardownAtCleanup("b", b.Path)
	_, err = e.net.Setup(ctx, "b", b.Path, Options{})
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "no IP addresses available") {
		t.Fatalf("second Setup = %v, want resource exhausted", err)
	}
	// b's veth was removed again by the rollback.
	err = netns.Do(ctx, b.Path, func() error {
		if _, err := net.InterfaceByName("eth0"); err == nil {
			return errors.New("eth0 left in b after failed Setup")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.net.Teardown(ctx, "a", a.Path, Options{}); err != nil {
		t.Fatal(err)
	}
	e.assertNoLeftovers("a", res.IPv4(), hostIfaces(res), nil)
	e.assertNoLeftovers("b", netip.Addr{}, nil, nil)
	// The address is free again.
	if _, err := e.net.Setup(ctx, "b", b.Path, Options{}); err != nil {
		t.Fatalf("Setup after release: %v", err)
	}
	if err := e.net.Teardown(ctx, "b", b.Path, Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestHundredCycles(t *testing.T) {
	e := newEnv(t, testBridge, testSubnet)
	e.warmUp()
	ctx := context.Background()
	start := time.Now()
	// 4 workers x 25 cycles: also exercises concurrent Setup/Teardown
	// (host-local's lock, the iptables lock, shared chains).
	const workers, perWorker = 4, 25
	var ports [workers][perWorker]uint32
	for w := range ports {
		for i := range ports[w] {
			ports[w][i] = freePort(t)
		}
	}
	var mu sync.Mutex
	var veths []string
	errc := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			errc <- func() error {
				for i := 0; i < perWorker; i++ {
					id := fmt.Sprintf("cycle%d-%d", w, i)
					ns, err := e.ns.Create(ctx, id)
					if err != nil {
						return err
					}
					opts := Options{}
					if i%5 == 0 { // port mappings cost ~2x; exercise them every 5th cycle
						opts.PortMappings = []PortMapping{{HostPort: ports[w][i], ContainerPort: 80}}
					}
					res, err := e.net.Setup(ctx, id, ns.Path, opts)
					if err != nil {
						return fmt.Errorf("%s Setup: %w", id, err)
					}
					mu.Lock()
					veths = append(veths, hostIfaces(res)...)
					mu.Unlock()
					if err := e.net.Teardown(ctx, id, ns.Path, opts); err != nil {
						return fmt.Errorf("%s Teardown: %w", id, err)
					}
					if err := e.ns.Delete(ctx, id); err != nil {
						return fmt.Errorf("%s Delete: %w", id, err)
					}
				}
				return nil
			}()
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
	t.Logf("100 cycles in %v", time.Since(start))
	if t.Failed() {
		// Tear down whatever a failed cycle left.
		for w := 0; w < workers; w++ {
			for i := 0; i < perWorker; i++ {
				id := fmt.Sprintf("cycle%d-%d", w, i)
				_ = e.net.Teardown(ctx, id, filepath.Join(e.ns.Dir(), id), Options{})
			}
		}
		return
	}
	if len(veths) != workers*perWorker {
		t.Errorf("saw %d host veths, want %d", len(veths), workers*perWorker)
	}
	var ids []string
	for w := 0; w < workers; w++ {
		for i := 0; i < perWorker; i++ {
			ids = append(ids, fmt.Sprintf("cycle%d-%d", w, i))
		}
	}
	e.assertNoLeftovers("cycle", netip.Addr{}, veths, ids)
	if l, err := e.ns.List(ctx); err != nil || len(l) != 0 {
		t.Fatalf("namespaces left: %+v, %v", l, err)
	}
}

func BenchmarkSetupTeardown(b *testing.B) {
	e := newEnv(b, testBridge, testSubnet)
	ctx := context.Background()
	ns, err := e.ns.Create(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		opts Options
	}{
		{"plain", Options{}},
		{"portmap", Options{PortMappings: []PortMapping{{HostPort: freePort(b), ContainerPort: 80}}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := e.net.Setup(ctx, "bench", ns.Path, bc.opts); err != nil {
					b.Fatal(err)
				}
				if err := e.net.Teardown(ctx, "bench", ns.Path, bc.opts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/cycle")
		})
	}
}
