package metrics

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/edged/errdefs"
	types "github.com/edged/edged/proto/types"
)

// cacheIdle is how long the cgroup of a task that is no longer asked for
// stays cached.
const cacheIdle = time.Minute

// Reader reads task statistics from the cgroup of the task's init process.
// It keeps the cgroups it has loaded (keyed by task and pid, with a pidfd
// of the init) while they are being read, so that a refresh reads only the
// statistics files and not /proc/<pid>/cgroup and the mounts again; a
// cgroup unused for a minute is dropped. It is safe for concurrent use.
type Reader struct {
	root string
	mode cgroups.Mode

	mu    sync.Mutex // guards cache and swept, and the pidfds' lifetime
	cache map[taskKey]*cachedCgroup
	swept time.Time
}

type taskKey struct {
	ns, id string
	pid    uint32
}

// cachedCgroup is the cgroup of a running task's init, and a pidfd that
// becomes readable when the init exits.
type cachedCgroup struct {
	cg    cgroups.Manager
	pidfd int
	used  time.Time
}

// New detects the cgroup layout under root ("" means /sys/fs/cgroup).
func New(root string) (*Reader, error) {
	mode, err := cgroups.DetectMode(root)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return &Reader{root: root, mode: mode, cache: map[taskKey]*cachedCgroup{}}, nil
}

// Mode is the host's cgroup layout.
func (r *Reader) Mode() cgroups.Mode { return r.mode }

// Metrics loads the cgroup of process pid (the init of task id) and reads
// its statistics; it has the signature of the Tasks service's MetricsFunc.
// A process that exited or a cgroup that is gone is an ErrNotFound error.
func (r *Reader) Metrics(ctx context.Context, ns, id string, pid uint32) (*types.Metrics, error) {
	if pid == 0 {
		return nil, fmt.Errorf("task %q has no process: %w", id, errdefs.ErrNotFound)
	}
	key := taskKey{ns: ns, id: id, pid: pid}
	cg, err := r.cgroup(key)
	if err != nil {
		return nil, fmt.Errorf("task %q: %w", id, err)
	}
	var st cgroups.Stats
	if err := cg.Stat(&st); err != nil {
		if errdefs.IsNotFound(err) {
			r.forget(key)
		}
		return nil, fmt.Errorf("task %q: %w", id, err)
	}
	return FromStats(id, r.mode.String(), time.Now(), &st, readCPULimits(cg)), nil
}

// cgroup returns the cached cgroup of the task, if its init still runs, or
// loads it.
func (r *Reader) cgroup(key taskKey) (cgroups.Manager, error) {
	now := time.Now()
	r.mu.Lock()
	if now.Sub(r.swept) > cacheIdle {
		for k, c := range r.cache {
			if now.Sub(c.used) > cacheIdle {
				r.drop(k, c)
			}
		}
		r.swept = now
	}
	if c := r.cache[key]; c != nil {
		if exited(c.pidfd) {
			r.drop(key, c)
			r.mu.Unlock()
			return nil, fmt.Errorf("process %d exited: %w", key.pid, errdefs.ErrNotFound)
		}
		c.used = now
		r.mu.Unlock()
		return c.cg, nil
	}
	r.mu.Unlock()

	// The pidfd is opened first: if the cgroup of the process it refers
	// to is the task's, it is the task's init.
	pidfd, err := unix.PidfdOpen(int(key.pid), 0)
	if errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("process %d: %w", key.pid, errdefs.ErrNotFound)
	}
	if err != nil {
		pidfd = -1
	}
	cg, err := cgroups.Load(r.root, r.mode, int(key.pid))
	if err != nil {
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		return nil, err
	}
	// The pid was recorded when the task was created; if the task exited
	// and the pid was reused, the process is in another cgroup. edged's
	// cgroups end in the container ID (/edged/<ns>/<id> or
	// edged-<id>.scope).
	if p := cg.Path(); !strings.HasSuffix(p, "/"+key.id) && !strings.HasSuffix(p, "-"+key.id+".scope") {
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		return nil, fmt.Errorf("pid %d is in cgroup %q, not the task's: %w", key.pid, p, errdefs.ErrNotFound)
	}
	if pidfd < 0 {
		// No pidfds (Linux < 5.3): nothing tells when the pid is
		// reused, so the cgroup is loaded on every read.
		return cg, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.cache[key]; old != nil {
		// A concurrent read cached it first.
		unix.Close(pidfd)
		old.used = now
		return old.cg, nil
	}
	r.cache[key] = &cachedCgroup{cg: cg, pidfd: pidfd, used: now}
	return cg, nil
}

// forget drops a task's cgroup from the cache.
func (r *Reader) forget(key taskKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.cache[key]; c != nil {
		r.drop(key, c)
	}
}

// drop removes an entry and closes its pidfd; r.mu is held, so no reader
// polls the closed descriptor.
func (r *Reader) drop(key taskKey, c *cachedCgroup) {
	unix.Close(c.pidfd)
	delete(r.cache, key)
}

// exited reports whether the process of pidfd has exited (the pidfd is
// readable). An error counts as exited: the cgroup is loaded again.
func exited(pidfd int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err != nil || n > 0
	}
}

// readCPULimits reads the CPU quota, period and weight; files that cannot
// be read leave their fields zero.
func readCPULimits(cg cgroups.Manager) CPULimits {
	var l CPULimits
	dir := cg.Dir("cpu")
	if dir == "" {
		return l
	}
	var buf [64]byte
	read := func(name string) string {
		return readSmall(dir+"/"+name, buf[:])
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

// readSmall returns the trimmed content of a one-line cgroup file that fits
// in buf, "" when it cannot be read. It uses bare open/read/close: os.ReadFile
// would also register the file with the poller and fstat it, which doubles
// the system calls of a refresh that reads three of these per task.
func readSmall(path string, buf []byte) string {
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n < 0 {
			return ""
		}
		// A cgroup file is produced whole by its first read; one that
		// fills buf is not a number this reader knows.
		if n == len(buf) {
			return ""
		}
		return strings.TrimSpace(string(buf[:n]))
	}
}
