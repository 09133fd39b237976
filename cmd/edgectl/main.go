// Command edgectl is the operator's CLI for edged.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/namespaces"
)

// globals are the flags every command accepts.
type globals struct {
	address   string
	namespace string
	// namespaceGiven: the namespace was chosen (-n, --namespace or
	// $EDGED_NAMESPACE), not the default.
	namespaceGiven bool
	format         string
	timeout        time.Duration
	reconnect      time.Duration // a foreground wait's time for edged to come back
}

// env is what a command runs with.
type env struct {
	globals
	stdout, stderr io.Writer
	stdin          io.Reader
	ctx            context.Context
	// catchSignals: a command other than a quick one runs with a context
	// SIGINT and SIGTERM cancel (main sets it; tests pass their own ctx).
	catchSignals bool
}

type command struct {
	name    string
	aliases []string
	usage   string // arguments, shown after the name
	help    string
	// flags adds command flags; may be nil.
	flags func(fs *flag.FlagSet) func(e *env, args []string) error
	sub   []*command
	// argv: flags end at the first argument, the rest (a command line for
	// the container) is passed as it is.
	argv bool
	// quick: a read-only command of one or two short calls (version, ls,
	// info, inspect, ps). It catches no signal: SIGINT or SIGTERM ends it
	// by the default action, which a shell reports as 130 or 143 all the
	// same. Catching them (os/signal) starts a thread of its own, 0.4 ms
	// of a 4 ms `edgectl version`. Anything that changes state, waits or
	// follows a stream catches them, to say what it was doing and exit
	// 128+N itself.
	quick bool
}

func commands() []*command {
	return []*command{
		versionCommand(),
		namespacesCommand(),
		containersCommand(),
		eventsCommand(),
		runCommand(),
		taskCommand(),
		logsCommand(),
		imagesCommand(),
		gcCommand(),
		netnsCommand(),
		statsCommand(),
		updateCommand(),
	}
}

func main() {
	// One P: edgectl waits for edged most of its short life, and a second
	// P only adds threads and cross-thread wake-ups to every call
	// (≈0.2 ms of a 5 ms `edgectl version`). GOMAXPROCS still overrides.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	os.Exit(runWith(context.Background(), true, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// interrupted is the cause of the command context's end when a SIGINT or
// SIGTERM stopped the command: edgectl then exits 128+signal, as a shell
// reports a command a signal ended.
type interrupted syscall.Signal

func (i interrupted) Error() string {
	switch syscall.Signal(i) {
	case syscall.SIGINT:
		return "interrupted (SIGINT)"
	case syscall.SIGTERM:
		return "interrupted (SIGTERM)"
	}
	return "interrupted (" + syscall.Signal(i).String() + ")"
}

// Is makes an interruption a cancellation (the cause of a cancelled
// context).
func (i interrupted) Is(target error) bool { return target == context.Canceled }

// interruptContext returns a context that SIGINT and SIGTERM cancel with
// an interrupted cause. Like signal.NotifyContext, later signals are
// caught too until stop (commands that pass signals on to a container
// register their own channel).
func interruptContext(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			cancel(interrupted(s.(syscall.Signal)))
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel(nil)
	}
}

// interruption reports whether err ended a command because a signal
// cancelled ctx (or a context of the command's own, whose cause err
// carries), and what to print and exit with then.
func interruption(ctx context.Context, err error) (msg string, code int, ok bool) {
	var i interrupted
	if !errors.Is(err, context.Canceled) || !errors.As(err, &i) && !errors.As(context.Cause(ctx), &i) {
		return "", 0, false
	}
	msg = strings.ReplaceAll(oneLine(err.Error()), context.Canceled.Error(), i.Error())
	if !strings.Contains(msg, i.Error()) {
		msg += ": " + i.Error()
	}
	return msg, 128 + int(i), true
}

// errUsage marks errors that print usage and exit 2.
var errUsage = errors.New("usage")

func addGlobals(fs *flag.FlagSet, g *globals) {
	fs.StringVar(&g.address, "address", g.address, "edged socket ($"+client.AddressEnv+")")
	fs.Var(nsFlag{g}, "namespace", "namespace ($"+namespaces.EnvVar+")")
	fs.Var(nsFlag{g}, "n", "namespace (short for --namespace)")
	fs.StringVar(&g.format, "format", g.format, "output format: table or json")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "deadline of each API call (not of waits, follows and image transfers, which last as long as they need)")
	fs.DurationVar(&g.reconnect, "reconnect", g.reconnect, "how long run and exec in the foreground wait for edged to come back when it restarts (0: exit at once)")
}

// nsFlag sets the namespace and records that it was given.
type nsFlag struct{ g *globals }

func (f nsFlag) String() string {
	if f.g == nil {
		return ""
	}
	return f.g.namespace
}

func (f nsFlag) Set(s string) error {
	if s == "" {
		return errors.New("the namespace must not be empty")
	}
	f.g.namespace, f.g.namespaceGiven = s, true
	return nil
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runWith(ctx, false, args, stdin, stdout, stderr)
}

// runWith runs the command args; with catch, commands other than quick
// ones run with a context SIGINT and SIGTERM cancel (interruptContext).
func runWith(ctx context.Context, catch bool, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{catchSignals: catch, globals: globals{address: client.AddressFromEnv(), namespace: namespaces.FromEnv(), namespaceGiven: os.Getenv(namespaces.EnvVar) != "",
		format: "table", timeout: client.DefaultTimeout, reconnect: defaultReconnect}, stdout: stdout, stderr: stderr, stdin: stdin, ctx: ctx}
	top := flag.NewFlagSet("edgectl", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	addGlobals(top, &e.globals)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, nil, commands())
			return 0
		}
		fmt.Fprintf(stderr, "edgectl: %v\n", err)
		printUsage(stderr, nil, commands())
		return 2
	}
	return dispatch(e, nil, commands(), top.Args())
}

