package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	containersapi "github.com/edged/edged/proto/services/containers/v1"
)

// runFlags are the container options shared by run and containers create.
type runFlags struct {
	env, mounts, labels, capAdd, capDrop, publish stringList
	memory, user, net, cwd, hostname, runtime     string
	rootfs, group, entrypoint, memorySwap, cpuset string
	cpus                                          float64
	pidsLimit                                     int64
	readOnly, tty, privileged, entrypointSet      bool
}

func (f *runFlags) add(fs *flag.FlagSet) {
	fs.Var(&f.env, "env", "environment variable KEY=VALUE (repeatable)")
	fs.Var(&f.env, "e", "short for --env")
	fs.Var(&f.mounts, "mount", "mount type=bind|tmpfs,src=HOST,dst=PATH[,options=ro] (repeatable)")
	fs.Var(&f.labels, "label", "container label KEY=VALUE (repeatable)")
	fs.Var(&f.capAdd, "cap-add", "add a capability (repeatable)")
	fs.Var(&f.capDrop, "cap-drop", "drop a capability (repeatable)")
	fs.Var(&f.publish, "p", "publish HOSTPORT:CONTAINERPORT[/tcp|udp] (needs --net bridge; repeatable)")
	fs.StringVar(&f.memory, "memory", "", "memory limit, e.g. 64m, 1g")
	fs.StringVar(&f.memorySwap, "memory-swap", "", "memory+swap limit (-1: unlimited)")
	fs.Float64Var(&f.cpus, "cpus", 0, "CPU limit, e.g. 0.5")
	fs.StringVar(&f.cpuset, "cpuset-cpus", "", "CPUs the container may use, e.g. 0-1")
	fs.Int64Var(&f.pidsLimit, "pids-limit", 0, "maximum number of processes")
	fs.BoolVar(&f.readOnly, "read-only", false, "mount the root filesystem read-only")
	fs.StringVar(&f.user, "user", "", "user[:group] to run as (names resolved in the image)")
	fs.StringVar(&f.user, "u", "", "short for --user")
	fs.StringVar(&f.net, "net", "", "network: host, none (default), bridge, ns:NAME, container:ID")
	fs.StringVar(&f.cwd, "cwd", "", "working directory")
	fs.StringVar(&f.hostname, "hostname", "", "hostname (default: the container ID)")
	fs.StringVar(&f.runtime, "runtime", "", "runtime, e.g. io.containerd.runc.v2 (default: edged-shim)")
	fs.StringVar(&f.rootfs, "rootfs", "", "run a host directory as the root filesystem instead of an image")
	fs.StringVar(&f.group, "shim-group", "", "share one shim process with the containers of this group")
	fs.Func("entrypoint", "replace the image's entrypoint (\"\" clears it)", func(s string) error {
		f.entrypoint, f.entrypointSet = s, true
		return nil
	})
	fs.BoolVar(&f.privileged, "privileged", false, "all capabilities and devices")
}

// parseSize parses 64m, 1g, 512k or bytes.
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if s == "-1" {
		return -1, nil
	}
	mult := int64(1)
	switch strings.ToLower(s[len(s)-1:]) {
	case "k":
		mult = 1 << 10
	case "m":
		mult = 1 << 20
	case "g":
		mult = 1 << 30
	}
	num := s
	if mult != 1 {
		num = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(strings.ToLower(num), "b"), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want bytes or a number with k, m or g: %w", s, errUsage)
	}
	return n * mult, nil
}

func parseMount(s string) (*containersapi.Mount, error) {
	m := &containersapi.Mount{Type: "bind"}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "type":
			m.Type = v
		case "src", "source":
			m.Source = v
		case "dst", "destination", "target":
			m.Destination = v
		case "options":
			m.Options = append(m.Options, strings.Split(v, ":")...)
		case "ro", "readonly":
			m.Options = append(m.Options, "ro")
		default:
			return nil, fmt.Errorf("mount %q: unknown key %q: %w", s, k, errUsage)
		}
	}
	if m.Destination == "" || (m.Type == "bind" && m.Source == "") {
		return nil, fmt.Errorf("mount %q: needs src= and dst=: %w", s, errUsage)
	}
	return m, nil
}

