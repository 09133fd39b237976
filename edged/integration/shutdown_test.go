package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/internal/testutil"
	tasksapi "github.com/edged/edged/proto/services/tasks/v1"
)

// startWithShutdownTimeout starts edged on dir with [api] shutdown_timeout
// set to grace.
func startWithShutdownTimeout(t *testing.T, dir, grace string) *testutil.Daemon {
	t.Helper()
	cfg := filepath.Join(dir, "edged.toml")
	if err := os.WriteFile(cfg, []byte("[api]\nshutdown_timeout = \""+grace+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: dir, Args: []string{"--config", cfg}})
}

// waitIngest waits until the daemon holds at least n bytes of ingest ref.
// heldWrite is a content write of 2 MiB whose first half is sent and
// ingested, the rest held back: a call in progress for as long as the test
// wants. written receives the write's end (an error if the digest it
// returned is not dgst).
type heldWrite struct {
	pw      *io.PipeWriter
	blob    []byte
	dgst    string
	written chan error
}

func startHeldWrite(t *testing.T, ctx context.Context, cl *client.Client, ref string) heldWrite {
	t.Helper()
	h := heldWrite{blob: make([]byte, 2<<20), written: make(chan error, 1)}
	rand.Read(h.blob)
	h.dgst = fmt.Sprintf("sha256:%x", sha256.Sum256(h.blob))
	pr, pw := io.Pipe()
	h.pw = pw
	go func() {
		got, err := cl.WriteContent(ctx, ref, pr, client.WriteContentOpts{Total: int64(len(h.blob)), Expected: h.dgst})
		if err == nil && got != h.dgst {
			err = fmt.Errorf("wrote %s, want %s", got, h.dgst)
		}
		h.written <- err
	}()
	if _, err := pw.Write(h.blob[:1<<20]); err != nil {
		t.Fatal(err)
	}
	waitIngest(t, cl, ref, 1<<20)
	return h
}

func waitIngest(t *testing.T, cl *client.Client, ref string, n int64) {
	t.Helper()
	ctx := ctxT(t)
	waitFor(t, func() bool {
		st, err := cl.IngestStatus(ctx, ref)
		return err == nil && st.Offset >= n
	})
}

// drained checks that err is the error of a long wait ended by the drain.
func drained(t *testing.T, what string, err error, again string) {
	t.Helper()
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "edged is shutting down") || !strings.Contains(err.Error(), again+" again once it is back") {
		t.Errorf("%s after SIGTERM: %v; want Unavailable naming the shutdown and %q", what, err, again)
	}
}

