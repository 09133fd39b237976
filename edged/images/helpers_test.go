package images

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/images/testimage"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/fsstore/content"
	"github.com/edged/edged/fsstore/snapshots"
	"github.com/edged/edged/fsstore/snapshots/mount"
)

// env is a complete image stack on real files: SQLite database, content
// store and snapshotter under one temporary root.
type env struct {
	root string
	db   *metadata.DB
	cs   *content.Store
	sn   snapshots.Snapshotter
	s    *Service
}

type envOpts struct {
	backend snapshots.Backend
	opts    Options
	sync    bool // fsync on commit (benchmarks, durability)
	root    string
}

func newEnv(t testing.TB, eo envOpts) *env {
	t.Helper()
	root := eo.root
	if root == "" {
		root = t.TempDir()
	}
	e, err := openEnv(context.Background(), root, eo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.close() })
	return e
}

func openEnv(ctx context.Context, root string, eo envOpts) (*env, error) {
	db, err := metadata.Open(ctx, filepath.Join(root, metadata.FileName), metadata.Options{
		ExtraSchema: []func(context.Context, *sql.Tx) error{snapshots.InitSchema},
		Logger:      quiet,
	})
	if err != nil {
		return nil, err
	}
	cs, err := content.New(filepath.Join(root, "content"))
	if err != nil {
		db.Close()
		return nil, err
	}
	backend := eo.backend
	if backend == "" {
		backend = snapshots.BackendOverlay
	}
	sn, err := snapshots.New(ctx, db.SQL(), filepath.Join(root, "snapshots"), snapshots.Options{Backend: backend, NoSync: !eo.sync})
	if err != nil {
		db.Close()
		return nil, err
	}
	if eo.opts.Logger == nil {
		eo.opts.Logger = quiet
	}
	if eo.opts.Platform == "" {
		eo.opts.Platform = "linux/amd64"
	}
	s, err := New(db, cs, sn, eo.opts)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &env{root: root, db: db, cs: cs, sn: sn, s: s}, nil
}

func (e *env) close() {
	e.s.Close()
	e.db.Close()
}

func (e *env) importBytes(t testing.TB, ns string, b []byte, opts ImportOptions) []metadata.Image {
	t.Helper()
	imgs, err := e.s.Import(context.Background(), ns, bytes.NewReader(b), opts)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	return imgs
}

// blobs lists the digests in the content store.
func (e *env) blobs(t testing.TB) []string {
	t.Helper()
	var out []string
	if err := e.cs.Walk(context.Background(), func(i content.Info) error {
		out = append(out, i.Digest.String())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func (e *env) snapshotNames(t testing.TB, ns string) []string {
	t.Helper()
	infos, err := e.sn.List(context.Background(), ns)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, i := range infos {
		out = append(out, i.Name)
	}
	return out
}

func (e *env) contentRows(t testing.TB, ns string) []string {
	t.Helper()
	var out []string
	err := e.db.View(context.Background(), func(tx *metadata.Tx) error {
		rows, err := tx.ListContent(context.Background(), ns)
		for _, r := range rows {
			out = append(out, r.Digest)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *env) images(t testing.TB, ns string) []metadata.Image {
	t.Helper()
	var out []metadata.Image
	err := e.db.View(context.Background(), func(tx *metadata.Tx) error {
		var err error
		out, err = tx.ListImages(context.Background(), ns)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mountTop mounts a read-only view of snapshot parent and returns the
// mount point (unmounted and removed at cleanup).
func (e *env) mountTop(t testing.TB, ns, parent string) string {
	t.Helper()
	ctx := context.Background()
	key := "view-" + randomID()
	ms, err := e.sn.View(ctx, ns, key, parent, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := mount.MountAll(ms, dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mount.UnmountAll(dir)
		e.sn.Remove(context.Background(), ns, key)
	})
	return dir
}

// topChain returns the chain ID of an image built by testimage.
func topChain(b *testimage.Built) string {
	c := chainIDs(b.DiffIDs)
	return c[len(c)-1].String()
}

func wantErr(t testing.TB, err error, kind error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v containing %q", kind, substr)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("error %q is not %v", err, kind)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q does not contain %q", err, substr)
	}
}

// treeSize sums the sizes of the files and directories under dir
// (st_size, like du --apparent-size).
func treeSize(t testing.TB, dir string) (int64, int) {
	t.Helper()
	var total int64
	var n int
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		total += fi.Size()
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total, n
}

// smallImage is a two-layer image with a whiteout and an opaque directory.
func smallImage(t testing.TB, p ocispec.Platform, marker string) *testimage.Built {
	t.Helper()
	b, err := testimage.Build(testimage.Image{
		Platform: p,
		Layers: []testimage.Layer{
			{Files: []testimage.File{
				testimage.Dir("etc/", 0o755),
				testimage.Reg("etc/hostname", 0o644, "base\n"),
				testimage.Reg("etc/gone", 0o644, "x"),
				testimage.Dir("data/", 0o755),
				testimage.Reg("data/old1", 0o644, "1"),
				testimage.Reg("data/old2", 0o644, "2"),
			}},
			{Files: []testimage.File{
				testimage.Dir("etc/", 0o755),
				testimage.Whiteout("etc/gone"),
				testimage.Reg("etc/marker", 0o600, marker),
				testimage.Dir("data/", 0o750),
				testimage.Opaque("data"),
				testimage.Reg("data/new", 0o644, "n"),
			}},
		},
		Config: ocispec.ImageConfig{Cmd: []string{"sh"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ociArchive(imgs map[string]*testimage.Built, opts testimage.TarOptions) []byte {
	l := testimage.NewLayout()
	names := make([]string, 0, len(imgs))
	for n := range imgs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		l.AddImage(imgs[n], map[string]string{AnnotationRefName: n})
	}
	return l.Bytes(opts)
}

// quiet drops info messages (schema migrations) from test output.
var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

var linuxAmd64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}

func dgst(s string) digest.Digest { return digest.Digest(s) }

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
