package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/edged/edged/edged/images/testimage"
	"github.com/edged/edged/hack/bench/measure"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Budgets of the Images issue.
const (
	budgetImportSmallRatio = 0.5 // edged import time ÷ containerd's, small image
	budgetImportBigRatio   = 0.8 // the same, 100 MiB layer
	budgetImagePeakMiB     = 16  // edged VmHWM during the big import; edged + helper during a pull
	// peakIdle is the pause before each run whose peak RSS is budgeted: an
	// import or pull on a device starts from an idle edged, which has
	// given its memory back ([memory] idle_release, 1 s by default).
	peakIdle             = 1500 * time.Millisecond
	budgetWrittenPerByte = 2.1 // disk bytes written per imported archive byte
	budgetWrittenDiscard = 1.1 // the same with [images] discard_layers = true

	bigLayerBytes = 100 << 20
	smallReps     = 10
	bigReps       = 5
	pullReps      = 3
)

// importRun is one measured import or pull.
type importRun struct {
	elapsed time.Duration
	peakKiB int64 // VmHWM after the run (reset before it), plus helperKiB
	baseKiB int64 // VmRSS right before it
	// helperKiB is the peak RSS of the edged-remote helpers the run
	// started (their ru_maxrss, which edged logs), added to peakKiB: the
	// sum bounds the memory of the daemon and its helper together.
	helperKiB int64
	edgedKiB  int64 // edged's own peak (VmHWM)
	written   int64 // write_bytes delta
}

// importStats are the medians of several runs.
type importStats struct {
	n         int
	median    time.Duration
	peakKiB   int64 // largest VmHWM (+ helper peak) of all runs
	addKiB    int64 // largest VmHWM - VmRSS before
	helperKiB int64 // largest helper peak
	written   int64 // median write_bytes
}

func summarizeImports(runs []importRun) importStats {
	s := importStats{n: len(runs)}
	ds := make([]time.Duration, len(runs))
	ws := make([]time.Duration, len(runs)) // reuse Percentile for bytes
	for i, r := range runs {
		ds[i], ws[i] = r.elapsed, time.Duration(r.written)
		s.peakKiB = max(s.peakKiB, r.peakKiB)
		s.addKiB = max(s.addKiB, r.edgedKiB-r.baseKiB)
		s.helperKiB = max(s.helperKiB, r.helperKiB)
	}
	s.median = measure.Percentile(ds, 50)
	s.written = int64(measure.Percentile(ws, 50))
	return s
}

