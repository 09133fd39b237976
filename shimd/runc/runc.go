// Package runc drives an OCI runtime binary with runc's command line (runc or
// crun). Every invocation is started through a Starter so that the shim's
// reaper, not os/exec, collects its exit status.
package runc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/shimd/reaper"
)

// Starter starts a process and delivers its exit on the returned channel.
// *reaper.Reaper implements it.
type Starter interface {
	Start(name string, argv []string, attr *os.ProcAttr) (int, <-chan reaper.Exit, error)
}

// maxOutput bounds how much of a runc invocation's output is kept.
const maxOutput = 64 << 10

// Runc is one runtime binary with one state root.
type Runc struct {
	// Binary is the runtime, a name looked up in PATH or a path ("runc").
	Binary string
	// Root is runc's --root (state of the containers).
	Root string
	// SystemdCgroup passes --systemd-cgroup.
	SystemdCgroup bool
	// Starter runs the invocations.
	Starter Starter

	mu   sync.Mutex
	path string // Binary as found in PATH, once found
}

// CreateOpts are the options of Create.
type CreateOpts struct {
	PidFile       string
	ConsoleSocket string
	// LogFile receives runc's own log (json); its last error is returned.
	LogFile      string
	NoPivot      bool
	NoNewKeyring bool
	// Stdio are the container's stdin, stdout and stderr (nil: /dev/null).
	Stdio [3]*os.File
	// CgroupDirs, if set, are the directories of the container's cgroup,
	// one per hierarchy, which runc is to make: the caller found none of
	// them before runc ran, so whatever is in them is the container's. A
	// runc killed part way leaves them behind (runc 1.1 makes the cgroup
	// before it writes its state, and runs the createRuntime hooks in
	// between: `runc delete --force` then finds no container), and they
	// are removed, their processes killed first. Nil for a cgroup that
	// existed (not the container's alone: it is left as it is) or that the
	// caller could not resolve.
	CgroupDirs []string
}

// ExecOpts are the options of Exec.
type ExecOpts struct {
	PidFile       string
	ConsoleSocket string
	LogFile       string
	Stdio         [3]*os.File
}

// State is the output of `runc state`.
type State struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
	Bundle string `json:"bundle"`
}

// binary returns the runtime's path, looked up once (the lookup's garbage
// stays resident in a shim).
func (r *Runc) binary() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.path != "" {
		return r.path, nil
	}
	b := r.Binary
	if b == "" {
		b = "runc"
	}
	p, err := lookPath(b)
	if err != nil {
		return "", fmt.Errorf("runtime binary %q: %v: %w", b, err, errdefs.ErrFailedPrecondition)
	}
	r.path = p
	return p, nil
}

func (r *Runc) args(logFile string, args ...string) []string {
	a := []string{"--root", r.Root}
	if logFile != "" {
		a = append(a, "--log", logFile, "--log-format", "json")
	}
	if r.SystemdCgroup {
		a = append(a, "--systemd-cgroup")
	}
	return append(a, args...)
}

