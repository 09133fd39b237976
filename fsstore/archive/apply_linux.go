//go:build linux

package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"golang.org/x/sys/unix"
)

const (
	maxSymlinks     = 40   // like the kernel's MAXSYMLINKS
	maxPendingTimes = 8192 // directory mtimes kept before an early flush
	dirFlags        = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
)

// applier holds the state of one Apply call.
type applier struct {
	ctx      context.Context
	opts     ApplyOptions
	root     int    // fd of root, O_RDONLY|O_DIRECTORY
	rootPath string // root as given, for messages
	buf      []byte // copy buffer, also used for getdents

	// One-entry cache of the last parent directory (consecutive entries
	// usually share it). stale is set by every removal, because a removal can
	// take away a component of the cached path.
	cacheKey  string
	cacheFD   int
	cachePhys string
	stale     bool

	// created holds the physical paths created by this layer; only kept in
	// WhiteoutRemove mode, where whiteouts must spare them (and the
	// pre-existing directories that hold them, found by walking: see
	// removeLower).
	created map[string]struct{}

	dirTimes []dirTime

	// unchecked counts the bytes (content, plus minFreeEntryCost per entry)
	// written since the last free-space check (ApplyOptions.MinFree).
	unchecked int64
}

type dirTime struct {
	path  string // physical path relative to root, "" for root
	times [2]unix.Timespec
}

func applyTar(ctx context.Context, root string, lr *layerReader, buf []byte, opts ApplyOptions) (int64, error) {
	fd, err := retryFD(func() (int, error) { return unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) })
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, fmt.Errorf("layer root %s: %w", root, errdefs.ErrNotFound)
		}
		return 0, fmt.Errorf("open layer root %s: %w", root, err)
	}
	a := &applier{ctx: ctx, opts: opts, root: fd, rootPath: root, buf: buf, cacheFD: -1}
	defer a.close()
	if opts.Whiteouts == WhiteoutRemove {
		a.created = make(map[string]struct{})
	}
	if err := a.checkFree(); err != nil {
		return 0, err
	}

	tr := tar.NewReader(lr)
	var entries int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			if !lr.endOfArchiveSeen() {
				return entries, fmt.Errorf("layer is truncated: tar stream ends without the end-of-archive marker after %d bytes: %w: %w",
					lr.n, io.ErrUnexpectedEOF, errdefs.ErrDataLoss)
			}
			break
		}
		// ErrInsecurePath (GODEBUG=tarinsecurepath=0) comes with a valid
		// header; this package does its own, stricter, name checks.
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return entries, readError(err)
		}
		entries++
		if entries > opts.MaxEntries {
			return entries, &LimitError{Limit: LimitEntries, Value: opts.MaxEntries}
		}
		if err := a.spend(minFreeEntryCost); err != nil {
			return entries, err
		}
		if err := a.entry(hdr, tr); err != nil {
			if isReadError(err) {
				return entries, readError(err)
			}
			return entries, fmt.Errorf("layer entry %.200q: %w", hdr.Name, typed(err))
		}
	}
	if err := a.flushDirTimes(); err != nil {
		return entries, err
	}
	if opts.Sync {
		if err := retry(func() error { return unix.Syncfs(a.root) }); err != nil {
			return entries, fmt.Errorf("syncfs %s: %w", root, err)
		}
	}
	return entries, nil
}

// readErr marks an error of the tar stream met while copying file content.
type readErr struct{ err error }

func (e *readErr) Error() string { return e.err.Error() }
func (e *readErr) Unwrap() error { return e.err }

func isReadError(err error) bool {
	var re *readErr
	return errors.As(err, &re)
}

func (a *applier) close() {
	a.dropCache()
	unix.Close(a.root)
}

func (a *applier) dropCache() {
	if a.cacheFD >= 0 {
		unix.Close(a.cacheFD)
	}
	a.cacheFD, a.cacheKey, a.cachePhys, a.stale = -1, "", "", false
}

