// The shim runs with one P (see startWithOneP): the runtime's goroutine that
// would follow cgroup CPU limit changes (and sysmon's polling for them)
// has nothing to do in it, and its stack and the polling cost every shim.
//
//go:debug updatemaxprocs=0

// Command edged-shim is the edged runtime shim: it serves containerd's
// runtime v2 task API over ttrpc for one or more containers and drives runc.
//
// Started by edged:
//
//	edged-shim -namespace NS -id ID -address EDGED_SOCKET
//
// with the listening socket as fd 3 (LISTEN_FDS=1) and TTRPC_ADDRESS set.
// Installed as containerd-shim-edged-v2 it also implements containerd's
// `start` and `delete` subcommands.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/shimd"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		namespace     = flag.String("namespace", "", "namespace that owns the shim")
		id            = flag.String("id", "", "id of the task")
		address       = flag.String("address", "", "address of the daemon (edged or containerd)")
		publishBinary = flag.String("publish-binary", "", "ignored: events go over ttrpc to TTRPC_ADDRESS")
		bundle        = flag.String("bundle", "", "path to the bundle if not the working directory")
		socket        = flag.String("socket", "", "socket path to serve (default: the socket passed as fd 3)")
		stateDir      = flag.String("state-dir", "", "state directory: runc root is <state-dir>/runc/<namespace>, start creates sockets in <state-dir>/s (default: derived from the socket, /run/containerd)")
		debugFlag     = flag.Bool("debug", false, "enable debug output in logs")
		version       = flag.Bool("v", false, "show the shim version and exit")
	)
	flag.Parse()
	if *version {
		fmt.Println(shimd.Version)
		return 0
	}
	level := slog.LevelInfo
	if *debugFlag {
		level = slog.LevelDebug
	}
	ctx := context.Background()
	if *bundle == "" {
		*bundle, _ = os.Getwd()
	}
	switch action := flag.Arg(0); action {
	case "start":
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
		sockDir := ""
		if *stateDir != "" {
			sockDir = filepath.Join(*stateDir, "s")
		}
		addr, err := shimd.StartShim(ctx, shimd.StartOptions{
			Namespace: *namespace, ID: *id, Address: *address,
			TTRPCAddress: os.Getenv("TTRPC_ADDRESS"), PublishBinary: *publishBinary,
			Debug: *debugFlag, Bundle: *bundle, SocketDir: sockDir,
		})
		if err != nil {
			log.Error("start", "error", err)
			return 1
		}
		fmt.Print(addr)
		return 0
	case "delete":
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
		sd := *stateDir
		if sd == "" {
			sd = filepath.Dir(shimd.DefaultSocketDir)
		}
		resp, err := shimd.DeleteBundle(ctx, *bundle, *namespace, *id, sd)
		if err != nil {
			log.Warn("delete", "error", err)
		}
		data, merr := resp.Marshal()
		if merr != nil {
			log.Error("delete", "error", merr)
			return 1
		}
		_, _ = os.Stdout.Write(data)
		return 0
	case "":
	default:
		fmt.Fprintf(os.Stderr, "edged-shim: unknown action %q (want start, delete or none)\n", action)
		return 2
	}

	// The long-lived shim: keep it small.
	startWithOneP()
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(24 << 20)
	}
	openContainerdLog()
	log := slog.New(slog.NewTextHandler(logOutput(), &slog.HandlerOptions{Level: level})).With("shim", os.Getpid())
	var opts shimd.ServeOptions
	if *socket != "" {
		l, err := shimd.Listen(*socket)
		if err != nil {
			log.Error("listen", "error", err)
			return 1
		}
		opts.Listener = l
	} else {
		l, err := shimd.InheritedListener()
		if err != nil {
			log.Error("listen", "error", err)
			return 1
		}
		opts.Listener = l
	}
	opts.Namespace, opts.ID, opts.StateDir, opts.Log = *namespace, *id, *stateDir, log
	opts.TTRPCAddress = os.Getenv("TTRPC_ADDRESS")
	if mon, err := shimd.NewOOMMonitor("", log); err != nil {
		log.Warn("OOM kills will not be reported", "error", err)
	} else {
		defer mon.Close()
		opts.OOM = mon
	}
	if err := shimd.Serve(ctx, opts); err != nil {
		log.Error("serve", "error", err)
		return 1
	}
	return 0
}

// startWithOneP makes the long-lived shim run with a single P from its first
// instruction: unless GOMAXPROCS is set, it executes the shim again (same
// pid, same file descriptors) with the environment of shimd.ServeEnv. A
// second P would have run part of the start-up (the runtime decides where
// the main goroutine resumes); shrinking to one P afterwards leaves its
// half-used spans, its 16 KiB struct and their GC bookkeeping resident for
// the shim's life, about 0.1 MiB per shim. The re-executed shim removes the
// variables again, so runc and the containers do not inherit them.
func startWithOneP() {
	if os.Getenv(shimd.OneProcEnv) != "" {
		os.Unsetenv("GOMAXPROCS")
		os.Unsetenv(shimd.OneProcEnv)
		return
	}
	if os.Getenv("GOMAXPROCS") != "" {
		return // the caller's choice
	}
	_ = unix.Exec("/proc/self/exe", os.Args, shimd.ServeEnv(os.Environ()))
	// Only reached when the exec failed: one P from here on.
	runtime.GOMAXPROCS(1)
}

// logOutput returns a duplicate of stderr for the shim's log: when the log's
// reader goes away, writes to it fail with EPIPE, where a write to fd 2 would
// kill the shim with SIGPIPE (Go's rule for fds 1 and 2). The shim installs
// no signal handler to avoid that: os/signal costs it two threads.
func logOutput() *os.File {
	fd, err := unix.FcntlInt(2, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return os.Stderr
	}
	return os.NewFile(uintptr(fd), "stderr")
}

// openContainerdLog sends stderr to the "log" fifo containerd opens in the
// bundle for its shims, when there is one.
func openContainerdLog() {
	st, err := os.Stat("log")
	if err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		return
	}
	fd, err := unix.Open("log", unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return // no reader
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_NONBLOCK)
	}
	_ = unix.Dup3(fd, 2, 0)
	unix.Close(fd)
}
