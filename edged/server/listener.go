package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

// Listen returns the API listener: the socket systemd passed in when edged
// is socket-activated, or a new unix path socket at address (the socket
// 0660 owned by root:gid; see prepareSocketDir for its directory).
// ownDirs are directories that are edged's own (its state directory): when
// the socket's directory is one, it gets socketDirMode as the default
// directory does, whatever the umask made it.
//
// Under socket activation the listening socket exists before edged starts
// and connections queue in its backlog, so the first request of a client
// that triggered the activation is accepted once serving starts, never lost.
func Listen(address string, gid int, ownDirs ...string) (l net.Listener, activated bool, err error) {
	ls, err := activationListeners()
	if err != nil {
		return nil, false, fmt.Errorf("systemd activation: %w", err)
	}
	for i, l := range ls {
		if l == nil {
			continue
		}
		if err := checkStreamListener(l); err != nil {
			for _, o := range ls[i:] {
				if o != nil {
					o.Close()
				}
			}
			return nil, false, fmt.Errorf("systemd passed fd %d as a %w", listenFdsStart+i, err)
		}
		for _, other := range ls[i+1:] {
			if other != nil {
				other.Close()
			}
		}
		return l, true, nil
	}
	l, err = listenUnix(address, gid, ownDirs...)
	return l, false, err
}

// checkStreamListener returns an error, completing "systemd passed fd N as
// a …", unless l is a listening unix stream socket. net.FileListener
// returns a *net.UnixListener for unix datagram and seqpacket sockets too,
// and for a stream socket nobody called listen(2) on: a datagram socket
// failed every Accept, and a seqpacket one broke the framing, only after
// edged had told systemd READY=1.
func checkStreamListener(l net.Listener) error {
	ul, ok := l.(*net.UnixListener)
	if !ok {
		return fmt.Errorf("%s socket; edged needs a unix stream socket", l.Addr().Network())
	}
	rc, err := ul.SyscallConn()
	if err != nil {
		return fmt.Errorf("%s socket whose type cannot be read: %w", l.Addr().Network(), err)
	}
	var typ, listening int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		typ, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE)
		if serr == nil {
			listening, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
		}
	}); err != nil {
		serr = err
	}
	switch {
	case serr != nil:
		return fmt.Errorf("%s socket whose type cannot be read: %w", l.Addr().Network(), serr)
	case typ != syscall.SOCK_STREAM:
		return fmt.Errorf("%s socket; edged needs a unix stream socket", l.Addr().Network())
	case listening == 0:
		return fmt.Errorf("unix stream socket that is not listening; edged needs a listening unix stream socket")
	}
	return nil
}

// defaultSocketDir is the directory of the default address
// (configs/edged.toml), edged's own: configs/edged.socket makes it with
// DirectoryMode=0711, and edged creates it as its default state directory
// before it listens, under the umask.
const defaultSocketDir = "/run/edged"

// socketDirMode lets clients in the socket's group reach the socket (0660)
// without letting anyone list or change the directory.
const socketDirMode = 0o711

func listenUnix(address string, gid int, ownDirs ...string) (net.Listener, error) {
	dir := filepath.Dir(address)
	own := dir == defaultSocketDir || slices.ContainsFunc(ownDirs, func(d string) bool { return filepath.Clean(d) == dir })
	if err := prepareSocketDir(dir, own); err != nil {
		return nil, err
	}
	if err := removeStaleSocket(address); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", address, err)
	}
	if err := os.Chmod(address, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", address, err)
	}
	if err := os.Chown(address, 0, gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("chown %s: %w", address, err)
	}
	return l, nil
}

