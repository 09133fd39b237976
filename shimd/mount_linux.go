package shimd

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/proto/types"
)

// mountFlag maps a mount(8) option to its flag, and whether it clears it.
func mountFlag(o string) (flag uintptr, clear, ok bool) {
	switch o {
	case "ro":
		return unix.MS_RDONLY, false, true
	case "rw":
		return unix.MS_RDONLY, true, true
	case "nosuid":
		return unix.MS_NOSUID, false, true
	case "suid":
		return unix.MS_NOSUID, true, true
	case "nodev":
		return unix.MS_NODEV, false, true
	case "dev":
		return unix.MS_NODEV, true, true
	case "noexec":
		return unix.MS_NOEXEC, false, true
	case "exec":
		return unix.MS_NOEXEC, true, true
	case "noatime":
		return unix.MS_NOATIME, false, true
	case "atime":
		return unix.MS_NOATIME, true, true
	case "relatime":
		return unix.MS_RELATIME, false, true
	case "strictatime":
		return unix.MS_STRICTATIME, false, true
	case "nodiratime":
		return unix.MS_NODIRATIME, false, true
	case "sync":
		return unix.MS_SYNCHRONOUS, false, true
	case "bind":
		return unix.MS_BIND, false, true
	case "rbind":
		return unix.MS_BIND | unix.MS_REC, false, true
	case "remount":
		return unix.MS_REMOUNT, false, true
	case "defaults":
		return 0, false, true
	}
	return 0, false, false
}

// parseMountOptions splits options into flags and the data string.
func parseMountOptions(opts []string) (uintptr, string) {
	var flags uintptr
	var data []string
	for _, o := range opts {
		if f, clear, ok := mountFlag(o); ok {
			if clear {
				flags &^= f
			} else {
				flags |= f
			}
			continue
		}
		data = append(data, o)
	}
	return flags, strings.Join(data, ",")
}

// mountRootfs mounts every mount, in order, on target (the bundle's rootfs).
func mountRootfs(mounts []*types.Mount, target string) (err error) {
	if err := os.MkdirAll(target, 0o711); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	done := 0
	defer func() {
		if err != nil && done > 0 {
			_ = unmountAll(target)
		}
	}()
	for i, m := range mounts {
		if m == nil || m.Type == "" {
			return errdefs.InvalidArgument(fmt.Sprintf("rootfs[%d]", i), "mount type must be set")
		}
		if !strings.HasPrefix(m.Source, "/") && m.Type == "bind" {
			return errdefs.InvalidArgument(fmt.Sprintf("rootfs[%d]", i), "bind source %q must be an absolute path", m.Source)
		}
		flags, data := parseMountOptions(m.Options)
		typ := m.Type
		if flags&unix.MS_BIND != 0 {
			typ = ""
		}
		if err := mountRetry(m.Source, target, typ, flags&^unix.MS_RDONLY|flagIfNotBind(flags), data); err != nil {
			return fmt.Errorf("mount %s %s on %s (%s): %w", m.Type, m.Source, target, strings.Join(m.Options, ","), err)
		}
		done++
		if flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0 {
			// A bind mount becomes read-only by a remount.
			if err := mountRetry("", target, "", flags|unix.MS_REMOUNT, ""); err != nil {
				return fmt.Errorf("remount %s read-only: %w", target, err)
			}
		}
	}
	return nil
}

// flagIfNotBind keeps MS_RDONLY for ordinary mounts; binds get it by remount.
func flagIfNotBind(flags uintptr) uintptr {
	if flags&unix.MS_BIND != 0 {
		return 0
	}
	return flags & unix.MS_RDONLY
}

func mountRetry(source, target, typ string, flags uintptr, data string) error {
	for {
		err := unix.Mount(source, target, typ, flags, data)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// unmountAll unmounts everything mounted on target.
func unmountAll(target string) error {
	for i := 0; ; i++ {
		err := unix.Unmount(target, 0)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil // not a mount point (any more)
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EBUSY) && i < 50:
			time.Sleep(20 * time.Millisecond)
		case errors.Is(err, unix.EBUSY):
			if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmount %s: %w", target, err)
			}
		default:
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
}
