package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images/platforms"
	"github.com/edged/edged/edged/images/testimage"
	"github.com/edged/edged/internal/testutil"
)

// demoImage writes the demo busybox image (what hack/mkimage makes) as an
// OCI layout tar and returns its path.
func demoImage(t *testing.T, dir, name string) string {
	t.Helper()
	if _, err := os.Stat(testimage.DefaultBusybox); err != nil {
		t.Fatalf("busybox-static is required: %v", err)
	}
	img, err := testimage.Busybox(testimage.DefaultBusybox, platforms.Default())
	if err != nil {
		t.Fatal(err)
	}
	l := testimage.NewLayout()
	l.AddImage(img, map[string]string{ocispec.AnnotationRefName: name, "io.containerd.image.name": name})
	p := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(name)+".tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := l.WriteTar(f, testimage.TarOptions{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// blobFiles returns the blob files of the daemon's content store.
func blobFiles(t *testing.T, d *testutil.Daemon) map[string]os.FileInfo {
	t.Helper()
	dir := filepath.Join(d.Root, "content", "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]os.FileInfo{}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fi
	}
	return out
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestImagesImportRunExport(t *testing.T) {
	requireRunc(t)
	d := startDaemon(t)
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	tmp := t.TempDir()
	tarPath := demoImage(t, tmp, testimage.DemoName)

	// Import from a file, run a container from the image.
	if out := c.ok("images", "import", tarPath); out != testimage.DemoName+"\n" {
		t.Fatalf("import printed %q", out)
	}
	if out := c.ok("run", "--rm", "busybox:edged-demo", "r1", "sh", "-c", "echo hello; cat /etc/passwd | head -1"); out != "hello\nroot:x:0:0:root:/root:/bin/sh\n" {
		t.Fatalf("run output %q", out)
	}
	// The --rm container's snapshot is gone; the image's layer stays.
	cl := newClient(t, d)
	snaps, err := cl.ListSnapshots(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || !strings.HasPrefix(snaps[0].Name, "sha256:") {
		t.Fatalf("snapshots after run --rm: %v", snaps)
	}

	// ls, inspect, usage, tag.
	if out := c.ok("images", "ls", "-q"); out != testimage.DemoName+"\n" {
		t.Fatalf("ls -q %q", out)
	}
	if out := c.ok("images", "ls"); !strings.Contains(out, "NAME") || !strings.Contains(out, "manifest") {
		t.Fatalf("ls %q", out)
	}
	if out := c.ok("images", "inspect", "busybox:edged-demo"); !strings.Contains(out, `"digest": "sha256:`) {
		t.Fatalf("inspect %q", out)
	}
	if out := c.ok("images", "usage", "busybox:edged-demo"); !strings.Contains(out, "MiB") {
		t.Fatalf("usage %q", out)
	}
	if out := c.ok("images", "tag", "busybox:edged-demo", "example.com/app:1"); out != "example.com/app:1\n" {
		t.Fatalf("tag %q", out)
	}

	// An image in use cannot be removed without --force.
	c.ok("run", "busybox:edged-demo", "user1", "true")
	c.fails(1, `image "docker.io/library/busybox:edged-demo" is in use by container(s) user1; delete them first or force: failed precondition`,
		"images", "rm", "busybox:edged-demo")

	// Export both names, re-import into another namespace: no new blob
	// bytes, each namespace sees its own images.
	exp := filepath.Join(tmp, "export.tar")
	c.ok("images", "export", exp, "busybox:edged-demo", "example.com/app:1")
	before := blobFiles(t, d)
	if out := c.ok("-n", "other", "images", "import", exp); out != "docker.io/library/busybox:edged-demo\nexample.com/app:1\n" {
		t.Fatalf("import into other %q", out)
	}
	after := blobFiles(t, d)
	if len(after) != len(before) {
		t.Fatalf("second namespace import wrote blobs: %d → %d", len(before), len(after))
	}
	for n, fi := range before {
		if !after[n].ModTime().Equal(fi.ModTime()) {
			t.Fatalf("blob %s rewritten", n)
		}
	}
	if out := c.ok("-n", "third", "images", "ls", "-q"); out != "" {
		t.Fatalf("third namespace sees %q", out)
	}
	// The other namespace's images run too (their layers are unpacked in
	// that namespace).
	if out := c.ok("-n", "other", "run", "--rm", "example.com/app:1", "r2", "echo", "other"); out != "other\n" {
		t.Fatalf("run in other %q", out)
	}

	// Removing the image in default keeps the blobs other uses.
	c.ok("images", "rm", "--force", "--sync", "busybox:edged-demo", "example.com/app:1")
	if got := blobFiles(t, d); len(got) != len(before) {
		t.Fatalf("blobs after removing default's images: %d, want %d", len(got), len(before))
	}
	// user1 still runs from its snapshot.
	c.ok("c", "rm", "user1")
	c.ok("-n", "other", "images", "rm", "--sync", "busybox:edged-demo", "example.com/app:1")
	if got := blobFiles(t, d); len(got) != 0 {
		t.Fatalf("blobs left after removing every image: %v", got)
	}
	for _, ns := range []string{"default", "other"} {
		snaps, err := cl.ListSnapshots(cl.WithNamespace(ctxT(t), ns))
		if err != nil || len(snaps) != 0 {
			t.Fatalf("snapshots left in %s: %v %v", ns, snaps, err)
		}
	}
	if out := c.ok("gc"); !strings.HasPrefix(out, "removed 0 blobs and 0 snapshots") {
		t.Fatalf("gc %q", out)
	}

	// Import from stdin, gzip-compressed docker save with two images.
	img1 := testimage.MustBuild(testimage.Image{Layers: []testimage.Layer{{Files: []testimage.File{testimage.Reg("a.txt", 0o644, "A")}}}})
	img2 := testimage.MustBuild(testimage.Image{Layers: []testimage.Layer{{Files: []testimage.File{testimage.Reg("b.txt", 0o644, "B")}}}})
	save := testimage.DockerSaveBytes([]testimage.DockerImage{{Image: img1, RepoTags: []string{"one:1"}}, {Image: img2, RepoTags: []string{"two:2"}}}, testimage.DockerSaveOptions{Gzip: true})
	cmd := exec.Command(filepath.Join(binDir, "edgectl"), "--address", d.Address, "images", "import", "-")
	cmd.Stdin = bytes.NewReader(save)
	out, err := cmd.Output()
	if err != nil || string(out) != "docker.io/library/one:1\ndocker.io/library/two:2\n" {
		t.Fatalf("docker save from stdin: %q %v", out, err)
	}
}

func TestImagesErrors(t *testing.T) {
	d := startDaemon(t)
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	tmp := t.TempDir()
	tarPath := demoImage(t, tmp, testimage.DemoName)

	notTar := filepath.Join(tmp, "junk.tar")
	os.WriteFile(notTar, bytes.Repeat([]byte("junk"), 1000), 0o644)
	c.fails(1, "archive is not a valid tar stream", "images", "import", notTar)
	c.fails(1, "no such file or directory", "images", "import", filepath.Join(tmp, "missing.tar"))
	c.fails(2, "give one archive file", "images", "import")
	c.fails(1, `no manifest for platform linux/s390x`, "images", "import", "--platform", "linux/s390x", tarPath)
	c.fails(1, `image "nothere:1" in namespace "default": not found`, "images", "rm", "nothere:1")
	c.fails(1, `not found`, "images", "inspect", "nothere:1")
	c.fails(1, `not found`, "images", "tag", "nothere:1", "x:1")
	c.fails(1, `not found`, "images", "export", filepath.Join(tmp, "o.tar"), "nothere:1")
	if _, err := os.Stat(filepath.Join(tmp, "o.tar")); !os.IsNotExist(err) {
		t.Fatalf("failed export left a file: %v", err)
	}
	c.fails(1, `not found`, "images", "usage", "nothere:1")
	c.fails(1, `not found`, "run", "--rm", "nothere:1", "x", "true")
	c.fails(2, "give SOURCE and TARGET", "images", "tag", "x")
	c.fails(1, `namespace: "bad/ns" must match`, "-n", "bad/ns", "images", "import", tarPath)
	// Hostile archive: a blob name with "..".
	l := testimage.NewLayout()
	hostile := l.Bytes(testimage.TarOptions{Extra: []testimage.Entry{{Name: "blobs/sha256/../../etc/passwd", Type: '0', Data: []byte("x")}}})
	hp := filepath.Join(tmp, "hostile.tar")
	os.WriteFile(hp, hostile, 0o644)
	c.fails(1, `name contains ".."`, "images", "import", hp)
	if out := c.ok("images", "ls", "-q"); out != "" {
		t.Fatalf("failed imports left images: %q", out)
	}
	c.ok("images", "import", tarPath)
	c.fails(1, `image name: "UPPER:1": repository component "UPPER" is invalid`, "images", "tag", "busybox:edged-demo", "UPPER:1")

	// Client API: errors keep their kind.
	cl := newClient(t, d)
	ctx := ctxT(t)
	_, err := cl.Import(ctx, bytes.NewReader(nil), client.ImportOpts{})
	wantErr(t, err, errdefs.ErrInvalidArgument, "archive is empty or not a tar stream")
	// Archives edged reads itself (ImportOpts.Path), and the same file
	// streamed through the socket (edgectl --stream).
	_, err = cl.Import(ctx, nil, client.ImportOpts{Path: "relative.tar"})
	wantErr(t, err, errdefs.ErrInvalidArgument, `options.path: "relative.tar" must be an absolute path`)
	_, err = cl.Import(ctx, nil, client.ImportOpts{Path: tmp})
	wantErr(t, err, errdefs.ErrInvalidArgument, "is not a regular file")
	_, err = cl.Import(ctx, nil, client.ImportOpts{Path: filepath.Join(tmp, "missing.tar")})
	wantErr(t, err, errdefs.ErrNotFound, "missing.tar")
	if out := c.ok("images", "import", "--stream", tarPath); !strings.Contains(out, "busybox:edged-demo") {
		t.Fatalf("streamed import: %q", out)
	}
	_, err = cl.GetImage(ctx, "nothere")
	wantErr(t, err, errdefs.ErrNotFound, `image "nothere" in namespace "default": not found`)
	_, err = cl.CreateImage(ctx, &client.Image{Name: "x:1"})
	wantErr(t, err, errdefs.ErrInvalidArgument, "target: a target descriptor with a digest is required")
	err = cl.Export(ctx, &bytes.Buffer{}, nil, client.ExportOpts{})
	wantErr(t, err, errdefs.ErrInvalidArgument, "no image to export")
	_, err = cl.Pull(ctx, "Bad Ref", client.PullOpts{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("pull of a bad reference: %v", err)
	}
	_, err = cl.ContentInfo(ctx, "sha256:nothex")
	wantErr(t, err, errdefs.ErrInvalidArgument, "digest")
}

// The daemon's [images] limits reach the unpacker: a layer that unpacks to
// more than max_layer_size fails the import with a message naming the
// setting (the demo image's layer is a few MiB).
func TestImagesLayerLimitFromConfig(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	p := filepath.Join(dir, "edged.toml")
	if err := os.WriteFile(p, []byte("[images]\nmax_layer_size = \"1MiB\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: dir, Args: []string{"--config", p}})
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	tarPath := demoImage(t, t.TempDir(), testimage.DemoName)
	c.fails(1, "unpacks to more than 1 MiB (images.max_layer_size)", "images", "import", tarPath)
}
