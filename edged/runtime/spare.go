package runtime

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"time"

	taskapi "github.com/edged/edged/proto/runtime/task/v2"
)

// A spare is an idle edged-shim started ahead for a namespace (Config.
// SpareShim): the next task of that namespace that needs a new shim adopts
// it instead of waiting for a fork/exec and the shim's start-up. Its socket
// and log are named spare-<hash> under <state>/s until adoption renames
// them to the group's names, so a spare that a crashed edged left behind is
// recognised (and shut down) by Recover.
type spare struct {
	sc *shimConn
}

const sparePrefix = "spare-"

// sparePath names the socket of a new spare shim of the namespace. The
// name is unique: an adopted spare removes the socket path it was started
// with when it exits, which must not be the next spare's.
func (m *Manager) sparePath(ns string) string {
	d := sha256.Sum256([]byte(m.cfg.Address + "\x00spare\x00" + ns))
	var r [6]byte
	rand.Read(r[:])
	return filepath.Join(m.cfg.State, "s", sparePrefix+hex.EncodeToString(d[:8])+hex.EncodeToString(r[:]))
}

// adoptSpare hands the namespace's spare shim to group, renaming its socket
// and log to the group's path. It returns nil when there is no live spare.
func (m *Manager) adoptSpare(ns, group, path string) *shimConn {
	if !m.cfg.SpareShim {
		return nil
	}
	m.mu.Lock()
	sp := m.spares[ns]
	delete(m.spares, ns)
	m.mu.Unlock()
	if sp == nil {
		return nil
	}
	sc := sp.sc
	if sc.lost() {
		m.log.Warn("spare shim is gone; starting a shim", "namespace", ns, "pid", sc.pid)
		m.stopSpare(sc)
		return nil
	}
	// The log first: a failure leaves the socket at the spare's name,
	// where stopSpare finds it.
	if err := os.Rename(sc.address+".log", path+".log"); err != nil {
		m.log.Warn("adopt spare shim", "namespace", ns, "error", err)
		m.stopSpare(sc)
		return nil
	}
	if err := os.Rename(sc.address, path); err != nil {
		m.log.Warn("adopt spare shim", "namespace", ns, "error", err)
		os.Rename(path+".log", sc.address+".log")
		m.stopSpare(sc)
		return nil
	}
	sc.address, sc.key, sc.group = path, ns+"/"+group, group
	// The next spare is due spareFillDelay after this adoption, not after
	// the end of an earlier Create: a timer armed then would fire while
	// this shim's container starts (and a spare started then makes this
	// shim, let go, stop instead of becoming the spare).
	m.fillSpareLater(ns)
	return sc
}

// spareFillDelay is how long after the last adoption of a namespace's
// spare (and the end of the last Create) a new one is started: not at once,
// nor while a container of the namespace is being created, where its
// start-up would compete with the new container's; and not while containers
// keep being started and removed: each one's shim, let go, becomes the
// spare (recycle), so such a sequence starts no shims at all.
const spareFillDelay = 100 * time.Millisecond

// fillSpareLater calls fillSpare once no spare of the namespace was adopted
// and no container of it created for spareFillDelay, and none is being
// created.
func (m *Manager) fillSpareLater(ns string) {
	if !m.cfg.SpareShim {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.fillTimers[ns]; t != nil {
		t.Reset(spareFillDelay)
		return
	}
	var t *time.Timer
	t = time.AfterFunc(spareFillDelay, func() {
		m.mu.Lock()
		if m.fillTimers[ns] != t {
			m.mu.Unlock() // stopped by Close
			return
		}
		if m.creatingIn(ns) {
			t.Reset(spareFillDelay)
			m.mu.Unlock()
			return
		}
		delete(m.fillTimers, ns)
		m.mu.Unlock()
		m.fillSpare(ns)
	})
	m.fillTimers[ns] = t
}

// creatingIn reports whether a task of the namespace is being created
// (m.mu held).
func (m *Manager) creatingIn(ns string) bool {
	for _, t := range m.tasks {
		if t.creating && t.Namespace == ns {
			return true
		}
	}
	return false
}

// recycle makes an idle edged-shim this edged started the namespace's
// spare, when spares are on and the namespace has none: its socket and log
// are renamed to a new spare name (a new shim of the group may take the
// group's path at once). It reports false when the shim must be stopped
// instead.
func (m *Manager) recycle(sc *shimConn) bool {
	if !m.cfg.SpareShim || !sc.native || sc.cmd == nil || sc.lost() || sc.isDead() {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.spares[sc.ns] != nil || m.filling[sc.ns] {
		return false
	}
	path := m.sparePath(sc.ns)
	if err := os.Rename(sc.address+".log", path+".log"); err != nil {
		return false
	}
	if err := os.Rename(sc.address, path); err != nil {
		os.Rename(path+".log", sc.address+".log")
		return false
	}
	if m.shims[sc.key] == sc {
		delete(m.shims, sc.key)
	}
	sc.address, sc.key, sc.group = path, "", ""
	m.spares[sc.ns] = &spare{sc: sc}
	return true
}

// fillSpare starts a spare shim for the namespace in the background unless
// there is one, one is being started, spares are off, or the manager is
// closed.
func (m *Manager) fillSpare(ns string) {
	if !m.cfg.SpareShim {
		return
	}
	m.mu.Lock()
	if m.closed || m.spares[ns] != nil || m.filling[ns] {
		m.mu.Unlock()
		return
	}
	m.filling[ns] = true
	m.fills.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.fills.Done()
		sp := &spare{}
		path := m.sparePath(ns)
		sc, err := m.spawnNativeShim(context.Background(), ns, filepath.Base(path), path)
		m.mu.Lock()
		delete(m.filling, ns)
		closed := m.closed
		if err == nil && !closed {
			sp.sc = sc
			m.spares[ns] = sp
		}
		m.mu.Unlock()
		switch {
		case err != nil:
			m.log.Warn("could not start a spare shim", "namespace", ns, "error", err)
		case closed:
			m.stopSpare(sc)
		}
	}()
}

// stopSpare shuts an idle shim down and removes its socket and log.
func (m *Manager) stopSpare(sc *shimConn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	sc.task.Shutdown(ctx, &taskapi.ShutdownRequest{Now: true})
	sc.closeClient()
	sc.reap()
	os.Remove(sc.address)
	os.Remove(sc.address + ".log")
}

// removeStaleSpares shuts down the spare shims a previous edged left
// (it did not stop cleanly) and removes their sockets and logs. A spare
// serves no task: it is only ever adopted after its socket is renamed.
func (m *Manager) removeStaleSpares(ctx context.Context) {
	dir := filepath.Join(m.cfg.State, "s")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, sparePrefix) || strings.HasSuffix(name, ".log") {
			continue
		}
		path := filepath.Join(dir, name)
		cctx, cancel := context.WithTimeout(ctx, m.cfg.ConnectTimeout)
		if c, task, err := dialShim(cctx, "default", path, m.cfg.ConnectTimeout); err == nil {
			task.Shutdown(cctx, &taskapi.ShutdownRequest{Now: true})
			c.Close()
		}
		cancel()
		m.log.Info("removed the spare shim of a previous edged", "socket", path)
		os.Remove(path)
		os.Remove(path + ".log")
	}
	for _, e := range ents {
		if name := e.Name(); strings.HasPrefix(name, sparePrefix) && strings.HasSuffix(name, ".log") {
			if _, err := os.Stat(filepath.Join(dir, strings.TrimSuffix(name, ".log"))); os.IsNotExist(err) {
				os.Remove(filepath.Join(dir, name))
			}
		}
	}
}
