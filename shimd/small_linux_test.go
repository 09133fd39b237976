package shimd_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"

	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	"github.com/edged/edged/proto/wire"
	"github.com/edged/edged/shimd"
)

func TestServeEnv(t *testing.T) {
	in := []string{"PATH=/bin", "GOMAXPROCS=", shimd.OneProcEnv + "=stale", "HOME=/root"}
	got := shimd.ServeEnv(in)
	want := []string{"PATH=/bin", "HOME=/root", "GOMAXPROCS=1", shimd.OneProcEnv + "=1"}
	if !slices.Equal(got, want) {
		t.Fatalf("ServeEnv(%q) = %q, want %q", in, got, want)
	}
	if in[1] != "GOMAXPROCS=" || in[2] != shimd.OneProcEnv+"=stale" {
		t.Fatalf("ServeEnv modified its input: %q", in)
	}
	set := []string{"PATH=/bin", "GOMAXPROCS=3"}
	if got := shimd.ServeEnv(set); !slices.Equal(got, set) {
		t.Fatalf("ServeEnv(%q) = %q: an explicit GOMAXPROCS must be kept as is", set, got)
	}
}

// environOf returns the environment pid was executed with.
func environOf(t *testing.T, pid int) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(bytesToStrings(data), func(s string) bool { return s == "" })
}

func bytesToStrings(b []byte) []string {
	var out []string
	for _, f := range bytes.Split(b, []byte{0}) {
		out = append(out, string(f))
	}
	return out
}

// A shim started without GOMAXPROCS executes itself again with one P (same
// pid: the caller's handle and LISTEN_PID stay valid) and keeps serving; an
// explicit GOMAXPROCS is the caller's choice and is left alone.
func TestShimRunsWithOneP(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		s := startShim(t, "/nonexistent/events.sock")
		resp, err := s.task.Connect(ctxT(t, 10*time.Second), &taskapi.ConnectRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if int(resp.ShimPid) != s.cmd.Process.Pid {
			t.Fatalf("shim pid %d, started %d", resp.ShimPid, s.cmd.Process.Pid)
		}
		env := environOf(t, s.cmd.Process.Pid)
		if !slices.Contains(env, "GOMAXPROCS=1") || !slices.Contains(env, shimd.OneProcEnv+"=1") {
			t.Fatalf("the shim did not execute itself with one P: environ %q", env)
		}
	})
	t.Run("explicit", func(t *testing.T) {
		t.Setenv("GOMAXPROCS", "2")
		s := startShim(t, "/nonexistent/events.sock")
		if _, err := s.task.Connect(ctxT(t, 10*time.Second), &taskapi.ConnectRequest{}); err != nil {
			t.Fatal(err)
		}
		env := environOf(t, s.cmd.Process.Pid)
		if slices.Contains(env, shimd.OneProcEnv+"=1") || !slices.Contains(env, "GOMAXPROCS=2") {
			t.Fatalf("an explicit GOMAXPROCS was overridden: environ %q", env)
		}
	})
}

// The shim handles no signals: its log must not kill it when the log's
// reader is gone (a write to fd 2 would raise SIGPIPE).
func TestShimSurvivesVanishedLogReader(t *testing.T) {
	state := t.TempDir()
	sock := filepath.Join(state, "s", "shim")
	l, err := shimd.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.File()
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // no reader: every log write meets a broken pipe
	defer w.Close()
	cmd := exec.Command(shared.shim, "-namespace", "test", "-id", "sigpipe", "-address", filepath.Join(state, "edged.sock"), "-debug")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "TTRPC_ADDRESS=/nonexistent/events.sock")
	cmd.Stderr = w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	rpc := ttrpc.NewClient(conn)
	defer rpc.Close()
	task := taskapi.NewTaskClient(wire.Client(rpc))
	for i := 0; i < 3; i++ { // each call logs at debug level
		_, err := task.State(ctxT(t, 10*time.Second), &taskapi.StateRequest{Id: "missing"})
		if err == nil {
			t.Fatal("State of a missing container succeeded")
		}
	}
	time.Sleep(200 * time.Millisecond) // past the start-up log line
	if _, err := task.Connect(ctxT(t, 10*time.Second), &taskapi.ConnectRequest{}); err != nil {
		t.Fatalf("shim gone after writing its log to a broken pipe: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("shim exited: %v", err)
	default:
	}
}
