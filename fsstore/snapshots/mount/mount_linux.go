package mount

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

var flagOptions = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro":            {false, unix.MS_RDONLY},
	"rw":            {true, unix.MS_RDONLY},
	"bind":          {false, unix.MS_BIND},
	"rbind":         {false, unix.MS_BIND | unix.MS_REC},
	"nosuid":        {false, unix.MS_NOSUID},
	"suid":          {true, unix.MS_NOSUID},
	"nodev":         {false, unix.MS_NODEV},
	"dev":           {true, unix.MS_NODEV},
	"noexec":        {false, unix.MS_NOEXEC},
	"exec":          {true, unix.MS_NOEXEC},
	"sync":          {false, unix.MS_SYNCHRONOUS},
	"async":         {true, unix.MS_SYNCHRONOUS},
	"dirsync":       {false, unix.MS_DIRSYNC},
	"remount":       {false, unix.MS_REMOUNT},
	"mand":          {false, unix.MS_MANDLOCK},
	"nomand":        {true, unix.MS_MANDLOCK},
	"noatime":       {false, unix.MS_NOATIME},
	"atime":         {true, unix.MS_NOATIME},
	"nodiratime":    {false, unix.MS_NODIRATIME},
	"diratime":      {true, unix.MS_NODIRATIME},
	"relatime":      {false, unix.MS_RELATIME},
	"norelatime":    {true, unix.MS_RELATIME},
	"strictatime":   {false, unix.MS_STRICTATIME},
	"nostrictatime": {true, unix.MS_STRICTATIME},
}

var propagationOptions = map[string]uintptr{
	"private":     unix.MS_PRIVATE,
	"rprivate":    unix.MS_PRIVATE | unix.MS_REC,
	"shared":      unix.MS_SHARED,
	"rshared":     unix.MS_SHARED | unix.MS_REC,
	"slave":       unix.MS_SLAVE,
	"rslave":      unix.MS_SLAVE | unix.MS_REC,
	"unbindable":  unix.MS_UNBINDABLE,
	"runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// Flags that a bind mount only honours on a second, remounting call.
const bindRemountFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC |
	unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME | unix.MS_STRICTATIME

func parseOptions(options []string) (flags, propagation uintptr, data []string) {
	for _, o := range options {
		if f, ok := flagOptions[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		if p, ok := propagationOptions[o]; ok {
			propagation |= p
			continue
		}
		data = append(data, o)
	}
	return flags, propagation, data
}

// CheckOptions reports whether m can be mounted as far as the kernel's
// limits go: the filesystem data must fit in one page (4096 bytes), overlay
// lowerdir lists after shortening (see Mount) included, and overlayfs takes
// at most MaxOverlayLayers lower layers. The error wraps
// errdefs.ErrResourceExhausted and gives the sizes.
func CheckOptions(m Mount) error {
	_, _, data := parseOptions(m.Options)
	joined := strings.Join(data, ",")
	page := unix.Getpagesize()
	if m.Type == "overlay" {
		for _, d := range data {
			if lower, ok := strings.CutPrefix(d, "lowerdir="); ok {
				if n := len(strings.Split(lower, ":")); n > MaxOverlayLayers {
					return fmt.Errorf("overlay mount with %d lower layers: overlayfs supports at most %d: %w",
						n, MaxOverlayLayers, errdefs.ErrResourceExhausted)
				}
			}
		}
		if len(joined) < page {
			return nil
		}
		if _, rel, ok := relativize(data); ok {
			if len(rel) < page {
				return nil
			}
			return fmt.Errorf("overlay mount options are %d bytes (%d with relative paths), more than the kernel's limit of %d: %w",
				len(joined), len(rel), page-1, errdefs.ErrResourceExhausted)
		}
	}
	if len(joined) >= page {
		return fmt.Errorf("%s mount options are %d bytes, more than the kernel's limit of %d: %w",
			m.Type, len(joined), page-1, errdefs.ErrResourceExhausted)
	}
	return nil
}

// Mount mounts m onto target (m.Target is not used here). Bind mounts with
// "ro" or other per-mount flags get the remount they need to take effect.
// Overlay mounts whose options exceed a page are mounted with paths relative
// to their common parent directory, from a dedicated OS thread whose working
// directory is not shared with the rest of the process.
func (m *Mount) Mount(target string) error {
	if err := CheckOptions(*m); err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.Type, target, err)
	}
	flags, propagation, data := parseOptions(m.Options)
	joined := strings.Join(data, ",")
	typ := m.Type
	if flags&unix.MS_BIND != 0 || typ == "bind" {
		typ = "none"
		flags |= unix.MS_BIND
	}
	var err error
	if typ == "overlay" && len(joined) >= unix.Getpagesize() {
		err = mountRelative(m.Source, target, flags, data)
	} else {
		err = mountSyscall(m.Source, target, typ, flags, joined)
	}
	if err != nil {
		return fmt.Errorf("mount %s %s on %s (options %s): %w", m.Type, m.Source, target, summarize(m.Options), err)
	}
	if flags&unix.MS_BIND != 0 && flags&unix.MS_REMOUNT == 0 && flags&bindRemountFlags != 0 {
		if err := mountSyscall("", target, "", unix.MS_REMOUNT|unix.MS_BIND|(flags&bindRemountFlags), ""); err != nil {
			unmountLoop(target, unix.MNT_DETACH)
			return fmt.Errorf("remount bind %s on %s with %s: %w", m.Source, target, summarize(m.Options), err)
		}
	}
	if propagation != 0 {
		if err := mountSyscall("", target, "", propagation, ""); err != nil {
			unmountLoop(target, unix.MNT_DETACH)
			return fmt.Errorf("set propagation of %s: %w", target, err)
		}
	}
	return nil
}