// run runs the runtime with args and returns its standard output. stdin, if
// not nil, is fed to it. On failure the error carries its standard error.
func (r *Runc) run(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	bin, err := r.binary()
	if err != nil {
		return nil, err
	}
	var closeAfterStart, closeAfterWait []*os.File
	defer func() {
		for _, f := range closeAfterStart {
			f.Close()
		}
		for _, f := range closeAfterWait {
			f.Close()
		}
	}()
	pipe := func() (*os.File, *os.File, error) {
		pr, pw, err := os.Pipe()
		if err == nil {
			closeAfterWait = append(closeAfterWait, pr)
			closeAfterStart = append(closeAfterStart, pw)
		}
		return pr, pw, err
	}
	outR, outW, err := pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := pipe()
	if err != nil {
		return nil, err
	}
	var in, inW *os.File
	if stdin != nil {
		if in, inW, err = os.Pipe(); err != nil {
			return nil, err
		}
		closeAfterStart = append(closeAfterStart, in)
	} else if in, err = os.Open(os.DevNull); err != nil {
		return nil, err
	} else {
		closeAfterStart = append(closeAfterStart, in)
	}
	argv := append([]string{bin}, r.args("", args...)...)
	// A process group of its own, so that a runc (and whatever it started:
	// hooks) outliving the caller's deadline can be killed as a whole.
	pid, exitc, err := r.Starter.Start(bin, argv, &os.ProcAttr{Files: []*os.File{in, outW, errW}, Sys: &syscall.SysProcAttr{Setpgid: true}})
	for _, f := range closeAfterStart {
		f.Close()
	}
	closeAfterStart = nil
	if err != nil {
		if inW != nil {
			inW.Close()
		}
		return nil, fmt.Errorf("%s %s: %w", bin, args[0], err)
	}
	// A runc that hangs (a frozen cgroup, a stuck hook, a slow disk) must
	// not go on after the caller gave up: a pause or kill carried out
	// later would surprise it. Killed when ctx ends, as containerd's
	// go-runc does. No goroutine waits for that (context.AfterFunc).
	w := killAtEnd(ctx, pid)
	if inW != nil {
		go func() {
			_, _ = inW.Write(stdin)
			inW.Close()
		}()
	}
	errc := make(chan []byte, 1)
	go func() { errc <- readBounded(errR) }()
	out := readBounded(outR)
	errOut := <-errc
	e := <-exitc
	if w.killed(e) {
		return out, killedError(ctx, bin, args[0])
	}
	if e.Status != 0 {
		msg := strings.TrimSpace(string(errOut))
		if msg == "" {
			msg = strings.TrimSpace(string(out))
		}
		return out, runError(bin, args[0], e.Status, msg)
	}
	return out, nil
}

// readBounded reads r to EOF, keeping at most maxOutput bytes. It reads
// through one small buffer: io.ReadAll and io.Copy(io.Discard, ...) would
// each take a fresh buffer (io.Discard's is 8 KiB), resident in a shim.
func readBounded(r io.Reader) []byte {
	var out []byte
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		if k := min(n, maxOutput-len(out)); k > 0 {
			out = append(out, buf[:k]...)
		}
		if err != nil {
			return out
		}
	}
}

// killer kills a runc invocation (see killInvocation) when its caller's
// context ends.
type killer struct {
	stop    func() bool
	done    chan struct{} // closed once the kill is over
	outside int           // processes killed outside runc's group; read after done
}

// killAtEnd arranges for the invocation pid (a process group of its own)
// to be killed when ctx ends. No goroutine waits for that
// (context.AfterFunc).
func killAtEnd(ctx context.Context, pid int) *killer {
	k := &killer{done: make(chan struct{})}
	k.stop = context.AfterFunc(ctx, func() {
		defer close(k.done)
		k.outside = killInvocation(pid)
	})
	return k
}

// killed disarms the kill once the invocation's exit e was collected and
// reports whether the kill is what ended it: the caller's deadline is what
// failed then. A runc that exited 0 before the kill landed did its work,
// and says so, unless the kill took a process it had made (a runc that
// was exiting as the kill came: its container is gone).
func (k *killer) killed(e reaper.Exit) bool {
	if k.stop() {
		return false
	}
	<-k.done
	return e.Status != 0 || k.outside > 0
}

// killedError is the error of an invocation killed when ctx ended. It
// wraps ctx.Err() (context.DeadlineExceeded at a deadline).
func killedError(ctx context.Context, bin, cmd string) error {
	return fmt.Errorf("%s %s: killed at the end of the call: %w", bin, cmd, ctx.Err())
}

// CleanupTimeout bounds the removal of a container whose creation failed
// part way (a `runc create` killed at the caller's deadline, a created
// container whose console or pid could not be had): the caller's own
// deadline may be over by then.
const CleanupTimeout = 10 * time.Second

