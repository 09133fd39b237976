package client

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// FIFOs connect a foreground process's stdio to the caller through named
// pipes that the shim opens: the caller creates them, passes their paths in
// TaskOpts, and copies between them and its own streams.
type FIFOs struct {
	dir                   string
	Stdin, Stdout, Stderr string
	wg                    sync.WaitGroup // output copies
	opening               sync.WaitGroup // every goroutine until its open returned
	mu                    sync.Mutex
	closers               []io.Closer
	closed                bool
	stdinDone             chan struct{}
	// pending counts goroutines whose open has not returned (Close must
	// release those: an open of a fifo blocks until its other end opens).
	pending atomic.Int32
}

// StdinDone is closed when the caller's stdin reached its end and was
// copied; the caller then closes the process's stdin with CloseStdin so
// the process sees end of input. Nil without stdin.
func (f *FIFOs) StdinDone() <-chan struct{} { return f.stdinDone }

// NewFIFOs creates fifos in a new 0700 directory under dir ("" = see
// FIFODir) and starts copying: stdin (if not nil) into the process, the
// process's stdout and stderr (if not nil; stderr nil with terminal) out.
func NewFIFOs(ctx context.Context, dir string, stdin io.Reader, stdout, stderr io.Writer) (*FIFOs, error) {
	if dir == "" {
		dir = FIFODir()
	}
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
	// open opens a fifo for a copy goroutine: nil when it fails or Close
	// came first.
	open := func(path string, flag int) *os.File {
		defer f.opening.Done()
		defer f.pending.Add(-1)
		file, err := os.OpenFile(path, flag, 0) // blocks until the shim opens its end
		if err != nil || !f.track(file) {
			return nil
		}
		return file
	}
	if stdin != nil {
		if f.Stdin, err = mk("stdin"); err != nil {
			f.Close()
			return nil, err
		}
		f.stdinDone = make(chan struct{})
		f.opening.Add(1)
		f.pending.Add(1)
		go func() {
			w := open(f.Stdin, os.O_WRONLY)
			if w == nil {
				return
			}
			io.Copy(w, stdin)
			w.Close()
			close(f.stdinDone)
		}()
	}
	out := func(path string, dst io.Writer) {
		f.wg.Add(1)
		f.opening.Add(1)
		f.pending.Add(1)
		go func() {
			defer f.wg.Done()
			r := open(path, os.O_RDONLY)
			if r == nil {
				return
			}
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

// track registers c to be closed by Close; after Close it closes c and
// returns false.
func (f *FIFOs) track(c io.Closer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.closers = append(f.closers, c)
	return true
}

// Wait waits until the process's output is copied (the shim closed its
// ends when the process exited).
func (f *FIFOs) Wait() { f.wg.Wait() }

// FIFODir is where NewFIFOs creates its directory by default: a memory
// file system when there is one ($XDG_RUNTIME_DIR, then /dev/shm), where
// fifos cost no inode of the disk (creating and removing three of them on
// ext4 takes a noticeable part of a short run), else the temp directory.
func FIFODir() string {
	for _, d := range []string{os.Getenv("XDG_RUNTIME_DIR"), "/dev/shm"} {
		if d == "" {
			continue
		}
		if inMemory(d) && unix.Access(d, unix.W_OK|unix.X_OK) == nil {
			return d
		}
	}
	return os.TempDir()
}

// Close unblocks and stops all copies and removes the fifos.
func (f *FIFOs) Close() error {
	f.mu.Lock()
	f.closed = true
	closers := f.closers
	f.closers = nil
	f.mu.Unlock()
	for _, c := range closers {
		c.Close()
	}
	if f.pending.Load() > 0 {
		// Some copy is still in (or not yet in) its open, which waits
		// for the other end: hold every fifo open at both ends (O_RDWR
		// never blocks) until each of those opens returned; what they
		// opened, track closes at once. No goroutine is left waiting.
		var holds []*os.File
		for _, p := range []string{f.Stdin, f.Stdout, f.Stderr} {
			if p == "" {
				continue
			}
			if h, err := os.OpenFile(p, os.O_RDWR|syscall.O_NONBLOCK, 0); err == nil {
				holds = append(holds, h)
			}
		}
		f.opening.Wait()
		for _, h := range holds {
			h.Close()
		}
	}
	// The directory holds only the fifos made here: three unlinks, where
	// os.RemoveAll would first try the directory itself and then list it.
	for _, p := range []string{f.Stdin, f.Stdout, f.Stderr} {
		if p != "" {
			os.Remove(p)
		}
	}
	if err := os.Remove(f.dir); err != nil && !os.IsNotExist(err) {
		return os.RemoveAll(f.dir)
	}
	return nil
}
