// Package stdio connects a container process's standard streams to what the
// client asked for: fifos (paths), a size-rotated log file
// (file:///path?max-size=N&max-files=N, stdout and stderr appended to the
// same file), or nothing. Terminals arrive as a pty master received over a
// console socket.
package stdio

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"golang.org/x/sys/unix"
)

// Config is what a process's stdio should be connected to.
type Config struct {
	Stdin, Stdout, Stderr string
	Terminal              bool
	// Log defaults of file:// URIs (the URI's query overrides them).
	LogMaxSize  int64
	LogMaxFiles int
	// UID and GID own the pipes handed to the container (user namespaces).
	UID, GID int
}

// Buffers hands out copy buffers. Copies read into a small buffer of their
// own and borrow a large one only while data is streaming, so an idle
// container costs little memory.
type Buffers struct{ pool sync.Pool }

// BufferSize is the size of a borrowed buffer.
const BufferSize = 32 << 10

const smallBuffer = 512

// NewBuffers returns an empty buffer pool.
func NewBuffers() *Buffers {
	b := &Buffers{}
	b.pool.New = func() any { return new([BufferSize]byte) }
	return b
}

// IO is the stdio of one process.
type IO struct {
	cfg    Config
	bufs   *Buffers
	log    *slog.Logger
	child  [3]*os.File // handed to runc, closed by ChildStarted
	closer []io.Closer // everything the shim holds open
	// stdin
	stdinFifo  *os.File
	stdinHold  *os.File // our writer on the stdin fifo, keeps EOF away until CloseStdin
	stdinPipe  *os.File // writer of the container's stdin
	stdinMu    sync.Mutex
	console    *os.File
	pendingOut io.Writer // terminal: stdout destination until AttachConsole
	// copies counts the output copies running, plus one until all of them
	// are started; the last to finish closes outputDone (no goroutine
	// waits for them).
	copies     atomic.Int32
	closeOnce  sync.Once
	outputDone chan struct{}
}

// Validate checks a stdio URI or path without opening it.
func Validate(field, s string) error {
	if s == "" {
		return nil
	}
	kind, _, _, _, err := parse(field, s)
	if err != nil {
		return err
	}
	if kind == kindBinary {
		return fmt.Errorf("%s: binary:// logging is not supported by edged-shim: %w", field, errdefs.ErrNotImplemented)
	}
	return nil
}

const (
	kindFifo = iota
	kindFile
	kindBinary
)

func parse(field, s string) (kind int, path string, maxSize int64, maxFiles int, err error) {
	if filepath.IsAbs(s) {
		return kindFifo, filepath.Clean(s), 0, 0, nil
	}
	u, perr := url.Parse(s)
	if perr != nil {
		return 0, "", 0, 0, errdefs.InvalidArgument(field, "%q is neither an absolute path nor a URI: %v", s, perr)
	}
	switch u.Scheme {
	case "fifo":
		kind = kindFifo
	case "file":
		kind = kindFile
	case "binary":
		return kindBinary, "", 0, 0, nil
	default:
		return 0, "", 0, 0, errdefs.InvalidArgument(field, "%q: unsupported scheme %q (want an absolute fifo path, file:// or fifo://)", s, u.Scheme)
	}
	if !filepath.IsAbs(u.Path) || u.Host != "" {
		return 0, "", 0, 0, errdefs.InvalidArgument(field, "%q: the path must be absolute (file:///path)", s)
	}
	q := u.Query()
	if v := q.Get("max-size"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return 0, "", 0, 0, errdefs.InvalidArgument(field, "max-size %q must be a positive number of bytes", v)
		}
		maxSize = n
	}
	if v := q.Get("max-files"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 1000 {
			return 0, "", 0, 0, errdefs.InvalidArgument(field, "max-files %q must be a number from 1 to 1000", v)
		}
		maxFiles = n
	}
	return kind, filepath.Clean(u.Path), maxSize, maxFiles, nil
}

