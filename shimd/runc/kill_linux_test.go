package runc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// alive reports whether pid runs (exists and is no zombie).
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i < 0 || !strings.HasPrefix(string(data[i+1:]), " Z")
}

// waitDead waits (up to 5 s) for pid to stop running.
func waitDead(t *testing.T, pid int, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); alive(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still runs", what, pid)
		}
	}
}

// readPid waits for a pid written to path.
func readPid(t *testing.T, path string) int {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		data, _ := os.ReadFile(path)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 0 {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s", path)
		}
	}
}

// waitSetsid waits for pid to lead a process group of its own.
func waitSetsid(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, pgrp, ok := procParent(pid); ok && pgrp == pid {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not leave its group", pid)
		}
	}
}

// killInvocation kills the group and the children that left it (as runc's
// last `runc init` stage does, with setsid), and nothing that left once
// the invocation was gone: a real shell stands in for runc, setsid(1) for
// its init stage.
func TestKillInvocation(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("needs setsid(1)")
	}
	dir := t.TempDir()
	inner, hook := filepath.Join(dir, "inner"), filepath.Join(dir, "hook")
	cmd := exec.Command("/bin/sh", "-c", "setsid sleep 301 & echo $! >"+inner+"; sleep 302 & echo $! >"+hook+"; wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	innerPid, hookPid := readPid(t, inner), readPid(t, hook)
	defer syscall.Kill(innerPid, syscall.SIGKILL) // left by a failure
	waitSetsid(t, innerPid)
	if n := killInvocation(cmd.Process.Pid); n != 1 {
		t.Errorf("killInvocation killed %d processes outside the group, want 1 (the setsid sleep)", n)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("shell: %v, want killed", err)
	}
	waitDead(t, hookPid, "the group's sleep")
	waitDead(t, innerPid, "the sleep that left the group")

	// A child left behind by an invocation that exited is not its to
	// kill any more (a container runc made): it was given to another
	// parent, and the group is gone.
	cmd = exec.Command("/bin/sh", "-c", "setsid sleep 303 & echo $! >"+inner)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	os.Remove(inner)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	innerPid = readPid(t, inner)
	defer syscall.Kill(innerPid, syscall.SIGKILL)
	waitSetsid(t, innerPid)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := killInvocation(cmd.Process.Pid); n != 0 {
		t.Errorf("killInvocation after the exit killed %d processes", n)
	}
	time.Sleep(50 * time.Millisecond)
	if !alive(innerPid) {
		t.Error("the setsid sleep of an invocation that had exited was killed")
	}
}
