package integration

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/internal/testutil"
)

// gateReader passes through r until after bytes, then signals reached and
// blocks until the test is done (the daemon is killed meanwhile).
type gateReader struct {
	r       io.Reader
	after   int64
	n       int64
	reached chan struct{}
	release chan struct{}
}

func (g *gateReader) Read(p []byte) (int, error) {
	if g.after >= 0 && g.n >= g.after {
		close(g.reached)
		<-g.release
		return 0, io.ErrClosedPipe
	}
	if g.after >= 0 && int64(len(p)) > g.after-g.n {
		p = p[:g.after-g.n]
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	if err == io.EOF && g.after < 0 {
		close(g.reached)
	}
	return n, err
}

// TestImportKilledAtAnyPoint kills the real edged (SIGKILL) at several
// points of an import of an image with a 32 MiB layer: while blobs stream
// in, right after the last byte arrived, and while the layer is being
// unpacked. After a restart either the image is complete or nothing of it
// is visible: no image, no blob, no ingest, no snapshot. The import then
// succeeds.
func TestImportKilledAtAnyPoint(t *testing.T) {
	tmp := t.TempDir()
	archive, _ := randomImageArchive(t, tmp, 32<<20)
	fi, err := os.Stat(archive)
	if err != nil {
		t.Fatal(err)
	}
	points := []struct {
		name  string
		after int64         // bytes sent before blocking; -1: all
		delay time.Duration // after the point, before the kill
	}{
		{"mid-layer", fi.Size() / 2, 100 * time.Millisecond},
		{"all-sent", -1, 0},
		{"unpacking-early", -1, 40 * time.Millisecond},
		{"unpacking-late", -1, 150 * time.Millisecond},
	}
	for _, pt := range points {
		t.Run(pt.name, func(t *testing.T) {
			dir := testutil.ShortTempDir(t)
			d := testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: dir})
			cl := newClient(t, d)
			f, err := os.Open(archive)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			g := &gateReader{r: f, after: pt.after, reached: make(chan struct{}), release: make(chan struct{})}
			defer close(g.release)
			done := make(chan error, 1)
			go func() {
				_, err := cl.Import(context.Background(), g, client.ImportOpts{IndexName: "crash/img:1"})
				done <- err
			}()
			select {
			case <-g.reached:
			case err := <-done:
				t.Fatalf("import ended before the kill point: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("kill point not reached")
			}
			time.Sleep(pt.delay)
			d.Kill()

			d2 := testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: dir})
			cl2 := newClient(t, d2)
			ctx := ctxT(t)
			imgs, err := cl2.ListImages(ctx)
			if err != nil {
				t.Fatal(err)
			}
			switch len(imgs) {
			case 0:
				if b := dirEntries(t, filepath.Join(d2.Root, "content", "blobs", "sha256")); len(b) != 0 {
					t.Fatalf("blobs visible after a killed import: %v", b)
				}
				if in := dirEntries(t, filepath.Join(d2.Root, "content", "ingest")); len(in) != 0 {
					t.Fatalf("ingests left after a killed import: %v", in)
				}
				if snaps, err := cl2.ListSnapshots(ctx); err != nil || len(snaps) != 0 {
					t.Fatalf("snapshots after a killed import: %v %v", snaps, err)
				}
			case 1:
				// The kill came after the image was recorded: it must be whole.
				if u, err := cl2.ImageUsage(ctx, "crash/img:big"); err != nil || u.SnapshotBytes < 32<<20 || u.ContentBytes < 32<<20 {
					t.Fatalf("image recorded but incomplete: %+v %v", u, err)
				}
			default:
				t.Fatalf("images %v", imgs)
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if _, err := cl2.Import(ctx, f, client.ImportOpts{IndexName: "crash/img:1"}); err != nil {
				t.Fatalf("import after restart: %v", err)
			}
			if u, err := cl2.ImageUsage(ctx, "crash/img:big"); err != nil || u.SnapshotBytes < 32<<20 {
				t.Fatalf("usage after re-import: %+v %v", u, err)
			}
		})
	}
}
