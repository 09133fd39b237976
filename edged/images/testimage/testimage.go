// Package testimage builds OCI image-layout and "docker save" tar archives
// deterministically (fixed times, sorted entries), for tests, benchmarks and
// the demo image built by hack/mkimage. Small blobs live in memory; large
// ones (benchmarks) can be files on disk, streamed when the archive is
// written.
package testimage

import (
	"archive/tar"
	"bytes"
	_ "crypto/sha256" // registers sha256 for go-digest
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Epoch returns the modification time of every entry this package writes.
func Epoch() time.Time { return time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC) }

// Media types of Docker schema 2 images.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// File is one entry of a layer.
type File struct {
	Name     string // path inside the layer, e.g. "bin/sh"
	Type     byte   // tar type flag; 0 means tar.TypeReg (or TypeDir if Name ends in "/")
	Mode     int64  // permission bits; 0 means 0644 for files, 0755 for dirs, 0777 for links
	Data     []byte
	Linkname string
	UID, GID int
	Xattrs   map[string]string
}

// Dir returns a directory entry.
func Dir(name string, mode int64) File { return File{Name: name, Type: tar.TypeDir, Mode: mode} }

// Reg returns a regular file entry.
func Reg(name string, mode int64, data string) File {
	return File{Name: name, Type: tar.TypeReg, Mode: mode, Data: []byte(data)}
}

// Symlink returns a symlink entry name -> target.
func Symlink(name, target string) File {
	return File{Name: name, Type: tar.TypeSymlink, Linkname: target}
}

// Whiteout returns the entry that deletes name in a lower layer.
func Whiteout(name string) File {
	dir, base := splitDir(name)
	return File{Name: dir + ".wh." + base, Type: tar.TypeReg}
}

// Opaque returns the entry that hides the lower layers' content of dir.
func Opaque(dir string) File {
	if dir != "" && dir[len(dir)-1] != '/' {
		dir += "/"
	}
	return File{Name: dir + ".wh..wh..opq", Type: tar.TypeReg}
}

func splitDir(name string) (string, string) {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '/' {
			return name[:i+1], name[i+1:]
		}
	}
	return "", name
}