// TestSIGTERMFinishesCallsInProgress sends SIGTERM while a content write,
// a task wait, an event subscription and a followed log are in progress.
// The long waits end at once with Unavailable and say why; the write is not
// cancelled: it completes after the signal and its blob is there after a
// restart. edged then exits 0 without waiting out its grace period, and the
// container keeps running.
func TestSIGTERMFinishesCallsInProgress(t *testing.T) {
	requireRunc(t)
	dir := testutil.ShortTempDir(t)
	d := startWithShutdownTimeout(t, dir, "30s")
	cl := newClient(t, d)
	ctx := ctxT(t)
	rootfs := busybox(t)
	runDetached(t, cl, rootfs, "long", nil, "sleep", "300")
	p, err := cl.GetTask(ctx, "long", "")
	if err != nil {
		t.Fatal(err)
	}

	blob := make([]byte, 3<<20)
	rand.Read(blob)
	dgst := fmt.Sprintf("sha256:%x", sha256.Sum256(blob))
	pr, pw := io.Pipe()
	type result struct {
		dgst string
		err  error
	}
	written := make(chan result, 1)
	go func() {
		// A garbage collection root: edged's start-up collection keeps it.
		got, err := cl.WriteContent(ctx, "drain-ref", pr, client.WriteContentOpts{Total: int64(len(blob)), Expected: dgst,
			Labels: map[string]string{"containerd.io/gc.root": "test"}})
		written <- result{got, err}
	}()
	if _, err := pw.Write(blob[:1<<20]); err != nil {
		t.Fatal(err)
	}
	waitIngest(t, cl, "drain-ref", 1<<20)

	waited := make(chan error, 1)
	go func() {
		_, err := cl.Wait(ctx, "long", "")
		waited <- err
	}()
	logged := make(chan error, 1)
	go func() { logged <- cl.Logs(ctx, "long", true, 0, io.Discard) }()
	envs, subErr := cl.Subscribe(ctx, "topic==/test/drain")
	syncSubscribers(t, cl, "/test/drain", envs)
	time.Sleep(100 * time.Millisecond) // the wait and the log follow reach edged

	sent := time.Now()
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		what, again string
		c           <-chan error
	}{{"Tasks.Wait", "wait for the task", waited}, {"followed Tasks.Logs", "read the logs", logged}, {"Events.Subscribe", "subscribe", subErr}} {
		select {
		case err := <-w.c:
			drained(t, w.what, err, w.again)
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still waiting 5s after SIGTERM", w.what)
		}
	}
	if err, exited := d.Wait(200 * time.Millisecond); exited {
		t.Fatalf("edged exited (%v) with a content write in progress", err)
	}

	// The write goes on after the signal and commits.
	if _, err := pw.Write(blob[1<<20:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	select {
	case r := <-written:
		if r.err != nil || r.dgst != dgst {
			t.Fatalf("content write in progress at SIGTERM: %q, %v; want %s", r.dgst, r.err, dgst)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("content write did not complete after SIGTERM")
	}
	err, exited := d.Wait(15 * time.Second)
	if !exited || err != nil {
		t.Fatalf("edged did not exit cleanly once the write was done: %v (exited %v)", err, exited)
	}
	if took := time.Since(sent); took > 15*time.Second {
		t.Fatalf("edged took %v to exit; its calls were done long before the 30s grace", took)
	}
	if strings.Contains(d.Log(), "did not finish in time") {
		t.Fatalf("edged cut calls short:\n%s", d.Log())
	}
	if err := syscall.Kill(int(p.Pid), 0); err != nil {
		t.Fatalf("container died with edged: %v", err)
	}

	d2 := startDaemonAt(t, d)
	cl2 := newClient(t, d2)
	info, err := cl2.ContentInfo(ctx, dgst)
	if err != nil || info.Size_ != int64(len(blob)) {
		t.Fatalf("blob written during the drain, after restart: %+v %v", info, err)
	}
	var out bytes.Buffer
	if err := cl2.ReadContent(ctx, dgst, 0, 0, &out); err != nil || !bytes.Equal(out.Bytes(), blob) {
		t.Fatalf("blob read back: %d bytes, %v", out.Len(), err)
	}
	p2, err := cl2.GetTask(ctx, "long", "")
	if err != nil || p2.Status != tasksapi.Status_RUNNING || p2.Pid != p.Pid {
		t.Fatalf("task after restart: %+v %v", p2, err)
	}
	if _, err := cl2.DeleteTask(ctx, "long", true); err != nil {
		t.Fatal(err)
	}
}

// TestSIGTERMGraceEnds: a call that does not finish within shutdown_timeout
// (a content write whose client stalls) has its connection closed when the
// grace ends; edged exits 0 and says so in its log, and the bytes written
// so far are kept: the ingest resumes after a restart.
func TestSIGTERMGraceEnds(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	d := startWithShutdownTimeout(t, dir, "1s")
	cl := newClient(t, d)
	ctx := ctxT(t)

	h := startHeldWrite(t, ctx, cl, "stalled")
	pw, blob, dgst, written := h.pw, h.blob, h.dgst, h.written

	sent := time.Now()
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err, exited := d.Wait(10 * time.Second)
	if !exited || err != nil {
		t.Fatalf("edged did not exit cleanly after its grace: %v (exited %v)", err, exited)
	}
	if took := time.Since(sent); took < time.Second {
		t.Fatalf("edged exited after %v, before its 1s grace, with a write in progress", took)
	}
	waitLog(t, d, "in-flight requests did not finish in time")
	pw.CloseWithError(errors.New("test: stalled writer gives up"))
	select {
	case err := <-written:
		if err == nil {
			t.Fatal("the stalled write succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled write did not end")
	}

	d2 := startDaemonAt(t, d)
	cl2 := newClient(t, d2)
	st, err := cl2.IngestStatus(ctx, "stalled")
	if err != nil || st.Offset != 1<<20 {
		t.Fatalf("ingest after restart: %+v %v; want offset %d", st, err, 1<<20)
	}
	got, err := cl2.WriteContent(ctx, "stalled", bytes.NewReader(blob), client.WriteContentOpts{Total: int64(len(blob)), Expected: dgst})
	if err != nil || got != dgst {
		t.Fatalf("resumed write: %q %v", got, err)
	}
}
