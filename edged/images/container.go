package images

import (
	"context"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/fsstore/snapshots"
	"github.com/edged/edged/fsstore/snapshots/mount"
)

// ContainerImage is what a container needs from its image.
type ContainerImage struct {
	// Name is the image's stored (normalized) name.
	Name string
	// Config is the image configuration of the selected manifest.
	Config ocispec.Image
	// ChainID is the key of the image's top layer snapshot; "" for an
	// image without layers.
	ChainID string
}

// ResolveForContainer finds image name in ns (stored or normalized name),
// selects the manifest for platform ("" for the service's default) and
// makes sure its layers are unpacked, unpacking them if needed.
func (s *Service) ResolveForContainer(ctx context.Context, ns, name, platform string) (ContainerImage, error) {
	if err := checkNamespace(ns); err != nil {
		return ContainerImage{}, err
	}
	match, err := s.matcher(platform)
	if err != nil {
		return ContainerImage{}, err
	}
	var im metadata.Image
	if err := s.db.View(ctx, func(tx *metadata.Tx) error {
		im, err = lookupImage(ctx, tx, ns, name)
		return err
	}); err != nil {
		return ContainerImage{}, err
	}
	d := ocispec.Descriptor{MediaType: im.Target.MediaType, Digest: digest.Digest(im.Target.Digest), Size: im.Target.Size}
	pm := &planManifest{}
	for depth := 0; ; depth++ {
		if depth > 4 {
			return ContainerImage{}, fmt.Errorf("image %q: indexes nested too deep: %w", im.Name, errdefs.ErrInvalidArgument)
		}
		kind, _, err := s.docKind(ctx, d)
		if err != nil {
			return ContainerImage{}, fmt.Errorf("image %q: %w", im.Name, err)
		}
		if kind == "manifest" {
			break
		}
		if kind != "index" {
			return ContainerImage{}, fmt.Errorf("image %q: target %s has unsupported media type %q: %w", im.Name, d.Digest, d.MediaType, errdefs.ErrInvalidArgument)
		}
		var idx ocispec.Index
		if err := s.readJSONBlob(ctx, d.Digest, "index", &idx); err != nil {
			return ContainerImage{}, fmt.Errorf("image %q: %w", im.Name, err)
		}
		// Only manifests present locally are candidates.
		var cands []ocispec.Descriptor
		for _, c := range idx.Manifests {
			if _, err := s.cs.Info(ctx, c.Digest); err == nil && c.Platform != nil {
				cands = append(cands, c)
			}
		}
		best := match.Best(cands)
		if best < 0 {
			return ContainerImage{}, match.NoMatchError(fmt.Sprintf("image %q", im.Name))
		}
		d = cands[best]
	}
	pm.desc = d
	if err := s.readJSONBlob(ctx, d.Digest, "manifest", &pm.manifest); err != nil {
		return ContainerImage{}, fmt.Errorf("image %q: %w", im.Name, err)
	}
	if err := s.readJSONBlob(ctx, pm.manifest.Config.Digest, "config", &pm.config); err != nil {
		return ContainerImage{}, fmt.Errorf("image %q: %w", im.Name, err)
	}
	if err := checkManifest(pm); err != nil {
		return ContainerImage{}, fmt.Errorf("image %q: %w", im.Name, err)
	}
	if p := (ocispec.Platform{OS: pm.config.OS, Architecture: pm.config.Architecture, Variant: pm.config.Variant}); p.OS != "" && !match.Match(p) {
		return ContainerImage{}, match.NoMatchError(fmt.Sprintf("image %q (its config is for %s/%s)", im.Name, p.OS, p.Architecture))
	}
	out := ContainerImage{Name: im.Name, Config: pm.config}
	chain := chainIDs(pm.config.RootFS.DiffIDs)
	if len(chain) == 0 {
		return out, nil
	}
	out.ChainID = chain[len(chain)-1].String()
	info, err := s.sn.Stat(ctx, ns, out.ChainID)
	if err == nil && info.Kind == snapshots.KindCommitted {
		return out, nil
	}
	if err != nil && !errdefs.IsNotFound(err) {
		return ContainerImage{}, err
	}
	if im.Labels[LabelLayersDiscarded] != "" {
		for _, ld := range pm.manifest.Layers {
			if _, err := s.cs.Info(ctx, ld.Digest); errdefs.IsNotFound(err) {
				return ContainerImage{}, fmt.Errorf("image %q is not unpacked and its layer %s was discarded (discard_layers is on); pull it again: %w",
					im.Name, ld.Digest, errdefs.ErrFailedPrecondition)
			}
		}
	}
	l, err := s.newLease(ctx, ns)
	if err != nil {
		return ContainerImage{}, err
	}
	defer l.release()
	if err := s.unpack(ctx, ns, l, pm); err != nil {
		return ContainerImage{}, fmt.Errorf("image %q: %w", im.Name, err)
	}
	return out, nil
}

// PrepareSnapshot creates the active snapshot key on parent for a
// container, protected by a lease until release is called (call it once
// the container that roots the snapshot is recorded, or after removing the
// snapshot on failure). The parent is checked under the GC lock, so a
// concurrent collection cannot remove it in between.
func (s *Service) PrepareSnapshot(ctx context.Context, ns, key, parent string, labels map[string]string) (_ []mount.Mount, release func(), err error) {
	if err := checkNamespace(ns); err != nil {
		return nil, nil, err
	}
	l := &lease{s: s, ns: ns, id: "prepare-" + randomID()}
	exp := time.Now().Add(time.Hour)
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	err = s.db.Update(ctx, func(tx *metadata.Tx) error {
		if _, err := tx.CreateLease(ctx, ns, l.id, map[string]string{LabelImportLease: "container"}, &exp); err != nil {
			return err
		}
		return tx.AddLeaseResource(ctx, ns, l.id, metadata.Resource{Kind: metadata.ResourceSnapshot, ID: key})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot lease: %w", err)
	}
	mounts, err := s.sn.Prepare(ctx, ns, key, parent, labels)
	if err != nil {
		l.release()
		if errdefs.IsNotFound(err) && parent != "" {
			return nil, nil, fmt.Errorf("image layers %s were removed meanwhile (image deleted?): %w", parent, err)
		}
		return nil, nil, err
	}
	return mounts, l.release, nil
}

// RemoveSnapshot removes a container's snapshot and collects, in the
// background, what only it kept (an image deleted with force).
func (s *Service) RemoveSnapshot(ctx context.Context, ns, key string) error {
	if err := s.sn.Remove(ctx, ns, key); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	s.scheduleGC()
	return nil
}

// Snapshotter returns the service's snapshotter.
func (s *Service) Snapshotter() snapshots.Snapshotter { return s.sn }

// CollectLater schedules a garbage collection in the background (merged
// with one already queued).
func (s *Service) CollectLater() { s.scheduleGC() }
