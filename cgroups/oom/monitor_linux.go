// Package oom reports OOM kills in container cgroups with one epoll loop for
// all containers: no goroutine, timer or polling per container, and no CPU
// use while nothing happens.
//
// cgroup v2: one inotify instance watches every container's memory.events
// and cgroup.events for IN_MODIFY; a change re-reads the oom_kill counter
// (not "oom", which also counts OOMs that ended without a kill). When
// cgroup.events goes from populated 1 to 0 (the container's last process
// exited), memory.events is read one last time, so the kill that ended the
// container is not lost, and the watch is dropped.
//
// cgroup v1: an eventfd per container is registered through
// cgroup.event_control against memory.oom_control. The kernel signals it
// when the cgroup enters OOM (just before the kill) and when the cgroup is
// removed. A wake-up re-reads the oom_kill counters of memory.oom_control
// (kernels >= 4.13) of the cgroup and of every cgroup below it: v1 counts a
// kill only in the victim's own cgroup, and a container's processes may
// live in sub-cgroups (systemd, a nested engine) while the kernel signals
// the container's eventfd when the container hits its limit. The counters
// are compared per cgroup directory inode, so that a sub-cgroup removed or
// recreated since the last read (systemd restarting a killed service) hides
// no kill. (A sub-cgroup hitting a limit of its own signals only its own
// eventfd and those below it: such kills are counted by the next
// notification of the container's cgroup, or by Stats.) The walk reads at
// most 1,024 sub-cgroups (see cgroups.V1OOMKills); when it stops there, the
// counters of the sub-cgroups it did not reach are kept from the read that
// last saw them, so that a sub-cgroup falling out of the walk's reach (more
// sub-cgroups before it in name order) and back in has only its new kills
// counted; a kill in a sub-cgroup out of reach is reported once a walk
// reaches it. (Sub-cgroups out of reach at Add count all their kills when
// first reached: a container rarely has 1,024 sub-cgroups when its watch
// is added.) Since the notification can precede the kill, a wake-up that
// finds no new kill re-reads five times over about 1.5 s (2 ms to 1.25 s
// apart). This is the only time the loop uses a timeout. A removed cgroup
// drops the watch.
//
// Events carry the number of new kills since the previous event of the same
// container: one container with one killed process gives exactly one event
// with OOMKills 1; three kills seen at one read give one event with
// OOMKills 3. Kills that happened before Add are not reported.
package oom

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/edged/errdefs"
)

// Event reports OOM kills in the cgroup of container ID.
type Event struct {
	ID string
	// OOMKills is the number of kills since the previous event for ID
	// (at least 1). On v1 kernels older than 4.13, which have no kill
	// counter, it is the number of OOM notifications instead.
	OOMKills uint64
	// Total is the cgroup's oom_kill counter after these kills,
	// including its sub-cgroups' (as cgroups.MemoryEvents.OOMKill). On v1
	// it is the sum at Add plus the kills seen since, which stays above
	// the current sum once a sub-cgroup with kills is removed.
	Total uint64
}

// Epoll tokens (stored in the event data) of the monitor's own fds; v1
// watches get tokens from firstToken on.
const (
	tokenInotify uint32 = iota
	tokenWake
	firstToken
)

// rechecks is the number of re-reads after a v1 notification without a new
// kill; recheckDelay(i) is the pause before re-read i: 2, 10, 50, 250 ms, 1.25 s.
const rechecks = 5

func recheckDelay(step int) time.Duration {
	d := 2 * time.Millisecond
	for range step {
		d *= 5
	}
	return d
}

// watch is one container.
type watch struct {
	id      string
	version int
	dir     string // the memory cgroup directory
	file    string // memory.events (v2) or memory.oom_control (v1)
	last    uint64 // oom_kill counter at the last read

	// v2
	memWd, cgWd int32
	populated   bool

	// v1
	efd       int
	token     uint32
	noCounter bool // kernel < 4.13: no oom_kill in memory.oom_control
	// kills is the oom_kill counter per cgroup directory inode, the
	// cgroup's and its sub-cgroups', as last read; counters that were
	// 0 are left out (an absent inode counts from 0).
	kills     map[uint64]uint64
	step      int       // next re-read (see recheckDelay); -1 when none pending
	recheckAt time.Time // when step is >= 0
}