// imagesSection measures the Images issue's budgets: `edgectl images
// import` of a small and a 100 MiB image against `ctr images import` of the
// same archives into a private containerd in the same run; edged's peak RSS
// during the big import and a registry pull of it; disk bytes written per
// archive byte, with and without discard_layers.
func imagesSection(ctx context.Context, e *Env) ([]Row, error) {
	for _, b := range []string{"edged", "edgectl"} {
		if _, err := os.Stat(e.Bin(b)); err != nil {
			return nil, fmt.Errorf("%v: run `make build` first or pass -bin", err)
		}
	}
	if _, err := os.Stat(testimage.DefaultBusybox); err != nil {
		return []Row{skipped("images", "busybox-static is not installed")}, nil
	}
	dir, err := e.Dir("images")
	if err != nil {
		return nil, err
	}
	e.Progress("images: building the archives")
	small, big, err := buildArchives(dir)
	if err != nil {
		return nil, err
	}
	smallSize, bigSize := measure.FileSize(small), measure.FileSize(big)

	// A registry with the big image, for the pull rows.
	var reg *registryProc
	var regErr error
	if _, err := exec.LookPath("docker-registry"); err != nil {
		regErr = fmt.Errorf("docker-registry is not installed")
	} else if _, err := exec.LookPath("skopeo"); err != nil {
		regErr = fmt.Errorf("skopeo is not installed")
	} else {
		reg, regErr = startRegistry(ctx, filepath.Join(dir, "registry"))
		if regErr == nil {
			defer reg.stop()
			regErr = reg.push(ctx, big, "bench/big:1")
		}
	}

	// containerd, for the comparison column, measured in pairs with edged
	// (one edged run, then one ctr run) so that both see the same load.
	var ctrd *containerdImporter
	var ctrErr error
	if !e.Containerd {
		ctrErr = fmt.Errorf("disabled by -containerd=false")
	} else if _, err := exec.LookPath("containerd"); err != nil {
		ctrErr = fmt.Errorf("containerd is not installed")
	} else if _, err := exec.LookPath("ctr"); err != nil {
		ctrErr = fmt.Errorf("ctr is not installed")
	} else if ctrd, ctrErr = startContainerdImporter(ctx, filepath.Join(dir, "containerd")); ctrErr == nil {
		defer ctrd.d.Stop()
	}
	paired := func(op func() (importRun, error)) func() (importRun, error) {
		if ctrd == nil {
			return nil
		}
		return op
	}

	// Each edged phase on a fresh edged, so that a peak is not inflated by
	// the heap an earlier phase left behind.
	e.Progress("images: import small x%d, big x%d (edged and containerd in pairs)", smallReps, bigReps)
	edSmall, ctrSmallRuns, err := edgedPhase(ctx, e, filepath.Join(dir, "edged-small"), "", smallReps, 0,
		paired(func() (importRun, error) {
			return ctrd.run(ctx, "images", "import", "--index-name", ctrd.next(), small)
		}),
		"images", "import", small)
	if err != nil {
		return nil, err
	}
	edBig, ctrBigRuns, err := edgedPhase(ctx, e, filepath.Join(dir, "edged-big"), "", bigReps, peakIdle,
		paired(func() (importRun, error) { return ctrd.run(ctx, "images", "import", "--index-name", ctrd.next(), big) }),
		"images", "import", big)
	if err != nil {
		return nil, err
	}
	e.Progress("images: edged (discard_layers) import big x%d", bigReps)
	ddBig, _, err := edgedPhase(ctx, e, filepath.Join(dir, "edged-discard"), "[images]\ndiscard_layers = true\n", bigReps, peakIdle, nil, "images", "import", big)
	if err != nil {
		return nil, err
	}
	var edPull, ctrPull importStats
	pullErr := regErr
	if reg != nil && regErr == nil {
		e.Progress("images: pull x%d", pullReps)
		conf := fmt.Sprintf("[registries.%q]\nplain_http = true\n", reg.addr)
		ref := reg.addr + "/bench/big:1"
		runs, ctrRuns, err := edgedPhase(ctx, e, filepath.Join(dir, "edged-pull"), conf, pullReps, peakIdle,
			paired(func() (importRun, error) { return ctrd.run(ctx, "images", "pull", "--plain-http", ref) }),
			"images", "pull", ref)
		if err != nil {
			pullErr = err
		} else {
			edPull, ctrPull = summarizeImports(runs), summarizeImports(ctrRuns)
		}
	}
	var ctrSmall, ctrBig importStats
	if ctrd != nil {
		if err := ctrd.d.Alive(); err != nil {
			return nil, err
		}
		ctrSmall, ctrBig = summarizeImports(ctrSmallRuns), summarizeImports(ctrBigRuns)
	}
	ctrPullErr := pullErr
	if ctrErr != nil {
		ctrPullErr = ctrErr
	}

	s, b, d := summarizeImports(edSmall), summarizeImports(edBig), summarizeImports(ddBig)
	var rows []Row
	repNote := func(st importStats, size int64) string {
		return fmt.Sprintf("median of %d runs of the whole edgectl call (after 1 warm-up), %.2f MiB archive, fsync on; image removed and collected between runs", st.n, float64(size)/(1<<20))
	}
	if ctrErr != nil {
		rows = append(rows, skipped("containerd comparison", ctrErr.Error()))
	} else {
		rows = append(rows,
			budget("images import, small image: edged ÷ containerd", pairRatio(edSmall, ctrSmallRuns), "×", "<=", budgetImportSmallRatio).
				with(fmt.Sprintf("edged %.0f ms, ctr %.0f ms", measure.Ms(s.median), measure.Ms(ctrSmall.median)),
					fmt.Sprintf("%.3f; median of the ratios of %d pairs (edged run, then ctr run) of the same archive (containerd: ctr images import --index-name, unpacked to overlayfs)", pairRatio(edSmall, ctrSmallRuns), len(edSmall))),
			budget("images import, 100 MiB layer: edged ÷ containerd", pairRatio(edBig, ctrBigRuns), "×", "<=", budgetImportBigRatio).
				with(fmt.Sprintf("edged %.0f ms, ctr %.0f ms", measure.Ms(b.median), measure.Ms(ctrBig.median)), fmt.Sprintf("%.3f; median of %d pair ratios", pairRatio(edBig, ctrBigRuns), len(edBig))),
		)
	}
	rows = append(rows,
		info("edgectl images import, small image", measure.Ms(s.median), "ms").
			with(cmp("ctr", ctrErr == nil, "%.0f ms (issue: 148 ms)", measure.Ms(ctrSmall.median)), repNote(s, smallSize)),
		info("edgectl images import, 100 MiB layer", measure.Ms(b.median), "ms").
			with(cmp("ctr", ctrErr == nil, "%.0f ms (issue: 1268 ms)", measure.Ms(ctrBig.median)), repNote(b, bigSize)),
		info("edgectl images import, 100 MiB layer, discard_layers", measure.Ms(d.median), "ms"),
		budget("edged peak RSS during the 100 MiB import", measure.MiB(b.peakKiB), "MiB", "<=", budgetImagePeakMiB).
			with(cmp("containerd +", ctrErr == nil, "%.1f MiB over its RSS", measure.MiB(ctrBig.addKiB)),
				fmt.Sprintf("largest VmHWM of the runs, each started from an idle edged (%.1f s after the last call) with VmHWM reset by clear_refs 5; at most %.1f MiB above edged's RSS before the import", peakIdle.Seconds(), measure.MiB(b.addKiB))),
		budget("edged peak RSS during the 100 MiB import, discard_layers", measure.MiB(d.peakKiB), "MiB", "<=", budgetImagePeakMiB).
			with("", fmt.Sprintf("at most %.1f MiB above edged's RSS before the import", measure.MiB(d.addKiB))),
		budget("disk bytes written per imported byte, 100 MiB layer", float64(b.written)/float64(bigSize), "B/B", "<=", budgetWrittenPerByte).
			with(cmp("containerd", ctrErr == nil, "%.2f B/B", float64(ctrBig.written)/float64(bigSize)),
				fmt.Sprintf("%.3f; /proc/PID/io write_bytes of the daemon (median) ÷ archive size: blob + unpacked files + metadata", float64(b.written)/float64(bigSize))),
		budget("disk bytes written per imported byte, discard_layers", float64(d.written)/float64(bigSize), "B/B", "<=", budgetWrittenDiscard).
			with("", fmt.Sprintf("%.3f; layers extracted from the stream, blobs never stored", float64(d.written)/float64(bigSize))),
		info("disk bytes written per imported byte, small image", float64(s.written)/float64(smallSize), "B/B").
			with(cmp("containerd", ctrErr == nil, "%.2f B/B", float64(ctrSmall.written)/float64(smallSize)), ""),
	)
	if pullErr != nil {
		rows = append(rows, skipped("edged peak RSS during a pull of the 100 MiB image", pullErr.Error()))
	} else {
		rows = append(rows,
			budget("edged + edged-remote peak RSS during a pull of the 100 MiB image", measure.MiB(edPull.peakKiB), "MiB", "<=", budgetImagePeakMiB).
				with(cmp("containerd +", ctrPullErr == nil, "%.1f MiB over its RSS", measure.MiB(ctrPull.addKiB)),
					fmt.Sprintf("local docker-registry over plain HTTP, %d runs; the larger of edged's RSS plus the RSS of the edged-remote helper while it downloads (sampled every ms; the helper's own VmHWM after its start-up is %.1f MiB) and edged's VmHWM while it unpacks after; edged at most %.1f MiB above its RSS before the pull", edPull.n, measure.MiB(edPull.helperKiB), measure.MiB(edPull.addKiB))),
			info("edgectl images pull, 100 MiB layer", measure.Ms(edPull.median), "ms").
				with(cmp("ctr pull", ctrPullErr == nil, "%.0f ms", measure.Ms(ctrPull.median)), ""),
		)
		if ctrPullErr != nil && ctrErr == nil {
			rows = append(rows, skipped("ctr images pull", ctrPullErr.Error()))
		}
	}
	return rows, nil
}

