package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edged/edged/hack/bench/measure"
	"github.com/edged/edged/internal/testutil"
)

// recoverySection measures start-up with task recovery (Runtime issue,
// item 5): edged is killed with SIGKILL while 50 containers run, then
// started again; and again after their shims were killed too (as after a
// reboot). The time is from exec to the socket accepting connections:
// edged recovers before it serves.
func recoverySection(ctx context.Context, e *Env) ([]Row, error) {
	if _, err := exec.LookPath("runc"); err != nil {
		return []Row{skipped("recovery", "runc not installed")}, nil
	}
	const n = 50
	dir, err := e.Dir("recovery")
	if err != nil {
		return nil, err
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := testutil.BusyboxRootfs(rootfs); err != nil {
		return nil, err
	}
	edDir := filepath.Join(dir, "edged")
	d, err := measure.StartEdged(ctx, e.Bin("edged"), edDir, e.EdgedEnv)
	if err != nil {
		return nil, err
	}
	edgectl := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, e.Bin("edgectl"), append([]string{"--address", filepath.Join(edDir, "state", "edged.sock")}, args...)...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("edgectl %v: %v: %s", args, err, out)
		}
		return string(out), nil
	}
	cleanup := func() {
		for i := 0; i < n; i++ {
			edgectl("task", "rm", "-f", "rc"+strconv.Itoa(i))
		}
	}
	for i := 0; i < n; i++ {
		if _, err := edgectl("run", "-d", "--rootfs", rootfs, "rc"+strconv.Itoa(i), "sleep", "600"); err != nil {
			d.Stop()
			return nil, err
		}
	}
	pids, err := taskPids(edgectl)
	if err != nil {
		d.Stop()
		return nil, err
	}
	kill := func(d *measure.Daemon) {
		syscall.Kill(d.PID(), syscall.SIGKILL)
		for d.Alive() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	restart := func() (*measure.Daemon, time.Duration, string, error) {
		start := time.Now()
		d, err := measure.StartEdged(ctx, e.Bin("edged"), edDir, e.EdgedEnv)
		if err != nil {
			return nil, 0, "", err
		}
		took := time.Since(start)
		log, _ := os.ReadFile(filepath.Join(edDir, "edged.log"))
		return d, took, recoveryLine(string(log)), nil
	}

	kill(d)
	d, live, liveLog, err := restart()
	if err != nil {
		return nil, err
	}
	if !strings.Contains(liveLog, "reconnected="+strconv.Itoa(n)) {
		d.Stop()
		return nil, fmt.Errorf("recovery did not reconnect %d tasks: %q", n, liveLog)
	}
	// Now as after a reboot: edged, every shim and every container die.
	kill(d)
	for _, pid := range pids {
		if ppid := parentOf(pid); ppid > 1 {
			syscall.Kill(ppid, syscall.SIGKILL)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(300 * time.Millisecond)
	d, dead, deadLog, err := restart()
	if err != nil {
		return nil, err
	}
	defer d.Stop()
	defer cleanup()
	if !strings.Contains(deadLog, "dead="+strconv.Itoa(n)) {
		return nil, fmt.Errorf("recovery did not clean %d dead tasks: %q", n, deadLog)
	}
	return []Row{
		budget("start-up with 50 running containers (kill -9, restart)", float64(live)/float64(time.Millisecond), "ms", "<=", 1000).
			with("", "exec to socket ready; edged: "+liveLog),
		budget("start-up with 50 dead shims (as after a reboot)", float64(dead)/float64(time.Millisecond), "ms", "<=", 2000).
			with("", "exec to socket ready; edged: "+deadLog),
	}, nil
}

var recoveredRE = regexp.MustCompile(`msg="tasks recovered"[^\n]*`)

func recoveryLine(log string) string {
	m := recoveredRE.FindAllString(log, -1)
	if len(m) == 0 {
		return ""
	}
	return strings.TrimPrefix(m[len(m)-1], `msg="tasks recovered" `)
}

func taskPids(edgectl func(...string) (string, error)) ([]int, error) {
	out, err := edgectl("task", "ls")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, line := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if pid, err := strconv.Atoi(f[1]); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}
