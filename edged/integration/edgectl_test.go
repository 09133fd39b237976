package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/configs"
	"github.com/edged/edged/internal/testutil"
)

type cli struct {
	t   *testing.T
	env []string
}

func (c cli) run(args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return testutil.RunCLI(ctx, c.env, filepath.Join(binDir, "edgectl"), args...)
}

func (c cli) ok(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("edgectl %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

func (c cli) fails(wantCode int, wantErr string, args ...string) {
	c.t.Helper()
	out, errOut, code := c.run(args...)
	if code != wantCode || !strings.Contains(errOut, wantErr) {
		c.t.Fatalf("edgectl %v: exit %d, stderr %q; want exit %d and %q (stdout %q)", args, code, errOut, wantCode, wantErr, out)
	}
}

func TestEdgectl(t *testing.T) {
	d := startDaemon(t)
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address, "EDGED_NAMESPACE="}}

	out := c.ok("version")
	if !strings.Contains(out, "Server:") || !strings.Contains(out, "API:      1") {
		t.Fatalf("version output: %s", out)
	}
	var v struct {
		Client map[string]string `json:"client"`
		Server map[string]string `json:"server"`
	}
	if err := json.Unmarshal([]byte(c.ok("version", "--format", "json")), &v); err != nil || v.Server["api"] != "1" || v.Client["version"] == "" {
		t.Fatalf("version json: %+v %v", v, err)
	}

	c.ok("namespaces", "create", "prod", "--label", "site=a")
	c.ok("ns", "create", "dev")
	out = c.ok("ns", "ls")
	if lines := testutil.Lines(out); len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[2], "site=a") {
		t.Fatalf("ns ls:\n%s", out)
	}
	if got := c.ok("ns", "ls", "-q", "--filter", `labels."site"==a`); got != "prod\n" {
		t.Fatalf("filtered ls: %q", got)
	}
	c.ok("ns", "label", "prod", "tier=1", "site=")
	var nsList []struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(c.ok("ns", "ls", "--format", "json")), &nsList); err != nil {
		t.Fatal(err)
	}
	if len(nsList) != 2 || nsList[1].Name != "prod" || nsList[1].Labels["tier"] != "1" || nsList[1].Labels["site"] != "" {
		t.Fatalf("ns json: %+v", nsList)
	}

	// Containers, created through the API, seen through the CLI; the
	// namespace comes from -n, --namespace or EDGED_NAMESPACE.
	cl := newClient(t, d)
	ctx := ctxT(t)
	prodCtx := cl.WithNamespace(ctx, "prod")
	web := testContainer("web")
	web.Image = "docker.io/library/busybox:1.36"
	web.Labels = map[string]string{"env": "prod"}
	if _, err := cl.CreateContainer(prodCtx, web); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateContainer(prodCtx, testContainer("db")); err != nil {
		t.Fatal(err)
	}
	out = c.ok("-n", "prod", "containers", "ls")
	if lines := testutil.Lines(out); len(lines) != 3 || !strings.HasPrefix(lines[2], "web") || !strings.Contains(lines[2], "busybox") {
		t.Fatalf("containers ls:\n%s", out)
	}
	if got := c.ok("c", "ls", "-q", "--namespace", "prod", "--filter", "labels.env==prod"); got != "web\n" {
		t.Fatalf("filtered containers: %q", got)
	}
	withNS := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address, "EDGED_NAMESPACE=prod"}}
	if got := withNS.ok("c", "ls", "-q"); got != "db\nweb\n" {
		t.Fatalf("EDGED_NAMESPACE: %q", got)
	}
	var info struct {
		ID    string `json:"id"`
		Image string `json:"image"`
	}
	if err := json.Unmarshal([]byte(withNS.ok("c", "info", "web")), &info); err != nil || info.ID != "web" || info.Image != web.Image {
		t.Fatalf("info: %+v %v", info, err)
	}
	if got := withNS.ok("c", "label", "web", "env=dev"); !strings.Contains(got, "env=dev") {
		t.Fatalf("label: %q", got)
	}
	withNS.ok("c", "rm", "web", "db")
	if got := withNS.ok("c", "ls", "-q"); got != "" {
		t.Fatalf("after rm: %q", got)
	}

	// JSON output is one JSON document whatever the command, with zero
	// values too.
	var gc map[string]any
	if err := json.Unmarshal([]byte(c.ok("gc", "--format", "json")), &gc); err != nil || gc["removed_blobs"] == nil {
		t.Fatalf("gc json: %v %v", gc, err)
	}
	c.ok("ns", "create", "gone1")
	var removed []string
	if err := json.Unmarshal([]byte(c.ok("ns", "rm", "gone1", "--format", "json")), &removed); err != nil || len(removed) != 1 || removed[0] != "gone1" {
		t.Fatalf("ns rm json: %v %v", removed, err)
	}

	// Errors: one clear line, non-zero exit.
	c.fails(1, `edgectl: namespace "nope": not found`, "ns", "rm", "nope")
	c.fails(1, `container "x" in namespace "default": not found`, "c", "info", "x")
	c.fails(1, `id: "../x" must match`, "c", "info", "../x")
	withNS.fails(1, `edgectl: namespace "prod2": not found`, "ns", "label", "prod2", "a=b")
	c.fails(2, `unknown command "bogus"`, "bogus")
	c.fails(2, `unknown command "containers frob"`, "containers", "frob")
	c.fails(2, "missing command", "containers")
	c.fails(2, "info takes one ID", "c", "info")
	c.fails(2, `label "oops": want KEY=VALUE`, "ns", "label", "prod", "oops")
	c.fails(2, `--format "yaml": must be table or json`, "ns", "ls", "--format", "yaml")
	c.fails(2, "flag provided but not defined: -bogus", "ns", "ls", "--bogus")
	// A flag that needs a value and comes last has none (it must not take
	// the "--" that ends the interleaved flags).
	c.fails(2, "edgectl: flag needs an argument: --filter", "c", "ls", "--filter")
	c.fails(2, "edgectl: flag needs an argument: -n", "c", "ls", "-n")
	c.fails(2, `invalid value "" for flag -n: the namespace must not be empty`, "c", "ls", "-n", "")
	// Commands taking several names do every one and report each failure.
	out, errOut, code := c.run("images", "rm", "nope1", "nope2")
	if code != 1 || !strings.Contains(errOut, `"nope1"`) || !strings.Contains(errOut, `"nope2"`) || strings.Count(errOut, "\n") != 2 {
		t.Fatalf("images rm of two missing images: exit %d, stderr %q, want both reported and exit 1", code, errOut)
	}
	// Namespace rm reports each failure and exits non-zero.
	cl.CreateContainer(prodCtx, testContainer("pin"))
	out, errOut, code = c.run("ns", "rm", "dev", "prod")
	if code != 1 || out != "dev\n" || !strings.Contains(errOut, `namespace "prod" must be empty`) {
		t.Fatalf("ns rm mixed: %d %q %q", code, out, errOut)
	}
	if n := strings.Count(strings.TrimSpace(errOut), "\n"); n != 0 {
		t.Fatalf("error is not one line: %q", errOut)
	}

	// A daemon that is not there.
	gone := cli{t: t, env: []string{"EDGED_ADDRESS=" + filepath.Join(d.State, "nothing.sock")}}
	gone.fails(1, "connect to edged at", "version")

	// help
	if out := c.ok("help"); !strings.Contains(out, "namespaces (namespace, ns)") {
		t.Fatalf("help: %s", out)
	}
	// A group's usage puts the global flags where they are accepted:
	// before the group.
	if out := c.ok("task", "help"); !strings.Contains(out, "usage: edgectl [global flags] task COMMAND") {
		t.Fatalf("task help: %s", out)
	}
	if out := c.ok("-n", "prod", "task", "ls"); !strings.HasPrefix(out, "ID") {
		t.Fatalf("global flags before a group: %q", out)
	}
}