// buildArchives writes the demo busybox image and an image with one 100
// MiB random gzip layer as OCI layout tars under dir.
func buildArchives(dir string) (small, big string, err error) {
	plat := ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	img, err := testimage.Busybox(testimage.DefaultBusybox, plat)
	if err != nil {
		return "", "", err
	}
	l := testimage.NewLayout()
	l.AddImage(img, map[string]string{ocispec.AnnotationRefName: testimage.DemoName})
	small = filepath.Join(dir, "small.tar")
	if err := os.WriteFile(small, l.Bytes(testimage.TarOptions{}), 0o644); err != nil {
		return "", "", err
	}
	layer, err := testimage.WriteRandomLayer(dir, bigLayerBytes, 42)
	if err != nil {
		return "", "", err
	}
	defer os.Remove(layer.Blob.Path)
	bimg, err := testimage.Build(testimage.Image{Platform: plat, Layers: []testimage.Layer{layer},
		Config: ocispec.ImageConfig{Cmd: []string{"sh"}}})
	if err != nil {
		return "", "", err
	}
	l = testimage.NewLayout()
	l.AddImage(bimg, map[string]string{ocispec.AnnotationRefName: "docker.io/bench/big:1"})
	big = filepath.Join(dir, "big.tar")
	f, err := os.Create(big)
	if err != nil {
		return "", "", err
	}
	if err := l.WriteTar(f, testimage.TarOptions{}); err != nil {
		f.Close()
		return "", "", err
	}
	return small, big, f.Close()
}