func parsePublish(s string) (*containersapi.PortMapping, error) {
	spec, proto, _ := strings.Cut(s, "/")
	if proto == "" {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" {
		return nil, fmt.Errorf("-p %q: protocol must be tcp or udp: %w", s, errUsage)
	}
	parts := strings.Split(spec, ":")
	hostIP := ""
	if len(parts) == 3 {
		hostIP, parts = parts[0], parts[1:]
	}
	if len(parts) != 2 {
		return nil, fmt.Errorf("-p %q: want [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]: %w", s, errUsage)
	}
	hp, err1 := strconv.ParseUint(parts[0], 10, 16)
	cp, err2 := strconv.ParseUint(parts[1], 10, 16)
	if err1 != nil || err2 != nil || hp == 0 || cp == 0 {
		return nil, fmt.Errorf("-p %q: ports must be 1-65535: %w", s, errUsage)
	}
	return &containersapi.PortMapping{HostPort: uint32(hp), ContainerPort: uint32(cp), Protocol: proto, HostIp: hostIP}, nil
}

// request builds the CreateFromImage request from flags and arguments:
// IMAGE ID [ARGS...], or ID [ARGS...] with --rootfs.
func (f *runFlags) request(args []string) (*containersapi.CreateFromImageRequest, error) {
	r := &containersapi.CreateFromImageRequest{Options: &containersapi.SpecOptions{}}
	if f.rootfs != "" {
		if len(args) < 1 {
			return nil, fmt.Errorf("with --rootfs, give ID [ARGS...]: %w", errUsage)
		}
		r.RootfsPath, r.Id, args = f.rootfs, args[0], args[1:]
	} else {
		if len(args) < 2 {
			return nil, fmt.Errorf("give IMAGE ID [ARGS...]: %w", errUsage)
		}
		r.Image, r.Id, args = args[0], args[1], args[2:]
	}
	o := r.Options
	o.Args = args
	o.Env = f.env
	o.User, o.Cwd, o.Hostname, o.Network, o.Tty = f.user, f.cwd, f.hostname, f.net, f.tty
	o.ReadOnly, o.Privileged, o.Cpus, o.PidsLimit = f.readOnly, f.privileged, f.cpus, f.pidsLimit
	o.CapAdd, o.CapDrop, o.CpusetCpus = f.capAdd, f.capDrop, f.cpuset
	if f.entrypointSet {
		o.EntrypointSet = true
		if f.entrypoint != "" {
			o.Entrypoint = []string{f.entrypoint}
		}
	}
	var err error
	if o.MemoryLimit, err = parseSize(f.memory); err != nil {
		return nil, err
	}
	if o.MemorySwap, err = parseSize(f.memorySwap); err != nil {
		return nil, err
	}
	for _, m := range f.mounts {
		pm, err := parseMount(m)
		if err != nil {
			return nil, err
		}
		o.Mounts = append(o.Mounts, pm)
	}
	for _, p := range f.publish {
		pm, err := parsePublish(p)
		if err != nil {
			return nil, err
		}
		o.PortMappings = append(o.PortMappings, pm)
	}
	if r.Labels, err = parseLabels(f.labels); err != nil {
		return nil, err
	}
	if f.group != "" {
		r.Labels["edged.io/shim-group"] = f.group
	}
	if f.runtime != "" {
		r.Runtime = &containersapi.Container_Runtime{Name: f.runtime}
	}
	return r, nil
}

