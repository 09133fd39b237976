package images

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images/testimage"
	"github.com/edged/edged/edged/metadata"
)

func TestGCSharedLayersAndContainers(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	a := smallImage(t, linuxAmd64, "a")
	b := smallImage(t, linuxAmd64, "b") // shares the base layer with a
	e.importBytes(t, "default", ociArchive(map[string]*testimage.Built{"a:1": a, "b:1": b}, testimage.TarOptions{}), ImportOptions{})
	if sn := e.snapshotNames(t, "default"); len(sn) != 3 {
		t.Fatalf("snapshots = %v, want 3 (base unpacked once)", sn)
	}
	// A container uses b, with an active snapshot on b's top layer.
	if _, err := e.sn.Prepare(ctx, "default", "c1-rootfs", topChain(b), nil); err != nil {
		t.Fatal(err)
	}
	if err := e.db.Update(ctx, func(tx *metadata.Tx) error {
		_, err := tx.CreateContainer(ctx, "default", metadata.Container{ID: "c1", Image: "docker.io/library/b:1", Runtime: metadata.RuntimeInfo{Name: "io.containerd.runc.v2"}, Spec: []byte("{}"), SpecType: "types.containerd.io/opencontainers/runtime-spec/1/Spec", Snapshotter: "overlayfs", SnapshotKey: "c1-rootfs"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err := e.s.DeleteImage(ctx, "default", "b:1", true, false)
	wantErr(t, err, errdefs.ErrFailedPrecondition, `image "docker.io/library/b:1" is in use by container(s) c1`)

	// Deleting a keeps the shared base layer (blob and snapshot).
	if err := e.s.DeleteImage(ctx, "default", "a:1", true, false); err != nil {
		t.Fatal(err)
	}
	blobs := e.blobs(t)
	for _, d := range []string{a.Manifest.Digest.String(), a.Config.Digest.String(), a.Layers[1].Digest.String()} {
		if slices.Contains(blobs, d) {
			t.Fatalf("blob %s of a not collected", d)
		}
	}
	if !slices.Contains(blobs, b.Layers[0].Digest.String()) {
		t.Fatal("shared base layer collected")
	}
	if sn := e.snapshotNames(t, "default"); len(sn) != 3 || slices.Contains(sn, topChain(a)) {
		t.Fatalf("snapshots after deleting a = %v", sn)
	}
	// Forced delete of b: the container's snapshot chain stays (a root),
	// the blobs go.
	if err := e.s.DeleteImage(ctx, "default", "docker.io/library/b:1", true, true); err != nil {
		t.Fatal(err)
	}
	if bl := e.blobs(t); len(bl) != 0 {
		t.Fatalf("blobs left: %v", bl)
	}
	if sn := e.snapshotNames(t, "default"); len(sn) != 3 || !slices.Contains(sn, "c1-rootfs") {
		t.Fatalf("container chain not kept: %v", sn)
	}
	// Without the container, everything goes.
	if err := e.db.Update(ctx, func(tx *metadata.Tx) error { return tx.DeleteContainer(ctx, "default", "c1") }); err != nil {
		t.Fatal(err)
	}
	res, err := e.s.GarbageCollect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.RemovedSnapshots != 3 || len(e.snapshotNames(t, "default")) != 0 {
		t.Fatalf("gc result %+v, snapshots %v", res, e.snapshotNames(t, "default"))
	}
	err = e.s.DeleteImage(ctx, "default", "nope:1", true, false)
	wantErr(t, err, errdefs.ErrNotFound, `image "nope:1"`)
}

func TestGCLeasesAndRoots(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	a := smallImage(t, linuxAmd64, "a")
	e.importBytes(t, "default", ociArchive(map[string]*testimage.Built{"a:1": a}, testimage.TarOptions{}), ImportOptions{})
	past := time.Now().Add(-time.Minute)
	// A lease holds the config; an expired lease holds the manifest; a
	// content row labelled gc.root holds layer 1 in another namespace.
	if err := e.db.Update(ctx, func(tx *metadata.Tx) error {
		if _, err := tx.CreateLease(ctx, "default", "keep", nil, nil); err != nil {
			return err
		}
		if err := tx.AddLeaseResource(ctx, "default", "keep", metadata.Resource{Kind: metadata.ResourceContent, ID: a.Config.Digest.String()}); err != nil {
			return err
		}
		if _, err := tx.CreateLease(ctx, "default", "old", nil, &past); err != nil {
			return err
		}
		if err := tx.AddLeaseResource(ctx, "default", "old", metadata.Resource{Kind: metadata.ResourceContent, ID: a.Manifest.Digest.String()}); err != nil {
			return err
		}
		_, err := tx.AddContent(ctx, "other", a.Layers[1].Digest.String(), a.Layers[1].Size, map[string]string{LabelGCRoot: "1"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.s.DeleteImage(ctx, "default", "a:1", true, false); err != nil {
		t.Fatal(err)
	}
	got := e.blobs(t)
	want := []string{a.Config.Digest.String(), a.Layers[1].Digest.String()}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("blobs = %v, want %v", got, want)
	}
	// The lease of default keeps default's reference to the config only.
	if rows := e.contentRows(t, "default"); !slices.Equal(rows, []string{a.Config.Digest.String()}) {
		t.Fatalf("rows of default left: %v", rows)
	}
}

// TestGCCycles imports and deletes an image 100 times and checks that the
// disk use of the content and snapshot roots returns to where it started.
func TestGCCycles(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	arch := ociArchive(map[string]*testimage.Built{"a:1": smallImage(t, linuxAmd64, "a")}, testimage.TarOptions{})
	dirs := []string{filepath.Join(e.root, "content"), filepath.Join(e.root, "snapshots")}
	size := func() (s int64, n int) {
		for _, d := range dirs {
			a, b := treeSize(t, d)
			s, n = s+a, n+b
		}
		return
	}
	s0, n0 := size()
	cycles := 100
	if testing.Short() {
		cycles = 10
	}
	for i := range cycles {
		e.importBytes(t, "default", arch, ImportOptions{})
		if i == 0 {
			if s, _ := size(); s <= s0 {
				t.Fatal("import wrote nothing")
			}
		}
		if err := e.s.DeleteImage(ctx, "default", "a:1", true, false); err != nil {
			t.Fatal(err)
		}
	}
	if s, n := size(); s != s0 || n != n0 {
		t.Fatalf("after %d cycles: %d bytes in %d entries, started with %d in %d", cycles, s, n, s0, n0)
	}
}

func TestBackgroundGC(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	e.importBytes(t, "default", ociArchive(map[string]*testimage.Built{"a:1": smallImage(t, linuxAmd64, "a")}, testimage.TarOptions{}), ImportOptions{})
	if err := e.s.DeleteImage(ctx, "default", "a:1", false, false); err != nil {
		t.Fatal(err)
	}
	e.s.Close() // waits for the background collection
	if b := e.blobs(t); len(b) != 0 {
		t.Fatalf("blobs left: %v", b)
	}
}

func TestDiscardLayersAndExport(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{opts: Options{DiscardLayers: true}})
	a := smallImage(t, linuxAmd64, "a")
	e.importBytes(t, "default", ociArchive(map[string]*testimage.Built{"a:1": a}, testimage.TarOptions{}), ImportOptions{})
	want := []string{a.Manifest.Digest.String(), a.Config.Digest.String()}
	slices.Sort(want)
	if got := e.blobs(t); !slices.Equal(got, want) {
		t.Fatalf("blobs = %v, want only manifest and config", got)
	}
	if len(e.snapshotNames(t, "default")) != 2 {
		t.Fatal("not unpacked")
	}
	var buf bytes.Buffer
	err := e.s.Export(ctx, "default", &buf, []string{"a:1"}, ExportOptions{})
	wantErr(t, err, errdefs.ErrFailedPrecondition, "was discarded after unpacking (discard_layers is on); pull the image again to export it")
	// GC keeps the snapshots (computed from the config) though the layers
	// are gone.
	if _, err := e.s.GarbageCollect(ctx); err != nil {
		t.Fatal(err)
	}
	if len(e.snapshotNames(t, "default")) != 2 || len(e.blobs(t)) != 2 {
		t.Fatal("GC removed what the image needs")
	}
}

func TestExportRoundTrip(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	amd, arm64, _, l := multiPlatform(t)
	e.importBytes(t, "default", l.Bytes(testimage.TarOptions{}), ImportOptions{AllPlatforms: true})
	single := smallImage(t, linuxAmd64, "single")
	e.importBytes(t, "default", ociArchive(map[string]*testimage.Built{"s:1": single}, testimage.TarOptions{}), ImportOptions{})

	var out1, out2 bytes.Buffer
	if err := e.s.Export(ctx, "default", &out1, []string{"multi:1", "s:1"}, ExportOptions{Platform: "linux/arm64"}); err != nil {
		t.Fatal(err)
	}
	// A single-manifest image is exported whatever the platform (the filter
	// applies to indexes); an index without a match is an error.
	e.importBytes(t, "default", func() []byte {
		l := testimage.NewLayout()
		l.AddIndex(map[string]string{AnnotationRefName: "amdonly:1"}, amd)
		return l.Bytes(testimage.TarOptions{})
	}(), ImportOptions{})
	err := e.s.Export(ctx, "default", &out2, []string{"amdonly:1"}, ExportOptions{Platform: "linux/arm64"})
	wantErr(t, err, errdefs.ErrNotFound, "no manifest for platform linux/arm64 in index sha256:")
	out1.Reset()
	if err := e.s.Export(ctx, "default", &out1, []string{"multi:1"}, ExportOptions{Platform: "linux/arm64"}); err != nil {
		t.Fatal(err)
	}
	out2.Reset()
	if err := e.s.Export(ctx, "default", &out2, []string{"multi:1"}, ExportOptions{Platform: "linux/arm64"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out1.Bytes(), out2.Bytes()) {
		t.Fatal("export is not deterministic")
	}
	// Re-import into another namespace: same target, the arm64 image.
	e2 := newEnv(t, envOpts{})
	imgs := e2.importBytes(t, "other", out1.Bytes(), ImportOptions{Platform: "linux/arm64"})
	if len(imgs) != 1 || imgs[0].Name != "docker.io/library/multi:1" || imgs[0].Target.Digest != l.Index[0].Digest.String() {
		t.Fatalf("reimported %+v", imgs)
	}
	if !slices.Contains(e2.snapshotNames(t, "other"), topChain(arm64)) {
		t.Fatal("arm64 not unpacked")
	}
	// The amd64 layers were not exported.
	_, err = e2.s.Import(ctx, "x", bytes.NewReader(out1.Bytes()), ImportOptions{Platform: "linux/amd64"})
	wantErr(t, err, errdefs.ErrNotFound, "blob "+amd.Manifest.Digest.String())

	var all bytes.Buffer
	if err := e.s.Export(ctx, "default", &all, []string{"multi:1", "s:1"}, ExportOptions{AllPlatforms: true}); err != nil {
		t.Fatal(err)
	}
	e3 := newEnv(t, envOpts{})
	if imgs := e3.importBytes(t, "x", all.Bytes(), ImportOptions{AllPlatforms: true}); len(imgs) != 2 {
		t.Fatalf("images %v", imgs)
	}
	err = e.s.Export(ctx, "default", &all, []string{"missing:1"}, ExportOptions{})
	wantErr(t, err, errdefs.ErrNotFound, "missing:1")
}

func TestImportDir(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	dir := t.TempDir()
	good := ociArchive(map[string]*testimage.Built{"a:1": smallImage(t, linuxAmd64, "a")}, testimage.TarOptions{Gzip: true})
	os.WriteFile(filepath.Join(dir, "a.tar.gz"), good, 0o644)
	os.WriteFile(filepath.Join(dir, "bad.tar"), bytes.Repeat([]byte("garbage "), 200), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("ignored"), 0o644)
	os.Symlink("/etc/passwd", filepath.Join(dir, "link.tar"))
	res, err := e.s.ImportDir(ctx, "default", dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].File != "a.tar.gz" || res[0].Err != nil || len(res[0].Images) != 1 || res[1].File != "bad.tar" || res[1].Err == nil {
		t.Fatalf("results = %+v", res)
	}
	if _, err := os.Stat(filepath.Join(dir, "imported", "a.tar.gz")); err != nil {
		t.Fatal(err)
	}
	msg := readFile(t, filepath.Join(dir, "failed", "bad.tar.error.txt"))
	if !strings.Contains(msg, "not a valid tar stream") {
		t.Fatalf("error log = %q", msg)
	}
	if _, err := os.Stat(filepath.Join(dir, "failed", "bad.tar")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "link.tar")); err != nil {
		t.Fatal("symlink should be left alone")
	}
	// A second run has nothing to do.
	if res, err := e.s.ImportDir(ctx, "default", dir); err != nil || len(res) != 0 {
		t.Fatalf("second run: %v %v", res, err)
	}
	_, err = e.s.ImportDir(ctx, "default", filepath.Join(dir, "missing"))
	wantErr(t, err, os.ErrNotExist, "import dir")
}

// TestGCBlobInTwoRoles checks that GC keeps what an image needs when
// another image lists one of its documents (config or manifest) as a
// layer, whichever image is walked first: the walker must not stop at a
// blob it first reached as a layer (not parsed) when it is another image's
// config or manifest. The hostile image is imported without unpacking (its
// "layer" is not a tar).
func TestGCBlobInTwoRoles(t *testing.T) {
	for _, role := range []string{"config", "manifest"} {
		for _, hostile := range []string{"a:1", "z:1"} { // sorts before/after b:1
			t.Run(role+"/"+hostile, func(t *testing.T) {
				ctx := context.Background()
				e := newEnv(t, envOpts{})
				b := smallImage(t, linuxAmd64, "b")
				e.importBytes(t, "default", ociArchive(map[string]*testimage.Built{"b:1": b}, testimage.TarOptions{}), ImportOptions{})
				snaps, blobs := e.snapshotNames(t, "default"), e.blobs(t)
				shared := b.Blobs[b.Config.Digest]
				if role == "manifest" {
					shared = b.Blobs[b.Manifest.Digest]
				}
				evil, err := testimage.Build(testimage.Image{Layers: []testimage.Layer{{
					Blob:      &shared,
					DiffID:    digest.FromString("whatever"),
					MediaType: ocispec.MediaTypeImageLayer,
				}}})
				if err != nil {
					t.Fatal(err)
				}
				e.importBytes(t, "default", ociArchive(map[string]*testimage.Built{hostile: evil}, testimage.TarOptions{}), ImportOptions{SkipUnpack: true})
				if _, err := e.s.GarbageCollect(ctx); err != nil {
					t.Fatal(err)
				}
				if got := e.snapshotNames(t, "default"); !slices.Equal(got, snaps) || !slices.Contains(got, topChain(b)) {
					t.Fatalf("GC removed snapshots of image b:1 still in use: before %v after %v", snaps, got)
				}
				got := e.blobs(t)
				for _, d := range blobs {
					if !slices.Contains(got, d) {
						t.Fatalf("GC removed blob %s of image b:1: before %v after %v", d, blobs, got)
					}
				}
				// b:1 is still whole: it can be exported.
				if err := e.s.Export(ctx, "default", io.Discard, []string{"b:1"}, ExportOptions{}); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
