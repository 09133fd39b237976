package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/fsstore/archive"
	"github.com/edged/edged/fsstore/compression"
	"github.com/edged/edged/fsstore/content"
	"github.com/edged/edged/fsstore/snapshots"
	"github.com/edged/edged/fsstore/snapshots/fscopy"
)

// stagedLayer is a layer blob of an archive extracted while it streamed
// by, with DiscardLayers, instead of being written to the content store:
// its files are in the upper directory of a parentless active snapshot
// (key "extract-<random> staged <digest>", which Recover removes after a
// crash), to be moved under the right parent when the image is unpacked.
type stagedLayer struct {
	key    string
	dir    string // the snapshot's directory the layer was applied to
	diffID digest.Digest
	used   bool  // moved into a layer snapshot; dir is now that snapshot's
	gone   bool  // that snapshot was removed (a concurrent import won)
	err    error // the blob is not a valid layer: why
}

// streamLayers reports whether this import extracts layer blobs straight
// from the archive. Only with DiscardLayers (the blobs would be deleted
// after unpacking anyway), only when unpacking, only for one platform
// (every layer blob the images keep is unpacked) and only with overlayfs
// (a layer's upper directory does not depend on its parent's content).
func (im *importer) streamLayers() bool {
	return im.s.opts.DiscardLayers && !im.opts.SkipUnpack && !im.opts.AllPlatforms &&
		im.s.sn.Backend() == snapshots.BackendOverlay
}

// stageLayer handles an OCI blob entry when streamLayers: a blob that
// looks like a layer (gzip, zstd or a tar header) is extracted into a
// staged snapshot while its digest is checked, and never stored. Other
// blobs are not consumed: rest returns the whole entry for writeKnown.
func (im *importer) stageLayer(ctx context.Context, name string, dgst digest.Digest, size int64, r io.Reader) (handled bool, rest io.Reader, _ error) {
	if _, ok := im.staged[dgst]; ok { // the same blob twice in the archive
		im.skipped += size
		return true, nil, nil
	}
	var head [512]byte
	n, err := io.ReadFull(r, head[:min(int64(len(head)), size)])
	if err != nil {
		return false, nil, &srcError{err}
	}
	rest = io.MultiReader(bytes.NewReader(head[:n]), r)
	if !looksLikeLayer(head[:n]) {
		return false, rest, nil
	}
	s := im.s
	// As writeKnown: a blob already in the store is used as it is.
	s.gcMu.RLock()
	err = im.lease.add(ctx, metadata.ResourceContent, dgst.String())
	var info content.Info
	if err == nil {
		info, err = s.cs.Info(ctx, dgst)
	}
	s.gcMu.RUnlock()
	if err == nil {
		im.blobs[dgst] = info.Size
		im.skipped += size
		return true, nil, nil
	}
	if !errdefs.IsNotFound(err) {
		return false, nil, fmt.Errorf("archive entry %q: %w", name, err)
	}

	key := ExtractPrefix + randomID() + " staged " + dgst.String()
	if err := im.lease.add(ctx, metadata.ResourceSnapshot, key); err != nil {
		return false, nil, err
	}
	mounts, err := s.sn.Prepare(ctx, im.ns, key, "", nil)
	if err != nil {
		return false, nil, fmt.Errorf("archive entry %q: %w", name, err)
	}
	st := &stagedLayer{key: key}
	ok := false
	defer func() {
		if !ok {
			s.removeStaged(im.ns, st)
		}
	}()
	dir, mode, err := applyTarget(s.sn.Backend(), mounts)
	if err != nil {
		return false, nil, err
	}
	st.dir = dir
	blob := &countingDigester{r: rest, d: dgst.Algorithm().Digester()}
	zr, _, err := compression.NewReader(blob, "")
	if err != nil {
		return false, nil, fmt.Errorf("archive entry %q: %w", name, err)
	}
	res, applyErr := archive.Apply(ctx, dir, zr, s.applyOptions(mode))
	zr.Close()
	if applyErr != nil {
		var se *srcError
		if errors.As(applyErr, &se) || ctx.Err() != nil {
			return false, nil, applyErr
		}
	}
	// What the decompressor did not need (e.g. padding), or all that
	// follows an invalid entry, is part of the blob.
	if _, err := io.CopyBuffer(io.Discard, blob, im.buf); err != nil {
		return false, nil, err
	}
	if got := blob.d.Digest(); got != dgst || blob.n != size {
		return false, nil, fmt.Errorf("archive entry %q: blob content does not match its digest %s (got %s, %d bytes): %w", name, dgst, got, blob.n, errdefs.ErrDataLoss)
	}
	im.staged[dgst] = st
	im.blobs[dgst] = size
	im.streamed += size
	if applyErr != nil {
		// Not a valid layer. An error only if an image needs it as one.
		s.removeStaged(im.ns, st)
		st.err = fmt.Errorf("archive entry %q: %w", name, limitError(dgst, applyErr))
		ok = true
		return true, nil, nil
	}
	st.diffID = res.DiffID
	ok = true
	return true, nil, nil
}

