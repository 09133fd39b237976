package shimd_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"
	"golang.org/x/sys/unix"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/edged/errdefs/errgrpc"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	eventsapi "github.com/edged/edged/proto/services/events/v1"
	"github.com/edged/edged/proto/services/ttrpcevents/v1"
	"github.com/edged/edged/proto/wire"
	"github.com/edged/edged/shimd"
)

// env is shared by every test: the shim binary, a busybox rootfs and the
// `runc spec` template.
type testEnv struct {
	dir    string
	shim   string
	rootfs string
	spec   []byte
}

var shared testEnv

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv("EDGED_SHIM_OOM_HELPER") != "" {
		return oomHelper()
	}
	if os.Getuid() != 0 {
		fmt.Println("shimd tests need root (runc, mounts)")
		return 0
	}
	dir, err := os.MkdirTemp("", "es-env")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	shared.dir = dir
	shared.shim = filepath.Join(dir, "edged-shim")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	build := exec.Command(goBin, "build", "-o", shared.shim, "github.com/edged/edged/cmd/edged-shim")
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Printf("build edged-shim: %v\n%s", err, out)
		return 1
	}
	if err := buildRootfs(filepath.Join(dir, "rootfs")); err != nil {
		fmt.Println("rootfs:", err)
		return 1
	}
	shared.rootfs = filepath.Join(dir, "rootfs")
	specDir := filepath.Join(dir, "spec")
	os.MkdirAll(specDir, 0o755)
	cmd := exec.Command("runc", "spec", "--bundle", specDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Printf("runc spec: %v %s\n", err, out)
		return 1
	}
	if shared.spec, err = os.ReadFile(filepath.Join(specDir, "config.json")); err != nil {
		panic(err)
	}
	defer removeTestCgroupParent()
	return m.Run()
}

// removeTestCgroupParent removes /edged-shim-test, the parent cgroup of
// the tests' containers, from every hierarchy once the tests have removed
// their own (a non-empty one stays).
func removeTestCgroupParent() {
	mode, err := cgroups.DetectMode(cgroups.DefaultRoot)
	if err != nil {
		return
	}
	bases, _ := cgroups.Hierarchies(cgroups.DefaultRoot, mode)
	for _, base := range bases {
		os.Remove(filepath.Join(base, "edged-shim-test"))
	}
}

// buildRootfs makes a busybox rootfs (Debian busybox-static).
func buildRootfs(root string) error {
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	data, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("busybox-static is required: %w", err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	for _, n := range []string{"sh", "echo", "sleep", "cat", "yes", "head", "true", "false", "ps", "stty", "seq", "dd", "id", "ls"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", n)); err != nil {
			return err
		}
	}
	return nil
}