// LayerTar writes files, in the given order, as an uncompressed tar.
func LayerTar(files []File) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if err := writeFile(tw, f); err != nil {
			panic(err) // only invalid File values fail, a programming error
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func writeFile(tw *tar.Writer, f File) error {
	typ := f.Type
	if typ == 0 {
		typ = tar.TypeReg
		if len(f.Name) > 0 && f.Name[len(f.Name)-1] == '/' {
			typ = tar.TypeDir
		}
	}
	mode := f.Mode
	if mode == 0 {
		switch typ {
		case tar.TypeDir:
			mode = 0o755
		case tar.TypeSymlink:
			mode = 0o777
		default:
			mode = 0o644
		}
	}
	hdr := &tar.Header{
		Typeflag: typ, Name: f.Name, Linkname: f.Linkname, Mode: mode,
		Uid: f.UID, Gid: f.GID, ModTime: Epoch(), Format: tar.FormatPAX,
	}
	if typ == tar.TypeReg {
		hdr.Size = int64(len(f.Data))
	}
	if len(f.Xattrs) > 0 {
		hdr.PAXRecords = map[string]string{}
		for k, v := range f.Xattrs {
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("entry %q: %w", f.Name, err)
	}
	if typ == tar.TypeReg {
		_, err := tw.Write(f.Data)
		return err
	}
	return nil
}

// Gzip compresses b deterministically (no name, zero header time).
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// Blob is the content of one blob: Data in memory, or the file at Path.
type Blob struct {
	Data []byte
	Path string
	Size int64
}

// Open returns a reader of the blob.
func (b Blob) Open() (io.ReadCloser, error) {
	if b.Path != "" {
		return os.Open(b.Path)
	}
	return io.NopCloser(bytes.NewReader(b.Data)), nil
}

// Layer is a layer to put in an image.
type Layer struct {
	// Files are the entries, written in order. Ignored when Tar is set.
	Files []File
	// Tar is a ready uncompressed layer tar (overrides Files).
	Tar []byte
	// Uncompressed stores the layer as a plain tar instead of gzip.
	Uncompressed bool
	// Blob, DiffID and MediaType give a prebuilt layer blob (e.g. a big file
	// made by WriteRandomLayer); they override everything above.
	Blob      *Blob
	DiffID    digest.Digest
	MediaType string
}

// Image describes a single-platform image.
type Image struct {
	Platform ocispec.Platform // default linux/amd64
	Layers   []Layer
	Config   ocispec.ImageConfig
	// Docker makes the manifest and config use the Docker schema 2 media
	// types instead of the OCI ones.
	Docker bool
}

// Built is an image made by Build: its blobs and descriptors.
type Built struct {
	Manifest  ocispec.Descriptor // with Platform set
	Config    ocispec.Descriptor
	Layers    []ocispec.Descriptor
	DiffIDs   []digest.Digest
	LayerTars [][]byte // uncompressed layer tars (nil for prebuilt Blob layers)
	Blobs     map[digest.Digest]Blob
	ConfigRaw []byte
}

// Build makes the blobs of img.
func Build(img Image) (*Built, error) {
	p := img.Platform
	if p.OS == "" {
		p = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	}
	b := &Built{Blobs: map[digest.Digest]Blob{}}
	for _, l := range img.Layers {
		if l.Blob != nil {
			b.Layers = append(b.Layers, ocispec.Descriptor{MediaType: l.MediaType, Digest: blobDigest(l.Blob), Size: l.Blob.Size})
			b.Blobs[blobDigest(l.Blob)] = *l.Blob
			b.DiffIDs = append(b.DiffIDs, l.DiffID)
			b.LayerTars = append(b.LayerTars, nil)
			continue
		}
		raw := l.Tar
		if raw == nil {
			raw = LayerTar(l.Files)
		}
		data, mt := Gzip(raw), ocispec.MediaTypeImageLayerGzip
		if img.Docker {
			mt = MediaTypeDockerLayerGzip
		}
		if l.Uncompressed {
			data, mt = raw, ocispec.MediaTypeImageLayer
			if img.Docker {
				mt = MediaTypeDockerLayer
			}
		}
		d := digest.FromBytes(data)
		b.Blobs[d] = Blob{Data: data, Size: int64(len(data))}
		b.Layers = append(b.Layers, ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))})
		b.DiffIDs = append(b.DiffIDs, digest.FromBytes(raw))
		b.LayerTars = append(b.LayerTars, raw)
	}
	created := Epoch()
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant},
		Config:   img.Config,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: b.DiffIDs},
	}
	if cfg.RootFS.DiffIDs == nil {
		cfg.RootFS.DiffIDs = []digest.Digest{}
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	b.ConfigRaw = raw
	cmt, mmt := ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageManifest
	if img.Docker {
		cmt, mmt = MediaTypeDockerConfig, MediaTypeDockerManifest
	}
	b.Config = b.add(cmt, raw)
	layers := b.Layers
	if layers == nil {
		layers = []ocispec.Descriptor{}
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mmt, Config: b.Config, Layers: layers}
	mraw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	b.Manifest = b.add(mmt, mraw)
	b.Manifest.Platform = &ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
	return b, nil
}

// MustBuild is Build that panics on error.
func MustBuild(img Image) *Built {
	b, err := Build(img)
	if err != nil {
		panic(err)
	}
	return b
}

func (b *Built) add(mt string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	b.Blobs[d] = Blob{Data: data, Size: int64(len(data))}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
}

func blobDigest(b *Blob) digest.Digest {
	if b.Path != "" {
		// Prebuilt file blobs are named by their digest (WriteRandomLayer).
		return digest.Digest("sha256:" + baseName(b.Path))
	}
	return digest.FromBytes(b.Data)
}

func baseName(p string) string {
	_, b := splitDir(p)
	return b
}

// Layout is an OCI image layout being assembled.
type Layout struct {
	Blobs map[digest.Digest]Blob
	Index []ocispec.Descriptor
}

// NewLayout returns an empty layout.
func NewLayout() *Layout { return &Layout{Blobs: map[digest.Digest]Blob{}} }

// AddBlobs adds the blobs of images without an index entry.
func (l *Layout) AddBlobs(imgs ...*Built) {
	for _, b := range imgs {
		for d, bl := range b.Blobs {
			l.Blobs[d] = bl
		}
	}
}

// AddImage adds img's blobs and an index.json entry for its manifest with
// the given annotations (e.g. org.opencontainers.image.ref.name).
func (l *Layout) AddImage(img *Built, annotations map[string]string) ocispec.Descriptor {
	l.AddBlobs(img)
	d := img.Manifest
	d.Annotations = annotations
	l.Index = append(l.Index, d)
	return d
}

