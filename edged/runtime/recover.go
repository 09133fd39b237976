package runtime

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edged/edged/edged/errdefs"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
)

// RecoverResult says what Recover found.
type RecoverResult struct {
	Reconnected int
	Dead        int
	Duration    time.Duration
}

// Recover reads the bootstrap data of the tasks of a previous edged,
// reconnects to their shims in parallel (each with ConnectTimeout) and
// cleans up tasks whose shim is gone: their runc containers, mounts,
// bundles and bootstrap files. Tasks a live shim no longer has are dropped
// (see reconnect). Bundles without bootstrap data (a crash in Create before
// the shim was asked to create the task) are removed too.
func (m *Manager) Recover(ctx context.Context) (RecoverResult, error) {
	start := time.Now()
	m.removeStaleSpares(ctx)
	m.emptyTrash()
	var res RecoverResult
	var tasks []*task
	root := filepath.Join(m.cfg.State, "tasks")
	nsDirs, _ := os.ReadDir(root)
	for _, nd := range nsDirs {
		files, _ := os.ReadDir(filepath.Join(root, nd.Name()))
		for _, f := range files {
			p := filepath.Join(root, nd.Name(), f.Name())
			if !strings.HasSuffix(f.Name(), ".json") {
				os.Remove(p) // a temp file of an interrupted write
				continue
			}
			b, err := os.ReadFile(p)
			var t task
			if err != nil || json.Unmarshal(b, &t) != nil || t.ID == "" || t.Namespace != nd.Name() {
				m.log.Warn("removing unreadable task bootstrap", "path", p, "error", err)
				os.Remove(p)
				continue
			}
			tasks = append(tasks, &t)
		}
	}

	// One connection attempt per shim, all shims in parallel.
	byShim := map[string][]*task{}
	for _, t := range tasks {
		byShim[t.Address] = append(byShim[t.Address], t)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for address, ts := range byShim {
		wg.Add(1)
		go func(address string, ts []*task) {
			defer wg.Done()
			kept := m.reconnect(ctx, address, ts)
			mu.Lock()
			defer mu.Unlock()
			res.Reconnected += kept
			res.Dead += len(ts) - kept
		}(address, ts)
	}
	wg.Wait()

	// Bundles nobody owns.
	known := map[string]bool{}
	m.mu.Lock()
	for _, t := range m.tasks {
		known[t.Bundle] = true
	}
	m.mu.Unlock()
	bdirs, _ := os.ReadDir(filepath.Join(m.cfg.State, "bundles"))
	for _, nd := range bdirs {
		ids, _ := os.ReadDir(filepath.Join(m.cfg.State, "bundles", nd.Name()))
		for _, id := range ids {
			b := filepath.Join(m.cfg.State, "bundles", nd.Name(), id.Name())
			if known[b] {
				continue
			}
			m.log.Info("removing orphaned bundle", "bundle", b)
			t := &task{Namespace: nd.Name(), ID: id.Name(), Bundle: b, Native: true}
			m.cleanupTask(ctx, t)
			m.taskGone(t)
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// reconnect connects to one shim, checks that it is alive and asks it
// about each of its tasks; it returns how many tasks it kept. A shim that
// is gone or does not answer has all its tasks cleaned up. A task the live
// shim does not have is one whose Delete the previous edged got through to
// the shim but was killed before it removed the bootstrap, or whose create
// failed: only its bootstrap and bundle are removed, the shim's other tasks
// (a shim group) are kept, and a shim left with no task is shut down. A
// task the shim is still creating (the previous edged was killed during its
// Create) is waited for: see awaitCreate.
func (m *Manager) reconnect(ctx context.Context, address string, ts []*task) int {
	first := ts[0]
	cctx, cancel := context.WithTimeout(ctx, m.cfg.ConnectTimeout)
	c, svc, err := dialShim(cctx, first.Namespace, address, m.cfg.ConnectTimeout)
	if err == nil {
		// Without an Id: whether the shim is alive, not whether it
		// has one particular task.
		_, err = svc.Connect(cctx, &taskapi.ConnectRequest{})
	}
	cancel()
	var live []*task
	for _, t := range ts {
		if err != nil {
			break
		}
		// State, not Connect with the task's Id: a containerd shim's
		// Connect does not fail for a task it does not have.
		st, serr := m.shimState(ctx, svc, t.ID)
		if errdefs.IsUnavailable(serr) {
			st, serr = m.awaitCreate(ctx, svc, address, t)
		}
		switch {
		case serr == nil:
			if st.Pid != 0 {
				// Create saves the bootstrap before the shim knows the pid.
				t.Pid = st.Pid
			}
			live = append(live, t)
		case errdefs.IsNotFound(serr):
			m.log.Info("task was deleted in its shim, or its create failed, before edged stopped; removing its bootstrap", "namespace", t.Namespace, "id", t.ID, "address", address)
			m.removeBundle(t.Bundle)
			os.Remove(m.bootstrapPath(t.Namespace, t.ID))
		case errdefs.IsUnavailable(serr):
			// Still being created: kept, bundle and all; the shim
			// has it once the create returns, or answers NotFound for
			// it, which Delete takes as deleted.
			m.log.Warn("task still being created in its shim; keeping it", "namespace", t.Namespace, "id", t.ID, "address", address, "waited", m.cfg.CallTimeout, "error", serr)
			live = append(live, t)
		default:
			err = serr
		}
	}
	if err != nil {
		if c != nil {
			c.Close()
		}
		m.log.Warn("shim of a previous edged is gone; cleaning up its tasks", "address", address, "tasks", len(ts), "error", err)
		for _, t := range ts {
			// Before serving: no Create can race this clean-up.
			m.cleanupTask(ctx, t)
			m.taskGone(t)
		}
		if first.Native {
			os.Remove(address)
			os.Remove(address + ".log")
		}
		return 0
	}
	if len(live) == 0 {
		// Shutdown without Now: the shim exits only if it has no
		// container indeed.
		m.log.Info("shutting down a shim of a previous edged left with no task", "address", address)
		cctx, cancel := context.WithTimeout(ctx, m.cfg.ConnectTimeout)
		defer cancel()
		if _, err := svc.Shutdown(cctx, &taskapi.ShutdownRequest{Id: first.ID}); err != nil {
			m.log.Warn("shim shutdown failed", "address", address, "error", errdefs.FromStatus(err))
		}
		c.Close()
		if first.Native {
			os.Remove(address)
			os.Remove(address + ".log")
		}
		return 0
	}
	first = live[0]
	sc := &shimConn{key: first.Namespace + "/" + first.Group, ns: first.Namespace, group: first.Group, address: address,
		pid: first.ShimPid, native: first.Native, binary: first.Binary, client: c, task: svc, refs: map[string]bool{}}
	if !first.Native {
		sc.key = first.Namespace + "/" + first.ID
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.shims[sc.key] = sc
	for _, t := range live {
		t.shim = sc
		sc.refs[t.ID] = true
		m.tasks[key(t.Namespace, t.ID)] = t
	}
	return len(live)
}

// createPoll is how often awaitCreate asks a shim about a task being
// created.
const createPoll = 50 * time.Millisecond

// shimState asks a shim for the state of a task's init within
// ConnectTimeout.
func (m *Manager) shimState(ctx context.Context, svc taskapi.TaskService, id string) (*taskapi.StateResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ConnectTimeout)
	defer cancel()
	st, err := svc.State(ctx, &taskapi.StateRequest{Id: id})
	return st, errdefs.FromStatus(err)
}

// awaitCreate waits for the end of the create of t, which its shim
// answered Unavailable for: an edged-shim's answer for a task whose Create
// has not returned (see shimd's lookup), the previous edged having been
// killed while the shim ran `runc create` (hooks and a slow device make
// that take seconds). The shim carries the create to its end or to its
// deadline, at most CallTimeout after the previous edged asked: State is
// polled for up to CallTimeout, and returns the created task's state, or
// NotFound once a failed create is undone (bundle and bootstrap may go).
// Still Unavailable after that, the task is kept: dropping it could leave
// a container nobody knows.
func (m *Manager) awaitCreate(ctx context.Context, svc taskapi.TaskService, address string, t *task) (*taskapi.StateResponse, error) {
	m.log.Info("task was being created in its shim when edged stopped; waiting for the create to end", "namespace", t.Namespace, "id", t.ID, "address", address)
	deadline := time.Now().Add(m.cfg.CallTimeout)
	for {
		wait := time.NewTimer(createPoll)
		select {
		case <-ctx.Done():
			wait.Stop()
			return nil, ctx.Err()
		case <-wait.C:
		}
		st, err := m.shimState(ctx, svc, t.ID)
		if !errdefs.IsUnavailable(err) || !time.Now().Before(deadline) {
			return st, err
		}
	}
}
