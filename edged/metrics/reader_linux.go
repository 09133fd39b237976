package metrics

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/edged/errdefs"
	types "github.com/edged/edged/proto/types"
)

// Reader reads task statistics from the cgroup of the task's init process.
// It holds no per-task state and is safe for concurrent use.
type Reader struct {
	root string
	mode cgroups.Mode
}

// New detects the cgroup layout under root ("" means /sys/fs/cgroup).
func New(root string) (*Reader, error) {
	mode, err := cgroups.DetectMode(root)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return &Reader{root: root, mode: mode}, nil
}

// Mode is the host's cgroup layout.
func (r *Reader) Mode() cgroups.Mode { return r.mode }

// Metrics loads the cgroup of process pid (the init of task id) and reads
// its statistics; it has the signature of the Tasks service's MetricsFunc.
// A process or cgroup that is gone is an ErrNotFound error.
func (r *Reader) Metrics(ctx context.Context, ns, id string, pid uint32) (*types.Metrics, error) {
	if pid == 0 {
		return nil, fmt.Errorf("task %q has no process: %w", id, errdefs.ErrNotFound)
	}
	cg, err := cgroups.Load(r.root, r.mode, int(pid))
	if err != nil {
		return nil, fmt.Errorf("task %q: %w", id, err)
	}
	// The pid was recorded when the task was created; if the task exited
	// and the pid was reused, the process is in another cgroup. edged's
	// cgroups end in the container ID (/edged/<ns>/<id> or
	// edged-<id>.scope).
	if p := cg.Path(); !strings.HasSuffix(p, "/"+id) && !strings.HasSuffix(p, "-"+id+".scope") {
		return nil, fmt.Errorf("task %q: pid %d is in cgroup %q, not the task's: %w", id, pid, p, errdefs.ErrNotFound)
	}
	var st cgroups.Stats
	if err := cg.Stat(&st); err != nil {
		return nil, fmt.Errorf("task %q: %w", id, err)
	}
	return FromStats(id, r.mode.String(), time.Now(), &st, readCPULimits(cg)), nil
}

// readCPULimits reads the CPU quota, period and weight; files that cannot
// be read leave their fields zero.
func readCPULimits(cg cgroups.Manager) CPULimits {
	var l CPULimits
	dir := cg.Dir("cpu")
	if dir == "" {
		return l
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if cg.Version() == 2 {
		// cpu.max: "$MAX $PERIOD", $MAX "max" when unlimited.
		if f := strings.Fields(read("cpu.max")); len(f) == 2 {
			if f[0] == "max" {
				l.Quota = -1
			} else {
				l.Quota, _ = strconv.ParseInt(f[0], 10, 64)
			}
			l.Period, _ = strconv.ParseUint(f[1], 10, 64)
		}
		l.Weight, _ = strconv.ParseUint(read("cpu.weight"), 10, 64)
		return l
	}
	if q, err := strconv.ParseInt(read("cpu.cfs_quota_us"), 10, 64); err == nil {
		l.Quota = q
	}
	l.Period, _ = strconv.ParseUint(read("cpu.cfs_period_us"), 10, 64)
	l.Weight, _ = strconv.ParseUint(read("cpu.shares"), 10, 64)
	return l
}
