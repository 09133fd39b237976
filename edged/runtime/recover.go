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
// Create) is kept in Create and resolved in the background: see resolveCreate.
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
		switch {
		case errdefs.IsUnavailable(serr):
			// Being created: kept as a task in Create (reserved, not
			// listed, calls answered "being created") and resolved in
			// the background (resolveCreate), so that start-up does not
			// wait for the create.
			m.log.Info("task was being created in its shim when edged stopped; resolving it in the background", "namespace", t.Namespace, "id", t.ID, "address", address)
			t.creating = true
			live = append(live, t)
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
	m.shims[sc.key] = sc
	for _, t := range live {
		t.shim = sc
		sc.refs[t.ID] = true
		m.tasks[key(t.Namespace, t.ID)] = t
	}
	m.mu.Unlock()
	for _, t := range live {
		if t.creating {
			m.background(func() { m.resolveCreate(context.WithoutCancel(ctx), sc, t) })
		}
	}
	return len(live)
}

// createPoll is how often resolveCreate asks a shim about a task being
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

// resolveCreate waits for the end of the create of t, which its shim
// answered Unavailable for at Recover: an edged-shim's answer for a task
// whose Create has not returned (see shimd's lookup), the previous edged
// having been killed while the shim ran `runc create` (hooks and a slow
// device make that take seconds). The shim carries the create to its end,
// or to its deadline and the undo after it (CallTimeout each, counted from
// the previous edged's request). Meanwhile t is a task in Create: reserved,
// not listed, calls answered "being created". State is polled until:
//   - the task is there: it is an ordinary task from then on;
//   - NotFound (the create failed and was undone): the task is dropped
//     while its ID is still held, with the daemon's set-up (OnDead: its
//     network) and its bundle and bootstrap, the shim let go if idle; no
//     exit events, as for any failed create;
//   - the shim is gone or does not answer: it is treated as dead, with
//     its tasks;
//   - still Unavailable after 3 × CallTimeout: the task is kept as it is,
//     with a warning (dropping it could leave a container nobody knows);
//   - Close begins: it stops, leaving the task to the next edged.
func (m *Manager) resolveCreate(ctx context.Context, sc *shimConn, t *task) {
	deadline := time.Now().Add(3 * m.cfg.CallTimeout)
	for {
		wait := time.NewTimer(createPoll)
		select {
		case <-m.closing:
			wait.Stop()
			return
		case <-wait.C:
		}
		st, err := m.shimState(ctx, sc.task, t.ID)
		select {
		case <-m.closing:
			return // the connection is being closed under it
		default:
		}
		switch {
		case err == nil:
			m.mu.Lock()
			if st.Pid != 0 {
				t.Pid = st.Pid
			}
			t.creating = false
			m.mu.Unlock()
			m.log.Info("task created by its shim after edged's restart", "namespace", t.Namespace, "id", t.ID, "pid", st.Pid)
			if sc.isDead() {
				m.deadTask(ctx, t)
			}
			return
		case errdefs.IsNotFound(err):
			m.log.Info("task's create failed in its shim while edged was down; dropping it", "namespace", t.Namespace, "id", t.ID)
			if m.cfg.OnDead != nil {
				m.cfg.OnDead(t.Namespace, t.ID)
			}
			m.letGo(ctx, t)
			m.mu.Lock()
			if k := key(t.Namespace, t.ID); m.tasks[k] == t {
				delete(m.tasks, k)
			}
			m.mu.Unlock()
			return
		case errdefs.IsUnavailable(err) && time.Now().Before(deadline):
			continue
		case errdefs.IsUnavailable(err):
			m.log.Warn("task still being created in its shim; keeping it", "namespace", t.Namespace, "id", t.ID, "waited", 3*m.cfg.CallTimeout)
			m.mu.Lock()
			t.creating = false
			m.mu.Unlock()
			return
		default:
			m.log.Error("shim did not answer about a task being created; treating it as dead", "shim", sc.key, "id", t.ID, "error", err)
			m.mu.Lock()
			t.creating = false
			m.mu.Unlock()
			m.shimDead(ctx, sc)
			m.deadTask(ctx, t) // when the shim was found dead already
			return
		}
	}
}
