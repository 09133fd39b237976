package cgroups

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv makes the test binary act as a workload process (see childMain),
// so the tests need no other program and no Go toolchain at run time.
const childEnv = "EDGED_CGROUPS_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		childMain()
		return
	}
	os.Exit(m.Run())
}

// childMain waits for a line on stdin (sent once the parent moved it into
// its cgroup), touches EDGED_CHILD_MB MiB, prints "ready" and then burns
// CPU ("burn") or sleeps.
func childMain() {
	bufio.NewReader(os.Stdin).ReadString('\n')
	mb, _ := strconv.Atoi(os.Getenv("EDGED_CHILD_MB"))
	mem := make([]byte, mb<<20)
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = 1
	}
	fmt.Println("ready")
	if os.Getenv(childEnv) == "burn" {
		x := 0
		for {
			x++
			if x == -1 {
				fmt.Println(mem[0])
			}
		}
	}
	time.Sleep(time.Hour)
}

// child is a running workload process in a cgroup.
type child struct {
	cmd *exec.Cmd
	in  *os.File
}

// startChild starts the workload, moves it into m, lets it allocate mb MiB
// and waits until it has.
func startChild(t *testing.T, m Manager, mode string, mb int) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+mode, "EDGED_CHILD_MB="+strconv.Itoa(mb))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if err := m.AddProc(cmd.Process.Pid); err != nil {
		t.Fatalf("AddProc: %v", err)
	}
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	return &child{cmd: cmd, in: in.(*os.File)}
}

// hostMode skips unless running as root on a host with cgroups.
func hostMode(t testing.TB) Mode {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	mode, err := DetectMode("")
	if err != nil {
		t.Skipf("no cgroups on this host: %v", err)
	}
	return mode
}

// needV1 skips unless the host uses cgroup v1 controllers.
func needV1(t testing.TB) Mode {
	t.Helper()
	mode := hostMode(t)
	if mode != Legacy && mode != Hybrid {
		t.Skipf("cgroup v1 test; this host is %v (runs on a v1/hybrid host)", mode)
	}
	return mode
}

// needV2 skips unless the host is unified.
func needV2(t testing.TB) Mode {
	t.Helper()
	mode := hostMode(t)
	if mode != Unified {
		t.Skipf("cgroup v2 test; this host is %v (runs under `make test-vm`)", mode)
	}
	return mode
}

func randHex(t testing.TB) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// newCgroup creates /edged-test-<rand>/<name> and removes it (killing what
// is left in it) when the test ends.
func newCgroup(t testing.TB, mode Mode, name string) Manager {
	t.Helper()
	parent := "/edged-test-" + randHex(t)
	m, err := New("", mode, parent+"/"+name)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if pids, err := m.Procs(); err == nil {
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Delete(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		pm, _ := New("", mode, parent)
		if err := pm.Delete(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return m
}

// readFile returns a cgroup file of controller ctrl, trimmed.
func readFile(t testing.TB, m Manager, ctrl, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.Dir(ctrl), name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// blockDevice returns "major:minor" of a block device of this machine,
// preferring real disks to loop devices.
func blockDevice(t testing.TB) (int64, int64, bool) {
	t.Helper()
	ents, _ := os.ReadDir("/sys/block")
	var best string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "dev"))
		if err != nil {
			continue
		}
		dev := strings.TrimSpace(string(b))
		if best == "" || !strings.HasPrefix(e.Name(), "loop") && !strings.HasPrefix(e.Name(), "zram") {
			best = dev
		}
	}
	if best == "" {
		return 0, 0, false
	}
	ma, mi, _ := strings.Cut(best, ":")
	a, _ := strconv.ParseInt(ma, 10, 64)
	b, _ := strconv.ParseInt(mi, 10, 64)
	return a, b, true
}

func ptr[T any](v T) *T { return &v }
