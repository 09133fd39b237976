// Package reaper collects the exit status of every child of the shim.
//
// The shim is a child subreaper: container processes are re-parented to it
// when runc exits. One goroutine reaps every child with wait4(-1, WNOHANG) on
// SIGCHLD. Processes the shim starts itself (runc invocations) are started
// through Reaper.Start, which registers the pid under the same lock the
// dispatcher takes, so their exit is handed to the code that started them and
// never mistaken for a container exit. Every other exit goes to the handler
// given to New.
package reaper

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is one reaped child.
type Exit struct {
	Pid int
	// Status is the exit code, or 128+signal when the process was killed.
	Status int
	// At is when the exit was collected.
	At time.Time
}

// Reaper reaps children and dispatches their exits by pid.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]chan Exit
	onExit  func(Exit)
}

// New returns a Reaper calling onExit (from a single goroutine, in reaping
// order) for every exit no Start caller is waiting for.
func New(onExit func(Exit)) *Reaper {
	return &Reaper{waiters: make(map[int]chan Exit), onExit: onExit}
}

// SetSubreaper makes the calling process a child subreaper, so orphaned
// descendants (container processes once runc exits) become its children.
func SetSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// Run reaps children until ctx is done.
func (r *Reaper) Run(ctx context.Context) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGCHLD)
	defer signal.Stop(sig)
	r.Reap() // children that exited before Notify
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			r.Reap()
		}
	}
}

// Reap collects every child that has exited and dispatches the exits.
func (r *Reaper) Reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none exited
		}
		if !ws.Exited() && !ws.Signaled() {
			continue // stopped/continued: not an exit
		}
		e := Exit{Pid: pid, Status: ExitCode(ws), At: time.Now()}
		r.mu.Lock()
		ch, ok := r.waiters[pid]
		delete(r.waiters, pid)
		r.mu.Unlock()
		if ok {
			ch <- e // buffered
		} else if r.onExit != nil {
			r.onExit(e)
		}
	}
}

// ExitCode converts a wait status to the conventional exit code: the exit
// status, or 128+signal number for a process killed by a signal.
func ExitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// Start starts a process whose exit is delivered on the returned channel
// (buffered, one value) instead of to the onExit handler.
func (r *Reaper) Start(name string, argv []string, attr *os.ProcAttr) (int, <-chan Exit, error) {
	ch := make(chan Exit, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(name, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	pid := p.Pid
	// The reaper, not os.Process, waits for it; release the pidfd now.
	_ = p.Release()
	r.waiters[pid] = ch
	return pid, ch, nil
}