// measureRun resets pid's VmHWM, times op, reads the peak and the disk
// bytes written, then runs clean (not measured).
func measureRun(d *measure.Daemon, op, clean func() error) (importRun, error) {
	var r importRun
	pid := d.PID()
	logOff := d.LogSize()
	if err := resetHWM(pid); err != nil {
		return r, err
	}
	m, err := measure.ReadMemory(pid)
	if err != nil {
		return r, err
	}
	r.baseKiB = m.RSS
	io0, err := measure.ReadIO(pid)
	if err != nil {
		return r, err
	}
	hw := watchHelpers(pid)
	start := time.Now()
	if err := op(); err != nil {
		hw.stop()
		return r, err
	}
	r.elapsed = time.Since(start)
	io1, err := measure.ReadIO(pid)
	if err != nil {
		return r, err
	}
	m, err = measure.ReadMemory(pid)
	if err != nil {
		return r, err
	}
	r.helperKiB = helperPeaks(d.LogFrom(logOff))
	r.written = io1.Sub(io0).WriteBytes
	// The helper downloads, then exits, then edged unpacks: the peak of the
	// two together is the larger of their summed RSS while the helper ran
	// (sampled every millisecond) and edged's VmHWM after it.
	sumA, edgedA, seen := hw.stop()
	switch {
	case r.helperKiB == 0:
		r.peakKiB, r.edgedKiB = m.HWM, m.HWM
	case seen:
		r.peakKiB, r.edgedKiB = max(sumA, m.HWM), max(edgedA, m.HWM)
	default: // not seen by the watcher: the sum of the peaks bounds it
		r.peakKiB, r.edgedKiB = m.HWM+r.helperKiB, m.HWM
	}
	return r, clean()
}

