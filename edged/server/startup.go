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
// what it is doing (STATUS=) and asks it, every startupNoticeInterval, to
// wait startupExtension more (EXTEND_TIMEOUT_USEC=, systemd ≥ 236): a
// start-up that is making progress is never cut short, one that hangs
// still times out startupExtension after its last notice.
const (
	startupExtension      = 30 * time.Second
	startupNoticeInterval = 10 * time.Second
)

// startup sends the start-up notices until finish; without NOTIFY_SOCKET
// it does nothing.
type startup struct {
	log      *slog.Logger
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	mu       sync.Mutex // held while sending: finish waits for a send under way
}

func notifyStartup(log *slog.Logger, interval time.Duration) *startup {
	st := &startup{log: log, interval: interval}
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
				st.status("")
			case <-st.stop:
				return
			}
		}
	}()
	return st
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