// entry applies one tar entry.
func (a *applier) entry(hdr *tar.Header, content io.Reader) error {
	comps, err := splitName(hdr.Name)
	if err != nil {
		return err
	}
	for i, c := range comps {
		last := i == len(comps)-1
		if strings.HasPrefix(c, whiteoutMeta) && !(last && c == whiteoutOpaque) {
			// aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not layer content.
			return nil
		}
		if !last && strings.HasPrefix(c, whiteoutPrefix) {
			return fmt.Errorf("whiteout name %q used as a directory: %w", c, errdefs.ErrInvalidArgument)
		}
	}
	if n := len(comps); n > 0 {
		if base := comps[n-1]; base == whiteoutOpaque {
			return a.opaque(comps[:n-1])
		} else if target, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
			if target == "" || target == "." || target == ".." {
				return fmt.Errorf("whiteout names %q: %w", target, errdefs.ErrInvalidArgument)
			}
			return a.whiteout(comps[:n-1], target)
		}
	}

	if isSparse(hdr) {
		// archive/tar expands holes into zeros: a few bytes of sparse map
		// could make it write terabytes. Docker, BuildKit and every Go-based
		// image builder never write sparse entries.
		return fmt.Errorf("GNU sparse files are not supported in layers: %w", errdefs.ErrNotImplemented)
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeReg, tar.TypeCont, tar.TypeDir, tar.TypeSymlink,
		tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return fmt.Errorf("unsupported tar entry type %q: %w", hdr.Typeflag, errdefs.ErrInvalidArgument)
	}
	if hdr.Typeflag == tar.TypeLink {
		if len(comps) == 0 {
			return fmt.Errorf("a hardlink cannot replace the layer root: %w", errdefs.ErrInvalidArgument)
		}
		return a.hardlink(comps, hdr.Linkname)
	}
	meta, err := metaOf(a.ctx, hdr)
	if err != nil {
		return err
	}
	if len(comps) == 0 {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("entry of type %q cannot replace the layer root: %w", hdr.Typeflag, errdefs.ErrInvalidArgument)
		}
		return a.dirMeta(a.root, "", meta)
	}

	pfd, pphys, err := a.parent(comps[:len(comps)-1])
	if err != nil {
		return err
	}
	name := comps[len(comps)-1]
	phys := join(pphys, name)

	switch hdr.Typeflag {
	case tar.TypeDir:
		return a.dir(pfd, name, phys, meta)
	case tar.TypeSymlink:
		return a.symlink(pfd, name, phys, hdr.Linkname, meta)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return a.node(pfd, name, phys, hdr, meta)
	default:
		return a.file(pfd, name, phys, content, meta)
	}
}

func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// meta is the validated metadata of an entry.
type meta struct {
	uid, gid int
	mode     uint32 // permission bits incl. setuid, setgid, sticky
	times    [2]unix.Timespec
	xattrs   []xattr
}

func metaOf(ctx context.Context, hdr *tar.Header) (meta, error) {
	if hdr.Uid < 0 || int64(hdr.Uid) >= 1<<32-1 || hdr.Gid < 0 || int64(hdr.Gid) >= 1<<32-1 {
		return meta{}, fmt.Errorf("owner %d:%d is out of range: %w", hdr.Uid, hdr.Gid, errdefs.ErrInvalidArgument)
	}
	xa, err := xattrsOf(ctx, hdr)
	if err != nil {
		return meta{}, err
	}
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	return meta{
		uid:    hdr.Uid,
		gid:    hdr.Gid,
		mode:   uint32(hdr.Mode) & 0o7777,
		times:  [2]unix.Timespec{timespec(atime), timespec(hdr.ModTime)},
		xattrs: xa,
	}, nil
}

