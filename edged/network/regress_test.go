package network

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/netns/cni"
)

// TestSetupNoneAcceptsHostnamesOfValidIDs: the default hostname is the
// container ID (cut to 63 characters), so every valid container ID, and
// every hostname oci.WithHostname accepts, must work with --net none.
func TestSetupNoneAcceptsHostnamesOfValidIDs(t *testing.T) {
	n := newNet(t, nil)
	for _, id := range []string{"my_app", "web-", "a..b", "v1.", "x" + strings.Repeat("y", 62) + "."} {
		sp := spec(ModeNone)
		sp.Hostname = id
		if len(sp.Hostname) > 63 {
			sp.Hostname = sp.Hostname[:63]
		}
		bundle := t.TempDir()
		if err := n.Setup(context.Background(), "default", metadata.Container{ID: id}, sp, bundle); err != nil {
			t.Errorf("container %q (hostname %q), --net none: %v", id, sp.Hostname, err)
			continue
		}
		b, err := os.ReadFile(filepath.Join(bundle, bundleHosts))
		if err != nil || !strings.Contains(string(b), "127.0.1.1\t"+sp.Hostname) {
			t.Errorf("container %q: hosts %q, %v", id, b, err)
		}
	}
}

// TestBridgeRejectsBadHostnameBeforeAttaching: a hostname that cannot go
// into /etc/hosts fails Setup before any CNI plugin runs (nothing to undo).
func TestBridgeRejectsBadHostnameBeforeAttaching(t *testing.T) {
	cfg := newNet(t, nil).cfg
	cfg.CNI = cni.Config{BridgeName: "edrg2", Subnet: "10.213.252.0/24"}
	n, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Unmount(n.netnsDir, syscall.MNT_DETACH)
		exec.Command("ip", "link", "del", "edrg2").Run()
	})
	sp := spec(ModeBridge)
	sp.Hostname = "evil\n1.2.3.4 bank"
	err = n.Setup(context.Background(), "default", metadata.Container{ID: "a"}, sp, "")
	if err == nil || !strings.Contains(err.Error(), "hostname") {
		t.Fatalf("Setup = %v, want an invalid hostname error", err)
	}
	if _, err := os.Stat(n.netnsDir); err == nil {
		t.Fatalf("%s exists: bridge mode was set up before the hostname was checked", n.netnsDir)
	}
}

// TestCleanupReleasesUnmountedNetnsFile: a crash of edged between creating
// an attachment's namespace file and bind mounting the namespace on it
// leaves a plain file. Cleanup must release it (DEL without a namespace)
// and remove the file, rather than pass the file to the plugins as
// CNI_NETNS, which they reject, and retry at every start.
func TestCleanupReleasesUnmountedNetnsFile(t *testing.T) {
	requirePlugins(t)
	cfg := newNet(t, nil).cfg
	cfg.CNI = cni.Config{BridgeName: "edrg1", Subnet: "10.213.251.0/24"}
	n, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Unmount(n.netnsDir, syscall.MNT_DETACH)
		exec.Command("ip", "link", "del", "edrg1").Run()
	})
	id := newCNIID()
	st := &state{Namespace: "default", ID: "a", Mode: ModeBridge, CNIID: id, Netns: filepath.Join(n.netnsDir, id)}
	if err := n.writeState(st); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(n.netnsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st.Netns, nil, 0o444); err != nil { // created, not yet mounted
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		n2, err := New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = n2.Cleanup(context.Background(), func(ns, id string) bool { return false })
		if _, serr := os.Stat(st.Netns); err != nil || serr == nil {
			t.Errorf("start %d: attachment never released: Cleanup = %v, namespace file stat = %v", i, err, serr)
		}
	}
}

func requirePlugins(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, p := range []string{"bridge", "host-local"} {
		found := false
		for _, d := range cni.DefaultPluginDirs() {
			if _, err := os.Stat(filepath.Join(d, p)); err == nil {
				found = true
			}
		}
		if !found {
			t.Skipf("CNI plugin %s not installed", p)
		}
	}
}

