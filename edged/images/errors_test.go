package images

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images/testimage"
)

// TestImportHostile feeds broken and hostile archives and checks the error
// and that nothing is left: no image, no snapshot, and after GC no blob.
func TestImportHostile(t *testing.T) {
	img := smallImage(t, linuxAmd64, "x")
	good := func() *testimage.Layout {
		l := testimage.NewLayout()
		l.AddImage(img, map[string]string{AnnotationRefName: "a:1"})
		return l
	}
	gzipped := good().Bytes(testimage.TarOptions{Gzip: true})
	corruptGzip := append([]byte{}, gzipped...)
	for i := 100; i < 400; i++ {
		corruptGzip[i] ^= 0x5a
	}
	badBlob := good()
	badBlob.Blobs[img.Layers[1].Digest] = testimage.Blob{Data: []byte("not the layer"), Size: 13}

	// Config whose diff ID does not match the layer.
	wrongDiff := testimage.MustBuild(testimage.Image{Layers: []testimage.Layer{{Files: []testimage.File{testimage.Reg("f", 0o644, "x")}}}})
	var cfg ocispec.Image
	json.Unmarshal(wrongDiff.ConfigRaw, &cfg)
	cfg.RootFS.DiffIDs[0] = digest.FromString("something else")
	wrongDiff = rebuild(t, wrongDiff, cfg)
	wl := testimage.NewLayout()
	wl.AddImage(wrongDiff, map[string]string{AnnotationRefName: "w:1"})

	badMT := good()
	badMT.Index[0].MediaType = "application/x-unknown"
	encrypted := testimage.MustBuild(testimage.Image{Layers: []testimage.Layer{{Files: []testimage.File{testimage.Reg("f", 0o644, "x")}}}})
	encrypted = relabelLayer(t, encrypted, "application/vnd.oci.image.layer.v1.tar+gzip+encrypted")
	el := testimage.NewLayout()
	el.AddImage(encrypted, map[string]string{AnnotationRefName: "e:1"})

	cases := []struct {
		name   string
		arch   []byte
		opts   ImportOptions
		kind   error
		substr string
	}{
		{"corrupt gzip", corruptGzip, ImportOptions{}, errdefs.ErrDataLoss, "gzip stream is corrupt"},
		{"truncated gzip", gzipped[:len(gzipped)/2], ImportOptions{}, errdefs.ErrDataLoss, "truncated"},
		{"truncated tar", good().Bytes(testimage.TarOptions{})[:3000], ImportOptions{}, errdefs.ErrDataLoss, "truncated"},
		{"not a tar", bytes.Repeat([]byte("hello world "), 100), ImportOptions{}, errdefs.ErrInvalidArgument, "not a valid tar stream"},
		{"empty", nil, ImportOptions{}, errdefs.ErrInvalidArgument, "archive is empty"},
		{"digest mismatch", badBlob.Bytes(testimage.TarOptions{}), ImportOptions{}, errdefs.ErrDataLoss,
			`archive entry "blobs/sha256/` + img.Layers[1].Digest.Encoded() + `": blob content does not match its digest`},
		{"missing blob", good().Bytes(testimage.TarOptions{Omit: []digest.Digest{img.Layers[1].Digest}}), ImportOptions{}, errdefs.ErrNotFound,
			"blob " + img.Layers[1].Digest.String() + " (layer 1 of manifest " + img.Manifest.Digest.String() + ") is missing from the archive"},
		{"missing config", good().Bytes(testimage.TarOptions{Omit: []digest.Digest{img.Config.Digest}}), ImportOptions{}, errdefs.ErrNotFound,
			"blob " + img.Config.Digest.String() + " (config of manifest"},
		{"traversal blob name", good().Bytes(testimage.TarOptions{Extra: []testimage.Entry{{Name: "blobs/sha256/../../../etc/passwd", Data: []byte("x")}}}),
			ImportOptions{}, errdefs.ErrInvalidArgument, `"blobs/sha256/../../../etc/passwd": name contains ".."`},
		{"traversal entry", good().Bytes(testimage.TarOptions{Extra: []testimage.Entry{{Name: "../evil", Data: []byte("x")}}}),
			ImportOptions{}, errdefs.ErrInvalidArgument, `"../evil": name contains ".."`},
		{"absolute entry", good().Bytes(testimage.TarOptions{Extra: []testimage.Entry{{Name: "/etc/passwd", Data: []byte("x")}}}),
			ImportOptions{}, errdefs.ErrInvalidArgument, "absolute name"},
		{"bad blob name", good().Bytes(testimage.TarOptions{Extra: []testimage.Entry{{Name: "blobs/sha512/abc", Data: []byte("x")}}}),
			ImportOptions{}, errdefs.ErrInvalidArgument, "blob names must be blobs/sha256/<64 lowercase hex digits>"},
		{"escaping link", good().Bytes(testimage.TarOptions{Extra: []testimage.Entry{{Name: "x/link", Type: '2', Linkname: "../../etc/passwd"}}}),
			ImportOptions{}, errdefs.ErrInvalidArgument, `archive entry "x/link": link target "../../etc/passwd" escapes the archive`},
		{"blob symlink", good().Bytes(testimage.TarOptions{Extra: []testimage.Entry{{Name: "blobs/sha256/" + strings.Repeat("a", 64), Type: '2', Linkname: "/etc/shadow"}}}),
			ImportOptions{}, errdefs.ErrInvalidArgument, "blobs must be regular files"},
		{"oversized index.json", good().Bytes(testimage.TarOptions{IndexJSON: bytes.Repeat([]byte(" "), MaxJSONSize+1)}),
			ImportOptions{}, errdefs.ErrResourceExhausted, `archive entry "index.json" is 4194305 bytes, more than the 4194304 byte limit`},
		{"oversized manifest blob", oversizedManifest(t), ImportOptions{}, errdefs.ErrResourceExhausted, "is 4194305 bytes, more than the 4194304 byte limit"},
		{"invalid index.json", good().Bytes(testimage.TarOptions{IndexJSON: []byte("{nope")}), ImportOptions{}, errdefs.ErrInvalidArgument, "index.json is not valid JSON"},
		{"unknown media type", badMT.Bytes(testimage.TarOptions{}), ImportOptions{}, errdefs.ErrInvalidArgument, `unsupported media type "application/x-unknown"`},
		{"unsupported layer", el.Bytes(testimage.TarOptions{}), ImportOptions{}, errdefs.ErrNotImplemented, `unsupported layer media type "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"`},
		{"no platform", good().Bytes(testimage.TarOptions{}), ImportOptions{Platform: "linux/arm64"}, errdefs.ErrNotFound,
			`no manifest for platform linux/arm64 in image "docker.io/library/a:1" (manifest ` + img.Manifest.Digest.String() + " is for linux/amd64)"},
		{"diff id mismatch", wl.Bytes(testimage.TarOptions{}), ImportOptions{}, errdefs.ErrDataLoss, "layer diffID mismatch"},
		{"no index", func() []byte {
			return testimage.NewLayout().Bytes(testimage.TarOptions{IndexJSON: []byte{}})[:0]
		}(), ImportOptions{}, errdefs.ErrInvalidArgument, "archive is empty"},
		{"docker missing layer", testimage.DockerSaveBytes([]testimage.DockerImage{{Image: img, RepoTags: []string{"d:1"}}},
			testimage.DockerSaveOptions{ManifestJSON: []byte(`[{"Config":"` + img.Config.Digest.Encoded() + `.json","RepoTags":["d:1"],"Layers":["x/layer.tar","y/layer.tar"]}]`)}),
			ImportOptions{}, errdefs.ErrNotFound, `manifest.json entry 0: layer 0 "x/layer.tar" is missing from the archive`},
		{"docker bad tag", testimage.DockerSaveBytes([]testimage.DockerImage{{Image: img, RepoTags: []string{"Bad Name"}}}, testimage.DockerSaveOptions{}),
			ImportOptions{}, errdefs.ErrInvalidArgument, `"Bad Name"`},
		{"bad namespace", good().Bytes(testimage.TarOptions{}), ImportOptions{}, errdefs.ErrInvalidArgument, "namespace"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			ns := "default"
			if c.name == "bad namespace" {
				ns = "../x"
			}
			_, err := e.s.Import(context.Background(), ns, bytes.NewReader(c.arch), c.opts)
			wantErr(t, err, c.kind, c.substr)
			if imgs := e.images(t, "default"); len(imgs) != 0 {
				t.Fatalf("images left: %v", imgs)
			}
			if sn := e.snapshotNames(t, "default"); len(sn) != 0 {
				t.Fatalf("snapshots left: %v", sn)
			}
			if _, err := e.s.GarbageCollect(context.Background()); err != nil {
				t.Fatal(err)
			}
			if b := e.blobs(t); len(b) != 0 {
				t.Fatalf("blobs left after GC: %v", b)
			}
			st, _ := e.cs.ListStatuses(context.Background())
			if len(st) != 0 {
				t.Fatalf("ingests left: %v", st)
			}
		})
	}
}

