package images

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images/testimage"
	"github.com/edged/edged/fsstore/snapshots"
)

func TestImportOCIUnpacksWithWhiteouts(t *testing.T) {
	for _, backend := range []snapshots.Backend{snapshots.BackendOverlay, snapshots.BackendNative} {
		t.Run(string(backend), func(t *testing.T) {
			e := newEnv(t, envOpts{backend: backend})
			img := smallImage(t, linuxAmd64, "m1")
			arch := ociArchive(map[string]*testimage.Built{"example.com/app:1": img}, testimage.TarOptions{})
			imgs := e.importBytes(t, "default", arch, ImportOptions{})
			if len(imgs) != 1 || imgs[0].Name != "example.com/app:1" || imgs[0].Target.Digest != img.Manifest.Digest.String() {
				t.Fatalf("images = %+v", imgs)
			}
			// Content rows: manifest, config, 2 layers.
			if rows := e.contentRows(t, "default"); len(rows) != 4 {
				t.Fatalf("content rows = %v", rows)
			}
			// Snapshots: one per layer, keyed by chain ID, no extract-* left.
			chain := chainIDs(img.DiffIDs)
			got := e.snapshotNames(t, "default")
			want := []string{chain[0].String(), chain[1].String()}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("snapshots = %v, want %v", got, want)
			}
			dir := e.mountTop(t, "default", topChain(img))
			if s := readFile(t, filepath.Join(dir, "etc/hostname")); s != "base\n" {
				t.Fatalf("etc/hostname = %q", s)
			}
			if s := readFile(t, filepath.Join(dir, "etc/marker")); s != "m1" {
				t.Fatalf("etc/marker = %q", s)
			}
			if _, err := os.Lstat(filepath.Join(dir, "etc/gone")); !os.IsNotExist(err) {
				t.Fatalf("whiteout: etc/gone still there: %v", err)
			}
			ents, _ := os.ReadDir(filepath.Join(dir, "data"))
			if len(ents) != 1 || ents[0].Name() != "new" {
				t.Fatalf("opaque dir: data holds %v, want only new", ents)
			}
			fi, err := os.Stat(filepath.Join(dir, "etc/marker"))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("etc/marker mode: %v %v", fi, err)
			}
		})
	}
}

func TestImportBusyboxDemo(t *testing.T) {
	if _, err := os.Stat(testimage.DefaultBusybox); err != nil {
		t.Skip("busybox-static is not installed (apt-get install busybox-static)")
	}
	e := newEnv(t, envOpts{})
	img, err := testimage.Busybox(testimage.DefaultBusybox, linuxAmd64)
	if err != nil {
		t.Fatal(err)
	}
	l := testimage.NewLayout()
	l.AddImage(img, map[string]string{AnnotationRefName: testimage.DemoName})
	imgs := e.importBytes(t, "default", l.Bytes(testimage.TarOptions{Gzip: true}), ImportOptions{})
	if len(imgs) != 1 || imgs[0].Name != testimage.DemoName {
		t.Fatalf("images = %+v", imgs)
	}
	dir := e.mountTop(t, "default", topChain(img))
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "busybox" {
		t.Fatalf("bin/sh -> %q, %v", target, err)
	}
	if s := readFile(t, filepath.Join(dir, "etc/passwd")); !strings.Contains(s, "app:x:1000:1000") {
		t.Fatalf("passwd = %q", s)
	}
	fi, err := os.Stat(filepath.Join(dir, "tmp"))
	if err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Fatalf("tmp mode = %v, %v", fi.Mode(), err)
	}
	u, err := e.s.Usage(context.Background(), "default", "busybox:edged-demo")
	if err != nil {
		t.Fatal(err)
	}
	if u.ContentBytes < 1<<20 || u.Snapshots != 1 || u.SnapshotBytes < 1<<20 || u.SnapshotInodes < 5 {
		t.Fatalf("usage = %+v", u)
	}
}

