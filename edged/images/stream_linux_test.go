package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images/testimage"
)

// bigLayerArchive writes an OCI layout tar with a random layer of size
// bytes under a small layer, and returns its path and the image.
func bigLayerArchive(t *testing.T, size int64) (string, *testimage.Built) {
	t.Helper()
	dir := t.TempDir()
	big, err := testimage.WriteRandomLayer(dir, size, 7)
	if err != nil {
		t.Fatal(err)
	}
	img := testimage.MustBuild(testimage.Image{Platform: linuxAmd64, Layers: []testimage.Layer{
		big,
		{Files: []testimage.File{testimage.Reg("top.txt", 0o644, "top\n")}},
	}})
	l := testimage.NewLayout()
	l.AddImage(img, map[string]string{AnnotationRefName: "big:1"})
	path := filepath.Join(dir, "big.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.WriteTar(f, testimage.TarOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, img
}

// importMeasured imports the file at path and returns the bytes this
// process caused to be written to disk meanwhile (/proc/self/io
// write_bytes), and the import's counters.
func importMeasured(t *testing.T, e *env, path string) (int64, importStats) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w0 := procField(t, "/proc/self/io", "write_bytes:")
	_, stats, err := e.s.importArchive(context.Background(), "default", f, ImportOptions{})
	w1 := procField(t, "/proc/self/io", "write_bytes:")
	if err != nil {
		t.Fatal(err)
	}
	return w1 - w0, stats
}

func fileSHA(t *testing.T, p string) digest.Digest {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return digest.NewDigest(digest.SHA256, h)
}

// With discard_layers an import writes each layer once (unpacked files),
// never the compressed blob: at most 1.1 bytes per archive byte, against
// about 2 without it (blob + files). fsync is on, as in the daemon.
func TestImportDiscardLayersWritesOnce(t *testing.T) {
	path, img := bigLayerArchive(t, 32<<20)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	size := float64(fi.Size())

	keep := newEnv(t, envOpts{sync: true})
	wKeep, sKeep := importMeasured(t, keep, path)
	disc := newEnv(t, envOpts{sync: true, opts: Options{DiscardLayers: true}})
	wDisc, sDisc := importMeasured(t, disc, path)
	t.Logf("written per archive byte: %.3f kept, %.3f discard_layers", float64(wKeep)/size, float64(wDisc)/size)

	if r := float64(wDisc) / size; r > 1.1 {
		t.Errorf("discard_layers: %.3f bytes written per archive byte, budget 1.1", r)
	}
	// The reference: the same import storing the blob writes about twice.
	if r := float64(wKeep) / size; r < 1.8 {
		t.Errorf("without discard_layers: %.3f bytes written per archive byte; want ≈ 2 (does write_bytes work here?)", r)
	}
	var layers int64
	for _, l := range img.Layers {
		layers += l.Size
	}
	if sDisc.streamed != layers || sKeep.streamed != 0 {
		t.Errorf("streamed %d and %d bytes, want %d (discard) and 0", sDisc.streamed, sKeep.streamed, layers)
	}
	// Only the manifest and config are stored, and no staged snapshot is
	// left: just the layer chain.
	want := []string{img.Manifest.Digest.String(), img.Config.Digest.String()}
	slices.Sort(want)
	if got := disc.blobs(t); !slices.Equal(got, want) {
		t.Errorf("blobs = %v, want only manifest and config %v", got, want)
	}
	chain := chainIDs(img.DiffIDs)
	got := disc.snapshotNames(t, "default")
	slices.Sort(got)
	wantSn := []string{chain[0].String(), chain[1].String()}
	slices.Sort(wantSn)
	if !slices.Equal(got, wantSn) {
		t.Errorf("snapshots = %v, want the chain %v", got, wantSn)
	}
	ims := disc.images(t, "default")
	if len(ims) != 1 || ims[0].Labels[LabelLayersDiscarded] != "true" {
		t.Fatalf("images = %+v, want big:1 labelled discarded", ims)
	}
	// The same files as the import that kept the blob.
	a, b := keep.mountTop(t, "default", topChain(img)), disc.mountTop(t, "default", topChain(img))
	if fileSHA(t, filepath.Join(a, "random.bin")) != fileSHA(t, filepath.Join(b, "random.bin")) {
		t.Error("random.bin differs between the two imports")
	}
	if readFile(t, filepath.Join(b, "top.txt")) != "top\n" {
		t.Error("top layer missing")
	}
}

