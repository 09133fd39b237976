package shimd_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"

	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	"github.com/edged/edged/proto/services/ttrpcevents/v1"
	"github.com/edged/edged/proto/wire"
	"github.com/edged/edged/shimd"
)

// smapsRollup returns the private (USS) and proportional (PSS) memory of pid
// in KiB.
func smapsRollup(pid int) (uss, pss, dirty int, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		n, _ := strconv.Atoi(fields[1])
		switch fields[0] {
		case "Private_Clean:":
			uss += n
		case "Private_Dirty:":
			uss += n
		case "Anonymous:":
			dirty += n
		case "Pss:":
			pss += n
		}
	}
	return uss, pss, dirty, sc.Err()
}

// BenchmarkShimMemory measures one shim's memory hosting n running
// containers (sleep, stdout+stderr to a rotated file:// log) and reports
// USS and PSS per container. Run with -benchtime=1x:
//
//	go test ./shimd -run '^$' -bench ShimMemory -benchtime=1x
func BenchmarkShimMemory(b *testing.B) {
	for _, n := range []int{0, 1, 10, 50} {
		b.Run(fmt.Sprintf("containers=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				measureShim(b, n, false)
			}
		})
	}
	b.Run("containers=10/fifo", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			measureShim(b, 10, true)
		}
	})
}

func measureShim(b *testing.B, n int, fifos bool) {
	s := startShim(b, "/nonexistent/events.sock")
	for i := 0; i < n; i++ {
		id := randID("mem")
		bundle := newBundle(b, id, []string{"sleep", "1000"}, false, nil)
		req := &taskapi.CreateTaskRequest{Id: id, Bundle: bundle}
		if fifos {
			out, _ := fifo(b, bundle, "stdout")
			errp, _ := fifo(b, bundle, "stderr")
			req.Stdout, req.Stderr = out, errp
		} else {
			uri := "file://" + filepath.Join(bundle, "log")
			req.Stdout, req.Stderr = uri, uri
		}
		if _, err := s.task.Create(ctxT(b, 30*time.Second), req); err != nil {
			b.Fatal(err)
		}
		if _, err := s.task.Start(ctxT(b, 30*time.Second), &taskapi.StartRequest{Id: id}); err != nil {
			b.Fatal(err)
		}
	}
	// Let the shim settle: its trim (2s after the last call) and the Go
	// scavenger return freed heap, the idle event connection closes.
	time.Sleep(10 * time.Second)
	runtime.Gosched()
	uss, pss, dirty, err := smapsRollup(s.pid())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(uss), "USS-KiB")
	b.ReportMetric(float64(pss), "PSS-KiB")
	// Anonymous memory is what stays private when many shims share the
	// binary's pages (a single shim's USS also counts its text, ~5.6 MiB).
	b.ReportMetric(float64(dirty), "Anon-KiB")
	if n > 0 {
		b.ReportMetric(float64(dirty)/float64(n), "Anon-KiB/container")
	}
	if n > 0 {
		b.ReportMetric(float64(uss)/float64(n), "USS-KiB/container")
		b.ReportMetric(float64(pss)/float64(n), "PSS-KiB/container")
	}
	threads, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", s.pid()))
	b.ReportMetric(float64(len(threads)), "threads")
}

// Budgets of the Runtime issue (KiB).
const (
	budgetShimPSS       = 1229 // 1.2 MiB per shim, 50 containers one shim each
	budgetShimUSS       = 1024 // 1.0 MiB
	budgetGroupAddedKiB = 307  // 0.3 MiB per container added to a shim
)

// settleShims is how long the shims idle before they are measured: past
// their trim (2 s after the last call) and the publisher's idle close (10 s).
const settleShims = 13 * time.Second

