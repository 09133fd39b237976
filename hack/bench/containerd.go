package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/edged/edged/hack/bench/measure"
)

// containerdRef are containerd's figures measured on this machine for the
// comparison column. Zero fields were not measured.
type containerdRef struct {
	Version             string
	DaemonSize, CtrSize int64 // bytes
	ShimSize            int64
	IdleRSS, IdlePSS    int64 // KiB, after start and the idle time
	IdleAnon, IdleFile  int64 // KiB, Pss_Anon and Pss_File then
	RSSAfterCtr         int64 // KiB, after the ctr version runs
	CtrMedian, CtrP90   time.Duration
	Err                 error // why it was not measured
}

// measureContainerd starts the installed containerd with private
// directories and its packaged configuration otherwise (CRI plugin
// included, as Debian ships it), lets it idle, reads its memory and times
// `ctr version`. It is measured once per run and cached in e.
func (e *Env) measureContainerd(ctx context.Context) *containerdRef {
	if e.containerd != nil {
		return e.containerd
	}
	ref := &containerdRef{}
	e.containerd = ref
	if !e.Containerd {
		ref.Err = fmt.Errorf("disabled by -containerd=false")
		return ref
	}
	daemon, err := exec.LookPath("containerd")
	if err != nil {
		ref.Err = fmt.Errorf("containerd is not installed")
		return ref
	}
	ctr, err := exec.LookPath("ctr")
	if err != nil {
		ref.Err = fmt.Errorf("ctr is not installed")
		return ref
	}
	e.Progress("measuring containerd for comparison")
	if out, err := exec.CommandContext(ctx, daemon, "--version").Output(); err == nil {
		ref.Version = string(out)
	}
	if bi, err := measure.InspectBinary(daemon); err == nil {
		ref.DaemonSize = bi.Size
	}
	if bi, err := measure.InspectBinary(ctr); err == nil {
		ref.CtrSize = bi.Size
	}
	if shim, err := exec.LookPath("containerd-shim-runc-v2"); err == nil {
		if bi, err := measure.InspectBinary(shim); err == nil {
			ref.ShimSize = bi.Size
		}
	}

	dir, err := e.Dir("containerd")
	if err != nil {
		ref.Err = err
		return ref
	}
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	sock := filepath.Join(state, "containerd.sock")
	// The packaged config (/etc/containerd/config.toml on Debian: CRI with
	// CNI paths) with everything it writes moved into dir.
	cfg := filepath.Join(dir, "config.toml")
	conf := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n"+
		"[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    bin_dir = \"/usr/lib/cni\"\n    conf_dir = %q\n"+
		"  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = %q\n",
		root, state, sock, sock+".ttrpc", filepath.Join(dir, "cni"), filepath.Join(dir, "opt"))
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		ref.Err = err
		return ref
	}
	d, err := measure.StartDaemon(ctx, "containerd", dir, sock, nil, daemon, "--config", cfg)
	if err != nil {
		ref.Err = err
		return ref
	}
	defer d.Stop()
	time.Sleep(e.Idle)
	if m, err := measure.ReadMemory(d.PID()); err == nil {
		ref.IdleRSS, ref.IdlePSS = m.RSS, m.PSS
		ref.IdleAnon, ref.IdleFile = m.PSSAnon, m.PSSFile
	}
	if e.Runs == 0 {
		return ref
	}
	runs, err := measure.RoundTrips(ctx, e.Runs, "Server:", ctr, "--address", sock, "version")
	if err != nil {
		ref.Err = err
		return ref
	}
	ref.CtrMedian, ref.CtrP90 = measure.Percentile(runs, 50), measure.Percentile(runs, 90)
	if m, err := measure.ReadMemory(d.PID()); err == nil {
		ref.RSSAfterCtr = m.RSS
	}
	return ref
}

// cmp formats a containerd comparison figure, "" when not measured.
func cmp(what string, ok bool, format string, args ...any) string {
	if !ok {
		return ""
	}
	return what + " " + fmt.Sprintf(format, args...)
}
