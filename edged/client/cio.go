package client

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// FIFOs connect a foreground process's stdio to the caller through named
// pipes that the shim opens: the caller creates them, passes their paths in
// TaskOpts, and copies between them and its own streams.
type FIFOs struct {
	dir                   string
	Stdin, Stdout, Stderr string
	wg                    sync.WaitGroup
	closers               []io.Closer
	mu                    sync.Mutex
	stdinDone             chan struct{}
}

// StdinDone is closed when the caller's stdin reached its end and was
// copied; the caller then closes the process's stdin with CloseStdin so
// the process sees end of input. Nil without stdin.
func (f *FIFOs) StdinDone() <-chan struct{} { return f.stdinDone }

// NewFIFOs creates fifos in a new 0700 directory under dir ("" = os
// temp) and starts copying: stdin (if not nil) into the process, the
// process's stdout and stderr (if not nil; stderr nil with terminal) out.
func NewFIFOs(ctx context.Context, dir string, stdin io.Reader, stdout, stderr io.Writer) (*FIFOs, error) {
	d, err := os.MkdirTemp(dir, "edgectl-io-")
	if err != nil {
		return nil, err
	}
	f := &FIFOs{dir: d}
	mk := func(name string) (string, error) {
		p := filepath.Join(d, name)
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			return "", fmt.Errorf("mkfifo %s: %w", p, err)
		}
		return p, nil
	}
	if stdin != nil {
		if f.Stdin, err = mk("stdin"); err != nil {
			f.Close()
			return nil, err
		}
		f.stdinDone = make(chan struct{})
		go func() {
			w, err := os.OpenFile(f.Stdin, os.O_WRONLY, 0) // blocks until the shim opens it
			if err != nil {
				return
			}
			f.track(w)
			io.Copy(w, stdin)
			w.Close()
			close(f.stdinDone)
		}()
	}
	out := func(path string, dst io.Writer) {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			r, err := os.OpenFile(path, os.O_RDONLY, 0) // blocks until the shim opens it
			if err != nil {
				return
			}
			f.track(r)
			io.Copy(dst, r)
			r.Close()
		}()
	}
	if stdout != nil {
		if f.Stdout, err = mk("stdout"); err != nil {
			f.Close()
			return nil, err
		}
		out(f.Stdout, stdout)
	}
	if stderr != nil {
		if f.Stderr, err = mk("stderr"); err != nil {
			f.Close()
			return nil, err
		}
		out(f.Stderr, stderr)
	}
	return f, nil
}

func (f *FIFOs) track(c io.Closer) {
	f.mu.Lock()
	f.closers = append(f.closers, c)
	f.mu.Unlock()
}

// Wait waits until the process's output is copied (the shim closed its
// ends when the process exited).
func (f *FIFOs) Wait() { f.wg.Wait() }

// Close unblocks and stops all copies and removes the fifos.
func (f *FIFOs) Close() error {
	// Open the other end of every fifo without blocking, so goroutines
	// still waiting in open return.
	for _, p := range []string{f.Stdout, f.Stderr} {
		if p != "" {
			if w, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
		}
	}
	if f.Stdin != "" {
		if r, err := os.OpenFile(f.Stdin, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			r.Close()
		}
	}
	f.mu.Lock()
	for _, c := range f.closers {
		c.Close()
	}
	f.mu.Unlock()
	return os.RemoveAll(f.dir)
}