// timespec converts t; a time the platform cannot represent (before 1902 or
// after 2038 on 32-bit systems) becomes the epoch.
func timespec(t time.Time) unix.Timespec {
	ts, err := unix.TimeToTimespec(t)
	if err != nil {
		return unix.Timespec{}
	}
	return ts
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func (a *applier) markCreated(phys string) {
	if a.created != nil {
		a.created[phys] = struct{}{}
	}
}

// parent returns a directory fd for the lexical path comps, creating missing
// directories, and its physical path. The fd belongs to the applier and is
// valid until the next call of parent.
func (a *applier) parent(comps []string) (int, string, error) {
	if len(comps) == 0 {
		return a.root, "", nil
	}
	key := strings.Join(comps, "/")
	if a.cacheFD >= 0 && !a.stale && key == a.cacheKey {
		return a.cacheFD, a.cachePhys, nil
	}
	a.dropCache()
	fd, phys, err := a.resolve(comps, true)
	if err != nil {
		return -1, "", err
	}
	if fd == a.root {
		return fd, phys, nil
	}
	a.cacheFD, a.cacheKey, a.cachePhys = fd, key, phys
	return fd, phys, nil
}

// resolve walks comps from root, one openat(O_NOFOLLOW) at a time, resolving
// symlinks itself with chroot semantics, so the result is always inside
// root. With create, missing directories are made (0755, root-owned). It
// returns an O_RDONLY directory fd, which the caller closes unless it is
// a.root, and the physical (symlink-free) path of that directory.
func (a *applier) resolve(comps []string, create bool) (int, string, error) {
	// pending is a stack: the next component is at the end.
	pending := make([]string, len(comps))
	for i, c := range comps {
		pending[len(comps)-1-i] = c
	}
	var phys []string
	fd := a.root
	release := func() {
		if fd != a.root {
			unix.Close(fd)
		}
		fd = a.root
	}
	links := 0
	for len(pending) > 0 {
		c := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(phys) > 0 {
				phys = phys[:len(phys)-1]
				release()
				nfd, err := a.walk(phys)
				if err != nil {
					return -1, "", err
				}
				fd = nfd
			}
			continue
		}
		nfd, err := retryFD(func() (int, error) { return unix.Openat(fd, c, dirFlags, 0) })
		if err == nil {
			release()
			fd = nfd
			phys = append(phys, c)
			continue
		}
		switch {
		case errors.Is(err, unix.ENOENT):
			if !create {
				release()
				return -1, "", fmt.Errorf("directory %q does not exist: %w", strings.Join(append(phys, c), "/"), errdefs.ErrNotFound)
			}
			if err := retry(func() error { return unix.Mkdirat(fd, c, 0o755) }); err != nil && !errors.Is(err, unix.EEXIST) {
				release()
				return -1, "", fmt.Errorf("mkdir %q: %w", strings.Join(append(phys, c), "/"), err)
			}
			a.markCreated(join(strings.Join(phys, "/"), c))
			pending = append(pending, c) // open it on the next round
			continue
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
			var st unix.Stat_t
			if err := retry(func() error { return unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
				release()
				return -1, "", fmt.Errorf("stat %q: %w", strings.Join(append(phys, c), "/"), err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFLNK {
				release()
				return -1, "", fmt.Errorf("parent %q is not a directory: %w", strings.Join(append(phys, c), "/"), errdefs.ErrInvalidArgument)
			}
			links++
			if links > maxSymlinks {
				release()
				return -1, "", fmt.Errorf("too many levels of symbolic links: %w", errdefs.ErrInvalidArgument)
			}
			target, err := readlinkat(fd, c, a.buf)
			if err != nil {
				release()
				return -1, "", fmt.Errorf("readlink %q: %w", strings.Join(append(phys, c), "/"), err)
			}
			if strings.HasPrefix(target, "/") {
				release()
				phys = phys[:0]
			}
			tc := strings.Split(target, "/")
			for i := len(tc) - 1; i >= 0; i-- {
				pending = append(pending, tc[i])
			}
			continue
		default:
			release()
			return -1, "", fmt.Errorf("open %q: %w", strings.Join(append(phys, c), "/"), err)
		}
	}
	return fd, strings.Join(phys, "/"), nil
}

// walk opens the physical path phys (no symlinks allowed) from root.
func (a *applier) walk(phys []string) (int, error) {
	fd := a.root
	for _, c := range phys {
		nfd, err := retryFD(func() (int, error) { return unix.Openat(fd, c, dirFlags, 0) })
		if fd != a.root {
			unix.Close(fd)
		}
		if err != nil {
			return -1, fmt.Errorf("open %q: %w", strings.Join(phys, "/"), err)
		}
		fd = nfd
	}
	return fd, nil
}

func readlinkat(dirfd int, name string, buf []byte) (string, error) {
	var n int
	err := retry(func() (err error) { n, err = unix.Readlinkat(dirfd, name, buf[:maxPathLen]); return err })
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// lstat reports what is at dirfd/name; ok is false if nothing is there.
func lstat(dirfd int, name string) (st unix.Stat_t, ok bool, err error) {
	err = retry(func() error { return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) })
	if errors.Is(err, unix.ENOENT) {
		return st, false, nil
	}
	return st, err == nil, err
}

// clear removes whatever is at dirfd/name.
func (a *applier) clear(dirfd int, name string) error {
	_, ok, err := lstat(dirfd, name)
	if err != nil || !ok {
		return err
	}
	return a.removeAll(dirfd, name)
}

// removeAll removes dirfd/name and, for a directory, everything below it,
// without following symlinks.
func (a *applier) removeAll(dirfd int, name string) error {
	a.stale = true
	err := retry(func() error { return unix.Unlinkat(dirfd, name, 0) })
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return fmt.Errorf("remove %q: %w", name, err)
	}
	fd, err := retryFD(func() (int, error) { return unix.Openat(dirfd, name, dirFlags, 0) })
	if err != nil {
		return fmt.Errorf("open %q: %w", name, err)
	}
	err = a.forEachChild(fd, func(child string) error { return a.removeAll(fd, child) })
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := retry(func() error { return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR) }); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove directory %q: %w", name, err)
	}
	return nil
}

