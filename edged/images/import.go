package images

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images/platforms"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/fsstore/compression"
	"github.com/edged/edged/fsstore/content"
)

// ImportOptions tune Import.
type ImportOptions struct {
	// Platform ("os/arch[/variant]") selects the manifest of multi-platform
	// images; empty means the service's default platform.
	Platform string
	// AllPlatforms keeps every manifest of an index (all must be in the
	// archive); only the best match for Platform is unpacked, if any.
	AllPlatforms bool
	// IndexName is the repository (tag ignored) that tag-only
	// org.opencontainers.image.ref.name annotations ("1.36") are appended
	// to, and the name of the image when the archive names none (one
	// entry: that entry; several: a new index of them).
	IndexName string
	// SkipUnpack only stores the content.
	SkipUnpack bool
}

var (
	legacyLayerRe  = regexp.MustCompile(`^[a-f0-9]{64}/layer\.tar$`)
	legacyConfigRe = regexp.MustCompile(`^[a-f0-9]{64}\.json$`)
	blobNameRe     = regexp.MustCompile(`^blobs/sha256/[a-f0-9]{64}$`)
)

// importer holds the state of one Import.
type importer struct {
	s     *Service
	ns    string
	lease *lease
	opts  ImportOptions
	match platforms.Matcher
	buf   []byte

	blobs     map[digest.Digest]int64  // blobs present (written or already there)
	paths     map[string]digest.Digest // archive path → blob (blobs/..., docker files)
	links     map[string]string        // archive symlink/hardlink → target path
	gzipBlobs map[digest.Digest]bool   // docker layer.tar files that are gzip
	layout    bool
	indexJSON []byte
	manifest  []byte
	nref      int

	// staged are the layer blobs extracted from the stream (streamLayers).
	staged map[digest.Digest]*stagedLayer

	// Counters for tests and benchmarks.
	written, skipped, streamed int64
}

// planImage is one image record to create.
type planImage struct {
	name    string
	target  ocispec.Descriptor
	content map[digest.Digest]int64
	best    *planManifest // manifest to unpack (best platform match), nil if none
	rank    int
}

type planManifest struct {
	desc     ocispec.Descriptor
	manifest ocispec.Manifest
	config   ocispec.Image
}

// Import reads an OCI image-layout or "docker save" tar (optionally gzip or
// zstd compressed) from r, in one pass, and records its images in
// namespace ns, unpacking the chosen platform's layers unless
// opts.SkipUnpack. Blobs are written to the content store as they stream
// by (blobs already present are skipped: namespaces share them); the
// archive's index.json / manifest.json is interpreted at the end. It
// returns the images created or updated, ordered by name.
//
// Hostile archives are refused: entry names with ".." or absolute paths,
// blob names not of the form blobs/sha256/<hex>, blobs whose content does
// not match their name (ErrDataLoss), JSON documents over MaxJSONSize
// (ErrResourceExhausted), blobs missing for the chosen manifest
// (ErrNotFound naming the digest). No manifest for the platform is
// ErrNotFound "no manifest for platform ... in ...".
func (s *Service) Import(ctx context.Context, ns string, r io.Reader, opts ImportOptions) ([]metadata.Image, error) {
	imgs, _, err := s.importArchive(ctx, ns, r, opts)
	return imgs, err
}

// importStats reports the bytes an import wrote, skipped, and extracted
// without storing them (streamed layers).
type importStats struct{ written, skipped, streamed int64 }