// New opens the client's side of the streams and, for non-terminal
// processes, the pipes whose other ends go to the container (ChildFiles).
func New(cfg Config, bufs *Buffers, log *slog.Logger) (_ *IO, err error) {
	p := &IO{cfg: cfg, bufs: bufs, log: log, outputDone: make(chan struct{})}
	p.copies.Store(1) // released once the copies are started
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	for _, f := range []struct{ name, v string }{{"stdin", cfg.Stdin}, {"stdout", cfg.Stdout}, {"stderr", cfg.Stderr}} {
		if err := Validate(f.name, f.v); err != nil {
			return nil, err
		}
	}
	if cfg.Stdin != "" {
		_, path, _, _, _ := parse("stdin", cfg.Stdin)
		if p.stdinFifo, err = os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0); err != nil {
			return nil, fmt.Errorf("open stdin %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
		}
		p.closer = append(p.closer, p.stdinFifo)
		if p.stdinHold, err = os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0); err != nil {
			return nil, fmt.Errorf("open stdin %s: %w", path, err)
		}
	}
	stdout, err := p.openOutput("stdout", cfg.Stdout)
	if err != nil {
		return nil, err
	}
	stderr := stdout
	if cfg.Stderr != cfg.Stdout {
		if stderr, err = p.openOutput("stderr", cfg.Stderr); err != nil {
			return nil, err
		}
	}
	if cfg.Terminal {
		// Output copies start in AttachConsole; the pty merges stderr.
		p.pendingOut = stdout
		return p, nil
	}
	if p.stdinFifo != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p.child[0], p.stdinPipe = r, w
		go p.copyStdin(w)
	}
	outPipe := func(dst io.Writer) (*os.File, error) {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p.closer = append(p.closer, r)
		p.startCopy(dst, r)
		return w, nil
	}
	if stdout != nil {
		if p.child[1], err = outPipe(stdout); err != nil {
			return nil, err
		}
	}
	if stderr != nil {
		if stderr == stdout {
			p.child[2] = p.child[1] // one pipe, one copy: the same destination
		} else if p.child[2], err = outPipe(stderr); err != nil {
			return nil, err
		}
	}
	if cfg.UID != 0 || cfg.GID != 0 {
		for _, f := range p.child {
			if f != nil {
				if err := f.Chown(cfg.UID, cfg.GID); err != nil {
					return nil, fmt.Errorf("chown stdio pipe: %w", err)
				}
			}
		}
	}
	p.copyDone()
	return p, nil
}

// openOutput opens the destination of stdout or stderr (nil for "").
func (p *IO) openOutput(field, s string) (io.Writer, error) {
	if s == "" {
		return nil, nil
	}
	kind, path, maxSize, maxFiles, err := parse(field, s)
	if err != nil {
		return nil, err
	}
	if kind == kindFile {
		if maxSize == 0 {
			maxSize = p.cfg.LogMaxSize
		}
		if maxFiles == 0 {
			maxFiles = p.cfg.LogMaxFiles
		}
		l, err := OpenRotatingFile(path, maxSize, maxFiles)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		p.closer = append(p.closer, l)
		return l, nil
	}
	f, err := openFifoWriter(path)
	if err != nil {
		return nil, fmt.Errorf("open %s %s: %v: %w", field, path, err, errdefs.ErrInvalidArgument)
	}
	p.closer = append(p.closer, f)
	return f, nil
}

// openFifoWriter opens the write side of a fifo without blocking: write-only
// when the client already reads it (so a vanished reader is noticed), else
// read-write (the reader may come later).
func openFifoWriter(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENXIO) {
		f, err = os.OpenFile(path, os.O_RDWR|unix.O_NONBLOCK, 0)
	}
	return f, err
}

// ChildFiles returns the files runc passes to the container as fds 0-2 (nil
// entries mean /dev/null).
func (p *IO) ChildFiles() [3]*os.File { return p.child }

// ChildStarted closes the shim's copies of the container's pipe ends; call it
// once runc create/exec has returned.
func (p *IO) ChildStarted() {
	for i, f := range p.child {
		if f != nil && (i != 2 || f != p.child[1]) {
			f.Close()
		}
	}
	p.child = [3]*os.File{}
}

