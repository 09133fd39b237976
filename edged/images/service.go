// Package images is edged's image core: import of OCI image-layout and
// "docker save" archives, unpacking into snapshots, export, garbage
// collection, usage and crash recovery, over the metadata database
// (edged/metadata), the content store (fsstore/content) and the
// snapshotter (fsstore/snapshots).
//
// # Storage model
//
// Blobs are stored once in the content store and shared by every
// namespace; each namespace that uses a blob has a content row
// (metadata.Tx.AddContent). Snapshots are per namespace: the layers of an
// image are unpacked into committed snapshots whose keys are the layers'
// chain IDs (OCI image-spec), so a layer shared by two images of a
// namespace is unpacked once.
//
// The relation image → snapshots is not stored: it is computed from the
// image's config (rootfs.diff_ids → chain IDs) whenever needed, by Usage and
// by garbage collection, so it can never go stale.
//
// # Garbage collection
//
// GarbageCollect is a mark and sweep over every namespace. Roots: images
// (their targets, walked index → manifests → config and layers; configs mark
// their chain-ID snapshots), containers (their snapshot and its parents),
// leases (their content, snapshot and image resources), content rows and
// snapshots labelled containerd.io/gc.root. Content labels
// containerd.io/gc.ref.content.* and containerd.io/gc.ref.snapshot.* are
// followed as references. Unreachable content rows are deleted, then blobs
// referenced by no namespace and no lease, then unreachable snapshots,
// children first.
//
// # Crash safety
//
// An import holds a lease (labelled edged.io/import) on everything it
// writes until the image records, the content rows and the lease's
// deletion are committed in one transaction: a crash before that leaves no
// image, and Recover (run at start-up) drops the lease, stale ingests and
// half-made extract-* snapshots, and collects what they held.
package images

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/edged/images/platforms"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/edged/registry"
	"github.com/edged/edged/fsstore/content"
	"github.com/edged/edged/fsstore/snapshots"
)

// Labels and annotations used by this package.
const (
	// LabelImportLease marks the leases held by imports; Recover deletes
	// them at start-up (no import survives a restart).
	LabelImportLease = "edged.io/import"
	// LabelLayersDiscarded on an image says its compressed layer blobs were
	// deleted after unpacking (Options.DiscardLayers).
	LabelLayersDiscarded = "edged.io/layers-discarded"
	// LabelGCRoot on a content row or snapshot keeps it from collection.
	LabelGCRoot = "containerd.io/gc.root"
	// LabelGCRefContent prefixes content labels whose value is a digest
	// the labelled blob references.
	LabelGCRefContent = "containerd.io/gc.ref.content"
	// LabelGCRefSnapshot prefixes content labels whose value is a snapshot
	// key (same namespace) the labelled blob references.
	LabelGCRefSnapshot = "containerd.io/gc.ref.snapshot"
	// AnnotationImageName is containerd's annotation for a full image name.
	AnnotationImageName = "io.containerd.image.name"
	// AnnotationRefName is the OCI annotation naming an index entry.
	AnnotationRefName = "org.opencontainers.image.ref.name"
)

// MaxJSONSize bounds index, manifest and config documents (index.json,
// manifest.json and JSON blobs); larger ones are refused with
// ErrResourceExhausted.
const MaxJSONSize = 4 << 20

// importLeaseTTL is a backstop: an import lease expires after this even if
// neither the import nor Recover removes it.
const importLeaseTTL = 24 * time.Hour

// Options configure a Service.
type Options struct {
	// DiscardLayers deletes the compressed layer blobs of an image once
	// they are unpacked, keeping its index, manifests and config. Saves
	// flash space; Export of such an image then fails (re-pull it).
	// Imports of one platform onto overlayfs then never store the layer
	// blobs at all: each is extracted as it streams by, its digest and
	// diffID checked (see stageLayer), so a layer is written to disk once.
	DiscardLayers bool
	// Platform is the default platform ("os/arch[/variant]") for import
	// and unpack; empty means the host's (platforms.Default).
	Platform string
	// Logger receives GC and import-dir messages; default slog.Default().
	Logger *slog.Logger
	// Registry runs registry pulls and pushes (in the edged-remote helper);
	// nil means Pull and Push fail with ErrNotImplemented.
	Registry *registry.Client

	// The limits below bound what one layer may write when it is
	// unpacked: the layer blob is small, compressed and chosen by whoever
	// built the image (who also writes the diffIDs that are checked), and
	// a decompression bomb would otherwise fill the flash that holds the
	// database and the rest of the system. Exceeding one fails the unpack
	// with ErrResourceExhausted naming the layer and the setting; the
	// snapshot being prepared is removed, the stored blob kept.

	// MaxLayerSize is the most one layer may unpack to, in bytes of its
	// uncompressed tar stream (file contents plus headers); 0 is no limit.
	// Config: images.max_layer_size.
	MaxLayerSize int64
	// MaxLayerEntries is the most entries one layer may have; 0 is
	// archive.DefaultMaxEntries. Config: images.max_layer_entries.
	MaxLayerEntries int64
	// MinFreeSpace is the free space, in bytes, that unpacking leaves on
	// the filesystem of the snapshots; 0 is no check. Config:
	// images.min_free_space.
	MinFreeSpace int64
}