func find(cmds []*command, name string) *command {
	for _, c := range cmds {
		if c.name == name {
			return c
		}
		for _, a := range c.aliases {
			if a == name {
				return c
			}
		}
	}
	return nil
}

func dispatch(e *env, path []string, cmds []*command, args []string) int {
	if len(args) == 0 {
		fmt.Fprintf(e.stderr, "edgectl: missing command\n")
		printUsage(e.stderr, path, cmds)
		return 2
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printUsage(e.stdout, path, cmds)
		return 0
	}
	c := find(cmds, args[0])
	if c == nil {
		fmt.Fprintf(e.stderr, "edgectl: unknown command %q\n", strings.Join(append(path, args[0]), " "))
		printUsage(e.stderr, path, cmds)
		return 2
	}
	path = append(path, c.name)
	if c.sub != nil {
		return dispatch(e, path, c.sub, args[1:])
	}
	fs := flag.NewFlagSet("edgectl "+strings.Join(path, " "), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addGlobals(fs, &e.globals)
	action := c.flags(fs)
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: edgectl %s %s\n\n%s\n\nflags:\n", strings.Join(path, " "), c.usage, c.help)
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	rest := args[1:]
	var err error
	if !c.argv {
		rest, err = interleave(fs, rest)
	}
	if err == nil {
		err = fs.Parse(rest)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(e.stdout)
			return 0
		}
		fmt.Fprintf(e.stderr, "edgectl: %v\n", err)
		usage(e.stderr)
		return 2
	}
	if e.format != "table" && e.format != "json" {
		fmt.Fprintf(e.stderr, "edgectl: --format %q: must be table or json\n", e.format)
		return 2
	}
	if e.catchSignals && !c.quick {
		ctx, stop := interruptContext(e.ctx)
		defer stop()
		e.ctx = ctx
	}
	err = action(e, fs.Args())
	var sig interrupted
	switch {
	case err == nil && errors.As(context.Cause(e.ctx), &sig):
		// A command that follows a stream (events, logs -f, stats) ends
		// without error when a signal cancels it; it was still cut short.
		fmt.Fprintf(e.stderr, "edgectl: %s\n", sig)
		return 128 + int(sig)
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(e.stderr, "edgectl: %s\n", strings.TrimSuffix(err.Error(), ": usage"))
		usage(e.stderr)
		return 2
	default:
		var ee exitError
		if errors.As(err, &ee) {
			return int(ee)
		}
		if msg, code, ok := interruption(e.ctx, err); ok {
			fmt.Fprintf(e.stderr, "edgectl: %s\n", msg)
			return code
		}
		fmt.Fprintf(e.stderr, "edgectl: %s\n", oneLine(err.Error()))
		return 1
	}
}

// exitError makes edgectl exit with a code without printing.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// interleave lets flags follow positional arguments ("rm a b -n x"), as
// operators expect; "--" ends flags. A flag that needs a value and comes
// last has none: that is an error (the "--" interleave adds must not be
// taken for its value).
func interleave(fs *flag.FlagSet, args []string) ([]string, error) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fs.Lookup(name); f != nil {
				if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
					continue
				}
				if i+1 >= len(args) {
					return nil, fmt.Errorf("flag needs an argument: %s", a)
				}
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(append(flags, "--"), pos...), nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func printUsage(w io.Writer, path []string, cmds []*command) {
	prefix := strings.Join(append([]string{"edgectl", "[global flags]"}, path...), " ")
	fmt.Fprintf(w, "usage: %s COMMAND [ARGS]\n\ncommands:\n", prefix)
	sorted := append([]*command(nil), cmds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, c := range sorted {
		name := c.name
		if len(c.aliases) > 0 {
			name += " (" + strings.Join(c.aliases, ", ") + ")"
		}
		fmt.Fprintf(w, "  %-28s %s\n", name, c.help)
	}
	fmt.Fprintf(w, "\nglobal flags: --address PATH, -n/--namespace NS, --format table|json, --timeout DURATION, --reconnect DURATION\n")
}

// eachArg connects and calls fn for every argument. A failure is printed
// as one line and the remaining arguments still run; the command then
// exits 1. A signal (interruptContext) stops at the argument it cut short.
// Without arguments it is a usage error saying need.
func (e *env) eachArg(args []string, need string, fn func(c *client.Client, arg string) error) error {
	if len(args) == 0 {
		return fmt.Errorf("%s: %w", need, errUsage)
	}
	c, err := e.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	var failed error
	for _, a := range args {
		if err := fn(c, a); err != nil {
			if _, _, ok := interruption(e.ctx, err); ok {
				// A signal stops the rest: the command reports it and
				// exits 128+N (it printed "context canceled", exit 1).
				return fmt.Errorf("%s: %w", a, err)
			}
			fmt.Fprintf(e.stderr, "edgectl: %s\n", oneLine(err.Error()))
			failed = exitError(1)
		}
	}
	return failed
}

// connect dials edged with the global flags.
func (e *env) connect() (*client.Client, error) {
	return client.New(e.ctx, e.address, client.WithNamespace(e.namespace), client.WithTimeout(e.timeout))
}

// parseLabels parses "k=v" arguments; "k=" removes a label when updating.
func parseLabels(args []string) (map[string]string, error) {
	labels := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q: want KEY=VALUE: %w", a, errUsage)
		}
		labels[k] = v
	}
	return labels, nil
}

// labelList is a repeatable --label flag.
type labelList []string

func (l *labelList) String() string     { return strings.Join(*l, ",") }
func (l *labelList) Set(s string) error { *l = append(*l, s); return nil }

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }
