package shimd

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/cgroups/oom"
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

// Add watches the cgroup of pid (the container's init) for container id.
func (m *OOMMonitor) Add(id string, pid int, onOOM func(oomKills uint64)) error {
	cg, err := cgroups.Load(m.root, m.mode, pid)
	if err != nil {
		return fmt.Errorf("oom watch %s: %w", id, err)
	}
	// The baseline is read before the watch starts: a kill in between is
	// reported by the first event (its counter is above the baseline).
	var st cgroups.Stats
	if err := cg.Stat(&st); err != nil {
		return fmt.Errorf("oom watch %s: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.mon.Add(id, cg); err != nil {
		return err
	}
	m.watches[id] = &oomWatch{cg: cg, onOOM: onOOM, total: st.Memory.Events.OOMKill}
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
	var st cgroups.Stats
	if err := w.cg.Stat(&st); err != nil {
		m.log.Debug("oom watch: final read", "id", id, "error", err)
		return
	}
	w.deliver(st.Memory.Events.OOMKill)
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