// helperWatch follows the edged-remote children of edged during a run,
// sampling edged's RSS plus theirs every millisecond. When the last one
// exits it resets edged's VmHWM, so that the VmHWM read at the end of the
// run is edged's peak after them.
type helperWatch struct {
	pid   int
	quit  chan struct{}
	done  chan struct{}
	sum   int64 // largest RSS of edged + its helpers, sampled
	edged int64 // largest RSS of edged while helpers ran, sampled
	seen  bool
}

func watchHelpers(pid int) *helperWatch {
	w := &helperWatch{pid: pid, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		running := false
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.quit:
				return
			case <-t.C:
			}
			kids := helperChildren(w.pid)
			if len(kids) > 0 {
				running, w.seen = true, true
				e := measure.VmRSS(w.pid)
				sum := e
				for _, k := range kids {
					sum += measure.VmRSS(k)
				}
				w.sum, w.edged = max(w.sum, sum), max(w.edged, e)
				continue
			}
			if running {
				running = false
				resetHWM(w.pid)
			}
		}
	}()
	return w
}

func (w *helperWatch) stop() (sum, edged int64, seen bool) {
	close(w.quit)
	<-w.done
	return w.sum, w.edged, w.seen
}

// helperChildren returns the pids of pid's children named edged-remote.
func helperChildren(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		data, _ := os.ReadFile(t)
		for _, kid := range strings.Fields(string(data)) {
			comm, _ := os.ReadFile("/proc/" + kid + "/comm")
			if strings.TrimSpace(string(comm)) == "edged-remote" {
				if n, err := strconv.Atoi(kid); err == nil {
					out = append(out, n)
				}
			}
		}
	}
	return out
}

// helperPeaks sums the peak RSS of the registry helpers edged logged
// ("registry helper ... peak_rss_kib=N") in log.
func helperPeaks(log string) int64 {
	var sum int64
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "registry helper") {
			continue
		}
		_, v, ok := strings.Cut(line, "peak_rss_kib=")
		if !ok {
			continue
		}
		v, _, _ = strings.Cut(v, " ")
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			sum += n
		}
	}
	return sum
}

// resetHWM makes VmHWM of pid restart at its current RSS
// (/proc/PID/clear_refs "5", Linux ≥ 4.0) and checks that it did.
func resetHWM(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak RSS: %w", err)
	}
	m, err := measure.ReadMemory(pid)
	if err != nil {
		return err
	}
	if m.HWM > m.RSS+1024 {
		return fmt.Errorf("clear_refs 5 did not reset VmHWM of %d (%d KiB, RSS %d KiB)", pid, m.HWM, m.RSS)
	}
	return nil
}

// edgedPhase starts edged with config conf in dir and measures reps runs
// (after a warm-up) of `edgectl args...`, removing the images and
// collecting after each. When other is not nil it runs right after each
// edged run (containerd's counterpart) and its runs are returned too.
func edgedPhase(ctx context.Context, e *Env, dir, conf string, reps int, idle time.Duration, other func() (importRun, error), args ...string) (ours, theirs []importRun, _ error) {
	d, err := startEdgedWithConfig(ctx, e, dir, conf)
	if err != nil {
		return nil, nil, err
	}
	defer d.Stop()
	for i := -1; i < reps; i++ {
		time.Sleep(idle)
		r, err := measureRun(d, func() error {
			return edgectlRun(ctx, e, d.Socket, args...)
		}, func() error { return edgectlClean(ctx, e, d.Socket) })
		if err != nil {
			return nil, nil, err
		}
		if i >= 0 {
			ours = append(ours, r)
		}
		if other == nil {
			continue
		}
		if r, err = other(); err != nil {
			return nil, nil, err
		}
		if i >= 0 {
			theirs = append(theirs, r)
		}
	}
	return ours, theirs, d.Alive()
}

// pairRatio is the median of ours[i] ÷ theirs[i].
func pairRatio(ours, theirs []importRun) float64 {
	rs := make([]time.Duration, len(ours))
	for i := range ours {
		rs[i] = time.Duration(float64(ours[i].elapsed) / float64(theirs[i].elapsed) * 1e6)
	}
	return float64(measure.Percentile(rs, 50)) / 1e6
}

