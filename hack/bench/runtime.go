package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/edged/edged/edged/oci"
	"github.com/edged/edged/hack/bench/measure"
	"github.com/edged/edged/internal/testutil"
)

// runtimeSection measures the Runtime issue's budgets: `edgectl run --rm`
// against a bare `runc run` of the same bundle, pair by pair; `run -d`
// latency; and the disk bytes edged writes per run/rm lifecycle.
func runtimeSection(ctx context.Context, e *Env) ([]Row, error) {
	if _, err := exec.LookPath("runc"); err != nil {
		return []Row{skipped("runtime", "runc not installed")}, nil
	}
	dir, err := e.Dir("runtime")
	if err != nil {
		return nil, err
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := testutil.BusyboxRootfs(rootfs); err != nil {
		return nil, err
	}
	// The bare runc bundle: the same spec edged generates for the same
	// rootfs and arguments.
	bundle := filepath.Join(dir, "bundle")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return nil, err
	}
	spec, err := oci.Generate(ctx, "bench", "bare", rootfs, nil, oci.WithArgs("true"))
	if err != nil {
		return nil, err
	}
	spec.Root.Path = rootfs
	if err := oci.WriteBundle(bundle, spec); err != nil {
		return nil, err
	}
	d, err := measure.StartEdged(ctx, e.Bin("edged"), filepath.Join(dir, "edged"), e.EdgedEnv)
	if err != nil {
		return nil, err
	}
	defer d.Stop()
	edgectl := func(args ...string) error {
		cmd := exec.CommandContext(ctx, e.Bin("edgectl"), append([]string{"--address", d.Socket}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("edgectl %v: %v: %s", args, err, out)
		}
		return nil
	}
	runcRoot := filepath.Join(dir, "runc-root")
	const pairs = 20
	var bare, ours []time.Duration
	// One warm-up of each, not counted.
	for i := -1; i < pairs; i++ {
		id := "bare" + strconv.Itoa(i+1)
		start := time.Now()
		cmd := exec.CommandContext(ctx, "runc", "--root", runcRoot, "run", "--bundle", bundle, id)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("runc run: %v: %s", err, out)
		}
		b := time.Since(start)
		start = time.Now()
		if err := edgectl("run", "--rm", "--rootfs", rootfs, "r"+strconv.Itoa(i+1), "true"); err != nil {
			return nil, err
		}
		o := time.Since(start)
		if i >= 0 {
			bare, ours = append(bare, b), append(ours, o)
		}
	}
	ratios := make([]float64, pairs)
	for i := range bare {
		ratios[i] = float64(ours[i]) / float64(bare[i])
	}
	sort.Float64s(ratios)
	medBare, medOurs := measure.Percentile(bare, 50), measure.Percentile(ours, 50)
	rows := []Row{
		budget("edgectl run --rm true ÷ runc run, median of pairs", ratios[pairs/2], "×", "<=", 1.3).
			with("ctr run --rm ÷ runc run 3.4× (issue)", fmt.Sprintf("%d pairs, same rootfs and spec; edgectl %.1f ms, runc %.1f ms (medians)", pairs, measure.Ms(medOurs), measure.Ms(medBare))),
		info("edgectl run --rm true, median", measure.Ms(medOurs), "ms").with("ctr run --rm 106 ms (issue)", ""),
		info("runc run true, median", measure.Ms(medBare), "ms").with("30 ms (issue)", ""),
	}

	// Detached start latency and disk writes per lifecycle.
	before, err := measure.ReadIO(d.PID())
	if err != nil {
		return rows, err
	}
	const cycles = 20
	var detach []time.Duration
	for i := 0; i < cycles; i++ {
		id := "d" + strconv.Itoa(i)
		start := time.Now()
		if err := edgectl("run", "-d", "--rootfs", rootfs, id, "sleep", "30"); err != nil {
			return rows, err
		}
		detach = append(detach, time.Since(start))
		if err := edgectl("task", "rm", "-f", id); err != nil {
			return rows, err
		}
		if err := edgectl("c", "rm", id); err != nil {
			return rows, err
		}
	}
	after, err := measure.ReadIO(d.PID())
	if err != nil {
		return rows, err
	}
	perCycle := float64(after.Sub(before).WriteBytes) / cycles / 1024
	rows = append(rows,
		info("edgectl run -d, median", measure.Ms(measure.Percentile(detach, 50)), "ms").with("ctr run -d 75 ms (issue)", ""),
		budget("edged disk write_bytes per run -d/rm lifecycle", perCycle, "KiB", "<=", 32).
			with("containerd 507 KiB (issue)", fmt.Sprintf("%d lifecycles; /proc/PID/io of edged (bundle, bootstrap, metadata); the shim writes no files of its own", cycles)),
	)
	return rows, nil
}
