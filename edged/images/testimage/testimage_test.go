package testimage

import (
	"bytes"
	"os"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestBusyboxDeterministic(t *testing.T) {
	if _, err := os.Stat(DefaultBusybox); err != nil {
		t.Skip("busybox-static is not installed")
	}
	p := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	build := func() ([]byte, *Built) {
		b, err := Busybox(DefaultBusybox, p)
		if err != nil {
			t.Fatal(err)
		}
		l := NewLayout()
		l.AddImage(b, map[string]string{ocispec.AnnotationRefName: DemoName})
		return l.Bytes(TarOptions{}), b
	}
	a1, b1 := build()
	a2, b2 := build()
	if !bytes.Equal(a1, a2) || b1.Manifest.Digest != b2.Manifest.Digest {
		t.Fatal("two builds differ")
	}
	if len(b1.Layers) != 1 || b1.Layers[0].MediaType != ocispec.MediaTypeImageLayerGzip {
		t.Fatalf("layers = %+v", b1.Layers)
	}
}

func TestRandomLayerReproducible(t *testing.T) {
	dir := t.TempDir()
	l1, err := WriteRandomLayer(dir, 1<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := WriteRandomLayer(t.TempDir(), 1<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	if l1.DiffID != l2.DiffID || l1.Blob.Path == "" || l1.Blob.Size < 1<<20 {
		t.Fatalf("%+v %+v", l1, l2)
	}
}