// AddIndex makes a multi-platform index blob of imgs' manifests, adds it and
// the images' blobs, and an index.json entry with annotations.
func (l *Layout) AddIndex(annotations map[string]string, imgs ...*Built) ocispec.Descriptor {
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for _, b := range imgs {
		l.AddBlobs(b)
		idx.Manifests = append(idx.Manifests, b.Manifest)
	}
	raw, _ := json.Marshal(idx)
	d := digest.FromBytes(raw)
	l.Blobs[d] = Blob{Data: raw, Size: int64(len(raw))}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: d, Size: int64(len(raw)), Annotations: annotations}
	l.Index = append(l.Index, desc)
	return desc
}

// Entry is an extra raw tar entry (for hostile archives in tests).
type Entry struct {
	Name     string
	Type     byte
	Data     []byte
	Linkname string
}

// TarOptions tune WriteTar.
type TarOptions struct {
	// IndexFirst writes oci-layout and index.json before the blobs
	// (default: after them, as containerd and Docker do).
	IndexFirst bool
	// Gzip compresses the whole archive.
	Gzip bool
	// Extra entries are appended after everything else.
	Extra []Entry
	// Omit lists blobs to leave out (missing-blob tests).
	Omit []digest.Digest
	// IndexJSON replaces the generated index.json when not nil.
	IndexJSON []byte
}

// IndexJSON returns the layout's index.json.
func (l *Layout) IndexJSON() []byte {
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: l.Index}
	if idx.Manifests == nil {
		idx.Manifests = []ocispec.Descriptor{}
	}
	raw, _ := json.Marshal(idx)
	return raw
}

// WriteTar writes the layout as a tar stream: oci-layout, index.json and
// blobs/sha256/<hex> in digest order.
func (l *Layout) WriteTar(w io.Writer, opts TarOptions) error {
	var zw *gzip.Writer
	if opts.Gzip {
		zw, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
		w = zw
	}
	tw := tar.NewWriter(w)
	index := opts.IndexJSON
	if index == nil {
		index = l.IndexJSON()
	}
	meta := func() error {
		if err := writeEntry(tw, Entry{Name: "oci-layout", Data: []byte(`{"imageLayoutVersion":"1.0.0"}`)}); err != nil {
			return err
		}
		return writeEntry(tw, Entry{Name: "index.json", Data: index})
	}
	if opts.IndexFirst {
		if err := meta(); err != nil {
			return err
		}
	}
	omit := map[digest.Digest]bool{}
	for _, d := range opts.Omit {
		omit[d] = true
	}
	dgsts := make([]digest.Digest, 0, len(l.Blobs))
	for d := range l.Blobs {
		if !omit[d] {
			dgsts = append(dgsts, d)
		}
	}
	sort.Slice(dgsts, func(i, j int) bool { return dgsts[i] < dgsts[j] })
	for _, d := range dgsts {
		if err := writeBlob(tw, "blobs/sha256/"+d.Encoded(), l.Blobs[d]); err != nil {
			return err
		}
	}
	if !opts.IndexFirst {
		if err := meta(); err != nil {
			return err
		}
	}
	for _, e := range opts.Extra {
		if err := writeEntry(tw, e); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if zw != nil {
		return zw.Close()
	}
	return nil
}

// Bytes is WriteTar into memory.
func (l *Layout) Bytes(opts TarOptions) []byte {
	var buf bytes.Buffer
	if err := l.WriteTar(&buf, opts); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func writeEntry(tw *tar.Writer, e Entry) error {
	typ := e.Type
	if typ == 0 {
		typ = tar.TypeReg
	}
	hdr := &tar.Header{Typeflag: typ, Name: e.Name, Linkname: e.Linkname, Mode: 0o444, ModTime: Epoch(), Format: tar.FormatPAX}
	if typ == tar.TypeDir {
		hdr.Mode = 0o755
	}
	if typ == tar.TypeReg {
		hdr.Size = int64(len(e.Data))
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(e.Data)
	return err
}

func writeBlob(tw *tar.Writer, name string, b Blob) error {
	r, err := b.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o444, Size: b.Size, ModTime: Epoch(), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, r)
	if err == nil && n != b.Size {
		err = fmt.Errorf("blob %s: wrote %d of %d bytes", name, n, b.Size)
	}
	return err
}