// Monitor watches container cgroups for OOM kills. Create it with New, call
// Run in a goroutine, Add and Remove containers from any goroutine, and
// Close it when done. The handler runs on the Run goroutine, outside the
// monitor's lock (it may call Add or Remove) and must not block for long.
type Monitor struct {
	handler func(Event)
	epfd    int
	epf     *os.File // epfd in the Go runtime's poller: Run waits without a thread
	ifd     int      // inotify
	wakefd  int      // eventfd

	wakeMu sync.Mutex // guards the use and closing of wakefd

	mu        sync.Mutex
	byID      map[string]*watch
	byWd      map[int32]*watch
	byToken   map[uint32]*watch
	nextToken uint32
	pending   int // watches with step >= 0
	closed    bool
	running   bool
	done      chan struct{} // closed when Run returns

	wakeups atomic.Uint64 // epoll_wait returns, for the idle test
}

// New creates a monitor calling handler for every event. It holds three
// file descriptors (epoll, inotify, eventfd) until Close.
func New(handler func(Event)) (*Monitor, error) {
	if handler == nil {
		return nil, errdefs.InvalidArgument("handler", "is nil")
	}
	m := &Monitor{
		handler: handler, epfd: -1, ifd: -1, wakefd: -1,
		byID: map[string]*watch{}, byWd: map[int32]*watch{}, byToken: map[uint32]*watch{},
		nextToken: firstToken, done: make(chan struct{}),
	}
	var err error
	if m.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// Non-blocking, the epoll fd goes into the runtime's own poller
	// (os.NewFile), where Run waits for it to become readable: a blocking
	// epoll_wait would hold an OS thread (and its stacks) for the shim's life.
	if err := unix.SetNonblock(m.epfd, true); err != nil {
		unix.Close(m.epfd)
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	m.epf = os.NewFile(uintptr(m.epfd), "oom-epoll")
	if m.ifd, err = unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC); err != nil {
		m.closeFds()
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	if m.wakefd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		m.closeFds()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := m.epollAdd(m.ifd, tokenInotify); err != nil {
		m.closeFds()
		return nil, err
	}
	if err := m.epollAdd(m.wakefd, tokenWake); err != nil {
		m.closeFds()
		return nil, err
	}
	return m, nil
}

func (m *Monitor) epollAdd(fd int, token uint32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setToken(&ev, token)
	if err := unix.EpollCtl(m.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

// setToken and getToken keep a token in the 64-bit epoll data (x/sys names
// its first half Fd).
func setToken(ev *unix.EpollEvent, t uint32) { ev.Fd = int32(t) }
func getToken(ev *unix.EpollEvent) uint32    { return uint32(ev.Fd) }

func (m *Monitor) closeFds() {
	// A context's AfterFunc may be calling wake right now.
	m.wakeMu.Lock()
	defer m.wakeMu.Unlock()
	if m.epf != nil {
		m.epf.Close() // closes epfd
		m.epf, m.epfd = nil, -1
	}
	for _, fd := range []*int{&m.ifd, &m.wakefd} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// Add starts watching the memory cgroup of cg for container id. It fails
// with ErrAlreadyExists if id (or the same cgroup) is already watched,
// ErrNotImplemented if the cgroup has no memory controller, ErrNotFound if
// the cgroup does not exist.
func (m *Monitor) Add(id string, cg cgroups.Manager) error {
	if id == "" {
		return errdefs.InvalidArgument("id", "is empty")
	}
	dir := cg.Dir("memory")
	if dir == "" {
		return fmt.Errorf("oom watch %s: the memory controller is not mounted: %w", id, errdefs.ErrNotImplemented)
	}
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("oom watch %s: cgroup %s: %w", id, dir, errdefs.ErrNotFound)
		}
		return fmt.Errorf("oom watch %s: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("oom monitor is closed: %w", errdefs.ErrUnavailable)
	}
	if _, ok := m.byID[id]; ok {
		return fmt.Errorf("oom watch %s: %w", id, errdefs.ErrAlreadyExists)
	}
	w := &watch{id: id, version: cg.Version(), dir: dir, efd: -1, memWd: -1, cgWd: -1, step: -1}
	var err error
	if w.version == 2 {
		err = m.addV2(w)
	} else {
		err = m.addV1(w)
	}
	if err != nil {
		return fmt.Errorf("oom watch %s: %w", id, err)
	}
	m.byID[id] = w
	return nil
}

func (m *Monitor) addV2(w *watch) error {
	w.file = filepath.Join(w.dir, "memory.events")
	total, ok, err := readCounter(w.file, "oom_kill")
	if err != nil {
		return notImplementedIfMissing(err)
	}
	if !ok {
		return fmt.Errorf("%s has no oom_kill counter (kernel < 4.13): %w", w.file, errdefs.ErrNotImplemented)
	}
	w.last = total
	pop, _, err := readCounter(filepath.Join(w.dir, "cgroup.events"), "populated")
	if err != nil {
		return err
	}
	w.populated = pop != 0
	wd, err := inotifyAdd(m.ifd, w.file)
	if err != nil {
		return err
	}
	if other := m.byWd[wd]; other != nil {
		return fmt.Errorf("cgroup %s is already watched as %s: %w", w.dir, other.id, errdefs.ErrAlreadyExists)
	}
	cwd, err := inotifyAdd(m.ifd, filepath.Join(w.dir, "cgroup.events"))
	if err != nil {
		unix.InotifyRmWatch(m.ifd, uint32(wd))
		return err
	}
	w.memWd, w.cgWd = wd, cwd
	m.byWd[wd], m.byWd[cwd] = w, w
	return nil
}

func inotifyAdd(ifd int, path string) (int32, error) {
	for {
		wd, err := unix.InotifyAddWatch(ifd, path, unix.IN_MODIFY)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("inotify_add_watch %s: %w", path, err)
		}
		return int32(wd), nil
	}
}

func (m *Monitor) addV1(w *watch) error {
	w.file = filepath.Join(w.dir, "memory.oom_control")
	w.kills = map[uint64]uint64{}
	total, ok, _, err := cgroups.V1OOMKills(w.dir, func(ino, n uint64) {
		if n > 0 {
			w.kills[ino] = n
		}
	})
	if err != nil {
		return notImplementedIfMissing(err)
	}
	w.last, w.noCounter = total, !ok
	ofd, err := openRetry(w.file)
	if err != nil {
		return err
	}
	// The kernel only needs memory.oom_control to identify the event
	// source during the registration write; it keeps the eventfd.
	defer unix.Close(ofd)
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	ctl := filepath.Join(w.dir, "cgroup.event_control")
	if err := writeRetry(ctl, strconv.Itoa(efd)+" "+strconv.Itoa(ofd)); err != nil {
		unix.Close(efd)
		return err
	}
	w.efd, w.token = efd, m.nextToken
	m.nextToken++
	if m.nextToken < firstToken { // wrapped
		m.nextToken = firstToken
	}
	if err := m.epollAdd(efd, w.token); err != nil {
		unix.Close(efd)
		return err
	}
	m.byToken[w.token] = w
	return nil
}

func notImplementedIfMissing(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w (memory controller not enabled?): %w", err, errdefs.ErrNotImplemented)
	}
	return err
}

// Remove stops watching id and releases its resources. Removing an id that
// is not watched (never added, or dropped because its cgroup emptied or
// went away) is not an error.
func (m *Monitor) Remove(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w := m.byID[id]; w != nil {
		m.drop(w)
	}
}

// Len is the number of containers watched.
func (m *Monitor) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byID)
}

