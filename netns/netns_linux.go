package netns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
)

// Namespace describes one persistent network namespace.
type Namespace struct {
	// Name is the namespace's name (the file name in the manager's directory).
	Name string
	// Path is the bind-mounted nsfs file; pass it to runc or CNI as the
	// container's network namespace path.
	Path string
	// Inode is the nsfs inode number of the namespace. Two paths refer to the
	// same namespace exactly when their inodes are equal.
	Inode uint64
}

// Manager manages named network namespaces bind mounted under one directory.
// It is safe for concurrent use; Create and Delete are serialised.
type Manager struct {
	dir string
	mu  sync.Mutex

	// afterMount, when set, runs after the namespace was bind mounted and its
	// error fails the Create. Only tests set it, to fail Create after the
	// mount, which cannot be made to fail for real once the mount succeeded.
	afterMount func(path string) error
}

// New returns a Manager for the namespaces under dir (typically
// <state>/netns), creating dir if needed and making it a shared mount point:
// if dir is not a mount point yet, it is bind mounted onto itself, made
// private (leaving the parent's peer group so mounts inside it are not
// duplicated into the parent mount) and then shared (a peer group of its own,
// copied into mount namespaces created later). This is what `ip netns add`
// does for /run/netns. Calling New again for the same dir is harmless.
func New(dir string) (*Manager, error) {
	if dir == "" || !filepath.IsAbs(dir) {
		return nil, errdefs.InvalidArgument("netns dir", "%q must be an absolute path", dir)
	}
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("netns: create dir: %w", err)
	}
	if err := makeShared(dir); err != nil {
		return nil, err
	}
	return &Manager{dir: dir}, nil
}

// Dir returns the directory holding the namespace files.
func (m *Manager) Dir() string { return m.dir }

// Path returns the path of the namespace called name, whether or not it
// exists. The name is validated with identifiers.Validate.
func (m *Manager) Path(name string) (string, error) {
	if err := identifiers.Validate("netns name", name); err != nil {
		return "", err
	}
	return filepath.Join(m.dir, name), nil
}

// Create creates the persistent network namespace name with its loopback
// interface up. It fails with ErrAlreadyExists if it exists already. A file
// of that name that is not a namespace mount (left behind by a crash or a
// reboot) is replaced. On failure nothing is left behind: no mount, no file.
func (m *Manager) Create(ctx context.Context, name string) (Namespace, error) {
	path, err := m.Path(name)
	if err != nil {
		return Namespace{}, err
	}
	if err := ctx.Err(); err != nil {
		return Namespace{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ino, err := createAt(ctx, path, m.afterMount)
	if err != nil {
		return Namespace{}, fmt.Errorf("netns %q: %w", name, err)
	}
	return Namespace{Name: name, Path: path, Inode: ino}, nil
}

// Delete unmounts and removes the namespace name. The namespace itself is
// freed by the kernel once no process runs in it any more. It fails with
// ErrNotFound if there is no such namespace; a leftover file that is not a
// namespace mount is removed and counts as success.
func (m *Manager) Delete(ctx context.Context, name string) error {
	path, err := m.Path(name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := DeleteAt(ctx, path); err != nil {
		return fmt.Errorf("netns %q: %w", name, err)
	}
	return nil
}

// Get returns the namespace name, or ErrNotFound.
func (m *Manager) Get(ctx context.Context, name string) (Namespace, error) {
	path, err := m.Path(name)
	if err != nil {
		return Namespace{}, err
	}
	ino, ok, err := nsMount(path)
	if err != nil {
		return Namespace{}, fmt.Errorf("netns %q: %w", name, err)
	}
	if !ok {
		return Namespace{}, fmt.Errorf("netns %q: %w", name, errdefs.ErrNotFound)
	}
	return Namespace{Name: name, Path: path, Inode: ino}, nil
}

// List returns the namespaces in the directory, sorted by name. Files that
// are not namespace mounts or whose names are not valid identifiers are
// skipped.
func (m *Manager) List(ctx context.Context) ([]Namespace, error) {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, fmt.Errorf("netns: list %s: %w", m.dir, err)
	}
	var out []Namespace
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if identifiers.Validate("netns name", e.Name()) != nil {
			continue
		}
		path := filepath.Join(m.dir, e.Name())
		ino, ok, err := nsMount(path)
		if err != nil {
			if errors.Is(err, errdefs.ErrNotFound) {
				continue // deleted meanwhile
			}
			return nil, fmt.Errorf("netns %q: %w", e.Name(), err)
		}
		if ok {
			out = append(out, Namespace{Name: e.Name(), Path: path, Inode: ino})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Do runs fn on an OS thread that is inside the namespace name. See the
// package function Do for the rules fn must follow.
func (m *Manager) Do(ctx context.Context, name string, fn func() error) error {
	path, err := m.Path(name)
	if err != nil {
		return err
	}
	if err := Do(ctx, path, fn); err != nil {
		return fmt.Errorf("netns %q: %w", name, err)
	}
	return nil
}

// CreateAt creates a persistent network namespace bind mounted on path (whose
// parent directory must exist), with its loopback interface up, and returns
// its nsfs inode. It is the primitive under Manager.Create for namespaces
// kept outside the manager's directory; callers serialise calls for the same
// path. ErrAlreadyExists if path is already a namespace mount.
func CreateAt(ctx context.Context, path string) (uint64, error) {
	if err := checkAbs(path); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return createAt(ctx, path, nil)
}

// DeleteAt unmounts (lazily, MNT_DETACH) and removes the namespace file path.
// ErrNotFound if path does not exist; a file that is not a namespace mount is
// just removed.
func DeleteAt(ctx context.Context, path string) error {
	if err := checkAbs(path); err != nil {
		return err
	}
	if _, err := os.Lstat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", path, errdefs.ErrNotFound)
		}
		return fmt.Errorf("netns: %w", err)
	}
	if err := unmountAll(path); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns: remove %s: %w", path, err)
	}
	return nil
}

// PidPath returns /proc/<pid>/ns/net, the network namespace of a running
// process, or ErrNotFound if the process does not exist.
func PidPath(pid int) (string, error) {
	if pid <= 0 {
		return "", errdefs.InvalidArgument("pid", "%d must be positive", pid)
	}
	p := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("process %d: %w", pid, errdefs.ErrNotFound)
		}
		return "", fmt.Errorf("netns: process %d: %w", pid, err)
	}
	return p, nil
}

