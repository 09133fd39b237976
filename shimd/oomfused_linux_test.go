package shimd_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/cgroups"
	eventtypes "github.com/edged/edged/proto/events"
	runcopts "github.com/edged/edged/proto/runtime/runc/v1"
	shimopts "github.com/edged/edged/proto/runtime/shim/v1"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
)

// TestOOMFusedCreateStartAtOnce: a container created and started in one
// call (runc run) that is OOM-killed before runc returns — held there by a
// runc wrapper that waits for the kernel's kill — gets exactly one TaskOOM
// with the cgroup's counter after the kill, after its TaskCreate and
// TaskStart and before its TaskExit. The shim used to add the watch after
// runc returned and take the counter then as the baseline: the kill was
// never reported (and with the init itself killed, its cgroup could not
// even be found from its pid). In "init" the init is the process killed;
// in "child" a child of the init is, and the init lives on until killed.
// In "reused" the container's cgroup exists before runc run, with a kill
// of an earlier process in it: that kill is not the container's, and only
// the container's own (the counter's second) is reported.
func TestOOMFusedCreateStartAtOnce(t *testing.T) {
	mode, err := cgroups.DetectMode("")
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	// dd's 64 MiB buffer does not fit in the 16 MiB limit.
	const hog = "dd if=/dev/zero of=/dev/null bs=64M count=1"
	for _, tc := range []struct {
		name  string
		args  []string
		reuse bool
	}{
		{"init", strings.Fields(hog), false},
		{"child", []string{"sh", "-c", hog + "; exec sleep 600"}, false},
		{"reused", strings.Fields(hog), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := newEventServer(t, "")
			s := startShim(t, ev.path)
			id := randID("oomrun")
			cgPath := "/edged-shim-test/" + id
			want := uint64(1)
			if tc.reuse {
				oomKillIn(t, mode, cgPath)
				want = 2
			}
			b := newBundle(t, id, tc.args, false, nil)
			seen := filepath.Join(b, "killed-before-runc-returned")
			runc := oomBundle(t, b, mode, cgPath, want, seen, "run", 0)
			pid := create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b,
				Options: createAndStart(t, &shimopts.Options{Runc: &runcopts.Options{BinaryName: runc}})})
			if _, err := os.Stat(seen); err != nil {
				t.Fatalf("the runc wrapper did not see the OOM kill before it returned: %v", err)
			}
			if tc.name == "child" {
				// The kill is in; the init still runs.
				time.Sleep(500 * time.Millisecond)
				if _, err := s.task.Kill(ctxT(t, 5*time.Second), &taskapi.KillRequest{Id: id, Signal: 9}); err != nil {
					t.Fatal(err)
				}
			}
			if w := wait(t, s, id, ""); w.ExitStatus != 137 {
				t.Fatalf("exit status %d, want 137 (SIGKILL)", w.ExitStatus)
			}
			del(t, s, id)
			ev.waitTopics(t, id, []string{"/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit", "/tasks/delete"}, 10*time.Second)
			ev.mu.Lock()
			oomEnv := ev.events[2]
			ev.mu.Unlock()
			var e eventtypes.TaskOOM
			if err := e.Unmarshal(oomEnv.Event.Value); err != nil || e.ContainerId != id || e.OomKills != want {
				t.Fatalf("oom event %+v (%v), want container %s with oom_kills %d (init pid %d)", e, err, id, want, pid)
			}
		})
	}
}

// oomKillIn creates the cgroup cgPath (16 MiB) and OOM-kills a process in
// it, leaving it empty with its oom_kill counter at 1.
func oomKillIn(t *testing.T, mode cgroups.Mode, cgPath string) {
	t.Helper()
	cg := newTestCgroup(t, mode, cgPath)
	limit := int64(16 << 20)
	if err := cg.Apply(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}); err != nil {
		t.Fatal(err)
	}
	cmd, in := startIn(t, cg, "sh", "-c", "read x; exec dd if=/dev/zero of=/dev/null bs=64M count=1")
	in.Write([]byte("go\n"))
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("earlier process ended with %v, want SIGKILL (OOM kill)", err)
	}
}