// BenchmarkShimFleet measures edged-shims started exactly as edged starts
// them (socket as fd 3, LISTEN_FDS=1, -namespace -id -address -state-dir,
// TTRPC_ADDRESS serving events), each hosting running busybox `sleep`
// containers with file:// logs:
//
//   - one-per-container: 50 containers, one shim each; per-shim PSS and USS
//     (average and maximum) against 1.2 / 1.0 MiB.
//   - grouped: one shim with 1, then 50 containers; the memory each added
//     container costs against 0.3 MiB.
//
// Run with -benchtime=1x (each takes about 40 s):
//
//	go test ./shimd -run '^$' -bench ShimFleet -benchtime=1x
func BenchmarkShimFleet(b *testing.B) {
	const n = 50
	b.Run(fmt.Sprintf("one-per-container/containers=%d", n), func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			f := newFleet(b)
			for c := 0; c < n; c++ {
				id := fmt.Sprintf("f%d", c)
				f.run(f.start(id), id)
			}
			time.Sleep(settleShims)
			var sum, max shimMemory
			for _, s := range f.shims {
				m := readShimMemory(b, s.cmd.Process.Pid)
				sum.add(m)
				max.max(m)
			}
			k := float64(len(f.shims))
			b.ReportMetric(float64(sum.pss)/k, "PSS-KiB/shim")
			b.ReportMetric(float64(max.pss), "PSS-KiB-max")
			b.ReportMetric(float64(sum.uss)/k, "USS-KiB/shim")
			b.ReportMetric(float64(max.uss), "USS-KiB-max")
			b.ReportMetric(float64(sum.anon)/k, "Anon-KiB/shim")
			b.ReportMetric(float64(sum.threads)/k, "threads/shim")
			b.ReportMetric(float64(sum.pss)/1024, "PSS-MiB-total")
			if avg := float64(sum.pss) / k; avg > budgetShimPSS {
				b.Logf("over budget: PSS %.0f KiB per shim > %d KiB", avg, budgetShimPSS)
			}
			if avg := float64(sum.uss) / k; avg > budgetShimUSS {
				b.Logf("over budget: USS %.0f KiB per shim > %d KiB", avg, budgetShimUSS)
			}
			f.stop()
		}
	})
	b.Run(fmt.Sprintf("grouped/containers=%d", n), func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			f := newFleet(b)
			s := f.start("group")
			f.run(s, "g0")
			time.Sleep(settleShims)
			one := readShimMemory(b, s.cmd.Process.Pid)
			for c := 1; c < n; c++ {
				f.run(s, fmt.Sprintf("g%d", c))
			}
			time.Sleep(settleShims)
			all := readShimMemory(b, s.cmd.Process.Pid)
			added := float64(all.pss-one.pss) / float64(n-1)
			b.ReportMetric(float64(one.pss), "PSS-KiB-1")
			b.ReportMetric(float64(all.pss), "PSS-KiB-50")
			b.ReportMetric(added, "PSS-KiB/added")
			b.ReportMetric(float64(all.uss-one.uss)/float64(n-1), "USS-KiB/added")
			b.ReportMetric(float64(all.pss)/float64(n), "PSS-KiB/container")
			b.ReportMetric(float64(all.threads), "threads")
			if added > budgetGroupAddedKiB {
				b.Logf("over budget: %.0f KiB per added container > %d KiB", added, budgetGroupAddedKiB)
			}
			f.stop()
		}
	})
}

type shimMemory struct{ pss, uss, anon, threads int }

func (m *shimMemory) add(o shimMemory) {
	m.pss += o.pss
	m.uss += o.uss
	m.anon += o.anon
	m.threads += o.threads
}

func (m *shimMemory) max(o shimMemory) {
	m.pss, m.uss, m.anon, m.threads = max(m.pss, o.pss), max(m.uss, o.uss), max(m.anon, o.anon), max(m.threads, o.threads)
}

func readShimMemory(b *testing.B, pid int) shimMemory {
	b.Helper()
	uss, pss, anon, err := smapsRollup(pid)
	if err != nil {
		b.Fatal(err)
	}
	threads, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		b.Fatal(err)
	}
	return shimMemory{pss: pss, uss: uss, anon: anon, threads: len(threads)}
}