// A link whose target only starts with ".." ("..foo") stays inside the
// archive: the import does not refuse it.
func TestImportLinkTargetStartingWithDots(t *testing.T) {
	img := smallImage(t, linuxAmd64, "x")
	l := testimage.NewLayout()
	l.AddImage(img, map[string]string{AnnotationRefName: "a:1"})
	e := newEnv(t, envOpts{})
	arch := l.Bytes(testimage.TarOptions{Extra: []testimage.Entry{{Name: "link", Type: '2', Linkname: "..foo"}}})
	if _, err := e.s.Import(context.Background(), "default", bytes.NewReader(arch), ImportOptions{}); err != nil {
		t.Fatalf("import with a link to \"..foo\": %v", err)
	}
}

// rebuild replaces the config of b (and so its manifest).
func rebuild(t *testing.T, b *testimage.Built, cfg ocispec.Image) *testimage.Built {
	t.Helper()
	raw, _ := json.Marshal(cfg)
	nb := &testimage.Built{Blobs: map[digest.Digest]testimage.Blob{}, Layers: b.Layers, DiffIDs: cfg.RootFS.DiffIDs, ConfigRaw: raw}
	for _, l := range b.Layers {
		nb.Blobs[l.Digest] = b.Blobs[l.Digest]
	}
	nb.Config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
	nb.Blobs[nb.Config.Digest] = testimage.Blob{Data: raw, Size: int64(len(raw))}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: nb.Config, Layers: nb.Layers}
	m.SchemaVersion = 2
	mraw, _ := json.Marshal(m)
	nb.Manifest = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(mraw), Size: int64(len(mraw)), Platform: b.Manifest.Platform}
	nb.Blobs[nb.Manifest.Digest] = testimage.Blob{Data: mraw, Size: int64(len(mraw))}
	return nb
}

func relabelLayer(t *testing.T, b *testimage.Built, mt string) *testimage.Built {
	var cfg ocispec.Image
	json.Unmarshal(b.ConfigRaw, &cfg)
	layers := slices.Clone(b.Layers)
	layers[0].MediaType = mt
	c := *b
	c.Layers = layers
	return rebuild(t, &c, cfg)
}

func oversizedManifest(t *testing.T) []byte {
	big := bytes.Repeat([]byte(" "), MaxJSONSize+1)
	copy(big, `{"schemaVersion":2}`)
	d := digest.FromBytes(big)
	l := testimage.NewLayout()
	l.Blobs[d] = testimage.Blob{Data: big, Size: int64(len(big))}
	l.Index = []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(big)), Annotations: map[string]string{AnnotationRefName: "big:1"}}}
	return l.Bytes(testimage.TarOptions{})
}