// runDetached runs create/run/exec: its stdio belong to the container, its
// own errors go to logFile. Like run it is killed when ctx ends, in a
// process group of its own, with what it started (hooks, a half-made
// container init or exec process: see killInvocation); killed reports
// that (the error wraps ctx.Err()).
func (r *Runc) runDetached(ctx context.Context, stdio [3]*os.File, logFile string, args ...string) (killed bool, _ error) {
	bin, err := r.binary()
	if err != nil {
		return false, err
	}
	files := make([]*os.File, 3)
	for i, f := range stdio {
		if f == nil {
			if f, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
				return false, err
			}
			defer f.Close()
		}
		files[i] = f
	}
	if logFile != "" {
		_ = os.Remove(logFile)
	}
	if err := ctx.Err(); err != nil {
		// Over before it began: nothing to start, nothing to undo.
		return false, fmt.Errorf("%s %s: %w", bin, args[0], err)
	}
	argv := append([]string{bin}, r.args(logFile, args...)...)
	// The container's init or exec process is not in this group: runc's
	// last `runc init` stage calls setsid (with or without a terminal),
	// so a kill of the group can never reach a container runc made.
	pid, exitc, err := r.Starter.Start(bin, argv, &os.ProcAttr{Files: files, Sys: &syscall.SysProcAttr{Setpgid: true}})
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", bin, args[0], err)
	}
	w := killAtEnd(ctx, pid)
	e := <-exitc
	if w.killed(e) {
		return true, killedError(ctx, bin, args[0])
	}
	if e.Status != 0 {
		return false, runError(bin, args[0], e.Status, lastLogError(logFile))
	}
	return false, nil
}

// runError types a failed invocation by its message.
func runError(bin, cmd string, status int, msg string) error {
	kind := errdefs.ErrUnknown
	low := strings.ToLower(msg)
	switch {
	case strings.Contains(low, "does not exist") || strings.Contains(low, "not found") && strings.Contains(low, "container"):
		kind = errdefs.ErrNotFound
	case strings.Contains(low, "already exists"):
		kind = errdefs.ErrAlreadyExists
	case strings.Contains(low, "not running") || strings.Contains(low, "not paused") ||
		strings.Contains(low, "cannot") || strings.Contains(low, "stopped"):
		kind = errdefs.ErrFailedPrecondition
	}
	if msg == "" {
		msg = "no error message"
	}
	return fmt.Errorf("%s %s: exit status %d: %s: %w", bin, cmd, status, msg, kind)
}

// lastLogError returns the last error message of a runc json log.
func lastLogError(path string) string {
	if path == "" {
		return ""
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	msg := ""
	for _, line := range bytes.Split(data, []byte("\n")) {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(line, &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			msg = e.Msg
		}
	}
	return msg
}

// Create runs `runc create`. When ctx ends first, runc is killed (with its
// hooks and the half-made container's processes) and what it left of the
// container is removed with `runc delete --force`, and o.CgroupDirs; the
// error wraps ctx.Err().
func (r *Runc) Create(ctx context.Context, id, bundle string, o CreateOpts) error {
	return r.create(ctx, id, o, o.args([]string{"create"}, id, bundle))
}

// Run runs `runc run --detach`: create and start in one invocation. The
// container's process runs (and may have exited) when it returns. When ctx
// ends first it is undone as Create's is.
func (r *Runc) Run(ctx context.Context, id, bundle string, o CreateOpts) error {
	return r.create(ctx, id, o, o.args([]string{"run", "--detach"}, id, bundle))
}

// create runs a create or run command line (args) for container id, and
// removes what it left when it was killed at the end of ctx.
func (r *Runc) create(ctx context.Context, id string, o CreateOpts, args []string) error {
	killed, err := r.runDetached(ctx, o.Stdio, o.LogFile, args...)
	if !killed {
		return err
	}
	// runc was killed part way: a state directory (with or without its
	// state), cgroups and a container init it may have made are left.
	// Removed under a deadline of its own: the caller's is over. Without
	// a state, runc delete removes the state directory alone: the cgroup
	// is removed here then (with a state, runc delete did).
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), CleanupTimeout)
	defer cancel()
	derr := r.Delete(dctx, id, true)
	if derr != nil && errdefs.IsNotFound(derr) {
		derr = nil
	}
	if len(o.CgroupDirs) > 0 {
		if cerr := removeHalfMadeCgroup(dctx, o.CgroupDirs); cerr != nil {
			derr = errors.Join(derr, cerr)
		}
	}
	if derr != nil {
		return fmt.Errorf("%w (and the half-made container %q was not removed: %v)", err, id, derr)
	}
	return err
}

