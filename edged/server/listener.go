package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"strconv"
)

// Listen returns the API listener: the socket systemd passed in when edged
// is socket-activated, or a new unix path socket at address (its directory
// 0711, the socket 0660 owned by root:gid).
//
// Under socket activation the listening socket exists before edged starts
// and connections queue in its backlog, so the first request of a client
// that triggered the activation is accepted once serving starts, never lost.
func Listen(address string, gid int) (l net.Listener, activated bool, err error) {
	ls, err := activationListeners()
	if err != nil {
		return nil, false, fmt.Errorf("systemd activation: %w", err)
	}
	for i, l := range ls {
		if l == nil {
			continue
		}
		if _, ok := l.(*net.UnixListener); !ok {
			return nil, false, fmt.Errorf("systemd passed fd %d as a %s socket; edged needs a unix stream socket", 3+i, l.Addr().Network())
		}
		for _, other := range ls[i+1:] {
			if other != nil {
				other.Close()
			}
		}
		return l, true, nil
	}
	l, err = listenUnix(address, gid)
	return l, false, err
}

func listenUnix(address string, gid int) (net.Listener, error) {
	dir := filepath.Dir(address)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, fmt.Errorf("chmod socket directory: %w", err)
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
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			for _, o := range ls[:i] {
				if o != nil {
					o.Close()
				}
			}
			return nil, fmt.Errorf("fd %d passed by systemd is not a listening socket: %w", fd, err)
		}
		ls[i] = l
	}
	return ls, nil
}