func runCommand() *command {
	return &command{
		name: "run", argv: true, usage: "[flags] IMAGE ID [ARGS...]   (or --rootfs DIR ID [ARGS...])",
		help: "create and start a container; in the foreground edgectl exits with the container's exit code (and waits through a restart of edged)",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			var rf runFlags
			rf.add(fs)
			detach := fs.Bool("d", false, "detach: start in the background, output to the container's log")
			rm := fs.Bool("rm", false, "remove the container when it exits (foreground)")
			interactive := fs.Bool("i", false, "keep stdin open")
			fs.BoolVar(&rf.tty, "t", false, "allocate a terminal")
			return func(e *env, args []string) error {
				req, err := rf.request(args)
				if err != nil {
					return err
				}
				if *detach && (*rm || *interactive) {
					return fmt.Errorf("-d cannot be combined with --rm or -i: %w", errUsage)
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				// The container is created in the same call as its task
				// (and removed by edged if the task cannot be created).
				if *detach {
					// Created and started in one call; a failure leaves
					// neither task nor container.
					if _, err := c.CreateTask(e.ctx, req.Id, client.TaskOpts{Start: true, Container: req}); err != nil {
						return err
					}
					if e.format == "json" {
						return writeValue(e.stdout, map[string]string{"id": req.Id})
					}
					fmt.Fprintln(e.stdout, req.Id)
					return nil
				}
				code, err := foreground(e, c, req.Id, "", rf.tty, *interactive, *rm, true, func(ctx context.Context, o client.TaskOpts) (bool, error) {
					o.Container = req
					_, err := c.CreateTask(ctx, req.Id, o)
					return o.Start, err
				})
				if err != nil {
					return err
				}
				return exitCode(code)
			}
		},
	}
}

// exitCode turns a container's exit status into edgectl's.
func exitCode(code uint32) error {
	if code == 0 {
		return nil
	}
	return exitError(int(code))
}