// fleet is a set of shims sharing one state directory and one events
// socket, like the shims of one edged.
type fleet struct {
	b      *testing.B
	state  string
	events string
	srv    *ttrpc.Server
	shims  []*fleetShim
}

type fleetShim struct {
	cmd  *exec.Cmd
	rpc  *ttrpc.Client
	task taskapi.TaskService
}

// acceptEvents is the daemon's events service: it accepts every event.
type acceptEvents struct{}

func (acceptEvents) Forward(context.Context, *ttrpcevents.ForwardRequest) (*types.Empty, error) {
	return &types.Empty{}, nil
}

func (acceptEvents) ForwardBatch(context.Context, *ttrpcevents.ForwardBatchRequest) (*types.Empty, error) {
	return &types.Empty{}, nil
}

func newFleet(b *testing.B) *fleet {
	b.Helper()
	state, err := os.MkdirTemp("", "es-fleet")
	if err != nil {
		b.Fatal(err)
	}
	f := &fleet{b: b, state: state, events: filepath.Join(state, "edged.sock")}
	l, err := net.Listen("unix", f.events)
	if err != nil {
		b.Fatal(err)
	}
	if f.srv, err = ttrpc.NewServer(); err != nil {
		b.Fatal(err)
	}
	ttrpcevents.RegisterEventsService(wire.Server(f.srv), acceptEvents{})
	go f.srv.Serve(context.Background(), l)
	b.Cleanup(f.stop)
	return f
}

// start starts the shim of group the way edged/runtime does.
func (f *fleet) start(group string) *fleetShim {
	f.b.Helper()
	path := shimd.SocketPath(filepath.Join(f.state, "s"), f.events, "bench", group)
	l, err := shimd.Listen(path)
	if err != nil {
		f.b.Fatal(err)
	}
	file, err := l.File()
	l.Close()
	if err != nil {
		f.b.Fatal(err)
	}
	defer file.Close()
	logf, err := os.Create(path + ".log")
	if err != nil {
		f.b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(shared.shim, "-namespace", "bench", "-id", group, "-address", f.events, "-state-dir", f.state)
	cmd.ExtraFiles = []*os.File{file}
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "TTRPC_ADDRESS="+f.events)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		f.b.Fatal(err)
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		f.b.Fatal(err)
	}
	rpc := ttrpc.NewClient(conn)
	s := &fleetShim{cmd: cmd, rpc: rpc, task: taskapi.NewTaskClient(wire.Client(rpc))}
	f.shims = append(f.shims, s)
	return s
}

// run creates and starts a `sleep` container in shim s, and leaves a Wait
// call pending as edged does.
func (f *fleet) run(s *fleetShim, id string) {
	f.b.Helper()
	bundle := newBundle(f.b, id+"-"+randID("b"), []string{"sleep", "100000"}, false, nil)
	logURI := "file://" + filepath.Join(bundle, "log") + "?max-size=1048576&max-files=2"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: bundle, Stdout: logURI, Stderr: logURI}); err != nil {
		f.b.Fatal(err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
		f.b.Fatal(err)
	}
	go s.task.Wait(context.Background(), &taskapi.WaitRequest{Id: id})
}

// stop removes every container and shim of the fleet.
func (f *fleet) stop() {
	if f.state == "" {
		return
	}
	root := filepath.Join(f.state, "runc", "bench")
	out, _ := exec.Command("runc", "--root", root, "list", "-q").Output()
	for _, c := range strings.Fields(string(out)) {
		exec.Command("runc", "--root", root, "delete", "--force", c).Run()
	}
	for _, s := range f.shims {
		s.rpc.Close()
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
	f.shims = nil
	f.srv.Close()
	os.RemoveAll(f.state)
	f.state = ""
}