func multiPlatform(t *testing.T) (amd, arm64, armv7 *testimage.Built, l *testimage.Layout) {
	amd = smallImage(t, linuxAmd64, "amd64")
	arm64 = smallImage(t, ocispec.Platform{OS: "linux", Architecture: "arm64"}, "arm64")
	armv7 = smallImage(t, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "armv7")
	l = testimage.NewLayout()
	l.AddIndex(map[string]string{AnnotationRefName: "docker.io/library/multi:1"}, amd, arm64, armv7)
	return
}

func TestImportMultiPlatform(t *testing.T) {
	amd, arm64, armv7, l := multiPlatform(t)
	arch := l.Bytes(testimage.TarOptions{})
	cases := []struct {
		platform string
		want     *testimage.Built
	}{
		{"linux/arm64", arm64},
		{"linux/aarch64", arm64},
		{"linux/arm/v7", armv7},
		{"linux/arm/v8", armv7}, // best lower variant
		{"linux/amd64", amd},
	}
	for _, c := range cases {
		t.Run(c.platform, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			e.importBytes(t, "default", arch, ImportOptions{Platform: c.platform})
			got := e.snapshotNames(t, "default")
			if !slices.Contains(got, topChain(c.want)) || len(got) != 2 {
				t.Fatalf("snapshots %v, want the chain of %s", got, c.platform)
			}
			rows := e.contentRows(t, "default")
			// index + manifest + config + 2 layers of the chosen platform
			if len(rows) != 5 || !slices.Contains(rows, c.want.Manifest.Digest.String()) {
				t.Fatalf("content rows %v", rows)
			}
			dir := e.mountTop(t, "default", topChain(c.want))
			if m := readFile(t, filepath.Join(dir, "etc/marker")); m != c.want.Manifest.Platform.Architecture && !(c.want == armv7 && m == "armv7") {
				t.Fatalf("marker = %q", m)
			}
		})
	}
	t.Run("no match", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		_, err := e.s.Import(context.Background(), "default", bytes.NewReader(arch), ImportOptions{Platform: "linux/arm/v6"})
		wantErr(t, err, errdefs.ErrNotFound, "no manifest for platform linux/arm/v6 in index sha256:")
		if imgs := e.images(t, "default"); len(imgs) != 0 {
			t.Fatalf("images after failure: %v", imgs)
		}
		_, err = e.s.Import(context.Background(), "default", bytes.NewReader(arch), ImportOptions{Platform: "linux/s390x"})
		wantErr(t, err, errdefs.ErrNotFound, "no manifest for platform linux/s390x")
	})
	t.Run("other platforms missing", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		omit := []digest.Digest{arm64.Manifest.Digest, armv7.Layers[1].Digest}
		partial := l.Bytes(testimage.TarOptions{Omit: omit})
		e.importBytes(t, "default", partial, ImportOptions{Platform: "linux/amd64"})
		_, err := e.s.Import(context.Background(), "default", bytes.NewReader(partial), ImportOptions{AllPlatforms: true})
		wantErr(t, err, errdefs.ErrNotFound, "blob "+arm64.Manifest.Digest.String()+" (manifest 1 of index")
	})
	t.Run("all platforms", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		e.importBytes(t, "default", arch, ImportOptions{AllPlatforms: true, Platform: "linux/arm64"})
		// index, 3 manifests, 3 configs, the shared base layer, 3 top layers
		if rows := e.contentRows(t, "default"); len(rows) != 11 {
			t.Fatalf("content rows = %d, want 11", len(rows))
		}
		if got := e.snapshotNames(t, "default"); len(got) != 2 || !slices.Contains(got, topChain(arm64)) {
			t.Fatalf("snapshots %v: only the best platform is unpacked", got)
		}
	})
}

