package registry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images/platforms"
	"github.com/edged/edged/edged/images/testimage"
	"github.com/edged/edged/edged/registry"
	"github.com/edged/edged/fsstore/content"
	"github.com/edged/edged/internal/testutil"
	testregistry "github.com/edged/edged/internal/testutil/registry"
)

// helperBin is the edged-remote built for these tests.
var helperBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edged-remote-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := testutil.Binaries(dir, "edged-remote"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	helperBin = filepath.Join(dir, "edged-remote")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// storeWith returns a content store holding img's blobs.
func storeWith(t *testing.T, img *testimage.Built) *content.Store {
	t.Helper()
	cs, err := content.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for d, b := range img.Blobs {
		w, err := cs.Writer(context.Background(), "seed-"+d.Encoded(), content.WriterOpts{Expected: d, Total: b.Size})
		if err != nil {
			t.Fatal(err)
		}
		r, err := b.Open()
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(w, r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(context.Background(), b.Size, d); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	return cs
}

func smallImage(t *testing.T) *testimage.Built {
	t.Helper()
	return testimage.MustBuild(testimage.Image{Platform: platforms.Default(), Layers: []testimage.Layer{
		{Files: []testimage.File{testimage.Dir("etc", 0o755), testimage.Reg("etc/motd", 0o644, "hello from the helper\n")}},
	}})
}

// recorder collects what a call reports to edged's side.
type recorder struct {
	mu       sync.Mutex
	blobs    []digest.Digest
	progress []registry.ProgressEvent
	fail     error // returned by beforeBlob
}

func (r *recorder) beforeBlob(ctx context.Context, d ocispec.Descriptor) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blobs = append(r.blobs, d.Digest)
	return r.fail
}

func (r *recorder) event(ev registry.ProgressEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress = append(r.progress, ev)
}

func (r *recorder) statuses(d digest.Digest) []registry.ProgressStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []registry.ProgressStatus
	for _, ev := range r.progress {
		if ev.Digest == d {
			out = append(out, ev.Status)
		}
	}
	return out
}

// authRegistry starts a registry with basic auth and returns it, a client
// for it (plain HTTP, no docker config) and its credentials.
func authRegistry(t *testing.T) (*testregistry.Registry, *registry.Client, *registry.Credentials) {
	t.Helper()
	reg := testregistry.Start(t, testregistry.Htpasswd(t, "edge", "s3cret"))
	c, err := registry.New(registry.Config{Helper: helperBin, Hosts: map[string]registry.HostConfig{reg.Addr: {PlainHTTP: true}},
		DockerConfig: filepath.Join(t.TempDir(), "none.json")})
	if err != nil {
		t.Fatal(err)
	}
	return reg, c, &registry.Credentials{Username: "edge", Password: "s3cret"}
}

// TestPushPullThroughHelper pushes an image from one content store to a
// real registry (with basic auth) through the edged-remote helper, pulls it
// back into another store, and checks what edged's side saw: a lease
// question for every blob before the helper used it, progress per blob, and
// the blobs in the store.
func TestPushPullThroughHelper(t *testing.T) {
	reg, c, creds := authRegistry(t)
	img := smallImage(t)
	src := storeWith(t, img)
	ref := reg.Addr + "/team/app:1"
	ctx := ctxT(t)

	var push recorder
	if err := c.Push(ctx, src.Root(), ref, img.Manifest, registry.PushOptions{Credentials: creds, Progress: push.event}); err != nil {
		t.Fatalf("push: %v", err)
	}
	if st := push.statuses(img.Layers[0].Digest); !slices.Contains(st, registry.ProgressDone) {
		t.Errorf("push progress of the layer = %v, want done", st)
	}

	dst, err := content.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var pull recorder
	root, manifest, err := c.Pull(ctx, dst.Root(), ref, registry.PullOptions{Credentials: creds, Progress: pull.event, BeforeBlob: pull.beforeBlob,
		Platform: platforms.DefaultSpec()})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if root.Digest != img.Manifest.Digest || manifest.Digest != img.Manifest.Digest {
		t.Fatalf("pull returned root %s manifest %s, want %s", root.Digest, manifest.Digest, img.Manifest.Digest)
	}
	want := []digest.Digest{img.Manifest.Digest, img.Config.Digest, img.Layers[0].Digest}
	for _, d := range want {
		if !slices.Contains(pull.blobs, d) {
			t.Errorf("no lease question for %s (asked for %v)", d, pull.blobs)
		}
		info, err := dst.Info(ctx, d)
		if err != nil || info.Size != img.Blobs[d].Size {
			t.Errorf("blob %s in the store: %+v, %v", d, info, err)
		}
	}
	if st := pull.statuses(img.Layers[0].Digest); !slices.Contains(st, registry.ProgressDone) {
		t.Errorf("pull progress of the layer = %v, want done", st)
	}

	// Again: everything is there already.
	var again recorder
	if _, _, err := c.Pull(ctx, dst.Root(), ref, registry.PullOptions{Credentials: creds, Progress: again.event, BeforeBlob: again.beforeBlob}); err != nil {
		t.Fatalf("second pull: %v", err)
	}
	if st := again.statuses(img.Layers[0].Digest); !slices.Contains(st, registry.ProgressExists) {
		t.Errorf("second pull progress of the layer = %v, want exists", st)
	}
}

// TestHelperErrorsKeepTheirKind checks that errors made in the helper, or
// on edged's side of a question, arrive typed and with their message.
func TestHelperErrorsKeepTheirKind(t *testing.T) {
	reg, c, creds := authRegistry(t)
	img := smallImage(t)
	src := storeWith(t, img)
	ctx := ctxT(t)
	ref := reg.Addr + "/team/app:1"
	if err := c.Push(ctx, src.Root(), ref, img.Manifest, registry.PushOptions{Credentials: creds}); err != nil {
		t.Fatal(err)
	}
	dst, err := content.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	_, _, err = c.Pull(ctx, dst.Root(), reg.Addr+"/team/app:missing", registry.PullOptions{Credentials: creds})
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing tag: %v, want not found naming the tag", err)
	}
	_, _, err = c.Pull(ctx, dst.Root(), ref, registry.PullOptions{Credentials: &registry.Credentials{Username: "edge", Password: "wrong"}})
	if !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("wrong password: %v, want permission denied", err)
	}
	_, _, err = c.Pull(ctx, dst.Root(), "Bad/Ref", registry.PullOptions{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "reference") {
		t.Errorf("bad reference: %v, want invalid argument", err)
	}
	_, _, err = c.Pull(ctx, dst.Root(), ref, registry.PullOptions{Credentials: creds, Platform: "linux//amd64"})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "linux//amd64") {
		t.Errorf("bad platform: %v, want invalid argument naming it", err)
	}
	// A refusal on edged's side (e.g. the lease cannot be taken) stops the
	// pull with that error, and nothing is written.
	if dst, err = content.New(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	rec := recorder{fail: fmt.Errorf("lease pull-x: %w", errdefs.ErrResourceExhausted)}
	_, _, err = c.Pull(ctx, dst.Root(), ref, registry.PullOptions{Credentials: creds, BeforeBlob: rec.beforeBlob})
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "lease pull-x") {
		t.Errorf("refused blob: %v, want resource exhausted naming the lease", err)
	}
	if _, err := dst.Info(ctx, img.Layers[0].Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("layer in the store after a refused pull: %v", err)
	}
	// A push of a root the store does not have.
	missing := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("nope"), Size: 4}
	err = c.Push(ctx, dst.Root(), ref, missing, registry.PushOptions{Credentials: creds})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("push of a missing root: %v, want not found", err)
	}
}

