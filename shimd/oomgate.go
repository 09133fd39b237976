package shimd

import "sync"

// OOMBaseline is the oom_kill counter of a container's cgroup read before
// runc created the container (OOMWatcher.Baseline), from which Add counts
// the container's kills. The zero value means none was read: Add counts
// from its own call.
type OOMBaseline struct {
	// Path is the cgroup path, relative to the hierarchy root, that the
	// bundle names; "" when unknown.
	Path string
	// Kills is the cgroup's oom_kill counter then: 0 when the cgroup did
	// not exist yet (runc creates it for the container).
	Kills uint64
}

// oomGate holds a container's TaskOOM events back while it is closed: from
// the creation of the container until its TaskCreate (and, created and
// started at once, its TaskStart) is published, and during the Start of
// its init until its TaskStart is. A container that runc run started may
// be OOM-killed before runc returns, and OOMWatcher.Add reports that kill
// at once; an init that runc start started may be OOM-killed, and the kill
// reported by the watcher's loop, before runc start returns. The gate is
// closed from its creation.
type oomGate struct {
	publish func(oomKills uint64)

	mu      sync.Mutex
	open    bool
	pending []uint64
}

// onOOM publishes now once the gate is open, or else at its opening.
func (g *oomGate) onOOM(oomKills uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		g.pending = append(g.pending, oomKills)
		return
	}
	g.publish(oomKills)
}

// hold closes the gate: events are held back until release.
func (g *oomGate) hold() {
	g.mu.Lock()
	g.open = false
	g.mu.Unlock()
}

// release opens the gate, publishing the events held back, in order.
func (g *oomGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = true
	for _, n := range g.pending {
		g.publish(n)
	}
	g.pending = nil
}
