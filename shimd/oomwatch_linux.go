package shimd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/cgroups/oom"
	"github.com/edged/edged/edged/errdefs"
)

// OOMMonitor is the shim's OOMWatcher: one cgroups/oom epoll loop (one
// goroutine) for all containers of the shim. Every OOM kill becomes one
// onOOM call carrying the cgroup's oom_kill counter after that kill.
type OOMMonitor struct {
	root string
	mode cgroups.Mode
	mon  *oom.Monitor
	log  *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}

	// mu is held while onOOM runs, so that Remove returns only after
	// every kill of the container was delivered, in order.
	mu      sync.Mutex
	watches map[string]*oomWatch
}

type oomWatch struct {
	cg    cgroups.Manager
	onOOM func(oomKills uint64)
	// total is the oom_kill counter up to which kills were delivered.
	total uint64
}

var _ OOMWatcher = (*OOMMonitor)(nil)

// NewOOMMonitor detects the host's cgroup layout under root ("" means
// /sys/fs/cgroup) and starts the epoll loop. Close stops it.
func NewOOMMonitor(root string, log *slog.Logger) (*OOMMonitor, error) {
	if log == nil {
		log = slog.Default()
	}
	mode, err := cgroups.DetectMode(root)
	if err != nil {
		return nil, fmt.Errorf("oom monitor: %w", err)
	}
	m := &OOMMonitor{root: root, mode: mode, log: log, watches: map[string]*oomWatch{}, done: make(chan struct{})}
	if m.mon, err = oom.New(m.handle); err != nil {
		return nil, fmt.Errorf("oom monitor: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		defer close(m.done)
		if err := m.mon.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("oom monitor stopped", "error", err)
		}
	}()
	return m, nil
}

// Baseline reads the oom_kill counter of the cgroup at path (relative to
// the hierarchies' root; "" when unknown), before runc creates the
// container. A cgroup that did not exist (existed false), as for every
// container edged creates, or has no memory controller's directory yet,
// reads 0: every kill counted in it is the container's. It returns the
// zero OOMBaseline (Add counts from its own call) when path is "" or the
// cgroup cannot be read.
func (m *OOMMonitor) Baseline(path string, existed bool) OOMBaseline {
	if path == "" {
		return OOMBaseline{}
	}
	cg, err := cgroups.New(m.root, m.mode, path)
	if err != nil || cg.Dir("memory") == "" {
		return OOMBaseline{}
	}
	if !existed {
		return OOMBaseline{Path: cg.Path()}
	}
	kills, err := cg.OOMKills()
	if err != nil {
		if errdefs.IsNotFound(err) {
			return OOMBaseline{Path: cg.Path()}
		}
		m.log.Debug("oom watch: baseline", "cgroup", path, "error", err)
		return OOMBaseline{}
	}
	return OOMBaseline{Path: cg.Path(), Kills: kills}
}

// Add watches the cgroup of pid (the container's init) for container id,
// counting kills from base. With a base, the kills since base that were
// counted before the watch started are delivered before Add returns; an
// init that already exited (killed at once) is found by base's path.
func (m *OOMMonitor) Add(id string, pid int, base OOMBaseline, onOOM func(oomKills uint64)) error {
	cg, err := cgroups.Load(m.root, m.mode, pid)
	if err == nil && cg.Path() == "/" {
		// No container runs in the root cgroup: the init has exited and
		// is not reaped yet (cgroup v1 shows a zombie there, and the
		// root's counters are every cgroup's). Like a reaped init, it
		// is watched in the bundle's cgroup.
		cg, err = nil, fmt.Errorf("process %d shows the root cgroup (exited): %w", pid, errdefs.ErrNotFound)
	}
	switch {
	case err == nil:
		if base.Path != "" && cg.Path() != base.Path {
			// Not the cgroup the bundle named (a cgroup namespace?).
			m.log.Debug("oom watch: cgroup differs from the bundle's", "id", id, "cgroup", cg.Path(), "bundle", base.Path)
			base = OOMBaseline{}
		}
	case errors.Is(err, errdefs.ErrNotFound) && base.Path != "":
		// The init is gone; its cgroup stays until runc delete.
		if cg, err = cgroups.New(m.root, m.mode, base.Path); err != nil {
			return fmt.Errorf("oom watch %s: %w", id, err)
		}
	default:
		return fmt.Errorf("oom watch %s: %w", id, err)
	}
	if base.Path == "" {
		// The baseline is read before the watch starts: a kill in
		// between is reported by the next event (its counter is above
		// the baseline), or by Remove.
		kills, err := cg.OOMKills()
		if err != nil {
			return fmt.Errorf("oom watch %s: %w", id, err)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if err := m.mon.Add(id, cg); err != nil {
			return err
		}
		m.watches[id] = &oomWatch{cg: cg, onOOM: onOOM, total: kills}
		return nil
	}
	// The counter is read after the watch started, and its kills since
	// base are delivered now: the watch reports only those after. The
	// lock keeps the loop's events for id waiting until then.
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.mon.Add(id, cg); err != nil {
		return err
	}
	now, err := cg.OOMKills()
	if err != nil {
		m.mon.Remove(id)
		return fmt.Errorf("oom watch %s: %w", id, err)
	}
	// On v1 a removed sub-cgroup takes its kills out of the sum.
	w := &oomWatch{cg: cg, onOOM: onOOM, total: min(base.Kills, now)}
	m.watches[id] = w
	w.deliver(now)
	return nil
}

// Remove stops watching id, first delivering any kill the kernel counted
// that the loop has not reported yet (the init may exit before the loop
// woke up).
func (m *OOMMonitor) Remove(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.watches[id]
	if w == nil {
		return
	}
	delete(m.watches, id)
	m.mon.Remove(id)
	kills, err := w.cg.OOMKills()
	if err != nil {
		m.log.Debug("oom watch: final read", "id", id, "error", err)
		return
	}
	w.deliver(kills)
}

// handle runs on the loop's goroutine.
func (m *OOMMonitor) handle(e oom.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.watches[e.ID]
	if w == nil {
		return // removed: Remove delivered the kills
	}
	total := e.Total
	if total == 0 { // v1 kernel without a kill counter: count notifications
		total = w.total + e.OOMKills
	}
	w.deliver(total)
}

// deliver calls onOOM once per kill up to counter total. Called with m.mu
// held.
func (w *oomWatch) deliver(total uint64) {
	for w.total < total {
		w.total++
		w.onOOM(w.total)
	}
}

// Len is the number of containers watched.
func (m *OOMMonitor) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.watches)
}

// Close stops the loop and releases its file descriptors.
func (m *OOMMonitor) Close() error {
	m.cancel()
	err := m.mon.Close()
	<-m.done
	return err
}