// A layer blob streamed with discard_layers keeps whiteouts, opaque
// directories and modes exactly as an import from a stored blob does, and
// a second import leaves nothing behind.
func TestImportDiscardLayersSameTree(t *testing.T) {
	img := smallImage(t, linuxAmd64, "m")
	arch := ociArchive(map[string]*testimage.Built{"s:1": img}, testimage.TarOptions{})
	keep := newEnv(t, envOpts{})
	keep.importBytes(t, "default", arch, ImportOptions{})
	disc := newEnv(t, envOpts{opts: Options{DiscardLayers: true}})
	disc.importBytes(t, "default", arch, ImportOptions{})
	// Again: the blobs are not stored, so the layers stream by again, but
	// the snapshots exist and the staged copies are dropped.
	_, st, err := disc.s.importArchive(context.Background(), "default", bytes.NewReader(arch), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.streamed != img.Layers[0].Size+img.Layers[1].Size {
		t.Errorf("second import streamed %d bytes, want the 2 layers", st.streamed)
	}
	if got := disc.snapshotNames(t, "default"); len(got) != 2 {
		t.Fatalf("snapshots after the second import = %v, want the 2 layers", got)
	}
	a, b := keep.mountTop(t, "default", topChain(img)), disc.mountTop(t, "default", topChain(img))
	ta, tb := listTree(t, a), listTree(t, b)
	if !slices.Equal(ta, tb) {
		t.Fatalf("trees differ:\nstored blob: %v\nstreamed:    %v", ta, tb)
	}
	for _, gone := range []string{"etc/gone", "data/old1"} {
		if _, err := os.Lstat(filepath.Join(b, gone)); !os.IsNotExist(err) {
			t.Errorf("%s is visible: %v", gone, err)
		}
	}
}

func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel+" "+fi.Mode().String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// An image listing the same layer blob twice (as old docker images do with
// empty layers) unpacks with discard_layers: the second use copies the
// first's files.
func TestImportDiscardLayersRepeatedLayer(t *testing.T) {
	base := []testimage.File{testimage.Reg("a", 0o644, "A")}
	img := testimage.MustBuild(testimage.Image{Platform: linuxAmd64, Layers: []testimage.Layer{
		{Files: base},
		{Files: []testimage.File{testimage.Whiteout("a"), testimage.Reg("b", 0o644, "B")}},
		{Files: base},
	}})
	if img.Layers[0].Digest != img.Layers[2].Digest {
		t.Fatal("test setup: layers 0 and 2 should be the same blob")
	}
	e := newEnv(t, envOpts{opts: Options{DiscardLayers: true}})
	e.importBytes(t, "default", ociArchive(map[string]*testimage.Built{"r:1": img}, testimage.TarOptions{}), ImportOptions{})
	if got := e.snapshotNames(t, "default"); len(got) != 3 {
		t.Fatalf("snapshots = %v, want 3", got)
	}
	top := e.mountTop(t, "default", topChain(img))
	if readFile(t, filepath.Join(top, "a")) != "A" || readFile(t, filepath.Join(top, "b")) != "B" {
		t.Fatal("repeated layer not unpacked")
	}
}

// Without AllPlatforms, the layers of the other platforms stream by and
// are dropped; only the chosen platform's chain is left.
func TestImportDiscardLayersMultiPlatform(t *testing.T) {
	amd, _, _, l := multiPlatform(t)
	e := newEnv(t, envOpts{opts: Options{DiscardLayers: true}})
	e.importBytes(t, "default", l.Bytes(testimage.TarOptions{}), ImportOptions{Platform: "linux/amd64"})
	got := e.snapshotNames(t, "default")
	if len(got) != 2 || !slices.Contains(got, topChain(amd)) {
		t.Fatalf("snapshots %v, want the amd64 chain only", got)
	}
	for _, d := range e.blobs(t) {
		for _, ld := range amd.Layers {
			if d == ld.Digest.String() {
				t.Fatalf("layer blob %s stored", d)
			}
		}
	}
	// AllPlatforms keeps every blob: nothing is streamed then.
	e2 := newEnv(t, envOpts{opts: Options{DiscardLayers: true}})
	_, st, err := e2.s.importArchive(context.Background(), "default", bytes.NewReader(l.Bytes(testimage.TarOptions{})), ImportOptions{AllPlatforms: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.streamed != 0 {
		t.Fatalf("AllPlatforms streamed %d bytes", st.streamed)
	}
}

// replaceBlob rewrites an archive with the content of blob entry name
// replaced by data (the name, and so the expected digest, unchanged).
func replaceBlob(t *testing.T, arch []byte, name string, data []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(arch))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	found := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name == name {
			body, found = data, true
			hdr.Size = int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if !found {
		t.Fatalf("no entry %s", name)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// Streamed layers are verified like stored ones: a blob whose content does
// not match its name, or a layer whose diffID is not the config's, fails
// the import with ErrDataLoss and leaves no snapshot, blob or image.
func TestImportDiscardLayersVerifies(t *testing.T) {
	img := smallImage(t, linuxAmd64, "v")
	arch := ociArchive(map[string]*testimage.Built{"v:1": img}, testimage.TarOptions{})
	other := testimage.Gzip(testimage.LayerTar([]testimage.File{testimage.Reg("evil", 0o644, "x")}))
	// The same size, so that only the digest can tell.
	for len(other) < int(img.Layers[0].Size) {
		other = append(other, 0)
	}
	other = other[:img.Layers[0].Size]

	tamperedTar := testimage.LayerTar([]testimage.File{testimage.Reg("evil", 0o644, "x")})
	wrongDiff := testimage.MustBuild(testimage.Image{Platform: linuxAmd64, Layers: []testimage.Layer{{
		Blob:      &testimage.Blob{Data: testimage.Gzip(tamperedTar), Size: int64(len(testimage.Gzip(tamperedTar)))},
		DiffID:    digest.FromString("not the tar"),
		MediaType: ocispec.MediaTypeImageLayerGzip,
	}}})

	cases := []struct {
		name   string
		arch   []byte
		substr string
	}{
		{"digest", replaceBlob(t, arch, "blobs/sha256/"+img.Layers[0].Digest.Encoded(), other), "blob content does not match its digest " + img.Layers[0].Digest.String()},
		{"diffID", ociArchive(map[string]*testimage.Built{"w:1": wrongDiff}, testimage.TarOptions{}), "layer diffID mismatch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOpts{opts: Options{DiscardLayers: true}})
			_, err := e.s.Import(context.Background(), "default", bytes.NewReader(c.arch), ImportOptions{})
			wantErr(t, err, errdefs.ErrDataLoss, c.substr)
			if got := e.snapshotNames(t, "default"); len(got) != 0 {
				t.Errorf("snapshots left: %v", got)
			}
			if got := e.images(t, "default"); len(got) != 0 {
				t.Errorf("images recorded: %v", got)
			}
			for _, d := range e.blobs(t) {
				if d == img.Layers[0].Digest.String() {
					t.Errorf("layer blob stored")
				}
			}
		})
	}
}

// A compressed blob that is not a tar is kept out of the store when no
// image uses it; an image that uses it as a layer fails naming the entry.
func TestImportDiscardLayersNotATar(t *testing.T) {
	junk := testimage.Gzip([]byte(strings.Repeat("not a tar archive ", 100)))
	good := smallImage(t, linuxAmd64, "g")
	l := testimage.NewLayout()
	l.AddImage(good, map[string]string{AnnotationRefName: "g:1"})
	arch := l.Bytes(testimage.TarOptions{Extra: []testimage.Entry{{Name: "blobs/sha256/" + digest.FromBytes(junk).Encoded(), Data: junk}}})
	e := newEnv(t, envOpts{opts: Options{DiscardLayers: true}})
	e.importBytes(t, "default", arch, ImportOptions{})
	if got := e.snapshotNames(t, "default"); len(got) != 2 {
		t.Fatalf("snapshots = %v, want the 2 layers of g:1", got)
	}

	bad := testimage.MustBuild(testimage.Image{Platform: linuxAmd64, Layers: []testimage.Layer{{
		Blob: &testimage.Blob{Data: junk, Size: int64(len(junk))}, DiffID: digest.FromString("x"), MediaType: ocispec.MediaTypeImageLayerGzip,
	}}})
	_, err := e.s.Import(context.Background(), "default", bytes.NewReader(ociArchive(map[string]*testimage.Built{"bad:1": bad}, testimage.TarOptions{})), ImportOptions{})
	wantErr(t, err, errdefs.ErrInvalidArgument, "archive entry \"blobs/sha256/"+digest.FromBytes(junk).Encoded()+"\"")
	if got := e.snapshotNames(t, "default"); len(got) != 2 {
		t.Fatalf("snapshots = %v after the failed import, want the 2 of g:1", got)
	}
}

// A crash while layers are staged or being moved into place leaves
// nothing after Recover (staged snapshots are "extract-" snapshots), and
// the import then works.
func TestImportCrashDiscardLayers(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test re-executes the test binary several times")
	}
	dir := t.TempDir()
	rnd, err := testimage.WriteRandomLayer(dir, 8<<20, 7)
	if err != nil {
		t.Fatal(err)
	}
	img := testimage.MustBuild(testimage.Image{Platform: linuxAmd64, Layers: []testimage.Layer{
		{Files: []testimage.File{testimage.Dir("etc/", 0o755), testimage.Reg("etc/hostname", 0o644, "crash\n")}},
		rnd,
		{Files: []testimage.File{testimage.Whiteout("etc/hostname"), testimage.Reg("top", 0o644, "top")}},
	}})
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
	discard := envOpts{sync: true, opts: Options{DiscardLayers: true}}

	for _, at := range []string{"read:50", "read:100", "apply:0", "apply:1", "apply:2", "record"} {
		t.Run(at, func(t *testing.T) {
			root := t.TempDir()
			e0, err := openEnv(context.Background(), root, discard)
			if err != nil {
				t.Fatal(err)
			}
			e0.close()
			crashImport(t, root, archive, at, envDiscard+"=1")

			e := newEnv(t, envOpts{root: root, sync: true, opts: Options{DiscardLayers: true}})
			ctx := context.Background()
			res, err := e.s.Recover(ctx)
			if err != nil {
				t.Fatalf("recover: %v", err)
			}
			// At read:50 the first layer (and maybe the second) is staged;
			// from read:100 on all three are.
			if at != "read:50" && at != "record" && res.RemovedExtracts < 3 {
				t.Errorf("recover removed %d extract snapshots, want the 3 staged at least", res.RemovedExtracts)
			}
			if imgs := e.images(t, "default"); len(imgs) != 0 {
				t.Fatalf("image visible after crash at %s: %v", at, imgs)
			}
			if sn := e.snapshotNames(t, "default"); len(sn) != 0 {
				t.Fatalf("snapshots left: %v", sn)
			}
			if b := e.blobs(t); len(b) != 0 {
				t.Fatalf("blobs left: %v", b)
			}
			if ents, _ := os.ReadDir(filepath.Join(root, "snapshots", "snapshots")); len(ents) != 0 {
				t.Fatalf("snapshot directories left: %v", ents)
			}
			af, err := os.Open(archive)
			if err != nil {
				t.Fatal(err)
			}
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
			if slices.Contains(e.blobs(t), img.Layers[1].Digest.String()) {
				t.Fatal("layer blob stored with discard_layers")
			}
		})
	}
}