// Service imports, unpacks, exports and collects images. It is safe for
// concurrent use. Close waits for background collections.
type Service struct {
	db       *metadata.DB
	cs       *content.Store
	sn       snapshots.Snapshotter
	opts     Options
	platform platforms.Matcher
	log      *slog.Logger

	// gcMu: GarbageCollect holds it exclusively; writers hold it shared
	// around "lease or reference a blob, then rely on it being there", so
	// the collector never deletes what an import is about to use.
	gcMu sync.RWMutex

	// hooks let the crash tests stop an import at exact points.
	hooks testHooks

	bgMu     sync.Mutex
	bgQueued bool
	closed   bool
	bg       sync.WaitGroup
}

// testHooks are called, when set, at points of an import where a crash
// test kills the process.
type testHooks struct {
	afterApply   func(chainID string) // layer written, snapshot not committed
	beforeRecord func()               // everything stored, images not recorded
}

// New returns a Service over an open database, content store and
// snapshotter. The snapshotter must use db.SQL().
func New(db *metadata.DB, cs *content.Store, sn snapshots.Snapshotter, opts Options) (*Service, error) {
	if db == nil || cs == nil || sn == nil {
		return nil, errdefs.InvalidArgument("images", "database, content store and snapshotter are required")
	}
	for _, l := range [...]struct {
		field, setting string
		v              int64
	}{
		{"MaxLayerSize", "images.max_layer_size", opts.MaxLayerSize},
		{"MaxLayerEntries", "images.max_layer_entries", opts.MaxLayerEntries},
		{"MinFreeSpace", "images.min_free_space", opts.MinFreeSpace},
	} {
		if l.v < 0 {
			return nil, errdefs.InvalidArgument("images", "layer limit %s (%s) is %d: it must not be negative", l.field, l.setting, l.v)
		}
	}
	p := platforms.Default()
	if opts.Platform != "" {
		var err error
		if p, err = platforms.Parse(opts.Platform); err != nil {
			return nil, err
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Service{db: db, cs: cs, sn: sn, opts: opts, platform: platforms.NewMatcher(p), log: log}, nil
}

// Platform returns the default platform.
func (s *Service) Platform() platforms.Platform { return s.platform.Platform() }

// Close waits for a background garbage collection started by DeleteImage
// and refuses new ones.
func (s *Service) Close() error {
	s.bgMu.Lock()
	s.closed = true
	s.bgMu.Unlock()
	s.bg.Wait()
	return nil
}

// WithGCLock runs fn while garbage collection cannot run. Other writers of
// the content store (the Content service's commit followed by AddContent)
// use it so a blob they just committed is not collected before its
// reference is recorded.
func (s *Service) WithGCLock(fn func() error) error {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	return fn()
}

// scheduleGC runs one collection in the background; requests arriving
// while one is queued are merged into it.
func (s *Service) scheduleGC() {
	s.bgMu.Lock()
	if s.closed || s.bgQueued {
		s.bgMu.Unlock()
		return
	}
	s.bgQueued = true
	s.bg.Add(1)
	s.bgMu.Unlock()
	go func() {
		defer s.bg.Done()
		s.bgMu.Lock()
		s.bgQueued = false
		s.bgMu.Unlock()
		res, err := s.GarbageCollect(context.Background())
		if err != nil {
			s.log.Warn("images: background garbage collection failed", "error", err)
			return
		}
		s.log.Debug("images: garbage collected", "blobs", res.RemovedBlobs, "snapshots", res.RemovedSnapshots, "freed", res.FreedBytes)
	}()
}

func checkNamespace(ns string) error { return identifiers.Validate("namespace", ns) }

func randomID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// lease is an import's lease: it protects what the import writes.
type lease struct {
	s  *Service
	ns string
	id string
}

func (s *Service) newLease(ctx context.Context, ns string) (*lease, error) {
	l := &lease{s: s, ns: ns, id: "import-" + randomID()}
	exp := time.Now().Add(importLeaseTTL)
	err := s.db.Update(ctx, func(tx *metadata.Tx) error {
		_, err := tx.CreateLease(ctx, ns, l.id, map[string]string{LabelImportLease: "true"}, &exp)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("import lease: %w", err)
	}
	return l, nil
}

func (l *lease) add(ctx context.Context, kind, id string) error {
	return l.s.db.Update(ctx, func(tx *metadata.Tx) error {
		return tx.AddLeaseResource(ctx, l.ns, l.id, metadata.Resource{Kind: kind, ID: id})
	})
}

// release deletes the lease (on the error paths; on success the final
// transaction deletes it). It uses a fresh context: the import's may be
// cancelled.
func (l *lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := l.s.db.Update(ctx, func(tx *metadata.Tx) error { return tx.DeleteLease(ctx, l.ns, l.id) })
	if err != nil && !errdefs.IsNotFound(err) {
		l.s.log.Warn("images: cannot delete import lease; Recover or GC will", "lease", l.id, "error", err)
	}
}
