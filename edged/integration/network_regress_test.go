package integration

import (
	"strings"
	"syscall"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

// TestNetworkHostnameFromValidIDs: the default hostname is the container
// ID, so a valid ID that is not a DNS name (my_app) runs with the default
// --net none, and a hostname with '_' works with --net bridge.
func TestNetworkHostnameFromValidIDs(t *testing.T) {
	e := newNetEnv(t, 0)
	for _, id := range []string{"my_app", "web-", "v1."} {
		if out, errOut, code := e.cli.run("run", "--rm", "--rootfs", e.rootfs, id, "true"); code != 0 {
			t.Errorf("run --rm %s true: exit %d: %s%s", id, code, out, errOut)
		}
	}
	out, errOut, code := e.cli.run("run", "--rm", "--rootfs", e.rootfs, "--net", "bridge", "--hostname", "my_host", "web1", "grep", "my_host", "/etc/hosts")
	if code != 0 || !strings.Contains(out, e.prefix) {
		t.Errorf("run --net bridge --hostname my_host: exit %d: %s%s", code, out, errOut)
	}
	e.assertNoLeftovers()
}

// TestNetworkShimDeathReleasesNetwork: when a task's shim dies while edged
// runs, its network (veth, namespace, address, iptables rules, record) is
// released without waiting for edged to restart, and a named namespace it
// joined can be removed.
func TestNetworkShimDeathReleasesNetwork(t *testing.T) {
	e := newNetEnv(t, 0)
	cleanupShimsOf(t, e.d.State)
	ctx := ctxT(t)
	e.cli.ok("netns", "create", "shimlab")
	t.Cleanup(func() { e.cli.run("netns", "rm", "shimlab") })
	e.runD([]string{"--net", "bridge"}, "victim", "sleep", "300")
	e.runD([]string{"--net", "ns:shimlab"}, "innet", "sleep", "300")
	for _, id := range []string{"victim", "innet"} {
		p, err := e.cl.GetTask(ctx, id, "")
		if err != nil {
			t.Fatal(err)
		}
		syscall.Kill(shimOf(t, int(p.Pid)), syscall.SIGKILL)
		syscall.Kill(int(p.Pid), syscall.SIGKILL)
		waitFor(t, func() bool { _, err := e.cl.GetTask(ctx, id, ""); return errdefs.IsNotFound(err) })
		if _, err := e.cl.DeleteTask(ctx, id, true); err != nil {
			t.Logf("task rm -f %s after its shim died: %v", id, err)
		}
		if err := e.cl.DeleteContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	e.assertNoLeftovers()
	if out, errOut, code := e.cli.run("netns", "rm", "shimlab"); code != 0 {
		t.Errorf("netns rm refused: %s%s", out, errOut)
	}
}