func (s *Service) importArchive(ctx context.Context, ns string, r io.Reader, opts ImportOptions) (_ []metadata.Image, _ importStats, retErr error) {
	if err := checkNamespace(ns); err != nil {
		return nil, importStats{}, err
	}
	match := s.platform
	if opts.Platform != "" {
		p, err := platforms.Parse(opts.Platform)
		if err != nil {
			return nil, importStats{}, err
		}
		match = platforms.NewMatcher(p)
	}
	if opts.IndexName != "" {
		n, err := NormalizeName(opts.IndexName)
		if err != nil {
			return nil, importStats{}, err
		}
		opts.IndexName = n
	}
	l, err := s.newLease(ctx, ns)
	if err != nil {
		return nil, importStats{}, err
	}
	done := false
	defer func() {
		if !done {
			l.release()
		}
	}()
	im := &importer{
		s: s, ns: ns, lease: l, opts: opts, match: match, buf: make([]byte, 128<<10),
		blobs: map[digest.Digest]int64{}, paths: map[string]digest.Digest{},
		links: map[string]string{}, gzipBlobs: map[digest.Digest]bool{},
		staged: map[digest.Digest]*stagedLayer{},
	}
	defer func() {
		for _, st := range im.staged {
			s.removeStaged(ns, st)
		}
	}()
	if err := im.read(ctx, r); err != nil {
		return nil, importStats{}, err
	}
	stats := importStats{written: im.written, skipped: im.skipped, streamed: im.streamed}
	var plan []*planImage
	switch {
	case im.indexJSON != nil:
		plan, err = im.planOCI(ctx)
	case im.manifest != nil:
		plan, err = im.planDocker(ctx)
	default:
		err = fmt.Errorf("archive is neither an OCI image layout nor a docker save archive: it has no index.json and no manifest.json: %w", errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, stats, err
	}
	discard := map[digest.Digest]bool{}
	if !opts.SkipUnpack {
		unpacked := map[digest.Digest]bool{}
		for _, pi := range plan {
			if pi.best == nil || unpacked[pi.best.desc.Digest] {
				continue
			}
			if err := s.unpackStaged(ctx, ns, l, pi.best, im.staged); err != nil {
				return nil, stats, err
			}
			unpacked[pi.best.desc.Digest] = true
			if s.opts.DiscardLayers {
				for _, ld := range pi.best.manifest.Layers {
					discard[ld.Digest] = true
				}
			}
		}
	}
	// Every streamed layer an image keeps must have been unpacked: its
	// blob was never stored.
	for _, pi := range plan {
		for d := range pi.content {
			if im.staged[d] != nil && !discard[d] {
				return nil, stats, fmt.Errorf("layer %s was extracted from the archive without being stored (discard_layers), but image %q keeps it without unpacking it: %w", d, pi.name, errdefs.ErrFailedPrecondition)
			}
		}
	}
	if s.hooks.beforeRecord != nil {
		s.hooks.beforeRecord()
	}
	out, err := s.record(ctx, ns, l, plan, discard)
	if err != nil {
		return nil, stats, err
	}
	done = true
	if len(discard) > 0 {
		if err := s.discardBlobs(ctx, discard); err != nil {
			s.log.Warn("images: cannot discard unpacked layers; GC will not remove them while referenced", "error", err)
		}
	}
	return out, stats, nil
}

// record creates or updates the image records, adds the namespace's content
// rows and deletes the lease, in one transaction.
func (s *Service) record(ctx context.Context, ns string, l *lease, plan []*planImage, discard map[digest.Digest]bool) ([]metadata.Image, error) {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	byName := map[string]metadata.Image{}
	err := s.db.Update(ctx, func(tx *metadata.Tx) error {
		for _, pi := range plan {
			labels := map[string]string{}
			discarded := pi.best != nil && len(discard) > 0
			if discarded {
				labels[LabelLayersDiscarded] = "true"
			}
			target := metadata.Descriptor{MediaType: pi.target.MediaType, Digest: pi.target.Digest.String(), Size: pi.target.Size, Annotations: pi.target.Annotations}
			img := metadata.Image{Name: pi.name, Target: target, Labels: labels}
			cur, err := tx.GetImage(ctx, ns, pi.name)
			switch {
			case errdefs.IsNotFound(err):
				cur, err = tx.CreateImage(ctx, ns, img)
			case err == nil:
				cur, err = tx.UpdateImage(ctx, ns, img, "target", "labels."+LabelLayersDiscarded)
			}
			if err != nil {
				return err
			}
			byName[pi.name] = cur
			for d, size := range pi.content {
				if discard[d] {
					continue
				}
				if _, err := tx.AddContent(ctx, ns, d.String(), size, nil); err != nil {
					return err
				}
			}
		}
		return tx.DeleteLease(ctx, ns, l.id)
	})
	if err != nil {
		return nil, fmt.Errorf("record images: %w", err)
	}
	out := make([]metadata.Image, 0, len(byName))
	for _, im := range byName {
		out = append(out, im)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// discardBlobs deletes layer blobs no namespace references and no lease
// holds.
func (s *Service) discardBlobs(ctx context.Context, dgsts map[digest.Digest]bool) error {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	var leased []string
	var drop []digest.Digest
	err := s.db.View(ctx, func(tx *metadata.Tx) error {
		var err error
		if leased, err = tx.LeasedResources(ctx, metadata.ResourceContent); err != nil {
			return err
		}
		held := map[string]bool{}
		for _, d := range leased {
			held[d] = true
		}
		for d := range dgsts {
			nss, err := tx.NamespacesReferencing(ctx, d.String())
			if err != nil {
				return err
			}
			if len(nss) == 0 && !held[d.String()] {
				drop = append(drop, d)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range drop {
		if err := s.cs.Delete(ctx, d); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// srcError marks an error of the archive stream (as opposed to one of the
// content store) while copying an entry.
type srcError struct{ err error }

func (e *srcError) Error() string { return e.err.Error() }
func (e *srcError) Unwrap() error { return e.err }

type srcReader struct{ r io.Reader }

func (s srcReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &srcError{err}
	}
	return n, err
}

// archiveError classifies an error reading the archive stream.
func archiveError(err error) error {
	var se *srcError
	if errors.As(err, &se) {
		err = se.err
	}
	switch {
	case errors.Is(err, errdefs.ErrDataLoss), errors.Is(err, errdefs.ErrResourceExhausted),
		errors.Is(err, errdefs.ErrNotImplemented),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("archive: %w", err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("archive is truncated: %w: %w", err, errdefs.ErrDataLoss)
	case errors.Is(err, tar.ErrHeader), errors.Is(err, tar.ErrFieldTooLong), errors.Is(err, tar.ErrInsecurePath):
		return fmt.Errorf("archive is not a valid tar stream: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("read archive: %w", err)
}

func (im *importer) read(ctx context.Context, r io.Reader) error {
	zr, _, err := compression.NewReader(r, "")
	if err != nil {
		return archiveError(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	entries := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			if entries == 0 {
				return fmt.Errorf("archive is empty or not a tar stream: %w", errdefs.ErrInvalidArgument)
			}
			return nil
		}
		if err != nil {
			return archiveError(err)
		}
		entries++
		if err := im.entry(ctx, hdr, srcReader{tr}); err != nil {
			var se *srcError
			if errors.As(err, &se) {
				return archiveError(err)
			}
			return err
		}
	}
}

// cleanEntryName validates an archive entry name: no NUL, no "..", not
// absolute. "./" prefixes are dropped.
func cleanEntryName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 || len(name) > 4096 {
		return "", fmt.Errorf("archive entry %.100q: invalid name: %w", name, errdefs.ErrInvalidArgument)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("archive entry %.100q: name contains \"..\": %w", name, errdefs.ErrInvalidArgument)
		}
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("archive entry %.100q: absolute name: %w", name, errdefs.ErrInvalidArgument)
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

func (im *importer) entry(ctx context.Context, hdr *tar.Header, r io.Reader) error {
	name, err := cleanEntryName(hdr.Name)
	if err != nil || name == "" {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return nil
	case tar.TypeSymlink, tar.TypeLink:
		if strings.HasPrefix(name, "blobs/") {
			return fmt.Errorf("archive entry %q: blobs must be regular files, not links: %w", name, errdefs.ErrInvalidArgument)
		}
		target := hdr.Linkname
		if hdr.Typeflag == tar.TypeSymlink && !strings.HasPrefix(target, "/") {
			target = path.Join(path.Dir(name), target)
		}
		t, err := cleanEntryName(strings.TrimPrefix(path.Clean(target), "/"))
		if c := path.Clean(target); err != nil || c == ".." || strings.HasPrefix(c, "../") {
			return fmt.Errorf("archive entry %q: link target %.100q escapes the archive: %w", name, hdr.Linkname, errdefs.ErrInvalidArgument)
		}
		im.links[name] = t
		return nil
	case tar.TypeReg, tar.TypeRegA:
	default:
		return nil // devices, fifos: nothing an image archive needs
	}
	switch {
	case name == "oci-layout":
		b, err := readCapped(r, hdr.Size, name, 4096)
		if err != nil {
			return err
		}
		var lay ocispec.ImageLayout
		if err := decodeJSON(b, "archive entry", name, &lay); err != nil {
			return err
		}
		if !strings.HasPrefix(lay.Version, "1.") {
			return fmt.Errorf("oci-layout version %q is not supported (want 1.x): %w", lay.Version, errdefs.ErrNotImplemented)
		}
		im.layout = true
	case name == "index.json":
		im.indexJSON, err = readCapped(r, hdr.Size, name, MaxJSONSize)
		return err
	case name == "manifest.json":
		im.manifest, err = readCapped(r, hdr.Size, name, MaxJSONSize)
		return err
	case strings.HasPrefix(name, "blobs/"):
		if !blobNameRe.MatchString(name) {
			return fmt.Errorf("archive entry %.100q: blob names must be blobs/sha256/<64 lowercase hex digits>: %w", hdr.Name, errdefs.ErrInvalidArgument)
		}
		dgst := digest.NewDigestFromEncoded(digest.SHA256, path.Base(name))
		if im.streamLayers() {
			handled, rest, err := im.stageLayer(ctx, name, dgst, hdr.Size, r)
			if err != nil {
				return err
			}
			if handled {
				im.paths[name] = dgst
				return nil
			}
			r = rest
		}
		if err := im.writeKnown(ctx, name, dgst, hdr.Size, r); err != nil {
			return err
		}
		im.paths[name] = dgst
	case legacyLayerRe.MatchString(name) || legacyConfigRe.MatchString(name):
		dgst, err := im.writeUnknown(ctx, name, hdr.Size, r)
		if err != nil {
			return err
		}
		im.paths[name] = dgst
	}
	return nil
}

func readCapped(r io.Reader, size int64, name string, max int64) ([]byte, error) {
	if size > max {
		return nil, fmt.Errorf("archive entry %q is %d bytes, more than the %d byte limit: %w", name, size, max, errdefs.ErrResourceExhausted)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, &srcError{err}
	}
	return b, nil
}

// writeKnown stores the blob of archive entry name, whose digest the name
// gives. A blob already in the store is not written again.
func (im *importer) writeKnown(ctx context.Context, name string, dgst digest.Digest, size int64, r io.Reader) error {
	s := im.s
	// Lease the blob and check for it under the GC lock: once leased it
	// cannot be collected, and if it exists now it stays.
	s.gcMu.RLock()
	err := im.lease.add(ctx, metadata.ResourceContent, dgst.String())
	var info content.Info
	if err == nil {
		info, err = s.cs.Info(ctx, dgst)
	}
	s.gcMu.RUnlock()
	if err == nil {
		im.blobs[dgst] = info.Size
		im.skipped += size
		return nil
	}
	if !errdefs.IsNotFound(err) {
		return fmt.Errorf("archive entry %q: %w", name, err)
	}
	im.nref++
	ref := fmt.Sprintf("%s-%d", im.lease.id, im.nref)
	w, err := s.cs.Writer(ctx, ref, content.WriterOpts{Expected: dgst, Total: size})
	if errdefs.IsAlreadyExists(err) { // written meanwhile by a concurrent import
		im.skipped += size
		return im.recordStored(ctx, name, dgst)
	}
	if err != nil {
		return fmt.Errorf("archive entry %q: %w", name, err)
	}
	committed := false
	defer func() {
		if !committed {
			w.Close()
			s.cs.Abort(context.Background(), ref)
		}
	}()
	if _, err := io.CopyBuffer(w, r, im.buf); err != nil {
		return fmt.Errorf("archive entry %q: %w", name, err)
	}
	err = w.Commit(ctx, size, "")
	switch {
	case err == nil:
		im.written += size
	case errdefs.IsAlreadyExists(err):
		im.skipped += size
		committed = true
		return im.recordStored(ctx, name, dgst)
	case errdefs.IsFailedPrecondition(err) && w.Digest() != dgst:
		return fmt.Errorf("archive entry %q: blob content does not match its digest %s (got %s): %w", name, dgst, w.Digest(), errdefs.ErrDataLoss)
	default:
		return fmt.Errorf("archive entry %q: %w", name, err)
	}
	committed = true
	im.blobs[dgst] = size
	return nil
}

// recordStored records blob dgst, which a concurrent writer stored, with its
// size in the store: the archive entry's own size was not checked against
// the content (it was not read, or not kept), and the descriptors that
// name the blob are checked against what is recorded here.
func (im *importer) recordStored(ctx context.Context, name string, dgst digest.Digest) error {
	info, err := im.s.cs.Info(ctx, dgst)
	if err != nil {
		return fmt.Errorf("archive entry %q: %w", name, err)
	}
	im.blobs[dgst] = info.Size
	return nil
}

// writeUnknown stores a docker-save file whose digest is only known once
// it is read. If the blob exists, the commit finds it and drops the copy.
func (im *importer) writeUnknown(ctx context.Context, name string, size int64, r io.Reader) (digest.Digest, error) {
	s := im.s
	im.nref++
	ref := fmt.Sprintf("%s-%d", im.lease.id, im.nref)
	w, err := s.cs.Writer(ctx, ref, content.WriterOpts{Total: size})
	if err != nil {
		return "", fmt.Errorf("archive entry %q: %w", name, err)
	}
	committed := false
	defer func() {
		if !committed {
			w.Close()
			s.cs.Abort(context.Background(), ref)
		}
	}()
	hr := &headReader{r: r}
	if _, err := io.CopyBuffer(w, hr, im.buf); err != nil {
		return "", fmt.Errorf("archive entry %q: %w", name, err)
	}
	dgst := w.Digest()
	s.gcMu.RLock()
	err = im.lease.add(ctx, metadata.ResourceContent, dgst.String())
	if err == nil {
		err = w.Commit(ctx, size, "")
	}
	s.gcMu.RUnlock()
	switch {
	case err == nil:
		im.written += size
	case errdefs.IsAlreadyExists(err):
		im.skipped += size
	default:
		return "", fmt.Errorf("archive entry %q: %w", name, err)
	}
	committed = true
	im.blobs[dgst] = size
	if alg, _ := compression.Detect(hr.head[:hr.n]); alg == compression.Gzip {
		im.gzipBlobs[dgst] = true
	}
	return dgst, nil
}

// headReader keeps the first bytes read, to detect compression.
type headReader struct {
	r    io.Reader
	head [8]byte
	n    int
}

func (h *headReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if h.n < len(h.head) {
		h.n += copy(h.head[h.n:], p[:n])
	}
	return n, err
}

// writeBytes stores a small document the importer generated.
func (im *importer) writeBytes(ctx context.Context, b []byte) (digest.Digest, error) {
	dgst := digest.FromBytes(b)
	if err := im.writeKnown(ctx, "generated "+dgst.String(), dgst, int64(len(b)), bytes.NewReader(b)); err != nil {
		return "", err
	}
	return dgst, nil
}

func (im *importer) missing(d digest.Digest, what string) error {
	return fmt.Errorf("blob %s (%s) is missing from the archive: %w", d, what, errdefs.ErrNotFound)
}

// present checks that the archive held blob d with the descriptor's size.
func (im *importer) present(d ocispec.Descriptor, what string) error {
	if err := checkDescriptor(d, what); err != nil {
		return err
	}
	size, ok := im.blobs[d.Digest]
	if !ok {
		return im.missing(d.Digest, what)
	}
	if size != d.Size {
		return fmt.Errorf("%s: descriptor of %s says %d bytes, the blob has %d: %w", what, d.Digest, d.Size, size, errdefs.ErrInvalidArgument)
	}
	return nil
}

// platformOf returns a manifest's platform: its descriptor's, or its
// config's when the descriptor has none and the blobs are there.
func (im *importer) platformOf(ctx context.Context, d ocispec.Descriptor) (*ocispec.Platform, error) {
	if d.Platform != nil {
		return d.Platform, nil
	}
	if _, ok := im.blobs[d.Digest]; !ok {
		return nil, nil
	}
	var m ocispec.Manifest
	if err := im.s.readJSONBlob(ctx, d.Digest, "manifest", &m); err != nil {
		return nil, err
	}
	if _, ok := im.blobs[m.Config.Digest]; !ok || checkDescriptor(m.Config, "config") != nil {
		return nil, nil
	}
	var cfg ocispec.Image
	if err := im.s.readJSONBlob(ctx, m.Config.Digest, "config", &cfg); err != nil {
		return nil, err
	}
	return &ocispec.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}, nil
}

// resolve checks the blobs of target d (index or manifest) and fills pi:
// its content and the best manifest to unpack. where names d in errors.
func (im *importer) resolve(ctx context.Context, d ocispec.Descriptor, where string, pi *planImage, depth int, chosen bool) error {
	if depth > 4 {
		return fmt.Errorf("%s: indexes nested too deep: %w", where, errdefs.ErrInvalidArgument)
	}
	if err := im.present(d, where); err != nil {
		return err
	}
	kind, _, err := im.s.docKind(ctx, d)
	if err != nil {
		return err
	}
	pi.content[d.Digest] = d.Size
	switch kind {
	case "index":
		var idx ocispec.Index
		if err := im.s.readJSONBlob(ctx, d.Digest, "index", &idx); err != nil {
			return err
		}
		if im.opts.AllPlatforms {
			for i, c := range idx.Manifests {
				if err := im.resolve(ctx, c, fmt.Sprintf("manifest %d of index %s", i, d.Digest), pi, depth+1, false); err != nil {
					return err
				}
			}
			return nil
		}
		cands := make([]ocispec.Descriptor, len(idx.Manifests))
		for i, c := range idx.Manifests {
			cands[i] = c
			if c.Platform == nil {
				if p, err := im.platformOf(ctx, c); err == nil && p != nil {
					cands[i].Platform = p
				}
			}
		}
		best := im.match.Best(cands)
		if best < 0 {
			return im.match.NoMatchError(fmt.Sprintf("index %s (%s)", d.Digest, where))
		}
		return im.resolve(ctx, idx.Manifests[best], fmt.Sprintf("manifest %s of index %s", idx.Manifests[best].Digest, d.Digest), pi, depth+1, true)
	case "manifest":
		var m ocispec.Manifest
		if err := im.s.readJSONBlob(ctx, d.Digest, "manifest", &m); err != nil {
			return err
		}
		if err := im.present(m.Config, "config of manifest "+d.Digest.String()); err != nil {
			return err
		}
		var cfg ocispec.Image
		if err := im.s.readJSONBlob(ctx, m.Config.Digest, "config", &cfg); err != nil {
			return err
		}
		p := d.Platform
		if p == nil {
			p = &ocispec.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
		}
		rank := im.match.Rank(*p)
		if !im.opts.AllPlatforms && !chosen && rank < 0 {
			return im.match.NoMatchError(fmt.Sprintf("%s (manifest %s is for %s)", where, d.Digest, platforms.Format(platforms.Normalize(*p))))
		}
		pi.content[m.Config.Digest] = m.Config.Size
		isImage := cfg.RootFS.Type != "" || len(m.Layers) > 0
		if isImage && len(cfg.RootFS.DiffIDs) != len(m.Layers) {
			return fmt.Errorf("manifest %s has %d layers but its config %s lists %d diff IDs: %w",
				d.Digest, len(m.Layers), m.Config.Digest, len(cfg.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
		}
		for i, l := range m.Layers {
			what := fmt.Sprintf("layer %d of manifest %s", i, d.Digest)
			if !isLayerType(l.MediaType) {
				return fmt.Errorf("%s: unsupported layer media type %q: %w", what, l.MediaType, errdefs.ErrNotImplemented)
			}
			if err := im.present(l, what); err != nil {
				return err
			}
			if err := cfg.RootFS.DiffIDs[i].Validate(); err != nil {
				return fmt.Errorf("%s: diff ID %q: %v: %w", what, cfg.RootFS.DiffIDs[i], err, errdefs.ErrInvalidArgument)
			}
			pi.content[l.Digest] = l.Size
		}
		if rank >= 0 && isImage && (pi.best == nil || rank < pi.rank) {
			pi.best = &planManifest{desc: d, manifest: m, config: cfg}
			pi.rank = rank
		}
		return nil
	}
	return fmt.Errorf("%s: descriptor %s has unsupported media type %q (want an image index or manifest): %w",
		where, d.Digest, d.MediaType, errdefs.ErrInvalidArgument)
}

func (im *importer) planOCI(ctx context.Context) ([]*planImage, error) {
	var idx ocispec.Index
	if err := decodeJSON(im.indexJSON, "archive entry", "index.json", &idx); err != nil {
		return nil, err
	}
	if len(idx.Manifests) == 0 {
		return nil, fmt.Errorf("index.json lists no images: %w", errdefs.ErrInvalidArgument)
	}
	var plan []*planImage
	var unnamed []ocispec.Descriptor
	for i, d := range idx.Manifests {
		var names []string
		if n := d.Annotations[AnnotationImageName]; n != "" {
			nn, err := NormalizeName(n)
			if err != nil {
				return nil, fmt.Errorf("index.json entry %d: %w", i, err)
			}
			names = append(names, nn)
		} else if n := d.Annotations[AnnotationRefName]; n != "" {
			switch {
			case !isTagOnly(n):
				nn, err := NormalizeName(n)
				if err != nil {
					return nil, fmt.Errorf("index.json entry %d: %w", i, err)
				}
				names = append(names, nn)
			case im.opts.IndexName != "":
				names = append(names, repository(im.opts.IndexName)+":"+n)
			default:
				im.s.log.Warn("images: import: index.json entry names only a tag and no IndexName was given; entry not named", "tag", n, "digest", d.Digest)
			}
		}
		if len(names) == 0 {
			unnamed = append(unnamed, d)
			continue
		}
		for _, n := range names {
			pi := &planImage{name: n, target: d, content: map[digest.Digest]int64{}}
			pi.target.Annotations = nil
			if err := im.resolve(ctx, d, fmt.Sprintf("image %q", n), pi, 0, false); err != nil {
				return nil, err
			}
			plan = append(plan, pi)
		}
	}
	if len(plan) == 0 {
		if im.opts.IndexName == "" {
			return nil, fmt.Errorf("the archive names no image (no %s or %s annotation in index.json); give an index name: %w",
				AnnotationImageName, AnnotationRefName, errdefs.ErrInvalidArgument)
		}
		target := unnamed[0]
		target.Annotations = nil
		if len(unnamed) > 1 {
			var err error
			if target, err = im.newIndex(ctx, unnamed); err != nil {
				return nil, err
			}
		}
		pi := &planImage{name: im.opts.IndexName, target: target, content: map[digest.Digest]int64{}}
		if err := im.resolve(ctx, target, fmt.Sprintf("image %q", pi.name), pi, 0, false); err != nil {
			return nil, err
		}
		plan = append(plan, pi)
	}
	return plan, nil
}

func (im *importer) newIndex(ctx context.Context, descs []ocispec.Descriptor) (ocispec.Descriptor, error) {
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: descs}
	b, err := json.Marshal(idx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d, err := im.writeBytes(ctx, b)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: d, Size: int64(len(b))}, nil
}

// lookupPath resolves an archive path (following the archive's own links)
// to the blob stored from it.
func (im *importer) lookupPath(p string) (digest.Digest, bool) {
	p, err := cleanEntryName(p)
	if err != nil {
		return "", false
	}
	for range 10 {
		if d, ok := im.paths[p]; ok {
			return d, true
		}
		t, ok := im.links[p]
		if !ok {
			return "", false
		}
		p = t
	}
	return "", false
}

type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// planDocker builds an OCI manifest for each image of a docker save
// archive's manifest.json.
func (im *importer) planDocker(ctx context.Context) ([]*planImage, error) {
	var entries []dockerManifest
	if err := decodeJSON(im.manifest, "archive entry", "manifest.json", &entries); err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("manifest.json lists no images: %w", errdefs.ErrInvalidArgument)
	}
	var plan []*planImage
	for i, e := range entries {
		where := fmt.Sprintf("manifest.json entry %d", i)
		cfgDgst, ok := im.lookupPath(e.Config)
		if !ok {
			return nil, fmt.Errorf("%s: config %.100q is missing from the archive: %w", where, e.Config, errdefs.ErrNotFound)
		}
		var cfg ocispec.Image
		if err := im.s.readJSONBlob(ctx, cfgDgst, "config", &cfg); err != nil {
			return nil, err
		}
		if len(cfg.RootFS.DiffIDs) != len(e.Layers) {
			return nil, fmt.Errorf("%s: %d layers but the config lists %d diff IDs: %w", where, len(e.Layers), len(cfg.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
		}
		m := ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfgDgst, Size: im.blobs[cfgDgst]},
			Layers:    []ocispec.Descriptor{},
		}
		for j, lp := range e.Layers {
			ld, ok := im.lookupPath(lp)
			if !ok {
				return nil, fmt.Errorf("%s: layer %d %.100q is missing from the archive: %w", where, j, lp, errdefs.ErrNotFound)
			}
			mt := compression.MediaTypeDockerLayer
			if im.gzipBlobs[ld] {
				mt = compression.MediaTypeDockerLayerGzip
			}
			m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: mt, Digest: ld, Size: im.blobs[ld]})
		}
		raw, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		md, err := im.writeBytes(ctx, raw)
		if err != nil {
			return nil, err
		}
		p := &ocispec.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: md, Size: int64(len(raw)), Platform: p}
		var names []string
		for _, t := range e.RepoTags {
			n, err := NormalizeName(t)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			names = append(names, n)
		}
		if len(names) == 0 {
			if im.opts.IndexName == "" {
				return nil, fmt.Errorf("%s has no RepoTags; give an index name: %w", where, errdefs.ErrInvalidArgument)
			}
			names = []string{im.opts.IndexName}
		}
		for _, n := range names {
			pi := &planImage{name: n, target: desc, content: map[digest.Digest]int64{}}
			pi.target.Platform = nil
			if err := im.resolve(ctx, desc, fmt.Sprintf("image %q", n), pi, 0, false); err != nil {
				return nil, err
			}
			plan = append(plan, pi)
		}
	}
	return plan, nil
}
