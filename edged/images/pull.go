package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images/platforms"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/edged/registry"
)

// LabelPullLease marks the lease of a registry pull; its value is the
// image name. Unlike import leases it survives a restart (until it
// expires), so that an interrupted pull keeps the blobs it completed and
// resumes the rest.
const LabelPullLease = "edged.io/pull"

// pullLeaseTTL bounds how long the blobs of an abandoned pull are kept.
const pullLeaseTTL = 24 * time.Hour

// PullOptions tune Pull.
type PullOptions struct {
	// Platform ("os/arch[/variant]") selects the manifest of a
	// multi-platform image; empty means the service's default.
	Platform string
	// SkipUnpack only fetches the content.
	SkipUnpack bool
	// Credentials, when set, authenticate to the reference's registry
	// instead of the docker config.
	Credentials *registry.Credentials
	// Progress receives per-blob events, one at a time.
	Progress func(registry.ProgressEvent)
	// Retries and RetryBackoff tune the registry client (0: defaults).
	Retries      int
	RetryBackoff time.Duration
}

func (s *Service) matcher(platform string) (platforms.Matcher, error) {
	if platform == "" {
		return s.platform, nil
	}
	p, err := platforms.Parse(platform)
	if err != nil {
		return platforms.Matcher{}, err
	}
	return platforms.NewMatcher(p), nil
}

// pullLease returns the lease of pulls of name in ns, creating it. Its ID
// is derived from the name, so a pull repeated after a crash or an error
// finds the lease (and the blobs it holds) of the previous attempt.
func (s *Service) pullLease(ctx context.Context, ns, name string) (*lease, error) {
	sum := sha256.Sum256([]byte(name))
	l := &lease{s: s, ns: ns, id: "pull-" + hex.EncodeToString(sum[:12])}
	exp := time.Now().Add(pullLeaseTTL)
	err := s.db.Update(ctx, func(tx *metadata.Tx) error {
		_, err := tx.CreateLease(ctx, ns, l.id, map[string]string{LabelPullLease: name}, &exp)
		if errdefs.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pull lease: %w", err)
	}
	return l, nil
}

// transient reports errors after which a pull is worth repeating, so its
// lease (and the blobs it holds) is kept.
func transient(err error) bool {
	return errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errdefs.ErrAborted)
}

// Pull fetches image ref from its registry into the content store,
// unpacks the platform's layers (unless opts.SkipUnpack) and records the
// image in ns under its normalized name. Every blob is leased before it is
// looked for or written, so garbage collection cannot remove it before the
// image is recorded. Downloads resume from the bytes already in their
// ingests ("pull-<digest>"), also after a restart of edged.
func (s *Service) Pull(ctx context.Context, ns, ref string, opts PullOptions) (metadata.Image, error) {
	if err := checkNamespace(ns); err != nil {
		return metadata.Image{}, err
	}
	name, err := NormalizeName(ref)
	if err != nil {
		return metadata.Image{}, err
	}
	match, err := s.matcher(opts.Platform)
	if err != nil {
		return metadata.Image{}, err
	}
	l, err := s.pullLease(ctx, ns, name)
	if err != nil {
		return metadata.Image{}, err
	}
	done := false
	defer func() {
		if !done {
			l.release()
		}
	}()
	if s.opts.Registry == nil {
		return metadata.Image{}, fmt.Errorf("pull %s: no registry access configured: %w", name, errdefs.ErrNotImplemented)
	}
	root, mdesc, err := s.opts.Registry.Pull(ctx, s.cs.Root(), name, registry.PullOptions{
		Platform:     match.String(),
		Credentials:  opts.Credentials,
		Progress:     opts.Progress,
		Retries:      opts.Retries,
		RetryBackoff: opts.RetryBackoff,
		BeforeBlob: func(ctx context.Context, d ocispec.Descriptor) error {
			s.gcMu.RLock()
			defer s.gcMu.RUnlock()
			return l.add(ctx, metadata.ResourceContent, d.Digest.String())
		},
	})
	if err != nil {
		if transient(err) {
			done = true // keep the lease: a new pull resumes
		}
		return metadata.Image{}, err
	}
	pm := &planManifest{desc: mdesc}
	if err := s.readJSONBlob(ctx, mdesc.Digest, "manifest", &pm.manifest); err != nil {
		return metadata.Image{}, err
	}
	if err := s.readJSONBlob(ctx, pm.manifest.Config.Digest, "config", &pm.config); err != nil {
		return metadata.Image{}, err
	}
	if err := checkManifest(pm); err != nil {
		return metadata.Image{}, fmt.Errorf("%s: %w", name, err)
	}
	if p := (ocispec.Platform{OS: pm.config.OS, Architecture: pm.config.Architecture, Variant: pm.config.Variant}); p.OS != "" && !match.Match(p) {
		return metadata.Image{}, match.NoMatchError(fmt.Sprintf("image %q (manifest %s is for %s)", name, mdesc.Digest, platforms.Format(platforms.Normalize(p))))
	}
	pi := &planImage{name: name, target: ocispec.Descriptor{MediaType: root.MediaType, Digest: root.Digest, Size: root.Size},
		content: map[digest.Digest]int64{root.Digest: root.Size, mdesc.Digest: mdesc.Size, pm.manifest.Config.Digest: pm.manifest.Config.Size}, best: pm}
	for _, ld := range pm.manifest.Layers {
		pi.content[ld.Digest] = ld.Size
	}
	discard := map[digest.Digest]bool{}
	if !opts.SkipUnpack {
		if err := s.unpack(ctx, ns, l, pm); err != nil {
			return metadata.Image{}, err
		}
		if s.opts.DiscardLayers {
			for _, ld := range pm.manifest.Layers {
				discard[ld.Digest] = true
			}
		}
	}
	out, err := s.record(ctx, ns, l, []*planImage{pi}, discard)
	if err != nil {
		return metadata.Image{}, err
	}
	done = true
	if len(discard) > 0 {
		if err := s.discardBlobs(ctx, discard); err != nil {
			s.log.Warn("images: cannot discard unpacked layers", "error", err)
		}
	}
	return out[0], nil
}