// drop releases w. Called with m.mu held.
func (m *Monitor) drop(w *watch) {
	delete(m.byID, w.id)
	for _, wd := range []int32{w.memWd, w.cgWd} {
		if wd >= 0 && m.byWd[wd] == w {
			delete(m.byWd, wd)
			// EINVAL when the kernel already removed it (cgroup gone).
			unix.InotifyRmWatch(m.ifd, uint32(wd))
		}
	}
	w.memWd, w.cgWd = -1, -1
	if w.efd >= 0 {
		delete(m.byToken, w.token)
		unix.EpollCtl(m.epfd, unix.EPOLL_CTL_DEL, w.efd, nil)
		unix.Close(w.efd)
		w.efd = -1
	}
	if w.step >= 0 {
		w.step = -1
		m.pending--
	}
}

// Run delivers events until ctx ends (returning ctx.Err()) or Close is
// called (returning nil). It may be called once.
func (m *Monitor) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.closed || m.running {
		m.mu.Unlock()
		return fmt.Errorf("oom monitor: Run called twice or after Close: %w", errdefs.ErrFailedPrecondition)
	}
	m.running = true
	m.mu.Unlock()
	defer close(m.done)
	stop := context.AfterFunc(ctx, m.wake)
	defer stop()

	rc, err := m.epf.SyscallConn()
	if err != nil {
		return fmt.Errorf("oom monitor: %w", err)
	}
	var evs [64]unix.EpollEvent
	var out []Event
	for {
		n, err := m.wait(rc, evs[:])
		m.wakeups.Add(1)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil
		}
		out = out[:0]
		for i := range evs[:n] {
			switch t := getToken(&evs[i]); t {
			case tokenWake:
				var b [8]byte
				unix.Read(m.wakefd, b[:])
			case tokenInotify:
				out = m.readInotify(out)
			default:
				if w := m.byToken[t]; w != nil {
					out = m.wakeV1(w, out)
				}
			}
		}
		out = m.runRechecks(out)
		m.mu.Unlock()
		for _, e := range out {
			m.handler(e)
		}
	}
}