// Fake plugins. A plugin whose DEL or VERSION hangs cannot be caused with
// the real containernetworking-plugins, so these tests run shell scripts
// as the only plugin of the list. Each records its pid in <bin>/pids; the
// test kills them all at its end.

// fakeHangDel attaches instantly and hangs in DEL.
const fakeHangDel = `#!/bin/sh
echo $$ >> "$(dirname "$0")/pids"
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}';;
ADD) cat >/dev/null; echo '{"cniVersion":"1.0.0","ips":[{"address":"10.99.0.2/24"}]}';;
DEL) exec sleep 1000;;
esac
`

// fakeSlowVersion hangs when asked its versions (when the list is loaded).
const fakeSlowVersion = `#!/bin/sh
echo $$ >> "$(dirname "$0")/pids"
case "$CNI_COMMAND" in
VERSION) exec sleep 1000;;
esac
`

// fakeNet returns a Network, and its Config, whose CNI list runs only the
// plugin script.
func fakeNet(t *testing.T, script string) (*Network, Config) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "fakeplug"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := newNet(t, nil).cfg
	cfg.StateDir = filepath.Join(dir, "network")
	cfg.CNI = cni.Config{ConfList: []byte(`{"cniVersion":"1.0.0","name":"fake","plugins":[{"type":"fakeplug"}]}`), PluginDirs: []string{bin}}
	n, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(bin, "pids"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		syscall.Unmount(filepath.Join(cfg.StateDir, "netns"), syscall.MNT_DETACH)
	})
	return n, cfg
}

// TestHangingDelDoesNotBlockCloseOrCleanup: a plugin whose DEL hangs must
// not keep Close or the start-up Cleanup (which runs before edged serves)
// past their contexts.
func TestHangingDelDoesNotBlockCloseOrCleanup(t *testing.T) {
	n, cfg := fakeNet(t, fakeHangDel)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Setup(ctx, "default", metadata.Container{ID: "a"}, spec(ModeBridge), ""); err != nil {
		t.Fatal(err)
	}
	if err := n.Teardown(ctx, "default", "a"); err != nil { // DEL hangs in the background
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		c, cl := context.WithTimeout(context.Background(), 2*time.Second)
		defer cl()
		done <- n.Close(c)
	}()
	select {
	case err := <-done:
		t.Logf("Close: %v", err)
	case <-time.After(8 * time.Second):
		t.Errorf("Close(ctx 2s) still blocked after 8s")
	}

	n2, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Setup(ctx, "default", metadata.Container{ID: "b"}, spec(ModeBridge), ""); err != nil {
		t.Fatal(err)
	}
	n3, err := New(context.Background(), cfg) // edged restarted after a kill -9
	if err != nil {
		t.Fatal(err)
	}
	done2 := make(chan error, 1)
	go func() {
		c, cl := context.WithTimeout(context.Background(), 2*time.Second)
		defer cl()
		done2 <- n3.Cleanup(c, func(ns, id string) bool { return false })
	}()
	select {
	case err := <-done2:
		t.Logf("Cleanup: %v", err)
	case <-time.After(8 * time.Second):
		t.Errorf("Cleanup(ctx 2s) still blocked after 8s")
	}
}

// TestSlowPluginDoesNotBlockOtherModes: loading the CNI list runs every
// plugin's VERSION; a slow plugin must not stall the networks of other
// containers, those not bridged least of all.
func TestSlowPluginDoesNotBlockOtherModes(t *testing.T) {
	n, _ := fakeNet(t, fakeSlowVersion)
	bridged := make(chan struct{})
	go func() {
		defer close(bridged)
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
		defer cancel()
		n.Setup(ctx, "default", metadata.Container{ID: "br"}, spec(ModeBridge), "")
	}()
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	if err := n.Setup(context.Background(), "default", metadata.Container{ID: "plain"}, spec(ModeNone), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("--net none Setup took %v while a plugin's VERSION hung", d)
	}
	<-bridged
	// The failed Setup's release runs in the background: let it finish
	// before the plugin's directory goes.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Log(err)
	}
}