// foreground creates a process with fifos (create), starts it, forwards
// signals and terminal size, waits for it and its output, deletes the
// task (or exec) and, with rmContainer, the container, and returns the
// exit status. create gets options with Start set when the process may be
// started at once (no terminal, whose size must be set first) and reports
// whether it was. The wait and the deletions are one call: edged deletes
// once the process has exited, before it replies. ownsContainer says that
// create makes the container too (run), so that a Ctrl-C during the
// create removes it with the task.
//
// Signals are caught from before the create, so that none is lost between
// edged's reply and the forwarding loop. A SIGINT or SIGTERM while edged
// creates the process does not cut the call short: edgectl cannot tell
// whether edged finished the create before a reply it no longer reads, and
// would report "not started" for a container left running. It lets the
// create finish and removes what it made, so the outcome is the same
// whenever the signal comes. A second one abandons the create, whose
// connection then closes with edgectl's exit and edged undoes it; a
// create that hangs does not hold edgectl.
func foreground(e *env, c *client.Client, id, execID string, tty, interactive, rmContainer, ownsContainer bool, create func(context.Context, client.TaskOpts) (started bool, err error)) (uint32, error) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGWINCH)
	defer signal.Stop(sigs)

	var stdin io.Reader
	if interactive {
		stdin = e.stdin
	}
	stderr := e.stderr
	if tty {
		stderr = nil // a terminal merges stderr into stdout
	}
	fifos, err := client.NewFIFOs(e.ctx, "", stdin, e.stdout, stderr)
	if err != nil {
		return 0, err
	}
	defer fifos.Close()
	what := processName(id, execID)
	// The first SIGINT or SIGTERM cancels e.ctx (interruptContext); the
	// create and start run under ctx, which only a second one cancels.
	ctx, abandon := context.WithCancelCause(context.WithoutCancel(e.ctx))
	defer abandon(nil)
	type createResult struct {
		started bool
		err     error
	}
	created := make(chan createResult, 1)
	go func() {
		started, err := create(ctx, client.TaskOpts{Stdin: fifos.Stdin, Stdout: fifos.Stdout, Stderr: fifos.Stderr, Terminal: tty, Start: !tty})
		created <- createResult{started, err}
	}()
	var (
		stop    os.Signal   // the SIGINT or SIGTERM that came during the create
		pending []os.Signal // other signals that came meanwhile, passed on after the start
		res     createResult
		slow    <-chan time.Time // fires when the create outlasts the signal by stopHint
	)
	for waiting := true; waiting; {
		select {
		case s := <-sigs:
			switch s {
			case syscall.SIGWINCH: // the terminal gets its size before the start
			case syscall.SIGINT, syscall.SIGTERM:
				if stop != nil {
					abandon(interrupted(s.(syscall.Signal)))
				} else {
					slow = time.After(stopHint)
				}
				stop = s
			default:
				pending = append(pending, s)
			}
		case <-slow:
			fmt.Fprintf(e.stderr, "edgectl: %s: waiting for edged to finish creating it, then removing it (%s again to abandon)\n", what, signalKey(stop))
		case res = <-created:
			waiting = false
		}
	}
	cleanup := context.WithoutCancel(e.ctx)
	if res.err != nil {
		if stop != nil && errors.Is(res.err, context.Canceled) {
			// Abandoned: edgectl's exit closes the connection, which
			// cancels the create, and edged undoes it.
			return 0, fmt.Errorf("%s: not started: %w", what, res.err)
		}
		return 0, res.err
	}
	if stop != nil {
		undoCreate(cleanup, c, id, execID, ownsContainer)
		return 0, fmt.Errorf("%s: removed: %w", what, context.Canceled)
	}
	started := res.started
	// The process is driven through cur: when edged restarts during the
	// run, edgectl connects again (see waitAcrossRestarts).
	var mu sync.Mutex
	cur := c
	current := func() *client.Client {
		mu.Lock()
		defer mu.Unlock()
		return cur
	}
	// deleteIt removes what is left when the process could not be started
	// or waited for.
	deleteIt := func() {
		c := current()
		if execID != "" {
			c.DeleteExec(cleanup, id, execID)
			return
		}
		c.DeleteTask(cleanup, id, true)
		if rmContainer {
			c.DeleteContainer(cleanup, id)
		}
	}
	if tty && isTerminal(os.Stdin) {
		if restore, err := rawTerminal(int(os.Stdin.Fd())); err == nil {
			defer restore()
		}
	}
	resize := func() {
		if w, h, ok := windowSize(int(os.Stdout.Fd())); ok {
			current().ResizePty(cleanup, id, execID, w, h)
		}
	}
	// The terminal has its size before the process starts and reads it.
	if tty {
		resize()
	}
	if !started {
		if _, err := c.StartTask(ctx, id, execID); err != nil {
			deleteIt()
			return 0, err
		}
	}
	// Pass on what came during the create; from here on forward signals
	// to the process and keep the terminal size in step.
	for _, s := range pending {
		c.Kill(cleanup, id, execID, uint32(s.(syscall.Signal)), false)
	}

	if done := fifos.StdinDone(); done != nil {
		go func() {
			<-done
			current().CloseStdin(cleanup, id, execID)
		}()
	}
	waitCtx, cancelWait := context.WithCancelCause(context.Background())
	defer cancelWait(nil)
	type result struct {
		st  client.ExitStatus
		err error
	}
	done := make(chan result, 1)
	var reconnecting atomic.Bool
	go func() {
		st, err := waitAcrossRestarts(waitCtx, e, c, id, execID, rmContainer, &reconnecting, func(nc *client.Client) {
			mu.Lock()
			cur = nc
			mu.Unlock()
		})
		done <- result{st, err}
	}()
	defer func() {
		if nc := current(); nc != c { // c is the caller's to close
			nc.Close()
		}
	}()
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGWINCH {
				if tty {
					resize()
				}
				continue
			}
			if reconnecting.Load() && (s == syscall.SIGINT || s == syscall.SIGTERM) {
				// No edged to pass it to: give up waiting instead.
				cancelWait(interrupted(s.(syscall.Signal)))
				continue
			}
			current().Kill(cleanup, id, execID, uint32(s.(syscall.Signal)), false)
		case r := <-done:
			if r.err != nil {
				if !errors.Is(r.err, errdefs.ErrUnavailable) {
					deleteIt()
				}
				return 0, r.err
			}
			waitOutput(fifos)
			return r.st.Code, nil
		}
	}
}

// stopHint is how long a create may outlast a Ctrl-C before edgectl says
// what it is waiting for.
const stopHint = time.Second

// signalKey names how a user sends s again: Ctrl-C for SIGINT.
func signalKey(s os.Signal) string {
	if s == syscall.SIGINT {
		return "Ctrl-C"
	}
	return unix.SignalName(s.(syscall.Signal))
}

// undoCreate removes a process that foreground created after a SIGINT or
// SIGTERM asked it not to run: an exec (created, never started by its
// create) is deleted, a task deleted by force (edged kills it if it
// started) and, when the same call made it, its container removed too.
// Errors are not reported: the interruption is, and what is left is
// visible to `edgectl task ls`.
func undoCreate(ctx context.Context, c *client.Client, id, execID string, ownsContainer bool) {
	if execID != "" {
		c.DeleteExec(ctx, id, execID)
		return
	}
	c.DeleteTask(ctx, id, true)
	if ownsContainer {
		c.DeleteContainer(ctx, id)
	}
}