// forEachChild calls fn for each entry of the directory dirfd, reading it in
// batches through a private fd so that fn may remove entries.
func (a *applier) forEachChild(dirfd int, fn func(name string) error) error {
	fd, err := retryFD(func() (int, error) { return unix.Openat(dirfd, ".", dirFlags, 0) })
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer unix.Close(fd)
	var names []string
	for {
		var n int
		err := retry(func() (err error) { n, err = unix.ReadDirent(fd, a.buf); return err })
		if err != nil {
			return fmt.Errorf("read directory: %w", err)
		}
		if n <= 0 {
			return nil
		}
		_, _, names = unix.ParseDirent(a.buf[:n], -1, names[:0])
		for _, name := range names {
			if err := fn(name); err != nil {
				return err
			}
		}
	}
}

func (a *applier) dir(pfd int, name, phys string, m meta) error {
	st, found, err := lstat(pfd, name)
	if err != nil {
		return err
	}
	kept := found && st.Mode&unix.S_IFMT == unix.S_IFDIR // an existing directory is updated in place
	if found && !kept {
		if err := a.removeAll(pfd, name); err != nil {
			return err
		}
	}
	if !kept {
		if err := retry(func() error { return unix.Mkdirat(pfd, name, 0o700) }); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
		a.markCreated(phys)
	}
	fd, err := retryFD(func() (int, error) { return unix.Openat(pfd, name, dirFlags, 0) })
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer unix.Close(fd)
	// In overlay mode the upper directory starts empty, so a non-directory
	// replaced here (most often the whiteout device of ".wh.NAME") came from
	// this layer and hid the lower NAME in full. The directory replacing it
	// must hide the lower content too, as remove mode deletes it: make it
	// opaque.
	if found && !kept && a.opts.Whiteouts == WhiteoutOverlay {
		if err := setOpaque(fd); err != nil {
			return err
		}
	}
	return a.dirMeta(fd, phys, m)
}

