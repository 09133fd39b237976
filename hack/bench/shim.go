package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/hack/bench/measure"
	"github.com/edged/edged/internal/testutil"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	"github.com/edged/edged/proto/services/ttrpcevents/v1"
	"github.com/edged/edged/proto/wire"
	"github.com/edged/edged/shimd"
)

// Budgets of the Runtime issue.
const (
	shimContainers         = 50
	budgetShimPSSMiB       = 1.2
	budgetShimUSSMiB       = 1.0
	budgetGroupAddedMiB    = 0.3
	budgetEdgedRunningMiB  = 12
	containerdShimRSSMiB   = 12.9 // containerd-shim-runc-v2, one per container (issue)
	containerdShimPSSMiB   = 2.5
	containerdShimUSSMiB   = 2.3
	containerdShimsPSSMiB  = 126 // 50 containers' shims
	containerdRunningMiB   = 52  // containerd RSS with 50 containers
	shimSettle             = 13 * time.Second
	shimBenchNamespace     = "bench"
	shimBenchLogURIOptions = "?max-size=1048576&max-files=2"
)

// shimSection measures edged-shim memory with 50 running busybox `sleep`
// containers: one shim per container and one shim for all, both started
// exactly as edged starts them; then edged's own RSS with 50 containers run
// through `edgectl run -d --rootfs`.
func shimSection(ctx context.Context, e *Env) ([]Row, error) {
	for _, b := range []string{"edged", "edgectl", "edged-shim"} {
		if _, err := os.Stat(e.Bin(b)); err != nil {
			return nil, fmt.Errorf("%v: run `make build` first or pass -bin", err)
		}
	}
	if os.Getuid() != 0 {
		return []Row{skipped("shim memory", "needs root (runc)")}, nil
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return []Row{skipped("shim memory", "runc is not installed")}, nil
	}
	dir, err := e.Dir("shim")
	if err != nil {
		return nil, err
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := testutil.BusyboxRootfs(rootfs); err != nil {
		return nil, err
	}
	spec, err := sleepSpec(dir, rootfs)
	if err != nil {
		return nil, err
	}
	var rows []Row
	mib := measure.MiB

	e.Progress("shim: %d containers, one edged-shim each", shimContainers)
	ms, err := shimFleet(ctx, e, spec)
	if err != nil {
		return rows, err
	}
	avg, mx := summarize(ms)
	k := float64(len(ms))
	rows = append(rows,
		budget(fmt.Sprintf("shim PSS per container, %d containers, one shim each (avg)", shimContainers), mib(avg.PSS), "MiB", "<=", budgetShimPSSMiB).
			with(fmt.Sprintf("shim-runc-v2 %.1f MiB", containerdShimPSSMiB),
				fmt.Sprintf("max %.2f MiB; anon %.2f MiB + file %.2f MiB; %.1f threads", mib(mx.PSS), mib(avg.PSSAnon), mib(avg.PSSFile), float64(avg.Threads))),
		budget("  shim USS per container (avg)", mib(avg.PrivateClean+avg.PrivateDirty), "MiB", "<=", budgetShimUSSMiB).
			with(fmt.Sprintf("shim-runc-v2 %.1f MiB", containerdShimUSSMiB),
				fmt.Sprintf("max %.2f MiB", mib(mx.PrivateClean+mx.PrivateDirty))),
		info("  shim RSS per container (avg)", mib(avg.RSS), "MiB").
			with(fmt.Sprintf("shim-runc-v2 %.1f MiB", containerdShimRSSMiB), "RSS counts the shared binary pages in every shim"),
		info(fmt.Sprintf("  PSS of all %d shims", len(ms)), mib(avg.PSS)*k, "MiB").
			with(fmt.Sprintf("containerd shims %d MiB", containerdShimsPSSMiB), ""),
	)

	e.Progress("shim: 1 then %d containers in one edged-shim", shimContainers)
	one, all, err := shimGroup(ctx, e, spec)
	if err != nil {
		return rows, err
	}
	added := (all.PSS - one.PSS) / (shimContainers - 1)
	rows = append(rows,
		budget("shim PSS per added container, grouped", mib(added), "MiB", "<=", budgetGroupAddedMiB).
			with("", fmt.Sprintf("one shim: %.2f MiB PSS with 1 container, %.2f MiB with %d; %d threads",
				mib(one.PSS), mib(all.PSS), shimContainers, all.Threads)),
		info(fmt.Sprintf("  grouped shim PSS per container (%d in one)", shimContainers), mib(all.PSS)/shimContainers, "MiB").
			with(fmt.Sprintf("shim-runc-v2 %.1f MiB", containerdShimPSSMiB), ""),
	)

	e.Progress("edged: %d containers with edgectl run -d --rootfs", shimContainers)
	er, err := edgedRunning(ctx, e, rootfs)
	return append(rows, er...), err
}

// sleepSpec returns the config.json of a busybox `sleep` container
// (`runc spec` with the rootfs read-only by absolute path).
func sleepSpec(dir, rootfs string) (map[string]any, error) {
	sd := filepath.Join(dir, "spec")
	if err := os.MkdirAll(sd, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.Command("runc", "spec", "--bundle", sd).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("runc spec: %v: %s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(sd, "config.json"))
	if err != nil {
		return nil, err
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, err
	}
	proc := spec["process"].(map[string]any)
	proc["args"] = []string{"sleep", "1000000"}
	proc["terminal"] = false
	spec["root"] = map[string]any{"path": rootfs, "readonly": true}
	return spec, nil
}

// acceptEvents stands in for edged's events service in the shim-only
// measurements: it accepts every event.
type acceptEvents struct{}

func (acceptEvents) Forward(context.Context, *ttrpcevents.ForwardRequest) (*types.Empty, error) {
	return &types.Empty{}, nil
}

func (acceptEvents) ForwardBatch(context.Context, *ttrpcevents.ForwardBatchRequest) (*types.Empty, error) {
	return &types.Empty{}, nil
}

// shimFarm is a set of edged-shims with one state directory and one events
// socket, started the way edged/runtime starts them.
type shimFarm struct {
	e      *Env
	dir    string
	state  string
	events string
	spec   map[string]any
	srv    *ttrpc.Server
	procs  []*exec.Cmd
	tasks  []taskapi.TaskService
	conns  []*ttrpc.Client
	n      int
}

func newShimFarm(e *Env, spec map[string]any) (*shimFarm, error) {
	d, err := shortDir()
	if err != nil {
		return nil, err
	}
	f := &shimFarm{e: e, dir: d, state: filepath.Join(d, "state"), spec: spec}
	f.events = filepath.Join(f.state, "edged.sock")
	if err := os.MkdirAll(f.state, 0o700); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", f.events)
	if err != nil {
		return nil, err
	}
	if f.srv, err = ttrpc.NewServer(); err != nil {
		l.Close()
		return nil, err
	}
	ttrpcevents.RegisterEventsService(wire.Server(f.srv), acceptEvents{})
	go f.srv.Serve(context.Background(), l)
	return f, nil
}

// start starts the shim of group: socket as fd 3 with LISTEN_FDS=1.
func (f *shimFarm) start(group string) (taskapi.TaskService, int, error) {
	path := shimd.SocketPath(filepath.Join(f.state, "s"), f.events, shimBenchNamespace, group)
	l, err := shimd.Listen(path)
	if err != nil {
		return nil, 0, err
	}
	file, err := l.File()
	l.Close()
	if err != nil {
		return nil, 0, err
	}
	defer file.Close()
	logf, err := os.Create(path + ".log")
	if err != nil {
		return nil, 0, err
	}
	defer logf.Close()
	cmd := exec.Command(f.e.Bin("edged-shim"), "-namespace", shimBenchNamespace, "-id", group, "-address", f.events, "-state-dir", f.state)
	cmd.ExtraFiles = []*os.File{file}
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "TTRPC_ADDRESS="+f.events)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	f.procs = append(f.procs, cmd)
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, 0, err
	}
	c := ttrpc.NewClient(conn)
	f.conns = append(f.conns, c)
	t := taskapi.NewTaskClient(wire.Client(c))
	f.tasks = append(f.tasks, t)
	return t, cmd.Process.Pid, nil
}

// run creates and starts a container in the shim and leaves a Wait call
// pending, as edged does.
func (f *shimFarm) run(ctx context.Context, t taskapi.TaskService) error {
	id := "c" + strconv.Itoa(f.n)
	f.n++
	bundle := filepath.Join(f.dir, "bundles", id)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return err
	}
	f.spec["linux"].(map[string]any)["cgroupsPath"] = "/edged-bench/" + filepath.Base(f.dir) + "/" + id
	data, err := json.Marshal(f.spec)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644); err != nil {
		return err
	}
	log := "file://" + filepath.Join(bundle, "log") + shimBenchLogURIOptions
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := t.Create(cctx, &taskapi.CreateTaskRequest{Id: id, Bundle: bundle, Stdout: log, Stderr: log}); err != nil {
		return fmt.Errorf("create %s: %w", id, err)
	}
	if _, err := t.Start(cctx, &taskapi.StartRequest{Id: id}); err != nil {
		return fmt.Errorf("start %s: %w", id, err)
	}
	go t.Wait(context.Background(), &taskapi.WaitRequest{Id: id})
	return nil
}

