package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/edged/edged/hack/bench/measure"
	"github.com/edged/edged/internal/testutil"
)

// networkSection measures the netns issue's budget: `edgectl run --rm
// --net bridge true` against the same run with --net host, pair by pair.
// edged runs on a bridge and subnet of its own (edbench0, 10.214.250.0/24).
func networkSection(ctx context.Context, e *Env) ([]Row, error) {
	if _, err := exec.LookPath("runc"); err != nil {
		return []Row{skipped("network", "runc not installed")}, nil
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		return []Row{skipped("network", "CNI plugins not installed (containernetworking-plugins)")}, nil
	}
	dir, err := e.Dir("network")
	if err != nil {
		return nil, err
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := testutil.BusyboxRootfs(rootfs); err != nil {
		return nil, err
	}
	const bridge = "edbench0"
	cfg := filepath.Join(dir, "edged.toml")
	if err := os.WriteFile(cfg, []byte("[network]\nsubnet = \"10.214.250.0/24\"\nbridge = \""+bridge+"\"\n"), 0o644); err != nil {
		return nil, err
	}
	edgedDir := filepath.Join(dir, "edged")
	d, err := measure.StartEdged(ctx, e.Bin("edged"), edgedDir, e.EdgedEnv, "--config", cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		d.Stop()
		// The namespace directory stays a mount point after edged exits.
		syscall.Unmount(filepath.Join(edgedDir, "state", "network", "netns"), syscall.MNT_DETACH)
		exec.Command("ip", "link", "del", bridge).Run()
	}()
	run := func(id, mode string) (time.Duration, error) {
		start := time.Now()
		cmd := exec.CommandContext(ctx, e.Bin("edgectl"), "--address", d.Socket, "run", "--rm", "--rootfs", rootfs, "--net", mode, id, "true")
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("edgectl run --net %s: %v: %s", mode, err, out)
		}
		return time.Since(start), nil
	}
	pairs := e.Pairs
	var host, br []time.Duration
	// One warm-up pair (loads the CNI configuration, makes the bridge and
	// the first spare), not counted. Each run starts on an idle machine
	// (measure.Settle): the spare a bridge run takes is replaced, and its
	// attachment released, in the background, which would otherwise be
	// timed as part of the next run. The order alternates (timePair).
	busy := 0
	settled := func(id, mode string) (time.Duration, error) {
		if !measure.Settle(ctx, settleMax) {
			busy++
		}
		return run(id, mode)
	}
	for i := -1; i < pairs; i++ {
		h, b, err := timePair(i,
			func() (time.Duration, error) { return settled("h"+strconv.Itoa(i+1), "host") },
			func() (time.Duration, error) { return settled("b"+strconv.Itoa(i+1), "bridge") })
		if err != nil {
			return nil, err
		}
		if i >= 0 {
			host, br = append(host, h), append(br, b)
		}
	}
	ratios := make([]float64, pairs)
	for i := range host {
		ratios[i] = float64(br[i]) / float64(host[i])
	}
	sort.Float64s(ratios)
	medHost, medBr := measure.Percentile(host, 50), measure.Percentile(br, 50)
	return []Row{
		budget("edgectl run --rm --net bridge ÷ --net host, median of pairs", ratios[pairs/2], "×", "<=", 1.5).
			with("", fmt.Sprintf("%d pairs, busybox true; bridge %.1f ms, host %.1f ms (medians); one spare attachment (network.bridge_spares = 1)%s", pairs, measure.Ms(medBr), measure.Ms(medHost), busyNote(busy, 2*(pairs+1)))),
		info("edgectl run --rm --net bridge true, median", measure.Ms(medBr), "ms"),
		info("edgectl run --rm --net host true, median", measure.Ms(medHost), "ms"),
	}, nil
}
