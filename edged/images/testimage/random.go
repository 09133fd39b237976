package testimage

import (
	"archive/tar"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// WriteRandomLayer writes, under dir, a gzip layer blob holding one file
// "random.bin" of size pseudo-random bytes (from seed, so reproducible) and
// returns it as a Layer whose Blob is the file (named by its digest). The
// layer is streamed: memory use does not depend on size.
func WriteRandomLayer(dir string, size int64, seed uint64) (Layer, error) {
	tmp, err := os.CreateTemp(dir, "layer-*")
	if err != nil {
		return Layer{}, err
	}
	defer tmp.Close()
	blobHash := digest.SHA256.Digester()
	diffHash := digest.SHA256.Digester()
	zw, _ := gzip.NewWriterLevel(io.MultiWriter(tmp, blobHash.Hash()), gzip.BestSpeed)
	tw := tar.NewWriter(io.MultiWriter(zw, diffHash.Hash()))
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "random.bin", Mode: 0o644, Size: size, ModTime: Epoch()}); err != nil {
		return Layer{}, err
	}
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	if n, err := io.CopyN(tw, rng, size); err != nil || n != size {
		return Layer{}, fmt.Errorf("random layer: %d bytes: %v", n, err)
	}
	if err := tw.Close(); err != nil {
		return Layer{}, err
	}
	if err := zw.Close(); err != nil {
		return Layer{}, err
	}
	fi, err := tmp.Stat()
	if err != nil {
		return Layer{}, err
	}
	d := blobHash.Digest()
	path := filepath.Join(dir, d.Encoded())
	if err := os.Rename(tmp.Name(), path); err != nil {
		return Layer{}, err
	}
	return Layer{Blob: &Blob{Path: path, Size: fi.Size()}, DiffID: diffHash.Digest(), MediaType: ocispec.MediaTypeImageLayerGzip}, nil
}