// dirMeta applies owner, mode and xattrs to the open directory fd and queues
// its times, which are set once its children are written.
func (a *applier) dirMeta(fd int, phys string, m meta) error {
	if err := a.fdMeta(fd, m, true); err != nil {
		return err
	}
	a.dirTimes = append(a.dirTimes, dirTime{path: phys, times: m.times})
	limit := maxPendingTimes
	if a.opts.pendingTimes > 0 {
		limit = a.opts.pendingTimes
	}
	if len(a.dirTimes) >= limit {
		return a.flushDirTimes()
	}
	return nil
}

// fdMeta sets owner, then mode (chown clears setuid/setgid), then xattrs
// (chown also clears security.capability) through an fd of a regular file or
// directory.
func (a *applier) fdMeta(fd int, m meta, isDir bool) error {
	if err := retry(func() error { return unix.Fchown(fd, m.uid, m.gid) }); err != nil {
		return fmt.Errorf("chown %d:%d: %w", m.uid, m.gid, err)
	}
	if err := retry(func() error { return unix.Fchmod(fd, m.mode) }); err != nil {
		return fmt.Errorf("chmod %o: %w", m.mode, err)
	}
	for _, x := range m.xattrs {
		if isDir && x.name == "security.capability" {
			continue
		}
		if !isDir && x.name == "system.posix_acl_default" {
			continue
		}
		err := retry(func() error { return unix.Fsetxattr(fd, x.name, []byte(x.value), 0) })
		if err := a.xattrErr(x.name, err); err != nil {
			return err
		}
	}
	return nil
}

