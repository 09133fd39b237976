package integration

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/internal/testutil"
)

// TestDrainRefusesNewCallsAfterSIGTERM: once edged drains, a call made on a
// connection it keeps open (for a content write in progress) is refused at
// once with Unavailable saying that edged is shutting down, and does not
// run; the write, begun before the signal, still completes, and edged
// then exits 0.
func TestDrainRefusesNewCallsAfterSIGTERM(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	d := startWithShutdownTimeout(t, dir, "30s")
	cl := newClient(t, d)
	ctx := ctxT(t)

	h := startHeldWrite(t, ctx, cl, "held")
	pw, blob, written := h.pw, h.blob, h.written
	if _, err := cl.Version(ctx); err != nil {
		t.Fatal(err)
	}

	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The drain begins soon after the signal: until then calls are
	// served; from then on every new one is refused, at once.
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		start := time.Now()
		if _, err = cl.Version(ctx); err != nil {
			if took := time.Since(start); took > time.Second {
				t.Errorf("the refusal took %v", took)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Version still served 5s after SIGTERM, on a connection kept open by a write in progress")
		}
		time.Sleep(10 * time.Millisecond)
	}
	const want = "edged is shutting down; try again once it is back"
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Version during the drain: %v; want Unavailable saying %q", err, want)
	}
	if _, err := cl.IngestStatus(ctx, "held"); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("IngestStatus during the drain: %v", err)
	}

	if _, err := pw.Write(blob[1<<20:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	select {
	case err := <-written:
		if err != nil {
			t.Fatalf("content write in progress at SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("content write did not complete after SIGTERM")
	}
	if err, exited := d.Wait(15 * time.Second); !exited || err != nil {
		t.Fatalf("edged did not exit cleanly once the write was done: %v (exited %v)", err, exited)
	}
}
