package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/fsstore/archive"
	"github.com/edged/edged/fsstore/snapshots"
	"github.com/edged/edged/fsstore/snapshots/mount"
)

// ExtractPrefix starts the keys of the active snapshots layers are
// extracted into ("extract-<random> <chain ID>"); Recover removes those
// left by a crash.
const ExtractPrefix = "extract-"

// unpack makes the committed snapshots of pm's layers in ns, keyed by
// chain ID, reusing those that exist.
func (s *Service) unpack(ctx context.Context, ns string, l *lease, pm *planManifest) error {
	return s.unpackStaged(ctx, ns, l, pm, nil)
}

// unpackStaged is unpack taking the layers in staged (extracted from an
// archive without storing their blobs) from there.
func (s *Service) unpackStaged(ctx context.Context, ns string, l *lease, pm *planManifest, staged map[digest.Digest]*stagedLayer) error {
	diffIDs := pm.config.RootFS.DiffIDs
	chain := chainIDs(diffIDs)
	parent := ""
	for i, layer := range pm.manifest.Layers {
		key := chain[i].String()
		// Lease first, then look: a snapshot seen here cannot be
		// collected before the image is recorded.
		s.gcMu.RLock()
		err := l.add(ctx, metadata.ResourceSnapshot, key)
		var info snapshots.Info
		if err == nil {
			info, err = s.sn.Stat(ctx, ns, key)
		}
		s.gcMu.RUnlock()
		switch {
		case err == nil && info.Kind == snapshots.KindCommitted:
		case err == nil:
			return fmt.Errorf("unpack: snapshot %q exists but is %s, not committed: %w", key, info.Kind, errdefs.ErrFailedPrecondition)
		case errdefs.IsNotFound(err):
			apply := s.applyLayer
			if st := staged[layer.Digest]; st != nil {
				apply = func(ctx context.Context, ns string, l *lease, parent, key string, _ ocispec.Descriptor, diffID digest.Digest) error {
					return s.useStaged(ctx, ns, l, parent, key, st, diffID)
				}
			}
			if err := apply(ctx, ns, l, parent, key, layer, diffIDs[i]); err != nil {
				return fmt.Errorf("unpack layer %d (%s) of manifest %s: %w", i, layer.Digest, pm.desc.Digest, err)
			}
		default:
			return fmt.Errorf("unpack: %w", err)
		}
		parent = key
	}
	return nil
}

// applyLayer extracts one layer into a new active snapshot on parent and
// commits it as chainKey. On failure the active snapshot is removed.
func (s *Service) applyLayer(ctx context.Context, ns string, l *lease, parent, chainKey string, layer ocispec.Descriptor, diffID digest.Digest) (retErr error) {
	key, mounts, abort, err := s.prepareExtraction(ctx, ns, l, parent, chainKey)
	if err != nil {
		return err
	}
	removed := false
	defer func() {
		if retErr != nil && !removed {
			abort()
		}
	}()
	dir, mode, err := applyTarget(s.sn.Backend(), mounts)
	if err != nil {
		return err
	}
	ra, err := s.cs.ReaderAt(ctx, layer.Digest)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("layer blob %s is not in the content store: %w", layer.Digest, errdefs.ErrNotFound)
		}
		return err
	}
	defer ra.Close()
	if _, err := archive.ApplyVerified(ctx, dir, io.NewSectionReader(ra, 0, ra.Size()), layer.MediaType, diffID, s.applyOptions(mode)); err != nil {
		return limitError(layer.Digest, err)
	}
	if s.hooks.afterApply != nil {
		s.hooks.afterApply(chainKey)
	}
	err = s.sn.Commit(ctx, ns, chainKey, key, nil)
	if errdefs.IsAlreadyExists(err) {
		// A concurrent import committed the same layer first.
		removed = true
		if rerr := s.sn.Remove(ctx, ns, key); rerr != nil {
			s.log.Warn("images: cannot remove duplicate extraction; Recover will", "snapshot", key, "error", rerr)
		}
		return nil
	}
	return err
}

