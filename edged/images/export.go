package images

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images/platforms"
	"github.com/edged/edged/edged/metadata"
)

// ExportOptions tune Export.
type ExportOptions struct {
	// Platform selects the manifests exported from multi-platform images
	// (every manifest matching it); empty means the service's default.
	Platform string
	// AllPlatforms exports every manifest; all must be present.
	AllPlatforms bool
}

// exportEpoch is the modification time of every exported entry, so that
// exporting the same images twice gives the same bytes.
func exportEpoch() time.Time { return time.Unix(0, 0).UTC() }

// Export writes the images refs of ns to w as an OCI image-layout tar:
// oci-layout, blobs/sha256/<hex> in digest order, then index.json with an
// entry per ref (annotated with org.opencontainers.image.ref.name and
// io.containerd.image.name = the full name). Blobs are streamed from the
// content store. An image whose layers were discarded after unpacking
// fails with ErrFailedPrecondition: it must be pulled again.
func (s *Service) Export(ctx context.Context, ns string, w io.Writer, refs []string, opts ExportOptions) error {
	if err := checkNamespace(ns); err != nil {
		return err
	}
	if len(refs) == 0 {
		return errdefs.InvalidArgument("refs", "no image to export")
	}
	match := s.platform
	if opts.Platform != "" {
		p, err := platforms.Parse(opts.Platform)
		if err != nil {
			return err
		}
		match = platforms.NewMatcher(p)
	}
	var imgs []metadata.Image
	if err := s.db.View(ctx, func(tx *metadata.Tx) error {
		for _, r := range refs {
			im, err := lookupImage(ctx, tx, ns, r)
			if err != nil {
				return err
			}
			imgs = append(imgs, im)
		}
		return nil
	}); err != nil {
		return err
	}
	blobs := map[digest.Digest]int64{}
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	for _, im := range imgs {
		e := &exporter{s: s, match: match, all: opts.AllPlatforms, img: im, blobs: blobs}
		target := ocispec.Descriptor{MediaType: im.Target.MediaType, Digest: digest.Digest(im.Target.Digest), Size: im.Target.Size}
		if err := e.collect(ctx, target, fmt.Sprintf("image %q", im.Name), 0, false); err != nil {
			return err
		}
		target.Annotations = map[string]string{AnnotationRefName: im.Name, AnnotationImageName: im.Name}
		index.Manifests = append(index.Manifests, target)
	}
	dgsts := make([]digest.Digest, 0, len(blobs))
	for d := range blobs {
		dgsts = append(dgsts, d)
	}
	sort.Slice(dgsts, func(i, j int) bool { return dgsts[i] < dgsts[j] })

	tw := tar.NewWriter(w)
	if err := writeTarFile(tw, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	for _, d := range dgsts {
		if err := s.exportBlob(ctx, tw, d); err != nil {
			return err
		}
	}
	raw, err := json.Marshal(index)
	if err != nil {
		return err
	}
	if err := writeTarFile(tw, "index.json", raw); err != nil {
		return err
	}
	return tw.Close()
}

type exporter struct {
	s     *Service
	match platforms.Matcher
	all   bool
	img   metadata.Image
	blobs map[digest.Digest]int64
}

func (e *exporter) need(ctx context.Context, d ocispec.Descriptor, what string, layer bool) error {
	if err := checkDescriptor(d, what); err != nil {
		return err
	}
	info, err := e.s.cs.Info(ctx, d.Digest)
	if errdefs.IsNotFound(err) {
		if layer && e.img.Labels[LabelLayersDiscarded] != "" {
			return fmt.Errorf("image %q: %s %s was discarded after unpacking (discard_layers is on); pull the image again to export it: %w",
				e.img.Name, what, d.Digest, errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("image %q: %s %s is not in the content store: %w", e.img.Name, what, d.Digest, errdefs.ErrNotFound)
	}
	if err != nil {
		return err
	}
	e.blobs[d.Digest] = info.Size
	return nil
}

func (e *exporter) collect(ctx context.Context, d ocispec.Descriptor, where string, depth int, chosen bool) error {
	if depth > 4 {
		return fmt.Errorf("%s: indexes nested too deep: %w", where, errdefs.ErrInvalidArgument)
	}
	if err := e.need(ctx, d, where, false); err != nil {
		return err
	}
	kind, _, err := e.s.docKind(ctx, d)
	if err != nil {
		return err
	}
	switch kind {
	case "index":
		var idx ocispec.Index
		if err := e.s.readJSONBlob(ctx, d.Digest, "index", &idx); err != nil {
			return err
		}
		n := 0
		for i, c := range idx.Manifests {
			if !e.all && (c.Platform == nil || !e.match.Match(*c.Platform)) {
				continue
			}
			if err := e.collect(ctx, c, fmt.Sprintf("manifest %d of index %s", i, d.Digest), depth+1, true); err != nil {
				return err
			}
			n++
		}
		if n == 0 && !e.all {
			return e.match.NoMatchError(fmt.Sprintf("index %s (%s)", d.Digest, where))
		}
		return nil
	case "manifest":
		var m ocispec.Manifest
		if err := e.s.readJSONBlob(ctx, d.Digest, "manifest", &m); err != nil {
			return err
		}
		if err := e.need(ctx, m.Config, "config", false); err != nil {
			return err
		}
		for i, l := range m.Layers {
			if err := e.need(ctx, l, fmt.Sprintf("layer %d", i), true); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%s: descriptor %s has unsupported media type %q: %w", where, d.Digest, d.MediaType, errdefs.ErrInvalidArgument)
}

func (s *Service) exportBlob(ctx context.Context, tw *tar.Writer, d digest.Digest) error {
	ra, err := s.cs.ReaderAt(ctx, d)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer ra.Close()
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "blobs/sha256/" + d.Encoded(), Mode: 0o444, Size: ra.Size(), ModTime: exportEpoch(), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	buf := make([]byte, 128<<10)
	if _, err := io.CopyBuffer(tw, &ctxReader{ctx: ctx, r: io.NewSectionReader(ra, 0, ra.Size())}, buf); err != nil {
		return fmt.Errorf("export blob %s: %w", d, err)
	}
	return nil
}

func writeTarFile(tw *tar.Writer, name string, data []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o444, Size: int64(len(data)), ModTime: exportEpoch(), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