func TestEdgectlEvents(t *testing.T) {
	d := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "edgectl"), "--address", d.Address, "events", "--filter", "topic~=^/namespaces/")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	cl := newClient(t, d)
	lines := make(chan string, 10)
	go func() {
		buf := make([]byte, 4096)
		var acc string
		for {
			n, err := stdout.Read(buf)
			acc += string(buf[:n])
			for strings.Contains(acc, "\n") {
				i := strings.Index(acc, "\n")
				lines <- acc[:i]
				acc = acc[i+1:]
			}
			if err != nil {
				return
			}
		}
	}()
	// Keep creating namespaces until edgectl's subscription is live.
	deadline := time.After(15 * time.Second)
	for i := 0; ; i++ {
		name := "ev" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		if _, err := cl.CreateNamespace(ctx, name, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case l := <-lines:
			if !strings.Contains(l, "/namespaces/create") || !strings.Contains(l, `"name":"ev`) {
				t.Fatalf("event line: %q", l)
			}
			// Ctrl-C ends the stream; edgectl says so and exits 130, as a
			// shell reports a command cut short by SIGINT.
			cmd.Process.Signal(syscall.SIGINT)
			err := cmd.Wait()
			if cmd.ProcessState.ExitCode() != 130 || stderr.String() != "edgectl: interrupted (SIGINT)\n" {
				t.Fatalf("events after SIGINT: %v, stderr %q; want exit 130 and the interruption", err, stderr.String())
			}
			return
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("edgectl events printed nothing")
		}
	}
}

