package registry_test

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/edged/edged/edged/images/platforms"
	"github.com/edged/edged/edged/images/testimage"
	"github.com/edged/edged/edged/registry"
	"github.com/edged/edged/fsstore/content"
	testregistry "github.com/edged/edged/internal/testutil/registry"
)

// TestConcurrentPullsShareBlobs runs pulls of two images that share a
// layer, and of the same image twice, at the same time into one store,
// each in its own helper process: they wait for each other's writers
// instead of failing, and every blob ends up in the store once.
func TestConcurrentPullsShareBlobs(t *testing.T) {
	reg := testregistry.Start(t, "")
	c, err := registry.New(registry.Config{Helper: helperBin, Hosts: map[string]registry.HostConfig{reg.Addr: {PlainHTTP: true}},
		DockerConfig: filepath.Join(t.TempDir(), "none.json")})
	if err != nil {
		t.Fatal(err)
	}
	shared, err := testimage.WriteRandomLayer(t.TempDir(), 8<<20, 11)
	if err != nil {
		t.Fatal(err)
	}
	own := testimage.Layer{Files: []testimage.File{testimage.Reg("b", 0o644, "b")}}
	a := testimage.MustBuild(testimage.Image{Platform: platforms.Default(), Layers: []testimage.Layer{shared}})
	b := testimage.MustBuild(testimage.Image{Platform: platforms.Default(), Layers: []testimage.Layer{shared, own}})
	ctx := ctxT(t)
	for name, img := range map[string]*testimage.Built{"a": a, "b": b} {
		if err := c.Push(ctx, storeWith(t, img).Root(), reg.Addr+"/team/"+name+":1", img.Manifest, registry.PushOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dst, err := content.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	refs := []string{reg.Addr + "/team/a:1", reg.Addr + "/team/b:1", reg.Addr + "/team/a:1"}
	errs := make([]error, len(refs))
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = c.Pull(ctx, dst.Root(), ref, registry.PullOptions{})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("pull %s: %v", refs[i], err)
		}
	}
	for _, img := range []*testimage.Built{a, b} {
		for d, bl := range img.Blobs {
			if info, err := dst.Info(ctx, d); err != nil || info.Size != bl.Size {
				t.Errorf("blob %s: %+v, %v", d, info, err)
			}
		}
	}
	sts, err := dst.ListStatuses(ctx)
	if err != nil || len(sts) != 0 {
		t.Errorf("ingests left: %+v, %v", sts, err)
	}
}