// prepareSocketDir creates the missing components of dir with
// socketDirMode (set explicitly: MkdirAll's mode is cut by the umask) and
// sets that mode on dir itself only when dedicated (edged's own directory).
// An existing directory is otherwise left as it is: an --address in /tmp
// or /run once turned them 0711, without the sticky bit and world write
// the host relies on.
//
// The deepest existing directory must then be private: writable only by
// root or edged's user, or sticky (as /tmp is: others cannot rename or
// remove what they do not own). Otherwise another user could replace
// edged's socket, or a directory above it, with their own and answer
// edged's clients, so edged refuses to start rather than warn in a log
// nobody may read.
func prepareSocketDir(dir string, dedicated bool) error {
	var missing []string
	existing := dir
	for {
		_, err := os.Stat(existing)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("check socket directory: %w", err)
		}
		missing = append(missing, existing)
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		existing = parent
	}
	if len(missing) == 0 {
		if dedicated {
			if err := os.Chmod(dir, socketDirMode); err != nil {
				return fmt.Errorf("set mode %#o of socket directory: %w", socketDirMode, err)
			}
		}
		return checkPrivateDir(dir)
	}
	if err := checkPrivateDir(existing); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		err := os.Mkdir(missing[i], socketDirMode)
		if errors.Is(err, os.ErrExist) {
			continue // made by someone else meanwhile: not ours to change
		}
		if err != nil {
			return fmt.Errorf("create socket directory: %w", err)
		}
		if err := os.Chmod(missing[i], socketDirMode); err != nil {
			return fmt.Errorf("set mode %#o of socket directory: %w", socketDirMode, err)
		}
	}
	return checkPrivateDir(dir)
}

// checkPrivateDir returns an ErrFailedPrecondition error when users other
// than root and edged's own can replace entries of dir.
func checkPrivateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory: %w", dir, errdefs.ErrFailedPrecondition)
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("socket directory %s is not private (mode %v: others can write it and it has no sticky bit, so they could replace edged's socket); use a directory only root can write, such as %s: %w",
			dir, fi.Mode(), defaultSocketDir, errdefs.ErrFailedPrecondition)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("socket directory %s is not private (owned by uid %d, who could replace edged's socket); use a directory only root can write, such as %s: %w",
			dir, st.Uid, defaultSocketDir, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// removeStaleSocket removes a socket left by a previous edged, refusing to
// remove anything that is not a socket or a socket that still answers.
func removeStaleSocket(address string) error {
	fi, err := os.Lstat(address)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("stat %s: %w", address, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", address)
	}
	c, err := net.DialTimeout("unix", address, 200*time.Millisecond)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s is in use: another edged is running", address)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("probe %s: %w", address, err)
	}
	if err := os.Remove(address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", address, err)
	}
	return nil
}

// listenFdsStart is the first file descriptor systemd passes.
const listenFdsStart = 3

// activationListeners returns the sockets passed by systemd's socket
// activation protocol (LISTEN_PID, LISTEN_FDS; fds from 3). It reads the
// protocol directly instead of using go-systemd's activation package,
// whose dependency on crypto/tls costs edged about 1.3 MiB of resident
// memory. The variables are unset so children do not inherit them.
func activationListeners() ([]net.Listener, error) {
	defer os.Unsetenv("LISTEN_PID")
	defer os.Unsetenv("LISTEN_FDS")
	defer os.Unsetenv("LISTEN_FDNAMES")
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil, nil
	}
	ls := make([]net.Listener, n)
	for i := 0; i < n; i++ {
		fd := listenFdsStart + i
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
		var l net.Listener
		if what := notSocket(f); what != "" {
			err = fmt.Errorf("fd %d passed by systemd is %s, not a socket; edged needs a listening unix stream socket", fd, what)
		} else if l, err = net.FileListener(f); err != nil {
			// The *net.OpError names the fd as "file file+net LISTEN_FD_3".
			var oe *net.OpError
			if errors.As(err, &oe) {
				err = oe.Err
			}
			err = fmt.Errorf("fd %d passed by systemd is not a listening socket: %w", fd, err)
		}
		f.Close()
		if err != nil {
			for _, o := range ls[:i] {
				if o != nil {
					o.Close()
				}
			}
			return nil, err
		}
		ls[i] = l
	}
	return ls, nil
}

// notSocket describes what f is ("a regular file", "a pipe", ...) when it
// is open and not a socket, else returns "".
func notSocket(f *os.File) string {
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	switch t := fi.Mode().Type(); {
	case t&os.ModeSocket != 0:
		return ""
	case t == 0:
		return "a regular file"
	case t&os.ModeNamedPipe != 0:
		return "a pipe"
	case t&os.ModeDir != 0:
		return "a directory"
	case t&os.ModeCharDevice != 0:
		return "a character device"
	case t&os.ModeDevice != 0:
		return "a block device"
	default:
		return "a file of type " + t.String()
	}
}