// Do runs fn on an OS thread that has entered the network namespace at path
// (a namespace file from Create/CreateAt, or /proc/<pid>/ns/net) and returns
// fn's error. Sockets fn creates belong to that namespace and stay in it after
// Do returns, so a listener may be created in fn and served afterwards.
//
// fn runs in a new goroutine locked to its thread; goroutines that fn starts
// run in the caller's namespace, not the target one. After fn the thread
// switches back to its original namespace; if that fails the thread is
// discarded (never unlocked) and the error is returned joined with fn's.
//
// Errors: ErrNotFound if path does not exist, ErrInvalidArgument if it is not
// a network namespace.
func Do(ctx context.Context, path string, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	target, err := openNetns(path)
	if err != nil {
		return err
	}
	defer target.Close()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := setns(int(target.Fd())); err != nil {
			// A failed setns leaves the thread where it was; but be safe
			// and let it die rather than reuse it.
			errc <- fmt.Errorf("netns: enter %s: %w", path, err)
			return
		}
		fnErr := fn()
		if err := setns(int(orig.Fd())); err != nil {
			// The thread is stuck in the target namespace: exit while still
			// locked so the runtime terminates it.
			errc <- errors.Join(fnErr, fmt.Errorf("netns: restore namespace after %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

func checkAbs(path string) error {
	if path == "" || !filepath.IsAbs(path) {
		return errdefs.InvalidArgument("netns path", "%q must be an absolute path", path)
	}
	return nil
}

// openNetns opens path and checks that it is a network namespace.
func openNetns(path string) (*os.File, error) {
	if path == "" {
		return nil, errdefs.InvalidArgument("netns path", "must not be empty")
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("network namespace %s: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("netns: open %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := retry(func() error { return unix.Fstatfs(int(f.Fd()), &st) }); err != nil {
		f.Close()
		return nil, fmt.Errorf("netns: statfs %s: %w", path, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		f.Close()
		return nil, errdefs.InvalidArgument("netns path", "%s is not a namespace file (not mounted from nsfs)", path)
	}
	typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("netns: namespace type of %s: %w", path, err)
	}
	if typ != unix.CLONE_NEWNET {
		f.Close()
		return nil, errdefs.InvalidArgument("netns path", "%s is a namespace but not a network namespace", path)
	}
	return f, nil
}

// nsMount reports whether path is a mounted nsfs file and its inode.
// ErrNotFound if path does not exist.
func nsMount(path string) (uint64, bool, error) {
	var lst unix.Stat_t
	if err := retry(func() error { return unix.Lstat(path, &lst) }); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, false, fmt.Errorf("%s: %w", path, errdefs.ErrNotFound)
		}
		return 0, false, fmt.Errorf("netns: stat %s: %w", path, err)
	}
	if lst.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, false, nil
	}
	ok, err := nsfs(path)
	if err != nil || !ok {
		return 0, false, err
	}
	return lst.Ino, true, nil
}

// IsNamespace reports whether path is a namespace file: a file of nsfs,
// bind mounted (by CreateAt or Manager.Create) or under /proc
// (/proc/<pid>/ns/net, a symbolic link, which is followed). A path that
// does not exist, that cannot be read, or that is a plain file (a crash
// between creating the file and mounting a namespace on it) is not.
func IsNamespace(path string) bool {
	ok, err := nsfs(path)
	return err == nil && ok
}

// nsfs reports whether path (following symbolic links) is on nsfs.
func nsfs(path string) (bool, error) {
	var st unix.Statfs_t
	if err := retry(func() error { return unix.Statfs(path, &st) }); err != nil {
		return false, fmt.Errorf("netns: statfs %s: %w", path, err)
	}
	return st.Type == unix.NSFS_MAGIC, nil
}

func createAt(ctx context.Context, path string, afterMount func(string) error) (ino uint64, err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o444)
	if errors.Is(err, os.ErrExist) {
		_, mounted, serr := nsMount(path)
		if serr != nil {
			return 0, serr
		}
		if mounted {
			return 0, fmt.Errorf("%s: %w", path, errdefs.ErrAlreadyExists)
		}
		// A plain file: left by a crash between create and mount, or a
		// namespace whose mount vanished with a reboot. Reclaim it.
		slog.WarnContext(ctx, "netns: replacing stale namespace file", "path", path)
		if err := os.Remove(path); err != nil {
			return 0, fmt.Errorf("netns: remove stale %s: %w", path, err)
		}
		f, err = os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o444)
	}
	if err != nil {
		return 0, fmt.Errorf("netns: create %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return 0, fmt.Errorf("netns: create %s: %w", path, err)
	}
	mounted := false
	defer func() {
		if err == nil {
			return
		}
		if mounted {
			if uerr := unmountAll(path); uerr != nil {
				err = errors.Join(err, uerr)
			}
		}
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("netns: remove %s: %w", path, rerr))
		}
	}()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open current namespace: %w", err)
			return
		}
		defer orig.Close()
		err = unshareAndMount(path)
		if rerr := setns(int(orig.Fd())); rerr != nil {
			// Stuck in the new namespace: exit still locked so that the
			// runtime terminates the thread (or parks it for good if it is
			// the main thread) instead of running other goroutines on it.
			errc <- errors.Join(err, fmt.Errorf("netns: restore namespace: %w", rerr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		return 0, err
	}
	mounted = true
	if afterMount != nil {
		if err := afterMount(path); err != nil {
			return 0, err
		}
	}
	var st unix.Stat_t
	if err := retry(func() error { return unix.Stat(path, &st) }); err != nil {
		return 0, fmt.Errorf("netns: stat %s: %w", path, err)
	}
	return st.Ino, nil
}

// unshareAndMount runs on a locked thread that switches back afterwards.
func unshareAndMount(path string) error {
	if err := retry(func() error { return unix.Unshare(unix.CLONE_NEWNET) }); err != nil {
		return fmt.Errorf("netns: unshare network namespace: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return err
	}
	src := "/proc/self/task/" + strconv.Itoa(unix.Gettid()) + "/ns/net"
	if err := retry(func() error { return unix.Mount(src, path, "", unix.MS_BIND, "") }); err != nil {
		return fmt.Errorf("netns: bind mount %s on %s: %w", src, path, err)
	}
	return nil
}

// loopbackUp sets IFF_UP on lo in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns: socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("netns: lo: %w", err)
	}
	if err := retry(func() error { return unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr) }); err != nil {
		return fmt.Errorf("netns: get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := retry(func() error { return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr) }); err != nil {
		return fmt.Errorf("netns: set lo up: %w", err)
	}
	return nil
}