func TestEdgedConfigDefault(t *testing.T) {
	out, err := exec.Command(filepath.Join(binDir, "edged"), "config", "default").Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != configs.DefaultTOML {
		t.Fatal("edged config default differs from the embedded configs/edged.toml")
	}
	root, _ := testutil.RepoRoot()
	onDisk, err := os.ReadFile(filepath.Join(root, "configs", "edged.toml"))
	if err != nil || string(onDisk) != string(out) {
		t.Fatalf("configs/edged.toml and the embedded defaults differ: %v", err)
	}
	// A bad config file is refused with its problem named.
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("nonsense = true\n"), 0o600)
	out, err = exec.Command(filepath.Join(binDir, "edged"), "--config", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown setting "nonsense"`) {
		t.Fatalf("bad config: %v %s", err, out)
	}
	out, err = exec.Command(filepath.Join(binDir, "edged"), "frob").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unknown command") {
		t.Fatalf("unknown command: %v %s", err, out)
	}
}

// edgectl events shows every namespace's events unless a namespace is
// given (-n, --namespace or EDGED_NAMESPACE), as it is for every other
// command; the given namespace narrows each --filter.
func TestEdgectlEventsNamespace(t *testing.T) {
	d := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "edgectl"), "--address", d.Address, "-n", "a", "events", "--filter", "topic~=^/containers/")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	cl := newClient(t, d)
	// Containers in b, then in a, until edgectl shows three events: all of
	// them a's (without the namespace, b's would come between).
	var got []string
	for i := 0; len(got) < 3; i++ {
		for _, ns := range []string{"b", "a"} {
			if _, err := cl.CreateContainer(cl.WithNamespace(ctx, ns), testContainer(fmt.Sprintf("c%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case l := <-lines:
			got = append(got, l)
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("edgectl -n a events printed %q", got)
		}
	}
	for _, l := range got {
		if f := strings.Fields(l); len(f) < 3 || f[1] != "a" || f[2] != "/containers/create" {
			t.Fatalf("edgectl -n a events printed %q; want only namespace a's container events", got)
		}
	}
}

// A quick read-only command (version, ls, info, inspect, ps) catches no
// signal: SIGINT ends it by the default action (a shell reports 130 as for
// any command). A command that changes state catches it, says so and exits
// 130 itself. Both wait on an API socket whose server accepts and never
// answers.
func TestEdgectlSignalsQuickCommands(t *testing.T) {
	sock := filepath.Join(testutil.ShortTempDir(t), "silent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, c := range []struct {
		args   []string
		caught bool
	}{
		{[]string{"version"}, false},
		{[]string{"containers", "ls"}, false},
		{[]string{"containers", "rm", "x"}, true},
	} {
		var stderr strings.Builder
		cmd := exec.Command(filepath.Join(binDir, "edgectl"), append([]string{"--address", sock}, c.args...)...)
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Until edgectl is connected (the server holds the call): then its
		// signal handling, if any, is in place.
		waitConnected(t, cmd.Process.Pid, sock)
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if c.caught {
			if ws.Signaled() || ws.ExitStatus() != 130 || stderr.String() != "edgectl: x: interrupted (SIGINT)\n" {
				t.Errorf("edgectl %s after SIGINT: %v, stderr %q; want exit 130 and the interruption", strings.Join(c.args, " "), ws, stderr.String())
			}
		} else if !ws.Signaled() || ws.Signal() != syscall.SIGINT || stderr.String() != "" {
			t.Errorf("edgectl %s after SIGINT: %v, stderr %q; want ended by SIGINT, silent", strings.Join(c.args, " "), ws, stderr.String())
		}
	}
}

// waitConnected waits until process pid has a unix socket connected to
// sock's server (its /proc/net/unix inode is one of pid's fds' sockets).
func waitConnected(t *testing.T, pid int, sock string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
				// A socket: the only one edgectl opens is the API's.
				time.Sleep(100 * time.Millisecond)
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("edgectl (pid %d) did not connect to %s", pid, sock)
}
