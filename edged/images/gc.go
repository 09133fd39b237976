package images

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/fsstore/content"
)

// GCResult reports what a garbage collection removed.
type GCResult struct {
	RemovedLeases      int   // expired leases deleted
	RemovedContentRefs int   // namespace content rows deleted
	RemovedBlobs       int   // blob files deleted
	RemovedSnapshots   int   // snapshots removed
	FreedBytes         int64 // blob sizes plus snapshot usage
	Duration           time.Duration
}

// walker walks the content graph from a blob: index → manifests →
// config and layers. Configs give chain IDs (the snapshots of the image).
type walker struct {
	s         *Service
	seen      map[digest.Digest]visit
	onBlob    func(d digest.Digest, size int64) // blobs present in the store
	onChain   func(key string)                  // snapshot keys (chain IDs)
	rowLabels map[digest.Digest]map[string]string
}

// node is the union of the fields of an index, a manifest and a config.
type node struct {
	Manifests []ocispec.Descriptor `json:"manifests"`
	Config    *ocispec.Descriptor  `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
	RootFS    *ocispec.RootFS      `json:"rootfs"`
}

// visit records how far the walker went with a digest.
type visit uint8

const (
	visitedLeaf visit = 1 + iota // reached as a layer: labels and blob only
	visitedDoc                   // also read as a document (index, manifest, config)
)

// walk visits d. Missing blobs are skipped (other platforms, discarded
// layers); unreadable documents (bad JSON, too big) are leaves; other
// errors (I/O) abort.
//
// The media type is only what the referrer claims: the same blob may be a
// layer of one image and the config (or manifest, index) of another, and
// the images are walked in name order. So a blob first reached as a layer
// is walked again, once, when reached in another role; otherwise an image
// listing another's config as a layer would hide that config's snapshots
// from GC. Each digest is thus handled at most twice.
func (w *walker) walk(ctx context.Context, d digest.Digest, mediaType string) error {
	want := visitedDoc
	if isLayerType(mediaType) {
		want = visitedLeaf
	}
	prev := w.seen[d]
	if prev >= want || d.Validate() != nil || d.Algorithm() != digest.SHA256 {
		return nil
	}
	w.seen[d] = want // before the children: documents may form cycles
	if prev == 0 {
		for k, v := range w.rowLabels[d] {
			switch {
			case strings.HasPrefix(k, LabelGCRefContent):
				if err := w.walk(ctx, digest.Digest(v), ""); err != nil {
					return err
				}
			case strings.HasPrefix(k, LabelGCRefSnapshot) && w.onChain != nil:
				w.onChain(v)
			}
		}
	}
	info, err := w.s.cs.Info(ctx, d)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if prev == 0 && w.onBlob != nil {
		w.onBlob(d, info.Size)
	}
	if want == visitedLeaf || info.Size > MaxJSONSize || info.Size < 2 {
		return nil
	}
	return w.walkDoc(ctx, d, mediaType)
}

// walkDoc reads d as a document (index, manifest or config), if it is one,
// and walks its children.
func (w *walker) walkDoc(ctx context.Context, d digest.Digest, mediaType string) error {
	if mediaType == "" { // unknown: only JSON documents have children
		ra, err := w.s.cs.ReaderAt(ctx, d)
		if err != nil {
			return ignoreGone(err)
		}
		var b [1]byte
		_, err = ra.ReadAt(b[:], 0)
		ra.Close()
		if err != nil || b[0] != '{' {
			return nil
		}
	}
	var n node
	if err := w.s.readJSONBlob(ctx, d, "document", &n); err != nil {
		if errdefs.IsInvalidArgument(err) || errors.Is(err, errdefs.ErrResourceExhausted) {
			return nil
		}
		return ignoreGone(err)
	}
	for _, c := range n.Manifests {
		if err := w.walk(ctx, c.Digest, c.MediaType); err != nil {
			return err
		}
	}
	if n.Config != nil {
		mt := n.Config.MediaType
		if mt == "" {
			mt = ocispec.MediaTypeImageConfig
		}
		if err := w.walk(ctx, n.Config.Digest, mt); err != nil {
			return err
		}
	}
	for _, l := range n.Layers {
		mt := l.MediaType
		if mt == "" {
			mt = ocispec.MediaTypeImageLayer // never read layers as documents
		}
		if err := w.walk(ctx, l.Digest, mt); err != nil {
			return err
		}
	}
	if n.RootFS != nil && w.onChain != nil {
		valid := true
		for _, d := range n.RootFS.DiffIDs {
			valid = valid && d.Validate() == nil
		}
		if valid {
			for _, c := range chainIDs(n.RootFS.DiffIDs) {
				w.onChain(c.String())
			}
		}
	}
	return nil
}

func ignoreGone(err error) error {
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// GarbageCollect removes, across all namespaces, what no image, container
// or lease references: content rows, then blob files no namespace or lease
// references, then snapshots (children first). Expired leases are deleted
// first. See the package documentation for the roots.
func (s *Service) GarbageCollect(ctx context.Context) (GCResult, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	res, err := s.collect(ctx)
	if err == nil {
		// Give the metadata file's free pages back too.
		if verr := s.db.Vacuum(ctx); verr != nil {
			s.log.Warn("metadata vacuum after garbage collection", "error", verr)
		}
	}
	return res, err
}

func (s *Service) collect(ctx context.Context) (GCResult, error) {
	start := time.Now()
	var res GCResult
	snapNS, err := s.snapshotNamespaces(ctx)
	if err != nil {
		return res, err
	}
	snapRoots := map[string]map[string]bool{} // ns → snapshot keys to keep
	referenced := map[string]bool{}
	leased := map[string]bool{}
	// Mark and sweep the rows in one write transaction, so no other
	// metadata change interleaves.
	err = s.db.Update(ctx, func(tx *metadata.Tx) error {
		res.RemovedLeases, res.RemovedContentRefs = 0, 0
		clear(snapRoots)
		exp, err := tx.ExpiredLeases(ctx, time.Now())
		if err != nil {
			return err
		}
		for _, l := range exp {
			if err := tx.DeleteLease(ctx, l.Namespace, l.ID); err != nil && !errdefs.IsNotFound(err) {
				return err
			}
			res.RemovedLeases++
		}
		nsl, err := tx.ListNamespaces(ctx)
		if err != nil {
			return err
		}
		all := map[string]bool{}
		for _, n := range nsl {
			all[n.Name] = true
		}
		for _, n := range snapNS {
			all[n] = true
		}
		for ns := range all {
			roots := map[string]bool{}
			snapRoots[ns] = roots
			if err := s.markNamespace(ctx, tx, ns, roots, &res); err != nil {
				return fmt.Errorf("gc: namespace %q: %w", ns, err)
			}
		}
		refs, err := tx.ReferencedDigests(ctx)
		if err != nil {
			return err
		}
		clear(referenced)
		for _, d := range refs {
			referenced[d] = true
		}
		ls, err := tx.LeasedResources(ctx, metadata.ResourceContent)
		if err != nil {
			return err
		}
		clear(leased)
		for _, d := range ls {
			leased[d] = true
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	var errs []error
	// Blobs.
	var drop []content.Info
	if err := s.cs.Walk(ctx, func(i content.Info) error {
		if !referenced[i.Digest.String()] && !leased[i.Digest.String()] {
			drop = append(drop, i)
		}
		return nil
	}); err != nil {
		errs = append(errs, err)
	}
	for _, i := range drop {
		if err := s.cs.Delete(ctx, i.Digest); err != nil {
			if !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue
		}
		res.RemovedBlobs++
		res.FreedBytes += i.Size
	}
	// Snapshots, children first.
	nss := make([]string, 0, len(snapRoots))
	for ns := range snapRoots {
		nss = append(nss, ns)
	}
	sort.Strings(nss)
	for _, ns := range nss {
		if err := s.sweepSnapshots(ctx, ns, snapRoots[ns], &res); err != nil {
			errs = append(errs, fmt.Errorf("gc: snapshots of namespace %q: %w", ns, err))
		}
	}
	res.Duration = time.Since(start)
	return res, errors.Join(errs...)
}

// markNamespace marks what ns references (content rows are swept here,
// inside the transaction) and collects the snapshot keys to keep.
func (s *Service) markNamespace(ctx context.Context, tx *metadata.Tx, ns string, snapRoots map[string]bool, res *GCResult) error {
	rows, err := tx.ListContent(ctx, ns)
	if err != nil {
		return err
	}
	w := &walker{
		s: s, seen: map[digest.Digest]visit{}, rowLabels: map[digest.Digest]map[string]string{},
		onChain: func(k string) { snapRoots[k] = true },
	}
	for _, r := range rows {
		if r.Labels != nil {
			w.rowLabels[digest.Digest(r.Digest)] = r.Labels
		}
	}
	imgs, err := tx.ListImages(ctx, ns)
	if err != nil {
		return err
	}
	for _, im := range imgs {
		if err := w.walk(ctx, digest.Digest(im.Target.Digest), im.Target.MediaType); err != nil {
			return err
		}
	}
	if err := tx.WalkContainers(ctx, ns, func(c metadata.Container) error {
		if c.SnapshotKey != "" {
			snapRoots[c.SnapshotKey] = true
		}
		return nil
	}); err != nil {
		return err
	}
	leases, err := tx.ListLeases(ctx, ns)
	if err != nil {
		return err
	}
	for _, l := range leases {
		rs, err := tx.ListLeaseResources(ctx, ns, l.ID)
		if err != nil {
			return err
		}
		for _, r := range rs {
			switch r.Kind {
			case metadata.ResourceContent:
				if err := w.walk(ctx, digest.Digest(r.ID), ""); err != nil {
					return err
				}
			case metadata.ResourceSnapshot:
				snapRoots[r.ID] = true
			case metadata.ResourceImage:
				im, err := tx.GetImage(ctx, ns, r.ID)
				if err == nil {
					err = w.walk(ctx, digest.Digest(im.Target.Digest), im.Target.MediaType)
				}
				if err != nil && !errdefs.IsNotFound(err) {
					return err
				}
			}
		}
	}
	for _, r := range rows {
		if _, ok := r.Labels[LabelGCRoot]; ok {
			if err := w.walk(ctx, digest.Digest(r.Digest), ""); err != nil {
				return err
			}
		}
	}
	for _, r := range rows {
		if w.seen[digest.Digest(r.Digest)] != 0 {
			continue
		}
		if err := tx.DeleteContent(ctx, ns, r.Digest); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		res.RemovedContentRefs++
	}
	return nil
}

// sweepSnapshots removes the snapshots of ns that are neither in keep nor
// an ancestor of one, nor labelled containerd.io/gc.root, deepest first.
func (s *Service) sweepSnapshots(ctx context.Context, ns string, keep map[string]bool, res *GCResult) error {
	infos, err := s.sn.List(ctx, ns)
	if err != nil {
		return err
	}
	if len(infos) == 0 {
		return nil
	}
	parent := make(map[string]string, len(infos))
	for _, i := range infos {
		parent[i.Name] = i.Parent
		if _, ok := i.Labels[LabelGCRoot]; ok {
			keep[i.Name] = true
		}
	}
	marked := map[string]bool{}
	for k := range keep {
		for n := 0; k != "" && !marked[k] && n <= len(infos); n++ {
			if _, ok := parent[k]; !ok {
				break
			}
			marked[k] = true
			k = parent[k]
		}
	}
	depth := func(k string) int {
		d := 0
		for ; k != "" && d <= len(infos); d++ {
			k = parent[k]
		}
		return d
	}
	var drop []string
	for _, i := range infos {
		if !marked[i.Name] {
			drop = append(drop, i.Name)
		}
	}
	sort.SliceStable(drop, func(a, b int) bool { return depth(drop[a]) > depth(drop[b]) })
	var errs []error
	for _, k := range drop {
		u, _ := s.sn.Usage(ctx, ns, k)
		if err := s.sn.Remove(ctx, ns, k); err != nil {
			if !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue
		}
		res.RemovedSnapshots++
		res.FreedBytes += u.Size
	}
	return errors.Join(errs...)
}

// snapshotNamespaces returns the namespaces holding snapshots (the
// snapshotter's table lives in the same database file; a namespace may hold
// snapshots without any metadata row).
func (s *Service) snapshotNamespaces(ctx context.Context) ([]string, error) {
	rows, err := s.db.SQL().QueryContext(ctx, `SELECT DISTINCT namespace FROM snapshots`)
	if err != nil {
		return nil, fmt.Errorf("gc: list snapshot namespaces: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// lookupImage finds an image by its stored name or, failing that, by the
// normalized form of name ("busybox:1.36" → docker.io/library/busybox:1.36).
func lookupImage(ctx context.Context, tx *metadata.Tx, ns, name string) (metadata.Image, error) {
	im, err := tx.GetImage(ctx, ns, name)
	if errdefs.IsNotFound(err) {
		if n, nerr := NormalizeName(name); nerr == nil && n != name {
			if im2, err2 := tx.GetImage(ctx, ns, n); err2 == nil {
				return im2, nil
			}
		}
	}
	return im, err
}

// DeleteImage deletes image name of ns and collects what it alone used:
// synchronously with sync, else in the background. An image used by
// containers (their Image field) is refused with ErrFailedPrecondition
// unless force; forcing keeps the containers' snapshots (they are roots).
func (s *Service) DeleteImage(ctx context.Context, ns, name string, sync, force bool) error {
	if err := checkNamespace(ns); err != nil {
		return err
	}
	err := s.db.Update(ctx, func(tx *metadata.Tx) error {
		im, err := lookupImage(ctx, tx, ns, name)
		if err != nil {
			return err
		}
		// Containers record the name they were created with ("busybox"),
		// so compare normalized names.
		var users []metadata.Container
		err = tx.WalkContainers(ctx, ns, func(c metadata.Container) error {
			if c.Image == "" {
				return nil
			}
			n := c.Image
			if nn, err := NormalizeName(c.Image); err == nil {
				n = nn
			}
			if c.Image == im.Name || n == im.Name {
				users = append(users, c)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(users) > 0 && !force {
			ids := make([]string, 0, len(users))
			for i, c := range users {
				if i == 5 {
					ids = append(ids, fmt.Sprintf("and %d more", len(users)-5))
					break
				}
				ids = append(ids, c.ID)
			}
			return fmt.Errorf("image %q is in use by container(s) %s; delete them first or force: %w", im.Name, strings.Join(ids, ", "), errdefs.ErrFailedPrecondition)
		}
		return tx.DeleteImage(ctx, ns, im.Name)
	})
	if err != nil {
		return err
	}
	if sync {
		_, err := s.GarbageCollect(ctx)
		return err
	}
	s.scheduleGC()
	return nil
}

// ImageUsage is the disk use of an image.
type ImageUsage struct {
	ContentBytes   int64 // blobs of the image present in the store
	Snapshots      int   // unpacked layer snapshots in the namespace
	SnapshotBytes  int64
	SnapshotInodes int64
}

// Usage returns the disk use of image name in ns: its blobs (shared blobs
// counted in full) and its unpacked snapshots.
func (s *Service) Usage(ctx context.Context, ns, name string) (ImageUsage, error) {
	if err := checkNamespace(ns); err != nil {
		return ImageUsage{}, err
	}
	var im metadata.Image
	if err := s.db.View(ctx, func(tx *metadata.Tx) error {
		var err error
		im, err = lookupImage(ctx, tx, ns, name)
		return err
	}); err != nil {
		return ImageUsage{}, err
	}
	var u ImageUsage
	keys := map[string]bool{}
	w := &walker{s: s, seen: map[digest.Digest]visit{},
		onBlob:  func(_ digest.Digest, size int64) { u.ContentBytes += size },
		onChain: func(k string) { keys[k] = true },
	}
	if err := w.walk(ctx, digest.Digest(im.Target.Digest), im.Target.MediaType); err != nil {
		return ImageUsage{}, err
	}
	for k := range keys {
		su, err := s.sn.Usage(ctx, ns, k)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return ImageUsage{}, err
		}
		u.Snapshots++
		u.SnapshotBytes += su.Size
		u.SnapshotInodes += su.Inodes
	}
	return u, nil
}
