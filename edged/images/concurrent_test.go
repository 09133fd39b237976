package images

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/edged/edged/edged/images/testimage"
)

// TestConcurrentImportsAndGC imports the same image into several
// namespaces at once while collections run; every import must end with a
// complete image (blobs present, top snapshot mountable).
func TestConcurrentImportsAndGC(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	img := smallImage(t, linuxAmd64, "c")
	arch := ociArchive(map[string]*testimage.Built{"c:1": img}, testimage.TarOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := e.s.GarbageCollect(ctx); err != nil {
				errs <- err
				return
			}
		}
	}()
	var iw sync.WaitGroup
	for i := range 4 {
		iw.Add(1)
		go func() {
			defer iw.Done()
			ns := fmt.Sprintf("ns%d", i)
			for j := range 5 {
				if _, err := e.s.Import(ctx, ns, bytes.NewReader(arch), ImportOptions{}); err != nil {
					errs <- fmt.Errorf("%s import %d: %w", ns, j, err)
					return
				}
				if j < 4 {
					if err := e.s.DeleteImage(ctx, ns, "c:1", false, false); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	iw.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, err := e.s.GarbageCollect(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(e.blobs(t)); n != 4 {
		t.Fatalf("%d blobs, want 4", n)
	}
	for i := range 4 {
		ns := fmt.Sprintf("ns%d", i)
		if len(e.images(t, ns)) != 1 || len(e.snapshotNames(t, ns)) != 2 {
			t.Fatalf("%s: images %v snapshots %v", ns, e.images(t, ns), e.snapshotNames(t, ns))
		}
		dir := e.mountTop(t, ns, topChain(img))
		if readFile(t, dir+"/etc/marker") != "c" {
			t.Fatal("bad content")
		}
	}
}
