//go:build linux

package archive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

// fuzzCanary is a fixed directory outside every fuzz root. Seeds (and the
// fuzzer's mutations of them) name it by absolute path, so an escape through
// an absolute name or symlink would show up as a change in it.
func fuzzCanary(f *testing.F) string {
	dir := filepath.Join(os.TempDir(), "edged-archive-fuzz-canary")
	if _, err := os.Stat(filepath.Join(dir, "file")); err == nil {
		return dir
	}
	// Build it aside and rename it into place: fuzz workers race here.
	tmp, err := os.MkdirTemp(os.TempDir(), "edged-archive-fuzz-canary-tmp-")
	if err != nil {
		f.Fatal(err)
	}
	mustNoErr(f, os.MkdirAll(filepath.Join(tmp, "dir"), 0o755))
	mustNoErr(f, os.WriteFile(filepath.Join(tmp, "file"), []byte("canary"), 0o644))
	mustNoErr(f, os.WriteFile(filepath.Join(tmp, "dir", "inner"), []byte("inner"), 0o600))
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(filepath.Join(dir, "file")); serr != nil {
			f.Fatal(err)
		}
	}
	return dir
}

// fuzzBase returns a fresh directory on tmpfs when available (mkdir on the
// test disk can cost a millisecond, which slows fuzzing a lot).
func fuzzBase(t *testing.T) string {
	parent := os.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		parent = "/dev/shm"
	}
	base, err := os.MkdirTemp(parent, "edged-archive-fuzz-")
	mustNoErr(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	return base
}

// FuzzApply feeds arbitrary bytes to Apply and checks that it neither panics
// nor changes anything outside root: the sentinel next to root, the fixed
// canary directory, and /etc/passwd. Seeds are the hostile test layers.
//
//	go test -run '^$' -fuzz FuzzApply -fuzztime 60s ./fsstore/archive
func FuzzApply(f *testing.F) {
	canary := fuzzCanary(f)
	seedEnv := &env{sentinel: canary}
	for _, tc := range hostileCases() {
		f.Add(tarOf(f, tc.layer(seedEnv)...), tc.mode == WhiteoutRemove)
	}
	f.Add(baseLayer(f), false)
	f.Add(topLayer(f), true)
	f.Add(topLayer(f), false)
	canaryBefore := snapshot(f, canary)

	f.Fuzz(func(t *testing.T, data []byte, remove bool) {
		base := fuzzBase(t)
		e := &env{base: base, root: filepath.Join(base, "root"), sentinel: filepath.Join(base, "sentinel")}
		mustNoErr(t, os.Mkdir(e.root, 0o755))
		mustNoErr(t, os.MkdirAll(filepath.Join(e.sentinel, "dir"), 0o755))
		mustNoErr(t, os.WriteFile(filepath.Join(e.sentinel, "file"), []byte("secret"), 0o644))
		e.before = snapshot(t, e.sentinel)
		e.passwd = statLine(t, "/etc/passwd")

		mode := WhiteoutOverlay
		if remove {
			mode = WhiteoutRemove
		}
		// A hang is a bug too: crash with all stacks so the input is kept.
		watchdog := time.AfterFunc(10*time.Second, func() {
			buf := make([]byte, 1<<20)
			panic("Apply hung:\n" + string(buf[:runtime.Stack(buf, true)]))
		})
		defer watchdog.Stop()
		res, err := Apply(context.Background(), e.root, bytes.NewReader(data), ApplyOptions{Whiteouts: mode, MaxEntries: 10000})
		if err == nil && res.Size != int64(len(data)) {
			t.Fatalf("Size %d, input %d bytes", res.Size, len(data))
		}
		// Every failure caused by the layer's content must be typed.
		if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) && !errors.Is(err, errdefs.ErrDataLoss) &&
			!errors.Is(err, errdefs.ErrResourceExhausted) && !errors.Is(err, errdefs.ErrNotImplemented) {
			t.Fatalf("untyped error: %v", err)
		}
		e.checkOutside(t)
		if d := diffSnap(canaryBefore, snapshot(t, canary)); d != "" {
			t.Fatalf("canary changed:\n%s", d)
		}
	})
}