func startEdgedWithConfig(ctx context.Context, e *Env, dir, conf string) (*measure.Daemon, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "edged.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return measure.StartEdged(ctx, e.Bin("edged"), dir, e.EdgedEnv, "--config", path)
}

func edgectlRun(ctx context.Context, e *Env, sock string, args ...string) error {
	cmd := exec.CommandContext(ctx, e.Bin("edgectl"), append([]string{"--address", sock, "--timeout", "5m"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("edgectl %v: %v: %s", args, err, out)
	}
	return nil
}

// edgectlClean removes every image of the default namespace and collects.
func edgectlClean(ctx context.Context, e *Env, sock string) error {
	out, err := exec.CommandContext(ctx, e.Bin("edgectl"), "--address", sock, "images", "ls", "-q").Output()
	if err != nil {
		return fmt.Errorf("edgectl images ls: %v", err)
	}
	names := strings.Fields(string(out))
	if len(names) > 0 {
		if err := edgectlRun(ctx, e, sock, append([]string{"images", "rm", "--sync"}, names...)...); err != nil {
			return err
		}
	}
	return edgectlRun(ctx, e, sock, "gc")
}

// containerdImporter is a private containerd measured with ctr.
type containerdImporter struct {
	d    *measure.Daemon
	sock string
	n    int
}

// startContainerdImporter starts the installed containerd with its
// packaged configuration and everything it writes under dir.
func startContainerdImporter(ctx context.Context, dir string) (*containerdImporter, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	sock := filepath.Join(state, "containerd.sock")
	cfg := filepath.Join(dir, "config.toml")
	conf := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n"+
		"[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    bin_dir = \"/usr/lib/cni\"\n    conf_dir = %q\n"+
		"  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = %q\n",
		root, state, sock, sock+".ttrpc", filepath.Join(dir, "cni"), filepath.Join(dir, "opt"))
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	d, err := measure.StartDaemon(ctx, "containerd", dir, sock, nil, "containerd", "--config", cfg)
	if err != nil {
		return nil, err
	}
	return &containerdImporter{d: d, sock: sock}, nil
}

// next returns a new image name for ctr import --index-name.
func (c *containerdImporter) next() string {
	c.n++
	return "bench/import:" + strconv.Itoa(c.n)
}

func (c *containerdImporter) ctr(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"-a", c.sock, "-n", "bench"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ctr %v: %v: %s", args, err, out)
	}
	return nil
}

// run measures `ctr args...` on containerd, then removes every image of
// the namespace (rm --sync collects content and snapshots).
func (c *containerdImporter) run(ctx context.Context, args ...string) (importRun, error) {
	return measureRun(c.d, func() error { return c.ctr(ctx, args...) }, func() error {
		out, err := exec.CommandContext(ctx, "ctr", "-a", c.sock, "-n", "bench", "images", "ls", "-q").Output()
		if err != nil {
			return fmt.Errorf("ctr images ls: %v", err)
		}
		if names := strings.Fields(string(out)); len(names) > 0 {
			return c.ctr(ctx, append([]string{"images", "rm", "--sync"}, names...)...)
		}
		return nil
	})
}

// registryProc is a docker-registry started for the pull rows.
type registryProc struct {
	addr string
	cmd  *exec.Cmd
}

func startRegistry(ctx context.Context, dir string) (*registryProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n  secret: edged-bench-secret\n",
		filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("docker-registry", "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &registryProc{addr: addr, cmd: cmd}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			return r, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.stop()
			return nil, fmt.Errorf("docker-registry did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *registryProc) push(ctx context.Context, archive, repo string) error {
	out, err := exec.CommandContext(ctx, "skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
		"oci-archive:"+archive, "docker://"+r.addr+"/"+repo).CombinedOutput()
	if err != nil {
		return fmt.Errorf("skopeo copy: %v: %s", err, out)
	}
	return nil
}

func (r *registryProc) stop() {
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}