// pathMeta sets owner, mode (unless symlink) and xattrs of a symlink or
// device node, never following the last component.
func (a *applier) pathMeta(pfd int, name string, m meta, isLink bool) error {
	if err := retry(func() error { return unix.Fchownat(pfd, name, m.uid, m.gid, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
		return fmt.Errorf("lchown %d:%d: %w", m.uid, m.gid, err)
	}
	if !isLink {
		// The node was just created by mknodat, so it is not a symlink.
		if err := retry(func() error { return unix.Fchmodat(pfd, name, m.mode, 0) }); err != nil {
			return fmt.Errorf("chmod %o: %w", m.mode, err)
		}
	}
	var path string
	for _, x := range m.xattrs {
		// Only trusted.* and security.* are allowed on these by the kernel;
		// of those only capabilities are kept, and they make no sense here.
		if strings.HasPrefix(x.name, "user.") || x.name == "security.capability" || x.name == "system.posix_acl_default" {
			continue
		}
		if path == "" {
			// The parent is pinned by its fd; lsetxattr does not follow name.
			path = "/proc/self/fd/" + strconv.Itoa(pfd) + "/" + name
		}
		err := retry(func() error { return unix.Lsetxattr(path, x.name, []byte(x.value), 0) })
		if err := a.xattrErr(x.name, err); err != nil {
			return err
		}
	}
	return a.setTimes(pfd, name, m.times)
}

func (a *applier) xattrErr(name string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EOPNOTSUPP):
		slog.DebugContext(a.ctx, "layer: file system does not support xattr", "xattr", name)
		return nil
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("xattr %q has an invalid value: %w", name, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("set xattr %q: %w", name, err)
}

func (a *applier) setTimes(pfd int, name string, ts [2]unix.Timespec) error {
	if err := retry(func() error { return unix.UtimesNanoAt(pfd, name, ts[:], unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func (a *applier) flushDirTimes() error {
	for i := len(a.dirTimes) - 1; i >= 0; i-- {
		d := a.dirTimes[i]
		if d.path == "" {
			if err := a.setTimes(a.root, ".", d.times); err != nil {
				return err
			}
			continue
		}
		// The directory may have been removed or replaced since; then its
		// times no longer matter.
		comps := strings.Split(d.path, "/")
		pfd, _, err := a.resolve(comps[:len(comps)-1], false)
		if err != nil {
			continue
		}
		name := comps[len(comps)-1]
		st, ok, err := lstat(pfd, name)
		if err == nil && ok && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = a.setTimes(pfd, name, d.times)
		}
		if pfd != a.root {
			unix.Close(pfd)
		}
		if err != nil {
			return fmt.Errorf("directory %q: %w", d.path, err)
		}
	}
	a.dirTimes = a.dirTimes[:0]
	return nil
}

func (a *applier) file(pfd int, name, phys string, content io.Reader, m meta) error {
	if err := a.clear(pfd, name); err != nil {
		return err
	}
	fd, err := retryFD(func() (int, error) {
		return unix.Openat(pfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	})
	if err != nil {
		return fmt.Errorf("create file: %w", err)
	}
	a.markCreated(phys)
	err = a.copy(fd, content)
	if err == nil {
		err = a.fdMeta(fd, m, false)
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = fmt.Errorf("close file: %w", cerr)
	}
	if err != nil {
		return err
	}
	return a.setTimes(pfd, name, m.times)
}

func (a *applier) copy(fd int, r io.Reader) error {
	for {
		n, rerr := r.Read(a.buf)
		if err := a.spend(int64(n)); err != nil {
			return err
		}
		for b := a.buf[:n]; len(b) > 0; {
			var w int
			err := retry(func() (err error) { w, err = unix.Write(fd, b); return err })
			if err != nil {
				return fmt.Errorf("write file: %w", err)
			}
			b = b[w:]
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return &readErr{err: rerr}
		}
	}
}

// spend counts n bytes about to be written and, every MinFreeInterval
// bytes, checks the free space (ApplyOptions.MinFree).
func (a *applier) spend(n int64) error {
	if a.opts.MinFree <= 0 {
		return nil
	}
	a.unchecked += n
	if a.unchecked < MinFreeInterval {
		return nil
	}
	return a.checkFree()
}

// checkFree fails with a *LimitError when the filesystem holding root has
// less than MinFree bytes available.
func (a *applier) checkFree() error {
	if a.opts.MinFree <= 0 {
		return nil
	}
	a.unchecked = 0
	var st unix.Statfs_t
	if err := retry(func() error { return unix.Fstatfs(a.root, &st) }); err != nil {
		return fmt.Errorf("check free space on %s (MinFree): statfs: %w", a.rootPath, err)
	}
	// Bavail, not Bfree: the blocks reserved for root are the system's
	// margin, not the layer's.
	if free := uint64(st.Bavail) * uint64(st.Bsize); free < uint64(a.opts.MinFree) {
		return &LimitError{Limit: LimitFree, Value: a.opts.MinFree, Path: a.mountPoint()}
	}
	return nil
}

// mountPoint returns the mount point of root's filesystem, found by walking
// up until the device changes, to name it in an error; on failure the path
// of root itself.
func (a *applier) mountPoint() string {
	var st unix.Stat_t
	if err := unix.Fstat(a.root, &st); err != nil {
		return a.rootPath
	}
	dir := filepath.Clean(a.rootPath)
	for dir != "/" {
		parent := filepath.Dir(dir)
		var pst unix.Stat_t
		if err := unix.Stat(parent, &pst); err != nil || pst.Dev != st.Dev {
			return dir
		}
		dir = parent
	}
	return dir
}

func (a *applier) symlink(pfd int, name, phys, target string, m meta) error {
	if target == "" || len(target) >= maxPathLen || strings.IndexByte(target, 0) >= 0 {
		return fmt.Errorf("symlink target is empty, longer than %d bytes or contains NUL: %w", maxPathLen-1, errdefs.ErrInvalidArgument)
	}
	if err := a.clear(pfd, name); err != nil {
		return err
	}
	if err := retry(func() error { return unix.Symlinkat(target, pfd, name) }); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	a.markCreated(phys)
	return a.pathMeta(pfd, name, m, true)
}

func (a *applier) node(pfd int, name, phys string, hdr *tar.Header, m meta) error {
	var mode uint32
	var dev int
	switch hdr.Typeflag {
	case tar.TypeFifo:
		mode = unix.S_IFIFO
	case tar.TypeChar, tar.TypeBlock:
		mode = unix.S_IFCHR
		if hdr.Typeflag == tar.TypeBlock {
			mode = unix.S_IFBLK
		}
		// mknod(2) takes a 32-bit dev_t: 12-bit major, 20-bit minor.
		if hdr.Devmajor < 0 || hdr.Devmajor >= 1<<12 || hdr.Devminor < 0 || hdr.Devminor >= 1<<20 {
			return fmt.Errorf("device number %d:%d is out of range: %w", hdr.Devmajor, hdr.Devminor, errdefs.ErrInvalidArgument)
		}
		dev = int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	}
	if err := a.clear(pfd, name); err != nil {
		return err
	}
	if err := retry(func() error { return unix.Mknodat(pfd, name, mode|m.mode, dev) }); err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	a.markCreated(phys)
	return a.pathMeta(pfd, name, m, false)
}

func (a *applier) hardlink(comps []string, linkname string) error {
	tcomps, err := splitName(linkname)
	if err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	if len(tcomps) == 0 {
		return fmt.Errorf("hardlink to the layer root: %w", errdefs.ErrInvalidArgument)
	}
	tfd, _, err := a.resolve(tcomps[:len(tcomps)-1], false)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("hardlink target %.200q does not exist: %w", linkname, errdefs.ErrInvalidArgument)
		}
		return fmt.Errorf("hardlink target %.200q: %w", linkname, err)
	}
	defer func() {
		if tfd != a.root {
			unix.Close(tfd)
		}
	}()
	tname := tcomps[len(tcomps)-1]
	tst, ok, err := lstat(tfd, tname)
	switch {
	case err != nil:
		return fmt.Errorf("hardlink target %.200q: %w", linkname, err)
	case !ok:
		return fmt.Errorf("hardlink target %.200q does not exist: %w", linkname, errdefs.ErrInvalidArgument)
	case tst.Mode&unix.S_IFMT == unix.S_IFDIR:
		return fmt.Errorf("hardlink target %.200q is a directory: %w", linkname, errdefs.ErrInvalidArgument)
	case a.opts.Whiteouts == WhiteoutOverlay && isWhiteoutDev(&tst):
		return fmt.Errorf("hardlink target %.200q is a whiteout: %w", linkname, errdefs.ErrInvalidArgument)
	}

	pfd, pphys, err := a.parent(comps[:len(comps)-1])
	if err != nil {
		return err
	}
	name := comps[len(comps)-1]
	if st, ok, err := lstat(pfd, name); err != nil {
		return err
	} else if ok && st.Dev == tst.Dev && st.Ino == tst.Ino {
		return nil // already that file
	}
	if err := a.clear(pfd, name); err != nil {
		return err
	}
	if err := retry(func() error { return unix.Linkat(tfd, tname, pfd, name, 0) }); err != nil {
		return fmt.Errorf("hardlink to %.200q: %w", linkname, err)
	}
	a.markCreated(join(pphys, name))
	return nil
}

func isWhiteoutDev(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// whiteout handles ".wh.NAME" in the directory dir.
func (a *applier) whiteout(dir []string, name string) error {
	if a.opts.Whiteouts == WhiteoutOverlay {
		pfd, _, err := a.parent(dir)
		if err != nil {
			return err
		}
		st, ok, err := lstat(pfd, name)
		if err != nil {
			return err
		}
		if ok {
			// Whatever is there was made by this layer (the upper directory
			// starts empty) and is never hidden; the whiteout still hides
			// the lower NAME. A file, symlink or device in the upper
			// directory already does; a directory must be made opaque, or
			// the lower directory's content would show through it.
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return nil
			}
			fd, err := retryFD(func() (int, error) { return unix.Openat(pfd, name, dirFlags, 0) })
			if err != nil {
				return fmt.Errorf("open directory %q: %w", name, err)
			}
			defer unix.Close(fd)
			return setOpaque(fd)
		}
		if err := retry(func() error { return unix.Mknodat(pfd, name, unix.S_IFCHR, 0) }); err != nil {
			return fmt.Errorf("create whiteout %q: %w", name, err)
		}
		return nil
	}
	pfd, phys, err := a.resolve(dir, false)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrInvalidArgument) {
			return nil // nothing there to remove
		}
		return err
	}
	defer func() {
		if pfd != a.root {
			unix.Close(pfd)
		}
	}()
	return a.removeLower(pfd, name, join(phys, name))
}

// opaque handles ".wh..wh..opq" in the directory dir.
func (a *applier) opaque(dir []string) error {
	if a.opts.Whiteouts == WhiteoutOverlay {
		fd, _, err := a.parent(dir)
		if err != nil {
			return err
		}
		return setOpaque(fd)
	}
	fd, phys, err := a.parent(dir)
	if err != nil {
		return err
	}
	return a.forEachChild(fd, func(child string) error { return a.removeLower(fd, child, join(phys, child)) })
}

// setOpaque marks the directory fd opaque for overlayfs: lower layers'
// entries of that directory no longer show through it.
func setOpaque(fd int) error {
	if err := retry(func() error { return unix.Fsetxattr(fd, "trusted.overlay.opaque", []byte("y"), 0) }); err != nil {
		return fmt.Errorf("mark directory opaque: %w", err)
	}
	return nil
}

// removeLower removes what a whiteout hides in remove mode: dirfd/name, at
// physical path phys, and for a directory everything below it, except the
// entries this layer created, which a whiteout never hides, and the
// directories that hold them. It walks the pre-existing tree instead of
// keeping an index of created prefixes, so memory stays what created holds.
func (a *applier) removeLower(dirfd int, name, phys string) error {
	if _, mine := a.created[phys]; mine {
		return nil
	}
	a.stale = true
	err := retry(func() error { return unix.Unlinkat(dirfd, name, 0) })
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return fmt.Errorf("remove %q: %w", phys, err)
	}
	fd, err := retryFD(func() (int, error) { return unix.Openat(dirfd, name, dirFlags, 0) })
	if err != nil {
		return fmt.Errorf("open %q: %w", phys, err)
	}
	err = a.forEachChild(fd, func(child string) error { return a.removeLower(fd, child, phys+"/"+child) })
	unix.Close(fd)
	if err != nil {
		return err
	}
	// ENOTEMPTY (or EEXIST, its POSIX alias): it holds entries of this
	// layer, spared above, and stays.
	err = retry(func() error { return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR) })
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("remove directory %q: %w", phys, err)
	}
	return nil
}