// checkManifest checks that a manifest's layers can be unpacked with its
// config.
func checkManifest(pm *planManifest) error {
	if len(pm.config.RootFS.DiffIDs) != len(pm.manifest.Layers) {
		return fmt.Errorf("manifest %s has %d layers but its config lists %d diff IDs: %w",
			pm.desc.Digest, len(pm.manifest.Layers), len(pm.config.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
	}
	for i, l := range pm.manifest.Layers {
		if !isLayerType(l.MediaType) {
			return fmt.Errorf("layer %d of manifest %s: unsupported layer media type %q: %w", i, pm.desc.Digest, l.MediaType, errdefs.ErrNotImplemented)
		}
		if err := pm.config.RootFS.DiffIDs[i].Validate(); err != nil {
			return fmt.Errorf("layer %d of manifest %s: diff ID %q: %v: %w", i, pm.desc.Digest, pm.config.RootFS.DiffIDs[i], err, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// PushOptions tune Push.
type PushOptions struct {
	// Credentials, when set, authenticate to the remote reference's
	// registry instead of the docker config.
	Credentials *registry.Credentials
	// Progress receives per-blob events, one at a time.
	Progress func(registry.ProgressEvent)
	// ChunkSize > 0 uploads blobs in chunks of this size.
	ChunkSize int64
}

// Push uploads image name of ns, with every blob of it in the store, to
// remoteRef (default: the image's own name), skipping blobs the registry
// has. The image is leased for the duration, so a concurrent deletion
// cannot collect its blobs mid-push.
func (s *Service) Push(ctx context.Context, ns, name, remoteRef string, opts PushOptions) error {
	if err := checkNamespace(ns); err != nil {
		return err
	}
	var im metadata.Image
	l := &lease{s: s, ns: ns, id: "push-" + randomID()}
	exp := time.Now().Add(importLeaseTTL)
	err := s.db.Update(ctx, func(tx *metadata.Tx) error {
		var err error
		if im, err = lookupImage(ctx, tx, ns, name); err != nil {
			return err
		}
		if _, err := tx.CreateLease(ctx, ns, l.id, map[string]string{LabelImportLease: "push"}, &exp); err != nil {
			return err
		}
		return tx.AddLeaseResource(ctx, ns, l.id, metadata.Resource{Kind: metadata.ResourceImage, ID: im.Name})
	})
	if err != nil {
		return err
	}
	defer l.release()
	if remoteRef == "" {
		remoteRef = im.Name
	}
	remote, err := NormalizeName(remoteRef)
	if err != nil {
		return err
	}
	if im.Labels[LabelLayersDiscarded] != "" {
		return fmt.Errorf("image %q: its layer blobs were discarded after unpacking (discard_layers is on); pull it again to push it: %w", im.Name, errdefs.ErrFailedPrecondition)
	}
	target := ocispec.Descriptor{MediaType: im.Target.MediaType, Digest: digest.Digest(im.Target.Digest), Size: im.Target.Size}
	if s.opts.Registry == nil {
		return fmt.Errorf("push %s: no registry access configured: %w", remote, errdefs.ErrNotImplemented)
	}
	return s.opts.Registry.Push(ctx, s.cs.Root(), remote, target, registry.PushOptions{Credentials: opts.Credentials, Progress: opts.Progress, ChunkSize: opts.ChunkSize})
}
