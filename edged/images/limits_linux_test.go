package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images/testimage"
)

// bombImage is an image of one gzip layer of n zero bytes: about 1000
// times smaller compressed (the reviewer's decompression bomb).
func bombImage(n int) (*testimage.Built, []byte) {
	img := testimage.MustBuild(testimage.Image{Layers: []testimage.Layer{{Files: []testimage.File{
		testimage.Reg("zeros", 0o644, string(make([]byte, n)))}}}})
	return img, ociArchive(map[string]*testimage.Built{"bomb:1": img}, testimage.TarOptions{})
}

// checkNothingUnpacked fails unless a failed import left no image, no
// snapshot (staged or prepared) and no snapshot directory.
func checkNothingUnpacked(t *testing.T, e *env) {
	t.Helper()
	if imgs := e.images(t, "default"); len(imgs) != 0 {
		t.Errorf("images recorded: %v", imgs)
	}
	if sn := e.snapshotNames(t, "default"); len(sn) != 0 {
		t.Errorf("snapshots left: %v", sn)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.root, "snapshots", "snapshots")); len(ents) != 0 {
		t.Errorf("snapshot directories left: %d", len(ents))
	}
}

// A layer that unpacks to more than MaxLayerSize fails the import with
// ResourceExhausted naming the layer, the limit and the setting, leaves
// nothing unpacked, and imports once the limit is raised. Both ways a
// layer is applied: from the content store, and streamed from the
// archive (discard_layers).
func TestImportLayerBombMaxSize(t *testing.T) {
	const n = 64 << 20
	img, archive := bombImage(n)
	layer := img.Layers[0]
	for _, discard := range []bool{false, true} {
		t.Run(fmt.Sprintf("discard_layers=%v", discard), func(t *testing.T) {
			e := newEnv(t, envOpts{opts: Options{DiscardLayers: discard, MaxLayerSize: 1 << 20}})
			_, err := e.s.Import(context.Background(), "default", bytes.NewReader(archive), ImportOptions{})
			wantErr(t, err, errdefs.ErrResourceExhausted,
				fmt.Sprintf("layer %s unpacks to more than 1 MiB (images.max_layer_size)", layer.Digest))
			t.Logf("error: %v", err)
			checkNothingUnpacked(t, e)
			if size, _ := treeSize(t, filepath.Join(e.root, "snapshots")); size > 100*layer.Size {
				t.Errorf("%d-byte layer blob unpacked to %d bytes", layer.Size, size)
			}
			if !discard && !slices.Contains(e.blobs(t), layer.Digest.String()) {
				// A retry (a pull resuming) need not fetch it again.
				t.Errorf("layer blob %s was removed", layer.Digest)
			}

			// The operator raises the limit (edged restarts with it).
			s, err := New(e.db, e.cs, e.sn, Options{DiscardLayers: discard, MaxLayerSize: 128 << 20, Platform: "linux/amd64", Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Import(context.Background(), "default", bytes.NewReader(archive), ImportOptions{}); err != nil {
				t.Fatalf("import with the limit raised: %v", err)
			}
			mnt := e.mountTop(t, "default", topChain(img))
			if fi, err := os.Stat(filepath.Join(mnt, "zeros")); err != nil || fi.Size() != n {
				t.Fatalf("zeros: %v %v", fi, err)
			}
		})
	}
}

// MaxLayerEntries names its setting too.
func TestImportLayerMaxEntries(t *testing.T) {
	var files []testimage.File
	for i := range 100 {
		files = append(files, testimage.Reg(fmt.Sprintf("f%d", i), 0o644, ""))
	}
	img := testimage.MustBuild(testimage.Image{Layers: []testimage.Layer{{Files: files}}})
	e := newEnv(t, envOpts{opts: Options{MaxLayerEntries: 10}})
	_, err := e.s.Import(context.Background(), "default", bytes.NewReader(ociArchive(map[string]*testimage.Built{"many:1": img}, testimage.TarOptions{})), ImportOptions{})
	wantErr(t, err, errdefs.ErrResourceExhausted,
		fmt.Sprintf("layer %s has more than 10 entries (images.max_layer_entries)", img.Layers[0].Digest))
	checkNothingUnpacked(t, e)
}

// On a small filesystem MinFreeSpace stops the bomb before the disk is
// full, names the filesystem, and leaves the space free.
func TestImportLayerBombMinFree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	const fsSize, minFree = 96 << 20, 32 << 20
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", fsSize)); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	img, archive := bombImage(128 << 20)
	e := newEnv(t, envOpts{root: mnt, opts: Options{MinFreeSpace: minFree}})
	_, err := e.s.Import(context.Background(), "default", bytes.NewReader(archive), ImportOptions{})
	wantErr(t, err, errdefs.ErrResourceExhausted,
		fmt.Sprintf("layer %s would leave less than 32 MiB free on %s (images.min_free_space)", img.Layers[0].Digest, mnt))
	if strings.Contains(err.Error(), "no space left") {
		t.Errorf("the filesystem filled up: %v", err)
	}
	checkNothingUnpacked(t, e)
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	// The failed extraction was removed: its space is free again.
	if free := int64(st.Bavail) * int64(st.Bsize); free < fsSize-16<<20 {
		t.Errorf("%d bytes free after the failed import, want most of %d", free, fsSize)
	}
}

// New refuses a negative layer limit with InvalidArgument naming the
// option and its config setting (edged's config refuses them first, but a
// program using this package reaches New directly).
func TestNewRefusesNegativeLimits(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{MaxLayerSize: -1}, "images: layer limit MaxLayerSize (images.max_layer_size) is -1: it must not be negative: invalid argument"},
		{Options{MaxLayerEntries: -2}, "images: layer limit MaxLayerEntries (images.max_layer_entries) is -2: it must not be negative: invalid argument"},
		{Options{MinFreeSpace: -3}, "images: layer limit MinFreeSpace (images.min_free_space) is -3: it must not be negative: invalid argument"},
	} {
		tc.opts.Logger = quiet
		s, err := New(e.db, e.cs, e.sn, tc.opts)
		if err == nil {
			s.Close()
			t.Errorf("%+v: accepted", tc.opts)
			continue
		}
		if !errors.Is(err, errdefs.ErrInvalidArgument) || err.Error() != tc.want {
			t.Errorf("%+v: got %q, want InvalidArgument %q", tc.opts, err, tc.want)
		}
	}
}