// args appends the flags of o, the bundle and id to the command cmd.
func (o CreateOpts) args(cmd []string, id, bundle string) []string {
	args := append(cmd, "--bundle", bundle, "--pid-file", o.PidFile)
	if o.ConsoleSocket != "" {
		args = append(args, "--console-socket", o.ConsoleSocket)
	}
	if o.NoPivot {
		args = append(args, "--no-pivot")
	}
	if o.NoNewKeyring {
		args = append(args, "--no-new-keyring")
	}
	return append(args, id)
}

// Exec runs `runc exec --detach` with the process spec in processFile.
// When ctx ends first, runc is killed, and with it the process it was
// starting; the error wraps ctx.Err().
func (r *Runc) Exec(ctx context.Context, id, processFile string, o ExecOpts) error {
	args := []string{"exec", "--detach", "--process", processFile, "--pid-file", o.PidFile}
	if o.ConsoleSocket != "" {
		args = append(args, "--console-socket", o.ConsoleSocket)
	}
	_, err := r.runDetached(ctx, o.Stdio, o.LogFile, append(args, id)...)
	return err
}

// Start runs `runc start`.
func (r *Runc) Start(ctx context.Context, id string) error {
	_, err := r.run(ctx, nil, "start", id)
	return err
}

// Kill runs `runc kill [--all] id signal`.
func (r *Runc) Kill(ctx context.Context, id string, sig int, all bool) error {
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	_, err := r.run(ctx, nil, append(args, id, strconv.Itoa(sig))...)
	return err
}

// Delete runs `runc delete [--force]`.
func (r *Runc) Delete(ctx context.Context, id string, force bool) error {
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	_, err := r.run(ctx, nil, append(args, id)...)
	return err
}

// Pause runs `runc pause`.
func (r *Runc) Pause(ctx context.Context, id string) error {
	_, err := r.run(ctx, nil, "pause", id)
	return err
}

// Resume runs `runc resume`.
func (r *Runc) Resume(ctx context.Context, id string) error {
	_, err := r.run(ctx, nil, "resume", id)
	return err
}

// Ps returns the pids of the container.
func (r *Runc) Ps(ctx context.Context, id string) ([]int, error) {
	out, err := r.run(ctx, nil, "ps", "--format", "json", id)
	if err != nil {
		return nil, err
	}
	var pids []int
	if err := json.Unmarshal(bytes.TrimSpace(out), &pids); err != nil {
		return nil, fmt.Errorf("runc ps output %q: %v: %w", out, err, errdefs.ErrUnknown)
	}
	return pids, nil
}

// Update runs `runc update --resources -` with resources (LinuxResources JSON).
func (r *Runc) Update(ctx context.Context, id string, resources []byte) error {
	_, err := r.run(ctx, resources, "update", "--resources", "-", id)
	return err
}

// State runs `runc state`.
func (r *Runc) State(ctx context.Context, id string) (*State, error) {
	out, err := r.run(ctx, nil, "state", id)
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("runc state output %q: %v: %w", out, err, errdefs.ErrUnknown)
	}
	return &s, nil
}