func randID(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// bundle writes a bundle running args. With rootfsDir "" the shared rootfs
// is used read-only by absolute path; otherwise config.json points at
// <bundle>/rootfs (for rootfs mounts).
func newBundle(t testing.TB, id string, args []string, mountRootfs bool, annotations map[string]string) string {
	t.Helper()
	b, err := os.MkdirTemp("", "es-b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Unmount(filepath.Join(b, "rootfs"), unix.MNT_DETACH)
		os.RemoveAll(b)
	})
	var spec map[string]any
	if err := json.Unmarshal(shared.spec, &spec); err != nil {
		t.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["args"] = args
	proc["terminal"] = false
	if mountRootfs {
		spec["root"] = map[string]any{"path": "rootfs", "readonly": false}
	} else {
		spec["root"] = map[string]any{"path": shared.rootfs, "readonly": true}
	}
	linux := spec["linux"].(map[string]any)
	linux["cgroupsPath"] = "/edged-shim-test/" + id
	if annotations != nil {
		spec["annotations"] = annotations
	}
	data, _ := json.MarshalIndent(spec, "", " ")
	if err := os.WriteFile(filepath.Join(b, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// shimProc is a running edged-shim started the way edged starts it.
type shimProc struct {
	t      testing.TB
	state  string
	socket string
	cmd    *exec.Cmd
	done   chan struct{}
	conn   net.Conn
	rpc    *ttrpc.Client
	task   taskapi.TaskService
}

// startShim creates the socket under <state>/s/, passes it as fd 3 with
// LISTEN_FDS=1 and TTRPC_ADDRESS, and connects a task client.
func startShim(t testing.TB, ttrpcAddress string) *shimProc {
	t.Helper()
	state, err := os.MkdirTemp("", "es-st")
	if err != nil {
		t.Fatal(err)
	}
	id := randID("shim")
	sock := filepath.Join(state, "s", id)
	l, err := shimd.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	cmd := exec.Command(shared.shim, "-namespace", "test", "-id", id, "-address", filepath.Join(state, "edged.sock"), "-debug")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "TTRPC_ADDRESS="+ttrpcAddress)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	s := &shimProc{t: t, state: state, socket: sock, cmd: cmd, done: make(chan struct{})}
	logf, err := os.Create(filepath.Join(state, "shim.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	f.Close()
	go func() { cmd.Wait(); close(s.done) }()
	s.connect()
	t.Cleanup(func() {
		s.rpc.Close()
		// Kill whatever the test left running, then the shim.
		out, _ := exec.Command("runc", "--root", filepath.Join(state, "runc", "test"), "list", "-q").Output()
		for _, c := range strings.Fields(string(out)) {
			exec.Command("runc", "--root", filepath.Join(state, "runc", "test"), "delete", "--force", c).Run()
		}
		cmd.Process.Kill()
		<-s.done
		if t.Failed() {
			data, _ := os.ReadFile(filepath.Join(state, "shim.log"))
			t.Logf("shim stderr:\n%s", data)
		}
		os.RemoveAll(state)
	})
	return s
}

func (s *shimProc) connect() {
	conn, err := net.Dial("unix", s.socket)
	if err != nil {
		s.t.Fatal(err)
	}
	s.conn = conn
	s.rpc = ttrpc.NewClient(conn)
	s.task = taskapi.NewTaskClient(wire.Client(s.rpc))
}

func (s *shimProc) pid() int { return s.cmd.Process.Pid }

// exited reports whether the shim process ended within d.
func (s *shimProc) exited(d time.Duration) bool {
	select {
	case <-s.done:
		return true
	case <-time.After(d):
		return false
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// fifo creates a fifo and opens its read side (as a client does before
// Create).
func fifo(t testing.TB, dir, name string) (string, *os.File) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return p, f
}

// readAll reads r until EOF or the deadline.
func readAll(t *testing.T, f *os.File, d time.Duration) string {
	t.Helper()
	f.SetReadDeadline(time.Now().Add(d))
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read output: %v (got %q)", err, data)
	}
	return string(data)
}

// wantErr checks the error kind after the ttrpc round trip and a message
// substring.
func wantErr(t *testing.T, err error, kind error, substr string) {
	t.Helper()
	err = errgrpc.FromGRPC(err)
	if !errors.Is(err, kind) {
		t.Fatalf("error %v: want kind %v", err, kind)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q: want it to mention %q", err, substr)
	}
}

// eventServer is a real ttrpc server implementing the events Forward
// service, like edged's.
type eventServer struct {
	mu     sync.Mutex
	events []*eventsapi.Envelope
	notify chan struct{}
	srv    *ttrpc.Server
	path   string
}

func (e *eventServer) Forward(ctx context.Context, req *ttrpcevents.ForwardRequest) (*types.Empty, error) {
	e.mu.Lock()
	e.events = append(e.events, req.Envelope)
	e.mu.Unlock()
	select {
	case e.notify <- struct{}{}:
	default:
	}
	return &types.Empty{}, nil
}

func (e *eventServer) ForwardBatch(ctx context.Context, req *ttrpcevents.ForwardBatchRequest) (*types.Empty, error) {
	e.mu.Lock()
	e.events = append(e.events, req.Envelopes...)
	e.mu.Unlock()
	select {
	case e.notify <- struct{}{}:
	default:
	}
	return &types.Empty{}, nil
}

func newEventServer(t *testing.T, path string) *eventServer {
	t.Helper()
	if path == "" {
		dir, err := os.MkdirTemp("", "es-ev")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		path = filepath.Join(dir, "events.sock")
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	e := &eventServer{notify: make(chan struct{}, 1), srv: srv, path: path}
	ttrpcevents.RegisterEventsService(wire.Server(srv), e)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	t.Cleanup(func() { srv.Close() })
	return e
}

// topics returns the topics received for container id (all when id "").
func (e *eventServer) topics(id string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.events {
		if id == "" || strings.Contains(string(ev.Event.Value), id) {
			out = append(out, ev.Topic)
		}
	}
	return out
}

// waitTopics waits until the events for id are want.
func (e *eventServer) waitTopics(t *testing.T, id string, want []string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		got := e.topics(id)
		if strings.Join(got, " ") == strings.Join(want, " ") {
			return
		}
		if len(got) > len(want) {
			t.Fatalf("events for %s: got %v, want %v", id, got, want)
		}
		select {
		case <-e.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("events for %s: got %v, want %v", id, e.topics(id), want)
		}
	}
}

// newTestCgroup creates the cgroup path, removed at the end of the test
// (after killing what is left in it).
func newTestCgroup(t *testing.T, mode cgroups.Mode, path string) cgroups.Manager {
	t.Helper()
	cg, err := cgroups.New("", mode, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cg.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if pids, err := cg.Procs(); err == nil {
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		if err := cg.Delete(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return cg
}