// TestNamedUsersIgnoresGoneTasks: the record of a task that is gone (its
// shim died) does not keep a named namespace in use; that of a running
// task does.
func TestNamedUsersIgnoresGoneTasks(t *testing.T) {
	checkNamedUsers(t, newNet(t, map[string][2]int{"alive": {1, 1}}))
}

// checkNamedUsers records two users of the named namespace lab, the
// containers "alive" (whose task n finds) and "gone" (whose task it does
// not), and checks that NamedUsers counts alive, and gone only while its
// network is being set up (a task does not exist yet then).
func checkNamedUsers(t *testing.T, n *Network) {
	t.Helper()
	for _, id := range []string{"alive", "gone"} {
		if err := n.writeState(&state{Namespace: "default", ID: id, Mode: ModeNSPrefix + "lab"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := n.NamedUsers("lab"); len(got) != 1 || got[0] != "default/alive" {
		t.Fatalf("NamedUsers = %v, want [default/alive]", got)
	}
	unlock := n.lock("default", "gone")
	got := n.NamedUsers("lab")
	unlock()
	if len(got) != 2 {
		t.Fatalf("NamedUsers during a setup = %v, want both", got)
	}
}

// TestNamedUsersAsksAliveNotTheShims: with Config.Alive (the runtime's Has)
// NamedUsers decides liveness from it and does not look up the tasks (a
// state call to each live task's shim); the answers stay the same.
func TestNamedUsersAsksAliveNotTheShims(t *testing.T) {
	cfg := newNet(t, nil).cfg
	lookups := 0
	cfg.Task = func(ctx context.Context, ns, id string) (uint32, bool, error) {
		lookups++
		return 1, true, nil
	}
	cfg.Alive = func(ns, id string) bool { return ns == "default" && id == "alive" }
	n, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkNamedUsers(t, n)
	if lookups != 0 {
		t.Fatalf("NamedUsers looked up %d tasks; with Config.Alive it needs none", lookups)
	}
}

// TestCleanupLogsOnlyWhatItUndoes: Cleanup tears down the record of a task
// that is gone and says so, keeps that of a live task, and does not claim
// to clean up after a directory without a record (a crash between creating
// it and writing the record): TeardownGone's rule.
func TestCleanupLogsOnlyWhatItUndoes(t *testing.T) {
	cfg := newNet(t, nil).cfg
	var logs strings.Builder
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	n, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"alive", "gone"} {
		if err := n.writeState(&state{Namespace: "default", ID: id, Mode: ModeNSPrefix + "lab"}); err != nil {
			t.Fatal(err)
		}
	}
	// A Setup cut short before its record: a directory with a file in it.
	if err := os.MkdirAll(n.dir("default", "norecord"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.dir("default", "norecord"), "hosts"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.Cleanup(context.Background(), func(ns, id string) bool { return id == "alive" }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(n.dir("default", "gone")); !os.IsNotExist(err) {
		t.Errorf("record of the gone task: %v, want it removed", err)
	}
	if _, err := os.Stat(filepath.Join(n.dir("default", "alive"), "state.json")); err != nil {
		t.Errorf("record of the live task: %v", err)
	}
	if _, err := os.Stat(n.dir("default", "norecord")); !os.IsNotExist(err) {
		t.Errorf("directory without a record: %v, want it removed", err)
	}
	const msg = `msg="network: cleaning up after a task that is gone" namespace=default id=`
	if got := strings.Count(logs.String(), msg); got != 1 || !strings.Contains(logs.String(), msg+"gone\n") {
		t.Fatalf("logs:\n%s\nwant one cleanup line, for default/gone", logs.String())
	}
}

// Two containers of one namespace set up and tear down at once: the
// teardown of one removed the namespace's directory when it found it
// empty, which could fall between the other's MkdirAll creating that
// directory and creating its own in it (the locks are per container).
// The state write then failed with ENOENT ("network state: mkdir …: no
// such file or directory") within a few hundred rounds.
func TestStateWriteRacesNamespaceDirRemoval(t *testing.T) {
	n := newNet(t, nil)
	ctx := context.Background()
	const rounds = 3000
	errc := make(chan error, 2)
	for _, id := range []string{"a", "b"} {
		go func() {
			for range rounds {
				if err := n.writeState(&state{Namespace: "ns", ID: id}); err != nil {
					errc <- err
					return
				}
				if err := n.Teardown(ctx, "ns", id); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	// Cleanup (at start-up) removes the namespace's empty directory.
	if err := n.Cleanup(ctx, func(ns, id string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(n.containers, "ns")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the namespace's empty directory is left after Cleanup: %v", err)
	}
}

// fakeLogCalls attaches instantly and records each command it runs in
// <bin>/calls.
const fakeLogCalls = `#!/bin/sh
echo $$ >> "$(dirname "$0")/pids"
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}';;
ADD) cat >/dev/null; echo ADD >> "$(dirname "$0")/calls"; echo '{"cniVersion":"1.0.0","ips":[{"address":"10.99.0.2/24"}]}';;
DEL) cat >/dev/null; echo DEL >> "$(dirname "$0")/calls";;
esac
`

// The background work a Setup or Teardown starts (the spare refilled, the
// attachment released) runs backgroundDelay later, not while the container
// starts or is removed; Close and Cleanup run the releases at once.
func TestBackgroundWorkWaitsForTheContainer(t *testing.T) {
	calls := func(n *Network) []string {
		b, _ := os.ReadFile(filepath.Join(n.cfg.CNI.PluginDirs[0], "calls"))
		return strings.Fields(string(b))
	}
	for _, then := range []string{"wait", "close", "cleanup"} {
		t.Run(then, func(t *testing.T) {
			n, _ := fakeNet(t, fakeLogCalls)
			n.cfg.Spares = 1
			n.bgDelay = 2 * time.Second
			ctx := context.Background()
			if err := n.Setup(ctx, "default", metadata.Container{ID: "a"}, spec(ModeBridge), ""); err != nil {
				t.Fatal(err)
			}
			if err := n.Teardown(ctx, "default", "a"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			if got := calls(n); !slices.Equal(got, []string{"ADD"}) {
				t.Fatalf("plugin calls within 300 ms of the Setup and Teardown: %v, want only the container's ADD", got)
			}
			start := time.Now()
			var err error
			switch then {
			case "wait":
				n.Wait()
				got := calls(n)
				slices.Sort(got)
				if !slices.Equal(got, []string{"ADD", "ADD", "DEL"}) {
					t.Fatalf("plugin calls after the background work: %v, want the spare's ADD and the release's DEL too", got)
				}
				if d := time.Since(start); d < time.Second {
					t.Fatalf("background work done %v after the check at 300 ms; want the 2 s delay", d)
				}
				err = n.Close(ctx)
			case "close":
				// The attachment released; the refill stops before it
				// makes a spare.
				err = n.Close(ctx)
				if got := calls(n); !slices.Equal(got, []string{"ADD", "DEL"}) {
					t.Fatalf("plugin calls after Close: %v, want ADD DEL", got)
				}
			case "cleanup":
				// As at a start-up: the release and the refill are waited
				// for, the spare made (no record names it) released again.
				err = n.Cleanup(ctx, func(ns, id string) bool { return false })
				got := calls(n)
				slices.Sort(got)
				if !slices.Equal(got, []string{"ADD", "ADD", "DEL", "DEL"}) {
					t.Fatalf("plugin calls after Cleanup: %v, want ADD ADD DEL DEL", got)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); then != "wait" && d > time.Second {
				t.Fatalf("%s took %v: it waited for the delay", then, d)
			}
		})
	}
}