func TestImportDockerSave(t *testing.T) {
	base := testimage.File{Name: "bin/tool", Mode: 0o755, Data: []byte("tool")}
	mk := func(marker string) *testimage.Built {
		return testimage.MustBuild(testimage.Image{
			Layers: []testimage.Layer{
				{Files: []testimage.File{testimage.Dir("bin/", 0o755), base}},
				{Files: []testimage.File{testimage.Reg("marker", 0o644, marker)}},
			},
		})
	}
	a, b := mk("a"), mk("b")
	imgs := []testimage.DockerImage{{Image: a, RepoTags: []string{"busybox:1.36", "busybox:latest"}}, {Image: b, RepoTags: []string{"example.com:5000/team/b:v2"}}}
	for _, c := range []struct {
		name string
		opts testimage.DockerSaveOptions
	}{
		{"legacy", testimage.DockerSaveOptions{}},
		{"legacy symlinks gzip", testimage.DockerSaveOptions{SymlinkDuplicates: true, Gzip: true}},
		{"blobs layout", testimage.DockerSaveOptions{BlobsLayout: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			got := e.importBytes(t, "default", testimage.DockerSaveBytes(imgs, c.opts), ImportOptions{})
			var names []string
			for _, g := range got {
				names = append(names, g.Name)
			}
			want := []string{"docker.io/library/busybox:1.36", "docker.io/library/busybox:latest", "example.com:5000/team/b:v2"}
			if !slices.Equal(names, want) {
				t.Fatalf("names = %v, want %v", names, want)
			}
			if got[0].Target.MediaType != ocispec.MediaTypeImageManifest || got[0].Target.Digest != got[1].Target.Digest {
				t.Fatalf("targets: %+v", got)
			}
			// The base layer is shared: 3 snapshots for 2 images of 2 layers.
			if sn := e.snapshotNames(t, "default"); len(sn) != 3 {
				t.Fatalf("snapshots = %v", sn)
			}
			dir := e.mountTop(t, "default", topChain(b))
			if readFile(t, filepath.Join(dir, "marker")) != "b" || readFile(t, filepath.Join(dir, "bin/tool")) != "tool" {
				t.Fatal("wrong content")
			}
			// The generated manifest's layers are the uncompressed tars
			// (docker media type) whose digests are the diff IDs.
			var m ocispec.Manifest
			if err := e.s.readJSONBlob(context.Background(), digest.Digest(got[2].Target.Digest), "manifest", &m); err != nil {
				t.Fatal(err)
			}
			if m.Layers[0].MediaType != "application/vnd.docker.image.rootfs.diff.tar" || m.Layers[1].Digest != b.DiffIDs[1] || m.Config.Digest != b.Config.Digest {
				t.Fatalf("manifest = %+v", m)
			}
		})
	}
}

func TestImportSharedAcrossNamespaces(t *testing.T) {
	e := newEnv(t, envOpts{})
	img := smallImage(t, linuxAmd64, "x")
	for _, c := range []struct {
		name string
		arch []byte
	}{
		{"oci", ociArchive(map[string]*testimage.Built{"a:1": img}, testimage.TarOptions{})},
		{"docker", testimage.DockerSaveBytes([]testimage.DockerImage{{Image: img, RepoTags: []string{"d:1"}}}, testimage.DockerSaveOptions{})},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			_, st1, err := e.s.importArchive(ctx, "ns1-"+c.name, bytes.NewReader(c.arch), ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			before := e.blobs(t)
			_, st2, err := e.s.importArchive(ctx, "ns2-"+c.name, bytes.NewReader(c.arch), ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if after := e.blobs(t); !slices.Equal(before, after) {
				t.Fatalf("blobs changed: %v -> %v", before, after)
			}
			if c.name == "oci" && (st2.written != 0 || st1.written == 0) {
				t.Fatalf("second import wrote %d blob bytes (first %d), want 0", st2.written, st1.written)
			}
			if c.name == "docker" && st2.written != 0 {
				t.Fatalf("second docker import committed %d new blob bytes", st2.written)
			}
			if len(e.contentRows(t, "ns1-"+c.name)) != len(e.contentRows(t, "ns2-"+c.name)) {
				t.Fatal("content rows differ")
			}
			// snapshots are per namespace
			if len(e.snapshotNames(t, "ns2-"+c.name)) != 2 {
				t.Fatal("second namespace not unpacked")
			}
			// Deleting from one namespace keeps the other's blobs.
			name := "docker.io/library/a:1"
			if c.name == "docker" {
				name = "docker.io/library/d:1"
			}
			if err := e.s.DeleteImage(ctx, "ns1-"+c.name, name, true, false); err != nil {
				t.Fatal(err)
			}
			if after := e.blobs(t); !slices.Equal(before, after) {
				t.Fatalf("blobs of ns2 collected: %v -> %v", before, after)
			}
			if len(e.snapshotNames(t, "ns1-"+c.name)) != 0 {
				t.Fatal("ns1 snapshots not collected")
			}
		})
	}
}

