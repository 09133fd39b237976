package runc

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// killInvocation kills a runc started in a process group of its own (pid
// is runc's pid and its group's ID) together with what it started: the
// group (runc, its OCI hooks, the `runc init` stages still in it) and the
// children that left the group. runc's last `runc init` stage calls setsid
// before it becomes the container's init or the exec'd process (runc 1.1,
// with or without a terminal), so a group kill misses it: a half-made init
// or exec would be left, and a frozen one would go on once thawed (an
// exec's program then runs after its Start failed). It is runc's child
// (CLONE_PARENT) while runc lives, and only then can it be told apart from
// the containers the shim reaps, so it is found by its parent before runc
// dies: the group is stopped first (no new child escapes the search), the
// children outside the group are killed, then the group. It returns how
// many processes outside the group were killed: processes that were part
// of a container or exec runc had made, or was making.
func killInvocation(pid int) (outside int) {
	if pid <= 0 { // -0 would be the shim's own group
		return 0
	}
	if syscall.Kill(-pid, syscall.SIGSTOP) != nil {
		// No group left: runc and everything it started in the group
		// are gone. Its children were given to the shim when it exited:
		// a container it made, not to be touched.
		return 0
	}
	for _, c := range childrenOutsideGroup(pid) {
		if syscall.Kill(c, syscall.SIGKILL) == nil {
			outside++
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return outside
}

// childrenOutsideGroup lists the processes whose parent is ppid and whose
// process group is not ppid. While ppid lives (stopped) their pids cannot
// be reused: they are its children, reaped by it alone.
func childrenOutsideGroup(ppid int) []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var out []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid <= 0 {
			continue
		}
		parent, pgrp, ok := procParent(pid)
		if ok && parent == ppid && pgrp != ppid {
			out = append(out, pid)
		}
	}
	return out
}

// procParent reads the parent pid and process group of pid from
// /proc/<pid>/stat.
func procParent(pid int) (ppid, pgrp int, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The fields after the command, which may hold spaces and parentheses:
	// state, ppid, pgrp, ...
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(data[i+1:])
	if len(f) < 3 {
		return 0, 0, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	return ppid, pgrp, err1 == nil && err2 == nil
}