// wait returns the ready events, waiting in the runtime's poller until the
// epoll fd is readable or a v1 re-read is due (then it returns none).
func (m *Monitor) wait(rc syscall.RawConn, evs []unix.EpollEvent) (int, error) {
	n, err := epollNow(m.epfd, evs)
	if n > 0 || err != nil {
		return n, err
	}
	timeout := m.timeout()
	if timeout == 0 {
		return 0, nil
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(time.Duration(timeout) * time.Millisecond)
	}
	if err := m.epf.SetReadDeadline(deadline); err != nil {
		return 0, fmt.Errorf("epoll fd deadline: %w", err)
	}
	rerr := rc.Read(func(fd uintptr) bool {
		n, err = epollNow(int(fd), evs)
		return n > 0 || err != nil
	})
	if rerr != nil && !errors.Is(rerr, os.ErrDeadlineExceeded) {
		return 0, fmt.Errorf("epoll wait: %w", rerr)
	}
	return n, err
}

// epollNow is a non-blocking epoll_wait.
func epollNow(epfd int, evs []unix.EpollEvent) (int, error) {
	for {
		n, err := unix.EpollWait(epfd, evs, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("epoll_wait: %w", err)
		}
		return n, nil
	}
}

// wake interrupts epoll_wait.
func (m *Monitor) wake() {
	m.wakeMu.Lock()
	defer m.wakeMu.Unlock()
	if m.wakefd < 0 {
		return
	}
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	for {
		_, err := unix.Write(m.wakefd, b[:])
		if err != unix.EINTR {
			return
		}
	}
}

// timeout is the epoll_wait timeout: infinite unless a v1 re-read is due.
func (m *Monitor) timeout() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending == 0 {
		return -1
	}
	var next time.Time
	for _, w := range m.byToken {
		if w.step >= 0 && (next.IsZero() || w.recheckAt.Before(next)) {
			next = w.recheckAt
		}
	}
	d := time.Until(next)
	if d <= 0 {
		return 0
	}
	return int((d + time.Millisecond - 1) / time.Millisecond)
}

// readInotify drains the inotify fd and handles the v2 changes.
func (m *Monitor) readInotify(out []Event) []Event {
	var buf [4096]byte
	for {
		n, err := unix.Read(m.ifd, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return out // EAGAIN: drained
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				// Lost events: re-read every v2 watch.
				for _, w := range m.byID {
					if w.version == 2 {
						out = m.checkV2(w, w.memWd, 0, out)
					}
				}
				continue
			}
			if w := m.byWd[ev.Wd]; w != nil {
				out = m.checkV2(w, ev.Wd, ev.Mask, out)
			}
		}
	}
}

// checkV2 handles a change of one of w's files.
func (m *Monitor) checkV2(w *watch, wd int32, mask uint32, out []Event) []Event {
	if w.memWd < 0 {
		return out // dropped earlier in this batch
	}
	if mask&unix.IN_IGNORED != 0 {
		// The kernel removed the watch: the cgroup was deleted.
		m.drop(w)
		return out
	}
	out = m.readKills(w, out)
	if wd == w.cgWd {
		pop, _, err := readCounter(filepath.Join(w.dir, "cgroup.events"), "populated")
		switch {
		case err != nil:
			m.drop(w)
		case pop != 0:
			w.populated = true
		case w.populated:
			// The last process exited: the kill that ended it, if
			// any, was read above.
			m.drop(w)
		}
	}
	return out
}

// readKills reads w's counter and appends an event for new kills. It
// reports whether there were any; an unreadable file drops w.
func (m *Monitor) readKills(w *watch, out []Event) []Event {
	if w.version == 1 {
		return m.readKillsV1(w, out)
	}
	total, ok, err := readCounter(w.file, "oom_kill")
	if err != nil {
		m.drop(w)
		return out
	}
	if ok && total > w.last {
		out = append(out, Event{ID: w.id, OOMKills: total - w.last, Total: total})
		w.last = total
	}
	return out
}