// typed adds an errdefs kind to a bare errno met while applying an entry:
// these come from the layer's content conflicting with itself (a name too
// long once symlinks are resolved, too many links, ...) or from the disk
// filling up.
func typed(err error) error {
	for _, k := range []error{errdefs.ErrInvalidArgument, errdefs.ErrResourceExhausted, errdefs.ErrNotImplemented,
		errdefs.ErrDataLoss, errdefs.ErrPermissionDenied, errdefs.ErrNotFound} {
		if errors.Is(err, k) {
			return err
		}
	}
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return err
	}
	switch errno {
	case unix.ENOSPC, unix.EDQUOT, unix.EMFILE, unix.ENFILE, unix.ENOMEM, unix.EFBIG:
		return fmt.Errorf("%w: %w", err, errdefs.ErrResourceExhausted)
	case unix.EPERM, unix.EACCES:
		return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
	case unix.ENAMETOOLONG, unix.EMLINK, unix.E2BIG, unix.ERANGE, unix.ELOOP, unix.ENOTDIR,
		unix.EISDIR, unix.EEXIST, unix.EINVAL, unix.ENOENT, unix.ENOTEMPTY:
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	return err
}

func retry(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}

func retryFD(fn func() (int, error)) (int, error) {
	for {
		fd, err := fn()
		if err != unix.EINTR {
			return fd, err
		}
	}
}
