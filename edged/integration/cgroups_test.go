package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	containersapi "github.com/edged/edged/proto/services/containers/v1"
	ptypesapi "github.com/edged/edged/proto/types"
)

// hostCgroups returns the host's cgroup layout; tests need v1 memory, cpu
// and pids controllers or a v2 hierarchy.
func hostCgroups(t testing.TB) cgroups.Mode {
	t.Helper()
	mode, err := cgroups.DetectMode("")
	if err != nil || mode == cgroups.Unavailable {
		t.Skipf("no cgroup file system: %v", err)
	}
	return mode
}

// taskCgroup loads the cgroup of a task's init process.
func taskCgroup(t testing.TB, mode cgroups.Mode, pid uint32) cgroups.Manager {
	t.Helper()
	cg, err := cgroups.Load("", mode, int(pid))
	if err != nil {
		t.Fatal(err)
	}
	return cg
}

// cgFile reads a cgroup file of controller ctrl.
func cgFile(t testing.TB, cg cgroups.Manager, ctrl, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cg.Dir(ctrl), name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// limitFiles are the files holding the memory, CPU quota and pids limits.
type limitFiles struct{ memory, cpu, pids string }

func readLimits(t *testing.T, cg cgroups.Manager) limitFiles {
	t.Helper()
	if cg.Version() == 2 {
		return limitFiles{cgFile(t, cg, "memory", "memory.max"), cgFile(t, cg, "cpu", "cpu.max"), cgFile(t, cg, "pids", "pids.max")}
	}
	return limitFiles{
		cgFile(t, cg, "memory", "memory.limit_in_bytes"),
		cgFile(t, cg, "cpu", "cpu.cfs_quota_us") + " " + cgFile(t, cg, "cpu", "cpu.cfs_period_us"),
		cgFile(t, cg, "pids", "pids.max"),
	}
}

func metricsOf(t *testing.T, cl *client.Client, id string) *ptypesapi.Metrics {
	t.Helper()
	ms, err := cl.Metrics(ctxT(t), "id=="+id)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Id != id {
		t.Fatalf("metrics for %s: %v", id, ms)
	}
	return ms[0]
}

// TestCgroupLimitsMetricsUpdate runs a container with limits, reads them
// back from its cgroup files and from Tasks.Metrics, changes them with
// `edgectl update` and reads them again; on v1/hybrid hosts and (make
// test-vm) on cgroup v2.
func TestCgroupLimitsMetricsUpdate(t *testing.T) {
	requireRunc(t)
	mode := hostCgroups(t)
	d := startDaemon(t)
	rootfs := busybox(t)
	cl := newClient(t, d)
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address, "EDGED_NAMESPACE="}}
	ctx := ctxT(t)

	if _, err := cl.CreateFromImage(ctx, &containersapi.CreateFromImageRequest{Id: "lim", RootfsPath: rootfs, Options: &containersapi.SpecOptions{
		Args: []string{"sh", "-c", "sleep 1000 & sleep 1000"}, MemoryLimit: 64 << 20, Cpus: 0.5, PidsLimit: 32,
	}}); err != nil {
		t.Fatal(err)
	}
	pid, err := cl.CreateTask(ctx, "lim", client.TaskOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.StartTask(ctx, "lim", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.DeleteTask(ctxT(t), "lim", true) })
	cg := taskCgroup(t, mode, pid)
	// v2 cpu.max and v1 "cfs_quota_us cfs_period_us" read alike.
	wantCPU := func(quota int) string { return strconv.Itoa(quota) + " 100000" }
	if got, want := readLimits(t, cg), (limitFiles{"67108864", wantCPU(50000), "32"}); got != want {
		t.Fatalf("cgroup %s (v%d) limits %+v, want %+v", cg.Path(), cg.Version(), got, want)
	}
	if !strings.HasSuffix(cg.Path(), "/default/lim") {
		t.Fatalf("cgroup path %q, want .../default/lim", cg.Path())
	}

	// busybox sh execs its last command: two sleeps remain.
	waitFor(t, func() bool { return metricsOf(t, cl, "lim").Pids.Current == 2 })
	m := metricsOf(t, cl, "lim")
	if m.CgroupMode != mode.String() || m.Timestamp == nil {
		t.Fatalf("mode %q timestamp %v", m.CgroupMode, m.Timestamp)
	}
	if m.Memory.Limit != 64<<20 || m.Memory.Usage == 0 || m.Memory.Usage > 64<<20 {
		t.Fatalf("memory %+v", m.Memory)
	}
	if m.Pids.Limit != 32 || m.Cpu.Quota != 50000 || m.Cpu.Period != 100000 || m.Cpu.UsageUsec == 0 {
		t.Fatalf("pids %+v cpu %+v", m.Pids, m.Cpu)
	}
	_, psiErr := os.Stat(filepath.Join(cg.Dir("memory"), "memory.pressure"))
	if wantPSI := cg.Version() == 2 && psiErr == nil; m.Psi.Present != wantPSI {
		t.Fatalf("psi present %v, want %v", m.Psi.Present, wantPSI)
	}

	// edgectl update changes the limits of the running container.
	if out := c.ok("update", "--memory", "96m", "--cpus", "1.5", "--pids-limit", "64", "lim"); out != "lim\n" {
		t.Fatalf("update output %q", out)
	}
	if got, want := readLimits(t, cg), (limitFiles{"100663296", wantCPU(150000), "64"}); got != want {
		t.Fatalf("after update: limits %+v, want %+v", got, want)
	}
	m = metricsOf(t, cl, "lim")
	if m.Memory.Limit != 96<<20 || m.Pids.Limit != 64 || m.Cpu.Quota != 150000 {
		t.Fatalf("metrics after update: memory %d pids %d quota %d", m.Memory.Limit, m.Pids.Limit, m.Cpu.Quota)
	}
	// -1 lifts a limit.
	c.ok("update", "--pids-limit", "-1", "lim")
	if got := readLimits(t, cg).pids; got != "max" {
		t.Fatalf("pids.max after -1: %q", got)
	}
	if m = metricsOf(t, cl, "lim"); m.Pids.Limit != 0 {
		t.Fatalf("unlimited pids reported as %d", m.Pids.Limit)
	}

	// edgectl task metrics: table and JSON.
	out := c.ok("task", "metrics", "lim")
	if !strings.Contains(out, "memory.limit") || !strings.Contains(out, "100663296") || !strings.Contains(out, "pids.limit") {
		t.Fatalf("task metrics:\n%s", out)
	}
	var one map[string]any
	if err := json.Unmarshal([]byte(c.ok("task", "metrics", "--format", "json", "lim")), &one); err != nil {
		t.Fatal(err)
	}
	if one["id"] != "lim" || one["memory"].(map[string]any)["limit"] != "100663296" {
		t.Fatalf("task metrics json: %v", one)
	}
	// edgectl stats: one table, and JSON for agents.
	out = c.ok("stats", "--no-stream")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") || !strings.HasPrefix(lines[1], "lim ") ||
		!strings.Contains(lines[1], "/ 96MiB") || !strings.Contains(lines[1], "%") {
		t.Fatalf("stats:\n%s", out)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(c.ok("stats", "--no-stream", "--format", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0]["id"] != "lim" {
		t.Fatalf("stats json: %v", list)
	}

	// Errors.
	c.fails(2, "nothing to update", "update", "lim")
	c.fails(2, "at least 4m", "update", "--memory", "1k", "lim")
	c.fails(2, "must be 0.01 to 1024", "update", "--cpus", "2000", "lim")
	c.fails(2, "update needs at least one ID", "update", "--memory", "64m")
	c.fails(1, `task "nope" in namespace "default": not found`, "update", "--memory", "64m", "nope")
	c.fails(1, `task "nope" in namespace "default" is not running: not found`, "task", "metrics", "nope")
	c.fails(2, "metrics needs exactly one ID", "task", "metrics")
	err = cl.UpdateResources(ctx, "nope", &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr(int64(5))}})
	wantErr(t, err, errdefs.ErrNotFound, `task "nope"`)
	// runc applies the memory limit before it fails on a swap limit below
	// it: edgectl refuses the combination before anything is changed.
	c.fails(2, "below --memory", "update", "--memory", "64m", "--memory-swap", "32m", "lim")
	if got := readLimits(t, cg).memory; got != "100663296" {
		t.Fatalf("a refused update changed memory to %s", got)
	}

	// A stopped task has no metrics.
	if err := cl.Kill(ctx, "lim", "", 9, true); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Wait(ctx, "lim", ""); err != nil {
		t.Fatal(err)
	}
	if ms, err := cl.Metrics(ctx); err != nil || len(ms) != 0 {
		t.Fatalf("metrics after exit: %v %v", ms, err)
	}
}

func ptr[T any](v T) *T { return &v }