// close removes the containers and stops the shims.
func (f *shimFarm) close() {
	removeContainers(filepath.Join(f.state, "runc", shimBenchNamespace))
	for i, c := range f.procs {
		f.conns[i].Close()
		c.Process.Kill()
		c.Wait()
	}
	f.srv.Close()
	removeCgroups("/edged-bench/" + filepath.Base(f.dir))
	os.RemoveAll(f.dir)
}

// shortDir makes a directory under /tmp: shim sockets are
// <state>/s/<64 hex digits> and a unix socket path has at most 107 bytes.
func shortDir() (string, error) { return os.MkdirTemp("/tmp", "esb-") }

// removeContainers force-deletes every runc container under root.
func removeContainers(root string) {
	out, _ := exec.Command("runc", "--root", root, "list", "-q").Output()
	for _, c := range strings.Fields(string(out)) {
		exec.Command("runc", "--root", root, "delete", "--force", c).Run()
	}
}

// removeCgroups removes the (now empty) parent cgroup rel that runc left
// in every hierarchy, and its parent when that is empty too (the
// /edged-bench every farm shares).
func removeCgroups(rel string) {
	mode, err := cgroups.DetectMode(cgroups.DefaultRoot)
	if err != nil {
		return
	}
	bases, _ := cgroups.Hierarchies(cgroups.DefaultRoot, mode)
	for _, base := range bases {
		os.Remove(filepath.Join(base, rel))
		os.Remove(filepath.Join(base, filepath.Dir(rel)))
	}
}