// processName names a task's process in messages: its ID, or "exec E in
// ID".
func processName(id, execID string) string {
	if execID == "" {
		return id
	}
	return "exec " + execID + " in " + id
}

// defaultReconnect is how long a foreground edgectl waits for edged to
// come back when edged stops or restarts under it (--reconnect).
const defaultReconnect = time.Minute

// drainWait bounds the wait for edged to close the connection after its
// drain ended a wait: edged's shutdown_timeout (10 s) and its wait for the
// calls it cancelled (5 s), with a margin.
const drainWait = 20 * time.Second

// waitAcrossRestarts waits for the process (and deletes it, with
// rmContainer the container too) through c. When edged goes away (a
// restart: its drain ends the wait, or a crash the connection) the process
// keeps running and its output keeps flowing through the fifos, which the
// shim holds, not edged; edgectl then connects again, for up to
// --reconnect, and waits again: edged learns on start of an exit that
// happened while it was down. use gets each new client.
func waitAcrossRestarts(ctx context.Context, e *env, c *client.Client, id, execID string, rmContainer bool, reconnecting *atomic.Bool, use func(*client.Client)) (client.ExitStatus, error) {
	first := c
	for {
		st, err := c.WaitDelete(ctx, id, execID, rmContainer)
		if err == nil || !errors.Is(err, errdefs.ErrUnavailable) || ctx.Err() != nil {
			if c != first && errdefs.IsNotFound(err) {
				// Gone while edged was away: edged carried out our wait
				// and its delete just before it went down, and its reply
				// was lost with the connection (edged keeps no exit status
				// once the process is deleted), or someone deleted it.
				err = fmt.Errorf("%s was deleted while edged was away, so its exit status is lost: %w", processName(id, execID), err)
			}
			return st, err
		}
		// edged going away ends the connection: at once after a crash,
		// within its drain after a SIGTERM. Another Unavailable is an
		// answer.
		if e.reconnect <= 0 {
			return st, err
		}
		select {
		case <-c.Done():
		case <-time.After(drainWait):
			return st, err
		case <-ctx.Done():
			return st, err
		}
		fmt.Fprintf(e.stderr, "edgectl: lost edged (%s); %s keeps running; connecting again for up to %v\n", oneLine(err.Error()), id, e.reconnect)
		reconnecting.Store(true)
		nc, rerr := reconnect(ctx, e)
		reconnecting.Store(false)
		if errors.Is(rerr, context.Canceled) {
			return client.ExitStatus{}, fmt.Errorf("%s keeps running; edgectl stopped waiting for it %w", id, rerr)
		}
		if rerr != nil {
			return client.ExitStatus{}, fmt.Errorf("%s keeps running, but edgectl cannot wait for it: %v: %w", id, rerr, errdefs.ErrUnavailable)
		}
		use(nc)
		if c != first { // first is the caller's to close
			c.Close()
		}
		c = nc
	}
}

// reconnect connects to edged again, trying every 200 ms for up to
// e.reconnect.
func reconnect(ctx context.Context, e *env) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, e.reconnect)
	defer cancel()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		c, err := client.New(ctx, e.address, client.WithNamespace(e.namespace), client.WithTimeout(e.timeout))
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("edged did not come back within %v: %w", e.reconnect, err)
			}
			return nil, fmt.Errorf("while edged was away: %w", context.Cause(ctx))
		case <-t.C:
		}
	}
}

// waitOutput waits for the process's output to be copied, briefly: a
// process that leaves children holding the pipes must not hang edgectl.
func waitOutput(f *client.FIFOs) {
	done := make(chan struct{})
	go func() {
		f.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}

// parseSignal parses KILL, SIGKILL or 9.
func parseSignal(s string) (uint32, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 64 {
			return 0, fmt.Errorf("signal %d: must be 1-64: %w", n, errUsage)
		}
		return uint32(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if n := unix.SignalNum(name); n != 0 {
		return uint32(n), nil
	}
	return 0, fmt.Errorf("unknown signal %q: %w", s, errUsage)
}