// looksLikeLayer reports whether a blob starting with head is a
// compressed stream or a tar archive (not a JSON document).
func looksLikeLayer(head []byte) bool {
	alg, err := compression.Detect(head)
	if err != nil {
		return false // bzip2, xz: stored, and refused when unpacked
	}
	if alg != compression.Uncompressed {
		return true
	}
	return len(head) >= 262 && string(head[257:262]) == "ustar"
}

// countingDigester hashes and counts what is read through it.
type countingDigester struct {
	r io.Reader
	d digest.Digester
	n int64
}

func (c *countingDigester) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.d.Hash().Write(p[:n])
	c.n += int64(n)
	return n, err
}

// useStaged moves a staged layer's files into a new snapshot on parent and
// commits it as chainKey, as applyLayer does from a stored blob.
func (s *Service) useStaged(ctx context.Context, ns string, l *lease, parent, chainKey string, st *stagedLayer, diffID digest.Digest) (retErr error) {
	if st.err != nil {
		return st.err
	}
	if st.diffID != diffID {
		return fmt.Errorf("layer diffID mismatch: got %s, want %s: %w", st.diffID, diffID, errdefs.ErrDataLoss)
	}
	if st.gone {
		return fmt.Errorf("staged layer %s was used by a concurrent import and is gone; import again: %w", st.diffID, errdefs.ErrAborted)
	}
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
	upper, _, err := applyTarget(s.sn.Backend(), mounts)
	if err != nil {
		return err
	}
	if st.used {
		// The same layer again in one image (e.g. repeated empty layers):
		// copy the files of its first use.
		if err := fscopy.CopyDir(ctx, upper, st.dir); err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
	} else {
		// Both directories are the snapshotter's, on one filesystem: swap
		// the new snapshot's empty upper directory for the staged one.
		if err := os.Remove(upper); err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		if err := os.Rename(st.dir, upper); err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		st.used, st.dir = true, upper
	}
	if s.hooks.afterApply != nil {
		s.hooks.afterApply(chainKey)
	}
	err = s.sn.Commit(ctx, ns, chainKey, key, nil)
	if errdefs.IsAlreadyExists(err) {
		removed = true
		if st.dir == upper {
			st.gone = true
		}
		if rerr := s.sn.Remove(ctx, ns, key); rerr != nil {
			s.log.Warn("images: cannot remove duplicate extraction; Recover will", "snapshot", key, "error", rerr)
		}
		return nil
	}
	return err
}

// removeStaged removes a staged layer's snapshot (its directory may have
// moved into a layer snapshot already).
func (s *Service) removeStaged(ns string, st *stagedLayer) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.sn.Remove(ctx, ns, st.key); err != nil && !errdefs.IsNotFound(err) {
		s.log.Warn("images: cannot remove staged layer; Recover will", "snapshot", st.key, "error", err)
	}
}
