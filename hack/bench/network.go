package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

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
	run := func(id, mode string) error {
		cmd := exec.CommandContext(ctx, e.Bin("edgectl"), "--address", d.Socket, "run", "--rm", "--rootfs", rootfs, "--net", mode, id, "true")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("edgectl run --net %s: %v: %s", mode, err, out)
		}
		return nil
	}
	pairs := e.Pairs
	// The warm-up pair loads the CNI configuration, makes the bridge and
	// the first spare. Each run starts on an idle machine (see
	// timePairs): the spare a bridge run takes is replaced, and its
	// attachment released, in the background, which would otherwise be
	// timed as part of the next run.
	host, br, busy, err := timePairs(ctx, pairs,
		func(i int) error { return run("h"+strconv.Itoa(i), "host") },
		func(i int) error { return run("b"+strconv.Itoa(i), "bridge") })
	if err != nil {
		return nil, err
	}
	medHost, medBr := measure.Percentile(host, 50), measure.Percentile(br, 50)
	return []Row{
		budget("edgectl run --rm --net bridge ÷ --net host, median of pairs", medianRatio(host, br), "×", "<=", 1.5).
			with("", fmt.Sprintf("%d pairs, busybox true; bridge %.1f ms, host %.1f ms (medians); one spare attachment (network.bridge_spares = 1)%s", pairs, measure.Ms(medBr), measure.Ms(medHost), busyNote(busy, 2*(pairs+1)))),
		info("edgectl run --rm --net bridge true, median", measure.Ms(medBr), "ms"),
		info("edgectl run --rm --net host true, median", measure.Ms(medHost), "ms"),
	}, nil
}