// unmountAll detaches every mount stacked on path.
func unmountAll(path string) error {
	for i := 0; i < 64; i++ {
		err := retry(func() error { return unix.Unmount(path, unix.MNT_DETACH) })
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // not (or no longer) a mount point
		}
		if err != nil {
			return fmt.Errorf("netns: unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("netns: unmount %s: still mounted after 64 unmounts", path)
}

func setns(fd int) error {
	return retry(func() error { return unix.Setns(fd, unix.CLONE_NEWNET) })
}

// makeShared makes dir a shared mount point with a peer group of its own.
func makeShared(dir string) error {
	err := retry(func() error { return unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "") })
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("netns: make %s shared: %w", dir, err)
	}
	// EINVAL: dir is not a mount point. Make it one.
	if err := retry(func() error { return unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, "") }); err != nil {
		return fmt.Errorf("netns: bind mount %s on itself: %w", dir, err)
	}
	for _, flag := range []uintptr{unix.MS_PRIVATE, unix.MS_SHARED} {
		if err := retry(func() error { return unix.Mount("", dir, "", flag|unix.MS_REC, "") }); err != nil {
			_ = retry(func() error { return unix.Unmount(dir, unix.MNT_DETACH) })
			return fmt.Errorf("netns: set propagation of %s: %w", dir, err)
		}
	}
	return nil
}

// retry calls fn until it fails with something other than EINTR.
func retry(fn func() error) error {
	for {
		if err := fn(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
