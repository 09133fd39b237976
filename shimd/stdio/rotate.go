package stdio

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
)

// Defaults of a file:// log.
const (
	DefaultMaxSize  = 1 << 20
	DefaultMaxFiles = 3
)

// RotatingFile appends to a log file and rotates it by size: when a write
// would grow it past MaxSize, path is renamed to path.1 (path.1 to path.2,
// and so on) and a new file is started. At most MaxFiles files are kept, the
// active one included. Writes are split at a line boundary when possible, so
// no file ever exceeds MaxSize.
//
// A failed write (a full or failing filesystem) loses only what it could
// not write: the next Write tries again, reopening the file or redoing a
// rotation that failed, so logging resumes once the filesystem recovers.
type RotatingFile struct {
	mu       sync.Mutex
	path     string
	maxSize  int64
	maxFiles int
	f        *os.File // nil after a failed rotation or reopen, or Close
	size     int64
	// rotating is set while a rotation's renames are not all done: the
	// next Write redoes them before opening a new file.
	rotating bool
	// next is the rename a failed rotation resumes from (see rotate); 0:
	// from the oldest.
	next    int
	closed  bool
	dropped int64 // bytes Write could not write
}

// OpenRotatingFile opens (appends to) the log at path. maxSize <= 0 and
// maxFiles <= 0 select the defaults.
func OpenRotatingFile(path string, maxSize int64, maxFiles int) (*RotatingFile, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	if maxFiles <= 0 {
		maxFiles = DefaultMaxFiles
	}
	l := &RotatingFile{path: path, maxSize: maxSize, maxFiles: maxFiles}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *RotatingFile) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat log: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Write appends p, rotating as needed. On error, what was not written is
// dropped (and counted, see Dropped); later writes go on.
func (l *RotatingFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, os.ErrClosed
	}
	n, err := l.write(p)
	if err != nil {
		l.dropped += int64(len(p) - n)
	}
	return n, err
}

// Dropped returns how many bytes failed writes dropped.
func (l *RotatingFile) Dropped() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

func (l *RotatingFile) write(p []byte) (int, error) {
	if l.f == nil {
		// An earlier rotation or reopen failed: try again.
		var err error
		if l.rotating {
			err = l.rotate()
		} else {
			err = l.open()
		}
		if err != nil {
			return 0, err
		}
	}
	written := 0
	for len(p) > 0 {
		room := l.maxSize - l.size
		if int64(len(p)) <= room {
			n, err := l.f.Write(p)
			l.size += int64(n)
			return written + n, err
		}
		cut := 0
		if room > 0 {
			if i := bytes.LastIndexByte(p[:room], '\n'); i >= 0 {
				cut = i + 1
			} else if l.size == 0 {
				cut = int(room) // one line longer than a file: split it
			}
		}
		if cut > 0 {
			n, err := l.f.Write(p[:cut])
			l.size += int64(n)
			written += n
			if err != nil {
				return written, err
			}
			p = p[cut:]
		}
		if err := l.rotate(); err != nil {
			return written, err
		}
	}
	return written, nil
}

func (l *RotatingFile) rotate() error {
	l.rotating = true
	if l.f != nil {
		// Released even on error (close(2) frees the fd regardless).
		err := l.f.Close()
		l.f = nil
		if err != nil {
			return fmt.Errorf("close log: %w", err)
		}
	}
	name := func(i int) string {
		if i == 0 {
			return l.path
		}
		return l.path + "." + strconv.Itoa(i)
	}
	if l.maxFiles == 1 {
		if err := os.Remove(l.path); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("rotate log: %w", err)
		}
	}
	// After a failure the renames resume where they stopped: redone from
	// the oldest, the ones already done would shift each file once more,
	// over the next one (a log lost per retry).
	start := l.maxFiles - 1
	if l.next > 0 {
		start = l.next
	}
	for i := start; i >= 1; i-- {
		if err := os.Rename(name(i-1), name(i)); err != nil && !os.IsNotExist(err) {
			l.next = i
			return fmt.Errorf("rotate log: %w", err)
		}
	}
	l.next = 0
	l.rotating = false
	return l.open()
}

// Close closes the active file.
func (l *RotatingFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