// applyOptions are the options every layer is applied with.
func (s *Service) applyOptions(mode archive.WhiteoutMode) archive.ApplyOptions {
	return archive.ApplyOptions{
		Whiteouts:  mode,
		MaxSize:    s.opts.MaxLayerSize,
		MaxEntries: s.opts.MaxLayerEntries,
		MinFree:    s.opts.MinFreeSpace,
	}
}

// limitError restates an *archive.LimitError in the terms of the operator:
// the layer and the setting to raise. Other errors are returned as they are.
func limitError(layer digest.Digest, err error) error {
	var le *archive.LimitError
	if !errors.As(err, &le) {
		return err
	}
	var msg string
	switch le.Limit {
	case archive.LimitSize:
		msg = fmt.Sprintf("layer %s unpacks to more than %s (images.max_layer_size)", layer, formatBytes(le.Value))
	case archive.LimitEntries:
		msg = fmt.Sprintf("layer %s has more than %d entries (images.max_layer_entries)", layer, le.Value)
	case archive.LimitFree:
		msg = fmt.Sprintf("layer %s would leave less than %s free on %s (images.min_free_space)", layer, formatBytes(le.Value), le.Path)
	default:
		return err
	}
	return fmt.Errorf("%s: %w", msg, errdefs.ErrResourceExhausted)
}

// formatBytes writes n in the largest binary unit that divides it, as
// the settings are usually written ("8 GiB").
func formatBytes(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// applyTarget returns the directory a layer is written into, without
// mounting: the overlay upper directory (with overlay whiteouts), or the
// directory a bind mount would show (an empty first layer, or the native
// backend's copy of the parent, where whiteouts remove files).
// prepareExtraction leases and prepares the active snapshot a layer is
// extracted into, on parent, to be committed as chainKey. abort removes it
// after a failed extraction (Recover removes it if even that fails).
func (s *Service) prepareExtraction(ctx context.Context, ns string, l *lease, parent, chainKey string) (key string, mounts []mount.Mount, abort func(), err error) {
	key = ExtractPrefix + randomID() + " " + chainKey
	// Lease and prepare under the GC lock: a collection that marked its
	// roots before the lease must not sweep the new snapshot after.
	s.gcMu.RLock()
	err = l.add(ctx, metadata.ResourceSnapshot, key)
	if err == nil {
		mounts, err = s.sn.Prepare(ctx, ns, key, parent, map[string]string{"containerd.io/snapshot.ref": chainKey})
	}
	s.gcMu.RUnlock()
	if err != nil {
		return "", nil, nil, err
	}
	abort = func() {
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.sn.Remove(rctx, ns, key); err != nil {
			s.log.Warn("images: cannot remove failed extraction; Recover will", "snapshot", key, "error", err)
		}
	}
	return key, mounts, abort, nil
}

func applyTarget(backend snapshots.Backend, mounts []mount.Mount) (string, archive.WhiteoutMode, error) {
	if len(mounts) != 1 {
		return "", 0, fmt.Errorf("unpack: unexpected %d mounts: %w", len(mounts), errdefs.ErrNotImplemented)
	}
	m := mounts[0]
	switch m.Type {
	case "overlay":
		for _, o := range m.Options {
			if d, ok := strings.CutPrefix(o, "upperdir="); ok {
				return d, archive.WhiteoutOverlay, nil
			}
		}
		return "", 0, fmt.Errorf("unpack: overlay mount without upperdir: %w", errdefs.ErrNotImplemented)
	case "bind":
		if backend == snapshots.BackendOverlay {
			return m.Source, archive.WhiteoutOverlay, nil
		}
		return m.Source, archive.WhiteoutRemove, nil
	}
	return "", 0, fmt.Errorf("unpack: unexpected mount type %q: %w", m.Type, errdefs.ErrNotImplemented)
}