// fakeHelper writes a shell script standing in for a broken edged-remote:
// a helper that crashes, prints garbage or hangs cannot be made from the
// real one on demand.
func fakeHelper(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "edged-remote")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBrokenHelpers(t *testing.T) {
	store := t.TempDir()
	pull := func(helper string, ctx context.Context) error {
		c, err := registry.New(registry.Config{Helper: helper})
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = c.Pull(ctx, store, "127.0.0.1:1/a:1", registry.PullOptions{})
		return err
	}
	for _, tc := range []struct {
		name, script string
		kind         error
		msg          string
	}{
		{"crash", "read line; echo 'panic: boom' >&2; exit 2", errdefs.ErrUnavailable, "panic: boom"},
		{"no result", "read line; exit 0", errdefs.ErrUnavailable, "exited without a result"},
		{"garbage", "read line; echo 'not json'", errdefs.ErrUnknown, "malformed message"},
		{"unasked blob", `read line; echo '{"blob":{"digest":"sha256:00"},"id":1}'`, errdefs.ErrUnknown, "unexpected blob message"},
		{"empty message", `read line; echo '{}'`, errdefs.ErrUnknown, "empty message"},
		{"error", `read line; echo '{"error":{"code":"not found","message":"manifest x: not found"}}'`, errdefs.ErrNotFound, "manifest x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := pull(fakeHelper(t, tc.script), ctxT(t))
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.kind, tc.msg)
			}
		})
	}
	t.Run("missing binary", func(t *testing.T) {
		err := pull(filepath.Join(t.TempDir(), "edged-remote"), ctxT(t))
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "needs the edged-remote helper") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("cancel kills a hung helper", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := pull(fakeHelper(t, "exec sleep 60"), ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("returned after %v", d)
		}
	})
	t.Run("hangs after its result", func(t *testing.T) {
		c, err := registry.New(registry.Config{Helper: fakeHelper(t, `read line; echo '{"result":{"root":{},"manifest":{}}}'; exec sleep 60`),
			ExitGrace: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, _, err = c.Pull(ctxT(t), store, "127.0.0.1:1/a:1", registry.PullOptions{})
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "signal: killed") {
			t.Fatalf("err = %v, want unavailable: killed", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("returned after %v", d)
		}
	})
	t.Run("oversized line", func(t *testing.T) {
		err := pull(fakeHelper(t, fmt.Sprintf("read line; head -c %d /dev/zero | tr '\\0' x", registry.MaxLine+10)), ctxT(t))
		if !errors.Is(err, errdefs.ErrUnknown) || !strings.Contains(err.Error(), "token too long") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		hosts map[string]registry.HostConfig
		msg   string
	}{
		{map[string]registry.HostConfig{"bad host!": {}}, `"bad host!" is not a registry host`},
		{map[string]registry.HostConfig{"r.io": {Mirrors: []string{"ftp://m.io"}}}, "scheme must be http or https"},
		{map[string]registry.HostConfig{"r.io": {Mirrors: []string{"https://u:p@m.io"}}}, "want http(s)://host"},
	} {
		_, err := registry.New(registry.Config{Hosts: tc.hosts})
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v: err = %v, want %q", tc.hosts, err, tc.msg)
		}
	}
	if _, err := registry.New(registry.Config{Hosts: map[string]registry.HostConfig{"docker.io": {Mirrors: []string{"mirror.local:5000", "http://10.0.0.1/v"}}}}); err != nil {
		t.Fatal(err)
	}
}