func summarize(options []string) string {
	s := strings.Join(options, ",")
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// MountAll mounts every mount, in order, onto target (joined with the mount's
// Target when set). On failure the mounts already made are undone.
func MountAll(mounts []Mount, target string) error {
	target, err := filepath.Abs(target)
	if err != nil {
		return err
	}
	var done []string
	for i := range mounts {
		m := mounts[i]
		dst := target
		if m.Target != "" {
			clean := filepath.Clean("/" + m.Target)
			if strings.Contains(m.Target, "..") || clean == "/" {
				return rollback(done, errdefs.InvalidArgument("mount target", "%q must be a relative path without \"..\"", m.Target))
			}
			dst = filepath.Join(target, clean)
		}
		if err := m.Mount(dst); err != nil {
			return rollback(done, err)
		}
		done = append(done, dst)
	}
	return nil
}

func rollback(done []string, err error) error {
	for i := len(done) - 1; i >= 0; i-- {
		if uerr := UnmountAll(done[i]); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}
	return err
}

// UnmountAll removes every mount stacked on target, innermost first. A target
// that is not a mount point (or does not exist) is not an error. A mount that
// stays busy after a few retries is detached lazily (MNT_DETACH), which is
// logged; an error is returned only when even that fails.
func UnmountAll(target string) error {
	for range 64 { // bounds a pathological stack of mounts
		err := unmountBusyRetry(target)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil // not (or no longer) a mount point
		case errors.Is(err, unix.EBUSY):
			if derr := unmountLoop(target, unix.MNT_DETACH); derr != nil {
				return fmt.Errorf("unmount %s: busy, and the lazy unmount failed too: %w", target, derr)
			}
			slog.Warn("mount: target was busy; detached lazily, it is freed once no longer used", "target", target)
		default:
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return fmt.Errorf("unmount %s: more than 64 mounts stacked on it: %w", target, errdefs.ErrFailedPrecondition)
}

func unmountBusyRetry(target string) error {
	var err error
	for i := 0; i < 10; i++ {
		err = unmountLoop(target, 0)
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

func mountSyscall(source, target, fstype string, flags uintptr, data string) error {
	for {
		err := unix.Mount(source, target, fstype, flags, data)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func unmountLoop(target string, flags int) error {
	for {
		err := unix.Unmount(target, flags)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// relativize rewrites the path options of an overlay mount (lowerdir,
// upperdir, workdir) relative to their common parent directory. It returns
// false when there is nothing to gain or a path cannot be rewritten safely.
func relativize(data []string) (dir, rel string, ok bool) {
	var paths []string
	for _, d := range data {
		k, v, found := strings.Cut(d, "=")
		if !found {
			continue
		}
		switch k {
		case "lowerdir":
			paths = append(paths, strings.Split(v, ":")...)
		case "upperdir", "workdir":
			paths = append(paths, v)
		}
	}
	if len(paths) == 0 {
		return "", "", false
	}
	for _, p := range paths {
		if !filepath.IsAbs(p) || strings.ContainsAny(p, `\,`) || filepath.Clean(p) != p {
			return "", "", false
		}
	}
	dir = filepath.Dir(paths[0])
	for _, p := range paths[1:] {
		for dir != "/" && !strings.HasPrefix(p, dir+"/") {
			dir = filepath.Dir(dir)
		}
	}
	if dir == "/" {
		return "", "", false
	}
	cut := func(p string) string { return strings.TrimPrefix(p, dir+"/") }
	out := make([]string, 0, len(data))
	for _, d := range data {
		k, v, _ := strings.Cut(d, "=")
		switch k {
		case "lowerdir":
			parts := strings.Split(v, ":")
			for i := range parts {
				parts[i] = cut(parts[i])
			}
			out = append(out, k+"="+strings.Join(parts, ":"))
		case "upperdir", "workdir":
			out = append(out, k+"="+cut(v))
		default:
			out = append(out, d)
		}
	}
	return dir, strings.Join(out, ","), true
}

// mountRelative mounts an overlay with paths relative to their common parent,
// from a goroutine locked to an OS thread that has its own working directory
// (unshare(CLONE_FS)), so the chdir cannot affect any other goroutine. The
// thread is never unlocked: it exits with the goroutine.
func mountRelative(source, target string, flags uintptr, data []string) error {
	dir, rel, ok := relativize(data)
	if !ok {
		return fmt.Errorf("options too long and paths cannot be made relative: %w", errdefs.ErrResourceExhausted)
	}
	target, err := filepath.Abs(target)
	if err != nil {
		return err
	}
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			res <- fmt.Errorf("unshare(CLONE_FS): %w", err)
			return
		}
		if err := unix.Chdir(dir); err != nil {
			res <- fmt.Errorf("chdir %s: %w", dir, err)
			return
		}
		res <- mountSyscall(source, target, "overlay", flags, rel)
	}()
	return <-res
}

// MountPoints returns the mount points at or below dir, per
// /proc/self/mountinfo, deepest first (the order to unmount them in).
func MountPoints(dir string) ([]string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeOctal(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	// Deepest first; for equal paths (stacked mounts) order does not matter
	// because UnmountAll removes the whole stack.
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// IsMountPoint reports whether path is a mount point.
func IsMountPoint(path string) (bool, error) {
	mps, err := MountPoints(path)
	if err != nil {
		return false, err
	}
	abs, _ := filepath.Abs(path)
	for _, mp := range mps {
		if mp == abs {
			return true, nil
		}
	}
	return false, nil
}

// unescapeOctal decodes the \ooo escapes mountinfo uses for space, tab,
// newline and backslash.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