// maxKills bounds the counters a v1 watch keeps for the sub-cgroups a
// truncated walk did not reach (see readKillsV1).
const maxKills = 4096

// readKillsV1 is readKills on v1: it reads the counters of w's cgroup and
// of its sub-cgroups and counts the kills per cgroup directory inode. A
// sub-cgroup that appeared since the last read brings all its kills, a
// removed one takes none away, and a recreated one starts from 0 under a
// new inode (kernfs allocates inode numbers cyclically).
//
// When the walk stopped at its limit, the counters of the cgroups it did
// not reach are kept: forgotten, a cgroup's kills would be counted again
// when a later walk reaches it. They are kept up to maxKills counters in
// all (a container could otherwise grow the map without end by churning
// through sub-cgroups with kills); past that they are forgotten as when
// the walk is complete, where an unread cgroup is a removed one.
func (m *Monitor) readKillsV1(w *watch, out []Event) []Event {
	var kills uint64
	seen := make(map[uint64]uint64, len(w.kills))
	_, _, truncated, err := cgroups.V1OOMKills(w.dir, func(ino, n uint64) {
		prev := w.kills[ino]
		if n >= prev {
			kills += n - prev
		} else {
			kills += n // a reused inode
		}
		if n > 0 || prev > 0 {
			seen[ino] = n // a 0 marks the inode as read, for the merge below
		}
	})
	if err != nil {
		m.drop(w)
		return out
	}
	if truncated {
		for ino, n := range w.kills {
			if len(seen) >= maxKills {
				break
			}
			if _, ok := seen[ino]; !ok {
				seen[ino] = n
			}
		}
	}
	for ino, n := range seen {
		if n == 0 {
			delete(seen, ino)
		}
	}
	w.kills = seen
	if kills > 0 {
		w.last += kills
		out = append(out, Event{ID: w.id, OOMKills: kills, Total: w.last})
	}
	return out
}

// wakeV1 handles a signalled v1 eventfd: an OOM or the cgroup's removal.
func (m *Monitor) wakeV1(w *watch, out []Event) []Event {
	var b [8]byte
	var count uint64
	for {
		n, err := unix.Read(w.efd, b[:])
		if err == unix.EINTR {
			continue
		}
		if err == nil && n == 8 {
			count = binary.NativeEndian.Uint64(b[:])
		}
		break
	}
	if _, err := os.Stat(w.file); err != nil {
		m.drop(w) // removed cgroup
		return out
	}
	if w.noCounter {
		if count > 0 {
			out = append(out, Event{ID: w.id, OOMKills: count})
		}
		return out
	}
	before := len(out)
	out = m.readKills(w, out)
	if len(out) == before && w.efd >= 0 {
		// Notified before the kill was counted (or an OOM that ended
		// without one): look again shortly.
		if w.step < 0 {
			m.pending++
		}
		w.step = 0
		w.recheckAt = time.Now().Add(recheckDelay(0))
	}
	return out
}

// runRechecks runs the due v1 re-reads.
func (m *Monitor) runRechecks(out []Event) []Event {
	if m.pending == 0 {
		return out
	}
	now := time.Now()
	for _, w := range m.byToken {
		if w.step < 0 || w.recheckAt.After(now) {
			continue
		}
		before := len(out)
		out = m.readKills(w, out)
		if w.step < 0 {
			continue // dropped
		}
		w.step++
		if len(out) > before || w.step == rechecks {
			w.step = -1
			m.pending--
			continue
		}
		w.recheckAt = now.Add(recheckDelay(w.step))
	}
	return out
}

// Close stops Run (waiting for it to return) and releases every file
// descriptor. It is safe to call more than once.
func (m *Monitor) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	running := m.running
	m.mu.Unlock()
	if running {
		m.wake()
		<-m.done
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.byID {
		m.drop(w)
	}
	m.closeFds()
	return nil
}

// readCounter reads "key value" lines of a small cgroup file and returns the
// value of key; ok is false when the key is absent.
func readCounter(path, key string) (v uint64, ok bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false, err
	}
	for len(b) > 0 {
		line := b
		if i := indexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) > len(key) && string(line[:len(key)]) == key && line[len(key)] == ' ' {
			n, perr := strconv.ParseUint(string(line[len(key)+1:]), 10, 64)
			if perr != nil {
				return 0, false, fmt.Errorf("%s: %s: %w", path, key, perr)
			}
			return n, true, nil
		}
	}
	return 0, false, nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func openRetry(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", path, err)
		}
		return fd, nil
	}
}

func writeRetry(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", s, path, err)
	}
	return nil
}
