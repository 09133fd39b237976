// Command bench measures edged against its budgets and prints the budget
// table (`make bench`, or `go run ./hack/bench` from the repository root
// after `make build`).
//
// Each section starts its own edged (and, for comparison, containerd) with
// private temporary directories, measures, and stops them. The table shows
// every figure beside its target and PASS/FAIL; rows without a target are
// INFO. The exit code is 0 even when a budget fails unless -strict is
// given; it is 1 when a measurement itself broke (ERROR).
//
// To add the budgets of a later issue, write a func(context.Context, *Env)
// ([]Row, error) in its own file and append it to sections().
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/edged/edged/hack/bench/measure"
)

// Section is a group of rows, usually the budgets of one issue.
type Section struct {
	Name string
	Doc  string
	Run  func(ctx context.Context, e *Env) ([]Row, error)
}

// sections lists the sections in the order they run.
func sections() []Section {
	return []Section{
		{Name: "foundation", Doc: "daemon memory, CLI latency, binary sizes, container metadata throughput and disk writes", Run: foundation},
		{Name: "shim", Doc: "edged-shim memory with 50 running containers (one shim each, grouped) and edged RSS with them", Run: shimSection},
		{Name: "recovery", Doc: "start-up with task recovery: 50 running containers, 50 dead shims", Run: recoverySection},
		{Name: "runtime", Doc: "edgectl run vs bare runc run, run -d latency, disk writes per container lifecycle", Run: runtimeSection},
		{Name: "network", Doc: "edgectl run --rm --net bridge vs --net host", Run: networkSection},
		{Name: "cgroups", Doc: "idle shim CPU (20 containers, 60 s), edgectl stats refresh of 50 containers, OOM event latency", Run: cgroupsSection},
		{Name: "images", Doc: "image import vs containerd (small, 100 MiB layer), peak RSS of import and pull, disk bytes per imported byte", Run: imagesSection},
	}
}

// Config are the harness's flags.
type Config struct {
	BinDir     string        // where edged, edgectl, edged-shim are
	Edged      string        // edged binary to measure (default BinDir/edged)
	EdgedEnv   []string      // extra environment of edged, e.g. GOGC=100
	Calls      int           // API calls before the idle RSS measurement
	Idle       time.Duration // idle time before measuring RSS
	Runs       int           // edgectl version round trips
	Pairs      int           // timed pairs of the run --rm ratios
	Containers int           // containers created and deleted per phase
	Clients    int           // concurrent clients of the concurrent phase
	Window     int           // operations per throughput window
	Containerd bool          // measure containerd for comparison
	Keep       bool          // keep the temp directory
	IdleShim   time.Duration // idle time of the cgroups section's shim CPU measurement
}

// Env is what a section runs with.
type Env struct {
	Config
	// Work is a temp directory for this run; sections make subdirectories.
	Work string
	Log  io.Writer // progress messages
	// containerd holds the containerd reference once measured.
	containerd *containerdRef
}

// Bin returns the path of a built binary.
func (e *Env) Bin(name string) string {
	if name == "edged" && e.Edged != "" {
		return e.Edged
	}
	return filepath.Join(e.BinDir, name)
}

// Dir returns a new subdirectory of the work directory.
func (e *Env) Dir(name string) (string, error) {
	return os.MkdirTemp(e.Work, name+"-")
}