// shimFleet runs shimContainers containers, one shim each, and returns each shim's memory after the settle time.
func shimFleet(ctx context.Context, e *Env, spec map[string]any) ([]measure.Memory, error) {
	f, err := newShimFarm(e, spec)
	if err != nil {
		return nil, err
	}
	defer f.close()
	var pids []int
	for i := 0; i < shimContainers; i++ {
		t, pid, err := f.start("s" + strconv.Itoa(i))
		if err != nil {
			return nil, err
		}
		pids = append(pids, pid)
		if err := f.run(ctx, t); err != nil {
			return nil, err
		}
	}
	if !sleepCtx(ctx, shimSettle) {
		return nil, ctx.Err()
	}
	var ms []measure.Memory
	for _, pid := range pids {
		m, err := measure.ReadMemory(pid)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// shimGroup measures one shim with 1 container, then with shimContainers.
func shimGroup(ctx context.Context, e *Env, spec map[string]any) (one, all measure.Memory, err error) {
	f, err := newShimFarm(e, spec)
	if err != nil {
		return one, all, err
	}
	defer f.close()
	t, pid, err := f.start("group")
	if err != nil {
		return one, all, err
	}
	for i := 0; i < shimContainers; i++ {
		if err := f.run(ctx, t); err != nil {
			return one, all, err
		}
		if i == 0 {
			if !sleepCtx(ctx, shimSettle) {
				return one, all, ctx.Err()
			}
			if one, err = measure.ReadMemory(pid); err != nil {
				return one, all, err
			}
		}
	}
	if !sleepCtx(ctx, shimSettle) {
		return one, all, ctx.Err()
	}
	all, err = measure.ReadMemory(pid)
	return one, all, err
}

// summarize returns the average and the maximum of each figure.
func summarize(ms []measure.Memory) (avg, mx measure.Memory) {
	for _, m := range ms {
		avg.RSS += m.RSS
		avg.PSS += m.PSS
		avg.PSSAnon += m.PSSAnon
		avg.PSSFile += m.PSSFile
		avg.PrivateClean += m.PrivateClean
		avg.PrivateDirty += m.PrivateDirty
		avg.Threads += m.Threads
		mx.RSS, mx.PSS = max(mx.RSS, m.RSS), max(mx.PSS, m.PSS)
		if m.PrivateClean+m.PrivateDirty > mx.PrivateClean+mx.PrivateDirty {
			mx.PrivateClean, mx.PrivateDirty = m.PrivateClean, m.PrivateDirty
		}
	}
	n := int64(max(len(ms), 1))
	avg.RSS /= n
	avg.PSS /= n
	avg.PSSAnon /= n
	avg.PSSFile /= n
	avg.PrivateClean /= n
	avg.PrivateDirty /= n
	avg.Threads /= n
	return avg, mx
}

// edgedRunning starts edged, runs shimContainers detached containers with
// `edgectl run -d --rootfs`, and measures edged and the shims it started.
func edgedRunning(ctx context.Context, e *Env, rootfs string) ([]Row, error) {
	ddir, err := shortDir()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(ddir)
	d, err := measure.StartEdged(ctx, e.Bin("edged"), ddir, e.EdgedEnv)
	if err != nil {
		return nil, err
	}
	state := filepath.Join(ddir, "state")
	defer func() {
		d.Stop()
		killShims(state)
		removeContainers(filepath.Join(state, "runc", "default"))
	}()
	for i := 0; i < shimContainers; i++ {
		id := "run" + strconv.Itoa(i)
		cmd := exec.CommandContext(ctx, e.Bin("edgectl"), "--address", d.Socket, "run", "-d", "--rootfs", rootfs, id, "sleep", "1000000")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("edgectl run %s: %v: %s", id, err, out)
		}
	}
	if !sleepCtx(ctx, shimSettle) {
		return nil, ctx.Err()
	}
	m, err := measure.ReadMemory(d.PID())
	if err != nil {
		return nil, err
	}
	var ms []measure.Memory
	for _, pid := range shimPids(state) {
		if idleSpare(state, pid) {
			continue // the namespace's spare: its own row in the runtime section
		}
		if sm, err := measure.ReadMemory(pid); err == nil {
			ms = append(ms, sm)
		}
	}
	rows := []Row{
		budget(fmt.Sprintf("edged RSS with %d running containers", shimContainers), measure.MiB(m.RSS), "MiB", "<=", budgetEdgedRunningMiB).
			with(fmt.Sprintf("containerd %d MiB", containerdRunningMiB),
				fmt.Sprintf("edgectl run -d --rootfs (busybox sleep); PSS %.2f MiB, anon %.2f MiB; %d threads", measure.MiB(m.PSS), measure.MiB(m.PSSAnon), m.Threads)),
	}
	if len(ms) != shimContainers {
		return rows, fmt.Errorf("found %d shims of edged, want %d", len(ms), shimContainers)
	}
	avg, _ := summarize(ms)
	rows = append(rows, info("  PSS per shim started by edged (avg)", measure.MiB(avg.PSS), "MiB").
		with(fmt.Sprintf("shim-runc-v2 %.1f MiB", containerdShimPSSMiB),
			fmt.Sprintf("USS %.2f MiB; events go to edged", measure.MiB(avg.PrivateClean+avg.PrivateDirty))))
	return rows, d.Alive()
}

// shimPids finds the edged-shims whose -state-dir is state.
func shimPids(state string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-state-dir" && args[i+1] == state && strings.HasSuffix(args[0], "edged-shim") {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// idleSpare reports whether the shim pid is the idle spare shim edged
// keeps for the next container (spare_shim): started with -id spare-…,
// and its socket still at that name (an adopted spare's socket is renamed
// to its group's).
func idleSpare(state string, pid int) bool {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	args := strings.Split(string(data), "\x00")
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-id" && strings.HasPrefix(args[i+1], "spare-") {
			_, err := os.Lstat(filepath.Join(state, "s", args[i+1]))
			return err == nil
		}
	}
	return false
}

// killShims kills the shims edged left running (they outlive it).
func killShims(state string) {
	for _, pid := range shimPids(state) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			continue
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
