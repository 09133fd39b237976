package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
)

// Listen returns the API listener: the socket systemd passed in when edged
// is socket-activated, or a new unix path socket at address (its directory
// 0711, the socket 0660 owned by root:gid).
//
// Under socket activation the listening socket exists before edged starts
// and connections queue in its backlog, so the first request of a client
// that triggered the activation is accepted once serving starts, never lost.
func Listen(address string, gid int) (l net.Listener, activated bool, err error) {
	ls, err := activation.Listeners()
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
