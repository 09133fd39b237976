package server

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Start-up (migrations, task recovery, the import directory's archives,
// on slow flash for minutes) can outlast the unit's TimeoutStartSec (90 s
// by default). systemd would then kill edged and start it again, to import
// the same archives again, for ever. While it starts, edged tells systemd
// what it is doing (STATUS=) and asks it for startupExtension more
// (EXTEND_TIMEOUT_USEC=, systemd ≥ 236) at each new phase and, every
// startupNoticeInterval, if it made progress since the last notice: it
// read or wrote (/proc/self/io's rchar and wchar, its own notices left
// out: an import reads its archive and writes blobs and layers, a
// migration or recovery reads and writes its files). A start-up that makes
// progress is never cut short; one that hangs times out startupExtension
// after its last progress.
const (
	startupExtension      = 30 * time.Second
	startupNoticeInterval = 10 * time.Second
)

// startup sends the start-up notices until finish; without NOTIFY_SOCKET
// it does nothing.
type startup struct {
	log      *slog.Logger
	interval time.Duration
	// io returns a count that grows with the process's reads and writes
	// (ioChars); ok is false when it cannot be read: only phases extend
	// the timeout then.
	io   func() (n uint64, ok bool)
	stop chan struct{}
	done chan struct{}
	once sync.Once
	mu   sync.Mutex // held while sending: finish waits for a send under way
	last uint64     // io's count after the last notice
	sent uint64     // bytes of notices sent, which io counts as writes
}

func notifyStartup(log *slog.Logger, interval time.Duration) *startup {
	return newStartup(log, interval, ioChars)
}

func newStartup(log *slog.Logger, interval time.Duration, io func() (uint64, bool)) *startup {
	st := &startup{log: log, interval: interval, io: io}
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return st
	}
	st.stop, st.done = make(chan struct{}), make(chan struct{})
	st.status("starting")
	go func() {
		defer close(st.done)
		t := time.NewTicker(st.interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				st.tick()
			case <-st.stop:
				return
			}
		}
	}()
	return st
}

// tick extends the timeout if the start-up read or wrote since the last
// notice.
func (st *startup) tick() {
	st.mu.Lock()
	defer st.mu.Unlock()
	select {
	case <-st.stop:
		return
	default:
	}
	n, ok := st.io()
	if !ok || n-st.sent == st.last {
		return
	}
	st.send("")
}

// ioChars returns the bytes the process read and wrote (rchar + wchar of
// /proc/self/io).
func ioChars() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, false
	}
	var n uint64
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		if k == "rchar" || k == "wchar" {
			x, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, false
			}
			n += x
			found++
		}
	}
	return n, found == 2
}

// status asks systemd for a new extension and, when phase is not empty,
// tells it the start-up phase.
func (st *startup) status(phase string) {
	if st == nil || st.stop == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	select {
	case <-st.stop:
		return // finished: READY=1 may have been sent
	default:
	}
	st.send(phase)
}

// send asks for startupExtension more, with STATUS=phase when not empty.
// Called with st.mu held.
func (st *startup) send(phase string) {
	var b strings.Builder
	if phase != "" {
		b.WriteString("STATUS=" + phase + "\n")
	}
	b.WriteString("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(startupExtension.Microseconds(), 10))
	if _, err := daemon.SdNotify(false, b.String()); err != nil {
		st.log.Warn("sd_notify failed", "state", b.String(), "error", err)
	}
	st.sent += uint64(b.Len())
	if n, ok := st.io(); ok {
		st.last = n - st.sent
	}
}

// finish stops the notices; after it returns none is sent.
func (st *startup) finish() {
	if st == nil || st.stop == nil {
		return
	}
	st.once.Do(func() {
		st.mu.Lock()
		close(st.stop)
		st.mu.Unlock()
		<-st.done
	})
}