func TestImportNames(t *testing.T) {
	e := newEnv(t, envOpts{})
	img := smallImage(t, linuxAmd64, "x")
	l := testimage.NewLayout()
	l.AddImage(img, map[string]string{AnnotationRefName: "1.36"})
	l.AddImage(img, map[string]string{AnnotationRefName: "ignored", AnnotationImageName: "quay.io/org/app:2"})
	got := e.importBytes(t, "default", l.Bytes(testimage.TarOptions{}), ImportOptions{IndexName: "busybox:whatever"})
	if len(got) != 2 || got[0].Name != "docker.io/library/busybox:1.36" || got[1].Name != "quay.io/org/app:2" {
		t.Fatalf("images = %+v", got)
	}
	// Tag-only names without IndexName: nothing named → error.
	l2 := testimage.NewLayout()
	l2.AddImage(img, map[string]string{AnnotationRefName: "1.36"})
	_, err := e.s.Import(context.Background(), "default", bytes.NewReader(l2.Bytes(testimage.TarOptions{})), ImportOptions{})
	wantErr(t, err, errdefs.ErrInvalidArgument, "the archive names no image")
	// Unnamed entries + IndexName: one image of a new index.
	l3 := testimage.NewLayout()
	l3.AddImage(img, nil)
	l3.AddImage(smallImage(t, ocispec.Platform{OS: "linux", Architecture: "arm64"}, "y"), nil)
	got = e.importBytes(t, "default", l3.Bytes(testimage.TarOptions{}), ImportOptions{IndexName: "local/all:1"})
	if len(got) != 1 || got[0].Name != "docker.io/local/all:1" || got[0].Target.MediaType != ocispec.MediaTypeImageIndex {
		t.Fatalf("images = %+v", got)
	}
	// Re-import under an existing name with another target updates it.
	other := smallImage(t, linuxAmd64, "other")
	got = e.importBytes(t, "default", ociArchive(map[string]*testimage.Built{"quay.io/org/app:2": other}, testimage.TarOptions{}), ImportOptions{})
	if got[0].Target.Digest != other.Manifest.Digest.String() {
		t.Fatalf("not updated: %+v", got[0])
	}
}

func TestNormalizeName(t *testing.T) {
	good := map[string]string{
		"busybox":                             "docker.io/library/busybox:latest",
		"busybox:1.36":                        "docker.io/library/busybox:1.36",
		"user/app":                            "docker.io/user/app:latest",
		"docker.io/library/busybox:1":         "docker.io/library/busybox:1",
		"index.docker.io/a/b:c":               "docker.io/a/b:c",
		"localhost/x":                         "localhost/x:latest",
		"example.com:5000/a/b":                "example.com:5000/a/b:latest",
		"ghcr.io/o/r:v1.2-rc_3":               "ghcr.io/o/r:v1.2-rc_3",
		"a@sha256:" + strings.Repeat("a", 64): "docker.io/library/a@sha256:" + strings.Repeat("a", 64),
	}
	for in, want := range good {
		if got, err := NormalizeName(in); err != nil || got != want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "UPPER/case", "a:b:c", "a@sha256:abc", "a/../b", "a b", "a:" + strings.Repeat("t", 200)} {
		if _, err := NormalizeName(in); !errdefs.IsInvalidArgument(err) {
			t.Errorf("NormalizeName(%q) = %v, want invalid argument", in, err)
		}
	}
}