// Progress prints a progress line to the log.
func (e *Env) Progress(format string, args ...any) {
	fmt.Fprintf(e.Log, "bench: "+format+"\n", args...)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	fs.StringVar(&cfg.BinDir, "bin", "bin", "directory with the built binaries (make build)")
	fs.StringVar(&cfg.Edged, "edged", "", "edged binary to measure instead of BIN/edged (e.g. a variant build)")
	fs.Func("edged-env", "`VAR=value` added to edged's environment, e.g. GOGC=100 (repeatable)", func(s string) error {
		if !strings.Contains(s, "=") {
			return fmt.Errorf("%q is not VAR=value", s)
		}
		cfg.EdgedEnv = append(cfg.EdgedEnv, s)
		return nil
	})
	fs.IntVar(&cfg.Calls, "calls", 1000, "namespace/container API calls before the idle RSS measurement")
	fs.DurationVar(&cfg.Idle, "idle", 2*time.Second, "idle time before an RSS measurement")
	fs.IntVar(&cfg.Runs, "runs", 200, "edgectl version round trips (0: skip)")
	fs.IntVar(&cfg.Pairs, "pairs", 50, "timed pairs of each run --rm ratio (sections runtime and network; the median of 20 moved by ±0.05 between runs)")
	fs.IntVar(&cfg.Containers, "containers", 10000, "containers created and deleted in each throughput phase (0: skip)")
	fs.IntVar(&cfg.Clients, "clients", 4, "concurrent clients in the concurrent throughput phase (0: skip it)")
	fs.IntVar(&cfg.Window, "window", 1000, "operations per window of the sustained-rate measurement")
	fs.BoolVar(&cfg.Containerd, "containerd", true, "measure containerd (if installed) for the comparison column")
	fs.DurationVar(&cfg.IdleShim, "idle-shim", time.Minute, "idle time of the shim CPU measurement (section cgroups; the budget is per 60s)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the temporary directory (daemon logs, databases)")
	jsonOut := fs.Bool("json", false, "print JSON instead of the table")
	strict := fs.Bool("strict", false, "exit 1 when a budget fails")
	only := fs.String("sections", "", "comma-separated sections to run (default all)")
	list := fs.Bool("list", false, "list the sections and exit")
	quiet := fs.Bool("q", false, "no progress messages on stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the benchmark process (the clients' side) to `file`")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	// Sections run binaries from other working directories.
	if abs, err := filepath.Abs(cfg.BinDir); err == nil {
		cfg.BinDir = abs
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *list {
		for _, s := range sections() {
			fmt.Fprintf(stdout, "%-12s %s\n", s.Name, s.Doc)
		}
		return 0
	}
	if cfg.IdleShim < time.Second {
		fmt.Fprintln(stderr, "bench: -idle-shim must be at least 1s")
		return 2
	}
	if cfg.Calls < 10 || cfg.Runs < 0 || cfg.Pairs < 1 || cfg.Containers < 0 || cfg.Window < 1 || cfg.Clients < 0 {
		fmt.Fprintln(stderr, "bench: -calls must be ≥ 10; -runs, -containers and -clients ≥ 0 (0 skips); -window ≥ 1")
		return 2
	}
	chosen, err := choose(sections(), *only)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	work, err := os.MkdirTemp("", "edged-bench-")
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	if cfg.Keep {
		fmt.Fprintf(stderr, "bench: keeping %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(stderr, "bench: -cpuprofile: %v\n", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	e := &Env{Config: cfg, Work: work, Log: stderr}
	if *quiet {
		e.Log = io.Discard
	}

	var rows []Row
	for _, s := range chosen {
		e.Progress("section %s", s.Name)
		before, serr := measure.ReadCPUTimes()
		got, err := s.Run(ctx, e)
		if err != nil {
			got = append(got, failed(s.Name, err))
		}
		if after, aerr := measure.ReadCPUTimes(); serr == nil && aerr == nil {
			got = append(got, stealRow("host CPU steal during the section", measure.StealShare(before, after)))
		}
		for i := range got {
			got[i].Section = s.Name
		}
		rows = append(rows, got...)
	}

	if *jsonOut {
		err = writeJSON(stdout, rows)
	} else {
		err = writeTable(stdout, rows)
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	code := 0
	for _, r := range rows {
		switch {
		case r.Status == Error:
			code = 1
		case r.Status == Fail && *strict:
			code = 1
		}
	}
	return code
}

// choose returns the sections named in the comma-separated list (all when
// empty).
func choose(all []Section, list string) ([]Section, error) {
	if list == "" {
		return all, nil
	}
	var out []Section
	for _, name := range strings.Split(list, ",") {
		found := false
		for _, s := range all {
			if s.Name == strings.TrimSpace(name) {
				out, found = append(out, s), true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown section %q (see -list)", name)
		}
	}
	return out, nil
}