// oomBundle limits the bundle's container to 16 MiB without swap and
// returns a runc wrapper for it: after a successful `runc <cmd>` (run, or
// start: the container is running) it waits until the oom_kill counter of
// the container's cgroup cgPath reaches kills, creates the file seen,
// sleeps for linger, and only then exits. (runc's own poststart hooks cannot
// hold runc: runc 1.1 runs them before the container's process starts.)
func oomBundle(t *testing.T, bundle string, mode cgroups.Mode, cgPath string, kills uint64, seen, cmd string, linger time.Duration) string {
	t.Helper()
	cfg := filepath.Join(bundle, "config.json")
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	limit := 16 << 20
	linux := spec["linux"].(map[string]any)
	res, _ := linux["resources"].(map[string]any)
	if res == nil {
		res = map[string]any{}
		linux["resources"] = res
	}
	res["memory"] = map[string]any{"limit": limit, "swap": limit}
	if data, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, data, 0o644); err != nil {
		t.Fatal(err)
	}
	counter := filepath.Join("/sys/fs/cgroup", cgPath, "memory.events")
	if mode != cgroups.Unified {
		counter = filepath.Join("/sys/fs/cgroup/memory", cgPath, "memory.oom_control")
	}
	real, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("no runc")
	}
	wrapper := filepath.Join(bundle, "runc-wrapper")
	script := `#!/bin/sh
` + real + ` "$@" || exit $?
for a in "$@"; do
	[ "$a" = ` + cmd + ` ] || continue
	i=0
	while [ $i -lt 200 ]; do
		if grep -qx 'oom_kill ` + strconv.FormatUint(kills, 10) + `' ` + counter + `; then touch ` + seen + `; sleep ` + strconv.FormatFloat(linger.Seconds(), 'f', 3, 64) + `; exit 0; fi
		sleep 0.05
		i=$((i+1))
	done
done
exit 0
`
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper
}

// TestOOMCreateThenStart: a container created, then started by its own
// Start call (the usual flow, not fused), whose init is OOM-killed before
// `runc start` returns — held there by a runc wrapper that waits for the
// kernel's kill, then 0.5 s more, time for the OOM monitor's loop to see
// the kill — gets its TaskOOM after its TaskStart: create, start, oom,
// exit, delete. The shim held TaskOOM back only for a fused create and
// start and let it through once Create returned, so the loop published the
// kill before the TaskStart of a container that had not started yet for
// its clients.
func TestOOMCreateThenStart(t *testing.T) {
	mode, err := cgroups.DetectMode("")
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	ev := newEventServer(t, "")
	s := startShim(t, ev.path)
	id := randID("oomstart")
	cgPath := "/edged-shim-test/" + id
	b := newBundle(t, id, strings.Fields("dd if=/dev/zero of=/dev/null bs=64M count=1"), false, nil)
	seen := filepath.Join(b, "killed-before-runc-start-returned")
	runc := oomBundle(t, b, mode, cgPath, 1, seen, "start", 500*time.Millisecond)
	data, _ := (&runcopts.Options{BinaryName: runc}).Marshal()
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b,
		Options: &types.Any{TypeUrl: "containerd.runc.v1.Options", Value: data}})
	start(t, s, id, "")
	if _, err := os.Stat(seen); err != nil {
		t.Fatalf("the runc wrapper did not see the OOM kill before runc start returned: %v", err)
	}
	if w := wait(t, s, id, ""); w.ExitStatus != 137 {
		t.Fatalf("exit status %d, want 137 (SIGKILL)", w.ExitStatus)
	}
	del(t, s, id)
	ev.waitTopics(t, id, []string{"/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit", "/tasks/delete"}, 10*time.Second)
}
