package images

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/images/testimage"
	"github.com/edged/edged/edged/metadata"
)

// The crash test re-executes the test binary as an importer (this
// "test"), which stops at the point named by EDGED_IMAGES_KILL_AT, says
// "K" on fd 3 and waits to be SIGKILLed by the parent.
const (
	envHelper  = "EDGED_IMAGES_CRASH_HELPER"
	envRoot    = "EDGED_IMAGES_ROOT"
	envArch    = "EDGED_IMAGES_ARCHIVE"
	envKillAt  = "EDGED_IMAGES_KILL_AT"
	envDiscard = "EDGED_IMAGES_DISCARD" // "1": Options.DiscardLayers
)

func TestCrashHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		t.Skip("helper process for TestImportCrash")
	}
	signal := os.NewFile(3, "signal")
	stop := func() {
		fmt.Fprintln(signal, "K")
		time.Sleep(time.Hour)
	}
	killAt := os.Getenv(envKillAt)
	e, err := openEnv(context.Background(), os.Getenv(envRoot), envOpts{sync: true, opts: Options{DiscardLayers: os.Getenv(envDiscard) == "1"}})
	if err != nil {
		t.Fatal(err)
	}
	layers := 0
	e.s.hooks.afterApply = func(string) {
		if killAt == fmt.Sprintf("apply:%d", layers) {
			stop()
		}
		layers++
	}
	e.s.hooks.beforeRecord = func() {
		if killAt == "record" {
			stop()
		}
	}
	f, err := os.Open(os.Getenv(envArch))
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	var r io.Reader = f
	if pct, ok := strings.CutPrefix(killAt, "read:"); ok {
		p, _ := strconv.Atoi(pct)
		r = &stopReader{r: f, at: fi.Size() * int64(p) / 100, stop: stop}
	}
	if _, err := e.s.Import(context.Background(), "default", r, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(signal, "DONE")
}

// stopReader calls stop once at least at bytes were read.
type stopReader struct {
	r    io.Reader
	n    int64
	at   int64
	stop func()
}

func (s *stopReader) Read(p []byte) (int, error) {
	if max := s.at - s.n; max > 0 && int64(len(p)) > max {
		p = p[:max]
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	if s.n >= s.at {
		s.stop()
	}
	return n, err
}

func TestImportCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test re-executes the test binary several times")
	}
	dir := t.TempDir()
	rnd, err := testimage.WriteRandomLayer(dir, 8<<20, 7)
	if err != nil {
		t.Fatal(err)
	}
	img := testimage.MustBuild(testimage.Image{
		Platform: linuxAmd64,
		Layers: []testimage.Layer{
			{Files: []testimage.File{testimage.Dir("etc/", 0o755), testimage.Reg("etc/hostname", 0o644, "crash\n")}},
			rnd,
			{Files: []testimage.File{testimage.Whiteout("etc/hostname"), testimage.Reg("top", 0o644, "top")}},
		},
		Config: ocispec.ImageConfig{Cmd: []string{"sh"}},
	})
	l := testimage.NewLayout()
	l.AddImage(img, map[string]string{AnnotationRefName: "crash:1"})
	archive := filepath.Join(dir, "image.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.WriteTar(f, testimage.TarOptions{}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	for _, at := range []string{"read:10", "read:50", "read:90", "read:100", "apply:0", "apply:1", "apply:2", "record"} {
		t.Run(at, func(t *testing.T) {
			root := t.TempDir()
			// Create the stack once so the child does not race schema creation.
			e0, err := openEnv(context.Background(), root, envOpts{sync: true})
			if err != nil {
				t.Fatal(err)
			}
			e0.close()
			crashImport(t, root, archive, at)

			e := newEnv(t, envOpts{root: root, sync: true})
			ctx := context.Background()
			res, err := e.s.Recover(ctx)
			if err != nil {
				t.Fatalf("recover: %v", err)
			}
			if strings.HasPrefix(at, "apply:") && res.RemovedExtracts != 1 {
				t.Fatalf("recover removed %d extract snapshots, want 1", res.RemovedExtracts)
			}
			if res.RemovedLeases != 1 {
				t.Fatalf("recover removed %d import leases, want 1", res.RemovedLeases)
			}
			// No image, no blob, no snapshot, no ingest, no lease.
			if imgs := e.images(t, "default"); len(imgs) != 0 {
				t.Fatalf("image visible after crash at %s: %v", at, imgs)
			}
			if b := e.blobs(t); len(b) != 0 {
				t.Fatalf("blobs left: %v", b)
			}
			if sn := e.snapshotNames(t, "default"); len(sn) != 0 {
				t.Fatalf("snapshots left: %v", sn)
			}
			if st, _ := e.cs.ListStatuses(ctx); len(st) != 0 {
				t.Fatalf("ingests left: %v", st)
			}
			if err := e.db.View(ctx, func(tx *metadata.Tx) error {
				ls, err := tx.ListLeases(ctx, "default")
				if len(ls) != 0 {
					return fmt.Errorf("leases left: %v", ls)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			ents, _ := os.ReadDir(filepath.Join(root, "snapshots", "snapshots"))
			if len(ents) != 0 {
				t.Fatalf("snapshot directories left: %v", ents)
			}
			// A new import works.
			af, _ := os.Open(archive)
			defer af.Close()
			if _, err := e.s.Import(ctx, "default", af, ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			if n := len(e.snapshotNames(t, "default")); n != 3 {
				t.Fatalf("%d snapshots", n)
			}
			mnt := e.mountTop(t, "default", topChain(img))
			if readFile(t, filepath.Join(mnt, "top")) != "top" {
				t.Fatal("re-imported image content wrong")
			}
			if fi, err := os.Stat(filepath.Join(mnt, "random.bin")); err != nil || fi.Size() != 8<<20 {
				t.Fatalf("random.bin: %v %v", fi, err)
			}
			if !slices.Contains(e.blobs(t), img.Layers[1].Digest.String()) {
				t.Fatal("layer blob missing")
			}
		})
	}
}

// crashImport runs the helper and SIGKILLs it when it reports it reached
// the point at.
func crashImport(t *testing.T, root, archive, at string, env ...string) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), envHelper+"=1", envRoot+"="+root, envArch+"="+archive, envKillAt+"="+at)
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = []*os.File{pw}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if strings.TrimSpace(line) != "K" {
		cmd.Wait()
		t.Fatalf("helper did not stop at %s (read %q, %v): %s", at, line, err, out)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper exit: %v: %s", err, out)
	}
}