// copy streams r to w until r ends. After a write error to a fifo the rest
// is discarded so that the container never blocks on a vanished reader. A
// log file only loses the chunk that failed: a full filesystem recovers,
// and the container's later output must be logged again when it does.
func (p *IO) copy(w io.Writer, r io.Reader) {
	logFile, _ := w.(*RotatingFile)
	var small [smallBuffer]byte
	var big *[BufferSize]byte
	defer func() {
		if big != nil {
			p.bufs.pool.Put(big)
		}
	}()
	werr := false
	for {
		buf := small[:]
		if big != nil {
			buf = big[:]
		}
		n, err := r.Read(buf)
		if n > 0 && (!werr || logFile != nil) {
			_, err := w.Write(buf[:n])
			switch {
			case err != nil && logFile != nil:
				if !werr { // once per run of failures
					p.log.Warn("log write failed, dropping output until writes succeed again", "error", err)
				}
				werr = true
			case err != nil:
				werr = true
				p.log.Warn("stdio write failed, discarding output", "error", err)
			case werr: // a log file recovered
				werr = false
				p.log.Info("log writes resumed", "dropped_bytes_total", logFile.Dropped())
			}
		}
		switch {
		case n == len(buf) && big == nil:
			big = p.bufs.pool.Get().(*[BufferSize]byte) // streaming: borrow
		case n < len(buf) && big != nil:
			p.bufs.pool.Put(big) // drained: give it back
			big = nil
		}
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
	}
}

// copyDone ends one output copy, or the start of the copies.
func (p *IO) copyDone() {
	if p.copies.Add(-1) == 0 {
		close(p.outputDone)
	}
}

func (p *IO) startCopy(w io.Writer, r io.Reader) {
	p.copies.Add(1)
	go func() {
		defer p.copyDone()
		p.copy(w, r)
		if c, ok := w.(*os.File); ok {
			// The reader sees EOF once the container's output ended.
			c.Close()
		}
	}()
}

func (p *IO) copyStdin(w io.WriteCloser) {
	p.copy(w, p.stdinFifo)
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	w.Close()
}

// CloseStdin ends the container's stdin once the client's writer has closed
// and what it wrote was delivered.
func (p *IO) CloseStdin() {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdinHold != nil {
		p.stdinHold.Close()
		p.stdinHold = nil
	}
}

// AttachConsole starts copying between the pty master and the client's
// streams (terminal processes).
func (p *IO) AttachConsole(master *os.File) {
	p.console = master
	p.closer = append(p.closer, master)
	if p.stdinFifo != nil {
		go func() {
			p.copy(master, p.stdinFifo)
		}()
	}
	if p.pendingOut != nil {
		p.startCopy(p.pendingOut, master)
	}
	p.copyDone()
}

// Resize sets the terminal's window size.
func (p *IO) Resize(width, height uint32) error {
	if p.console == nil {
		return fmt.Errorf("process has no terminal: %w", errdefs.ErrFailedPrecondition)
	}
	ws := &unix.Winsize{Col: uint16(width), Row: uint16(height)}
	for {
		err := unix.IoctlSetWinsize(int(p.console.Fd()), unix.TIOCSWINSZ, ws)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// WaitOutput waits until the output copies have ended (the container closed
// its ends) or timeout passes.
func (p *IO) WaitOutput(timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.outputDone:
	case <-t.C:
	}
}

// Close closes every stream the shim holds; copies still running end.
func (p *IO) Close() {
	p.closeOnce.Do(func() {
		p.ChildStarted()
		p.CloseStdin()
		for i := len(p.closer) - 1; i >= 0; i-- {
			p.closer[i].Close()
		}
	})
}

// ConsoleSocket receives a pty master from runc (--console-socket).
type ConsoleSocket struct {
	dir string
	l   *net.UnixListener
}

// NewConsoleSocket listens on a new socket in a private temporary directory.
func NewConsoleSocket() (*ConsoleSocket, error) {
	dir, err := os.MkdirTemp("", "edged-pty")
	if err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "pty.sock"), Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("console socket: %w", err)
	}
	return &ConsoleSocket{dir: dir, l: l}, nil
}

// Path is the socket's path, for runc --console-socket.
func (c *ConsoleSocket) Path() string { return filepath.Join(c.dir, "pty.sock") }

// Receive accepts runc's connection and returns the pty master it sends.
func (c *ConsoleSocket) Receive(timeout time.Duration) (*os.File, error) {
	_ = c.l.SetDeadline(time.Now().Add(timeout))
	conn, err := c.l.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(name, oob)
	if err != nil {
		return nil, fmt.Errorf("console socket: receive: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("console socket: expected one control message (%v): %w", err, errdefs.ErrUnknown)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("console socket: expected one fd (%v): %w", err, errdefs.ErrUnknown)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	return os.NewFile(uintptr(fds[0]), string(name[:n])), nil
}

// Close removes the socket.
func (c *ConsoleSocket) Close() error {
	c.l.Close()
	return os.RemoveAll(c.dir)
}
