// Package reaper collects the exit status of every child of the shim.
//
// The shim is a child subreaper: container processes are re-parented to it
// when runc exits. One goroutine reaps every child with a blocking
// wait4(-1). Processes the shim starts itself (runc invocations) are started
// through Reaper.Start, which registers the pid under the same lock the
// dispatcher takes, so their exit is handed to the code that started them and
// never mistaken for a container exit. Every other exit goes to the handler
// given to New.
package reaper

import (
	"context"
	"errors"
	"os"
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
	started chan struct{} // Start started a process (wakes an idle Run)
}

// New returns a Reaper calling onExit (from a single goroutine, in reaping
// order) for every exit no Start caller is waiting for.
func New(onExit func(Exit)) *Reaper {
	return &Reaper{waiters: make(map[int]chan Exit), onExit: onExit, started: make(chan struct{}, 1)}
}

// SetSubreaper makes the calling process a child subreaper, so orphaned
// descendants (container processes once runc exits) become its children.
func SetSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// Run reaps children until ctx is done: it waits for them in a blocking
// wait4, so that an exit is dispatched at once and the shim needs no signal
// handling (os/signal costs every shim two threads and a locked one). While
// the process has no children it waits for Start, or polls with a growing
// interval for children started otherwise. Run returns once ctx is done and
// no child is left to wait for.
func (r *Reaper) Run(ctx context.Context) {
	idle := minIdlePoll
	for ctx.Err() == nil {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil: // ECHILD: no children
			t := time.NewTimer(idle)
			select {
			case <-ctx.Done():
			case <-r.started:
				idle = minIdlePoll
			case <-t.C:
				idle = min(2*idle, maxIdlePoll)
			}
			t.Stop()
			continue
		}
		idle = minIdlePoll
		if ws.Exited() || ws.Signaled() {
			r.dispatch(Exit{Pid: pid, Status: ExitCode(ws), At: time.Now()})
		}
	}
}

// The polling interval of Run while the process has no children.
const (
	minIdlePoll = 10 * time.Millisecond
	maxIdlePoll = time.Minute
)

// Reap collects, without blocking, every child that has exited and
// dispatches the exits.
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
		r.dispatch(Exit{Pid: pid, Status: ExitCode(ws), At: time.Now()})
	}
}

// dispatch hands e to the Start caller waiting for it, else to onExit.
func (r *Reaper) dispatch(e Exit) {
	r.mu.Lock()
	ch, ok := r.waiters[e.Pid]
	delete(r.waiters, e.Pid)
	r.mu.Unlock()
	if ok {
		ch <- e // buffered
	} else if r.onExit != nil {
		r.onExit(e)
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
	select {
	case r.started <- struct{}{}:
	default:
	}
	return pid, ch, nil
}
