package remotes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/fsstore/content"
)

// PlatformMatcher selects the manifest of an index: Match says whether a
// platform can run here, Less orders matching platforms best first.
type PlatformMatcher interface {
	Match(ocispec.Platform) bool
	Less(a, b ocispec.Platform) bool
}

// hostPlatform is the matcher used when none is given: the exact GOOS and
// GOARCH of this process.
type hostPlatform struct{}

func (hostPlatform) Match(p ocispec.Platform) bool {
	return p.OS == runtime.GOOS && p.Architecture == runtime.GOARCH
}

func (hostPlatform) Less(a, b ocispec.Platform) bool { return false }

// progressInterval throttles downloading/uploading events per blob.
const progressInterval = 100 * time.Millisecond

// copyBufferSize is the buffer of every blob copy.
const copyBufferSize = 32 << 10

// maxBlobAttempts caps the requests for one blob, however much progress
// each makes.
const maxBlobAttempts = 100

// PullOptions configure Pull.
type PullOptions struct {
	// Platform selects the manifest of a multi-platform image; nil means
	// this process's GOOS/GOARCH.
	Platform PlatformMatcher
	// Progress, when set, receives per-blob events.
	Progress func(ProgressEvent)
	// Resolver holds registry configuration, credentials and cached
	// tokens; nil means NewResolver(ResolverConfig{}).
	Resolver *Resolver
	// Retries bounds the attempts of a request (each manifest request
	// counts every failure), or of a blob download that makes no progress
	// (default DefaultRetries).
	Retries int
	// RetryBackoff is the first delay between attempts, doubled each
	// time up to 8s (default DefaultRetryBackoff).
	RetryBackoff time.Duration
	// Concurrency bounds parallel blob downloads (default 3).
	Concurrency int
	// IdleTimeout bounds every request (blob, manifest, token): one that
	// gets no answer in this long, or whose body brings less than 16 KiB
	// (and not its end) in this long, is dropped and retried; blobs resume
	// (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// BeforeBlob, when set, is called with every blob (manifests, config,
	// layers) before Pull looks for it in the store or writes it; an error
	// stops the pull. Callers use it to protect the blob from garbage
	// collection (a lease) before relying on it.
	BeforeBlob func(ctx context.Context, d ocispec.Descriptor) error
}

// DefaultIdleTimeout is the default PullOptions.IdleTimeout.
const DefaultIdleTimeout = 60 * time.Second

// Pull fetches the image ref into store: the root manifest or index, the
// manifest of the selected platform, its config and layers. It returns the
// root descriptor (what the tag or digest points to) and the platform
// manifest's descriptor (equal to root for single-platform images). Blobs
// already in the store are skipped. Each download goes through the ingest
// "pull-<digest>" and resumes with a Range request from the bytes already
// there, after a dropped connection as after a restart of the process. The
// data is verified against its digest before it becomes visible: wrong
// bytes give ErrDataLoss and the ingest is discarded.
func Pull(ctx context.Context, ref string, store *content.Store, opts PullOptions) (root, manifest ocispec.Descriptor, err error) {
	if store == nil {
		return root, manifest, errdefs.InvalidArgument("store", "must not be nil")
	}
	s, err := newSession(ref, opts.Resolver, opts.Retries, opts.RetryBackoff, opts.Progress, true)
	if err != nil {
		return root, manifest, err
	}
	defer s.close()
	s.store = store
	s.before = opts.BeforeBlob
	if opts.IdleTimeout > 0 {
		s.setIdle(opts.IdleTimeout)
	}
	pm := opts.Platform
	if pm == nil {
		pm = hostPlatform{}
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = DefaultConcurrency
	}

	root, data, err := s.resolve(ctx)
	if err != nil {
		return root, manifest, err
	}
	desc := root
	for depth := 0; isIndex(desc.MediaType); depth++ {
		if depth >= maxIndexDepth {
			return root, manifest, fmt.Errorf("%s: indexes nested deeper than %d: %w", s.ref, maxIndexDepth, errdefs.ErrInvalidArgument)
		}
		child, err := selectPlatform(s.ref, desc, data, pm)
		if err != nil {
			return root, manifest, err
		}
		if data, err = s.manifest(ctx, &child); err != nil {
			return root, manifest, err
		}
		desc = child
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return root, manifest, fmt.Errorf("%s: manifest %s: %v: %w", s.ref, desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	blobs := append([]ocispec.Descriptor{m.Config}, m.Layers...)
	for _, b := range blobs {
		if err := checkDescriptor(b); err != nil {
			return root, manifest, fmt.Errorf("%s: manifest %s: %w", s.ref, desc.Digest, err)
		}
	}
	if err := parallel(ctx, conc, blobs, s.fetchBlob); err != nil {
		return root, manifest, err
	}
	return root, desc, nil
}

// checkDescriptor validates a descriptor taken from a manifest.
func checkDescriptor(d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil || d.Digest.Algorithm() != digest.SHA256 {
		return errdefs.InvalidArgument("descriptor", "bad or unsupported digest %q (only sha256)", d.Digest)
	}
	if d.Size < 0 {
		return errdefs.InvalidArgument("descriptor", "%s: negative size %d", d.Digest, d.Size)
	}
	return nil
}

// selectPlatform picks the best manifest of an index for pm.
func selectPlatform(ref Reference, desc ocispec.Descriptor, data []byte, pm PlatformMatcher) (ocispec.Descriptor, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: index %s: %v: %w", ref, desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	var cands []ocispec.Descriptor
	var seen []string
	for _, c := range idx.Manifests {
		if !isIndex(c.MediaType) && !isManifest(c.MediaType) {
			continue
		}
		if c.Platform == nil {
			seen = append(seen, "(no platform)")
			continue
		}
		seen = append(seen, platformString(*c.Platform))
		if pm.Match(*c.Platform) {
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		return ocispec.Descriptor{}, fmt.Errorf("%s: index %s has no manifest for this platform (it has: %s): %w",
			ref, desc.Digest, strings.Join(seen, ", "), errdefs.ErrNotFound)
	}
	sort.SliceStable(cands, func(i, j int) bool { return pm.Less(*cands[i].Platform, *cands[j].Platform) })
	if err := checkDescriptor(cands[0]); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: index %s: %w", ref, desc.Digest, err)
	}
	return cands[0], nil
}

func platformString(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// parallel runs fn for every item with at most n at a time, stopping at the
// first error.
func parallel(ctx context.Context, n int, items []ocispec.Descriptor, fn func(context.Context, ocispec.Descriptor) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, it); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// session is one Pull or Push of one reference.
type session struct {
	r      *Resolver
	own    bool // r was created for this session
	ref    Reference
	store  *content.Store
	eps    []*endpoint
	scope  string
	rt     retrier
	report func(ProgressEvent)
	pmu    sync.Mutex
	before func(context.Context, ocispec.Descriptor) error // pulls: PullOptions.BeforeBlob

	dmu  sync.Mutex
	down map[*endpoint]bool // mirrors that failed: not tried again
}

func newSession(ref string, r *Resolver, retries int, backoff time.Duration, progress func(ProgressEvent), pull bool) (*session, error) {
	pr, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	s := &session{r: r, ref: pr, rt: newRetrier(retries, backoff), report: progress, down: map[*endpoint]bool{}}
	if s.r == nil {
		if s.r, err = NewResolver(ResolverConfig{}); err != nil {
			return nil, err
		}
		s.own = true
	}
	s.eps = s.r.endpoints(pr.Registry, pull)
	s.scope = scopeFor(pr.Repository, !pull)
	s.setIdle(DefaultIdleTimeout)
	return s, nil
}

// setIdle sets the idle limit of the session's requests
// (PullOptions.IdleTimeout), which the watchdog of every exchange applies
// per endpoint.
func (s *session) setIdle(d time.Duration) {
	for _, ep := range s.eps {
		ep.idle = d
	}
}

func (s *session) close() {
	if s.own {
		s.r.Close()
	}
}

func (s *session) emit(d ocispec.Descriptor, off int64, st ProgressStatus) {
	if s.report == nil {
		return
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	s.report(ProgressEvent{Digest: d.Digest, MediaType: d.MediaType, Offset: off, Total: d.Size, Status: st})
}

// each runs fn against the endpoints in order until one succeeds. Mirrors
// that fail are logged and skipped; the origin's error is returned.
func (s *session) each(ctx context.Context, fn func(ep *endpoint) error) error {
	var err error
	for _, ep := range s.eps {
		s.dmu.Lock()
		down := s.down[ep]
		s.dmu.Unlock()
		if down {
			continue
		}
		if err = fn(ep); err == nil {
			return nil
		}
		if ctx.Err() != nil || !ep.mirror {
			return err
		}
		slog.WarnContext(ctx, "remotes: mirror failed, trying the next endpoint", "mirror", ep.base.String(), "ref", s.ref.String(), "error", err)
		if errors.Is(err, errdefs.ErrUnavailable) {
			s.dmu.Lock()
			s.down[ep] = true
			s.dmu.Unlock()
		}
	}
	return err
}

// resolve finds the root descriptor of the reference and returns it with
// the root document (stored when the session has a store).
func (s *session) resolve(ctx context.Context) (ocispec.Descriptor, []byte, error) {
	if s.ref.Digest != "" {
		d := ocispec.Descriptor{Digest: s.ref.Digest}
		data, err := s.manifest(ctx, &d)
		return d, data, err
	}
	var desc ocispec.Descriptor
	var data []byte
	err := s.each(ctx, func(ep *endpoint) error {
		err := s.retry(ctx, ep, "manifest "+s.ref.Tag, func() error {
			var err error
			desc, err = s.head(ctx, ep)
			return err
		})
		if err == nil {
			return nil
		}
		if !errors.Is(err, errHeadUnusable) {
			return err
		}
		// HEAD gave no usable answer: GET the tag.
		desc, data, err = s.getManifest(ctx, ep, s.ref.Tag, ocispec.Descriptor{})
		return err
	})
	if err != nil {
		return desc, nil, err
	}
	if data == nil {
		data, err = s.manifest(ctx, &desc)
	} else if s.store != nil {
		err = s.storeBytes(ctx, desc, data)
	}
	return desc, data, err
}

// errHeadUnusable: a HEAD answer lacks the digest, size or media type, or
// the method is not allowed; resolve then GETs the tag.
var errHeadUnusable = errors.New("HEAD answer unusable")

// head asks for the tag's descriptor, once.
func (s *session) head(ctx context.Context, ep *endpoint) (ocispec.Descriptor, error) {
	rq := &request{method: http.MethodHead, path: s.ref.Repository + "/manifests/" + s.ref.Tag,
		header: http.Header{"Accept": {acceptManifests}}, scope: s.scope}
	resp, err := s.r.send(ctx, ep, rq)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusMethodNotAllowed {
		return ocispec.Descriptor{}, errHeadUnusable
	}
	if resp.StatusCode != http.StatusOK {
		return ocispec.Descriptor{}, s.notFound(statusError(ep, rq, resp))
	}
	mt := headerMediaType(resp.Header.Get("Content-Type"))
	if isSchema1(mt) {
		return ocispec.Descriptor{}, errSchema1(s.ref.String())
	}
	dgst, derr := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if derr != nil || dgst.Algorithm() != digest.SHA256 || resp.ContentLength <= 0 || (!isIndex(mt) && !isManifest(mt)) {
		return ocispec.Descriptor{}, errHeadUnusable
	}
	if resp.ContentLength > MaxManifestSize {
		return ocispec.Descriptor{}, fmt.Errorf("%s: manifest of %d bytes exceeds the limit of %d: %w", s.ref, resp.ContentLength, MaxManifestSize, errdefs.ErrResourceExhausted)
	}
	return ocispec.Descriptor{MediaType: mt, Digest: dgst, Size: resp.ContentLength}, nil
}

func (s *session) notFound(err error) error {
	if errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("image %s not found: %w", s.ref, err)
	}
	return err
}

// manifest returns the document desc points to, from the store when it is
// there, else from the registry (then stored). desc's media type and size
// are filled in from what was found.
func (s *session) manifest(ctx context.Context, desc *ocispec.Descriptor) ([]byte, error) {
	if err := s.beforeBlob(ctx, *desc); err != nil {
		return nil, err
	}
	if s.store != nil {
		if data, err := s.readStored(ctx, desc.Digest); err == nil {
			mt, err := detectMediaType(s.ref.String()+" manifest "+desc.Digest.String(), desc.MediaType, data)
			if err != nil {
				return nil, err
			}
			desc.MediaType, desc.Size = mt, int64(len(data))
			return data, nil
		} else if !errors.Is(err, errdefs.ErrNotFound) {
			return nil, err
		}
	}
	var data []byte
	err := s.each(ctx, func(ep *endpoint) error {
		d, b, err := s.getManifest(ctx, ep, desc.Digest.String(), *desc)
		if err == nil {
			*desc, data = d, b
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if s.store != nil {
		if err := s.storeBytes(ctx, *desc, data); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// readStored reads a stored manifest, at most MaxManifestSize bytes.
func (s *session) readStored(ctx context.Context, dgst digest.Digest) ([]byte, error) {
	ra, err := s.store.ReaderAt(ctx, dgst)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	if ra.Size() > MaxManifestSize {
		return nil, fmt.Errorf("manifest %s of %d bytes exceeds the limit of %d: %w", dgst, ra.Size(), MaxManifestSize, errdefs.ErrResourceExhausted)
	}
	data := make([]byte, ra.Size())
	if _, err := ra.ReadAt(data, 0); err != nil && !(errors.Is(err, io.EOF) && len(data) == 0) {
		return nil, fmt.Errorf("manifest %s: %w", dgst, err)
	}
	return data, nil
}

// getManifest GETs a manifest by tag or digest. When want has a digest the
// bytes must match it.
func (s *session) getManifest(ctx context.Context, ep *endpoint, object string, want ocispec.Descriptor) (d ocispec.Descriptor, data []byte, err error) {
	err = s.retry(ctx, ep, "manifest "+object, func() error {
		var err error
		d, data, err = s.getManifestOnce(ctx, ep, object, want)
		return err
	})
	return d, data, err
}

// retry runs attempt, one request for a manifest, until it succeeds or
// fails for good, at most s.rt.attempts times (PullOptions.Retries) with
// the backoff of blob downloads between attempts. It is the only retry
// loop of manifest requests: an attempt is one request, whether it failed
// with a 5xx or 429, a lost or silent connection (no answer within the
// idle timeout), or a body that broke off or stalled. Mirrors get one
// attempt: the caller moves on to the next endpoint. The final error
// names the reference, what was asked and the number of attempts, and
// wraps the last one.
func (s *session) retry(ctx context.Context, ep *endpoint, what string, attempt func() error) error {
	for n := 1; ; n++ {
		err := attempt()
		if err == nil || ctx.Err() != nil || ep.mirror || !errors.Is(err, errdefs.ErrUnavailable) {
			return err
		}
		if n >= s.rt.attempts {
			return fmt.Errorf("%s: %s: giving up after %d %s: %w", s.ref, what, n, plural(n, "attempt", "attempts"), err)
		}
		slog.InfoContext(ctx, "remotes: manifest request failed, retrying", "ref", s.ref.String(), "what", what, "attempt", n, "error", err)
		if werr := s.rt.wait(ctx, n-1); werr != nil {
			return werr
		}
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func (s *session) getManifestOnce(ctx context.Context, ep *endpoint, object string, want ocispec.Descriptor) (ocispec.Descriptor, []byte, error) {
	rq := &request{method: http.MethodGet, path: s.ref.Repository + "/manifests/" + object,
		header: http.Header{"Accept": {acceptManifests}}, scope: s.scope}
	resp, err := s.r.send(ctx, ep, rq)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return ocispec.Descriptor{}, nil, s.notFound(statusError(ep, rq, resp))
	}
	defer resp.Body.Close()
	what := s.ref.Name() + "@" + object
	if resp.ContentLength > MaxManifestSize {
		return ocispec.Descriptor{}, nil, fmt.Errorf("%s: manifest of %d bytes exceeds the limit of %d: %w", what, resp.ContentLength, MaxManifestSize, errdefs.ErrResourceExhausted)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return ocispec.Descriptor{}, nil, cerr
		}
		return ocispec.Descriptor{}, nil, fmt.Errorf("registry %s: reading manifest %s: %w: %w", ep.host, what, err, errdefs.ErrUnavailable)
	}
	if len(data) > MaxManifestSize {
		return ocispec.Descriptor{}, nil, fmt.Errorf("%s: manifest exceeds the limit of %d bytes: %w", what, MaxManifestSize, errdefs.ErrResourceExhausted)
	}
	dgst := digest.SHA256.FromBytes(data)
	if want.Digest != "" && dgst != want.Digest {
		return ocispec.Descriptor{}, nil, fmt.Errorf("registry %s: manifest %s: served content has digest %s: %w", ep.host, want.Digest, dgst, errdefs.ErrDataLoss)
	}
	if want.Size > 0 && int64(len(data)) != want.Size {
		return ocispec.Descriptor{}, nil, fmt.Errorf("registry %s: manifest %s: %d bytes, expected %d: %w", ep.host, want.Digest, len(data), want.Size, errdefs.ErrDataLoss)
	}
	mt := headerMediaType(resp.Header.Get("Content-Type"))
	if mt == "" || (!isIndex(mt) && !isManifest(mt) && !isSchema1(mt)) {
		mt = want.MediaType
	}
	mt, err = detectMediaType(what, mt, data)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	d := want
	d.MediaType, d.Digest, d.Size = mt, dgst, int64(len(data))
	return d, data, nil
}

// storeBytes writes a small verified document into the store.
func (s *session) storeBytes(ctx context.Context, desc ocispec.Descriptor, data []byte) error {
	if err := s.beforeBlob(ctx, desc); err != nil {
		return err
	}
	w, err := s.openIngest(ctx, "pull-"+desc.Digest.String(), content.WriterOpts{Expected: desc.Digest, Total: int64(len(data))})
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		return nil
	}
	if err != nil {
		return err
	}
	defer w.Close()
	if w.Offset() > 0 {
		if err := w.Truncate(0); err != nil {
			return err
		}
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	if err := w.Commit(ctx, int64(len(data)), desc.Digest); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
		return err
	}
	return nil
}

// beforeBlob calls PullOptions.BeforeBlob, if any.
func (s *session) beforeBlob(ctx context.Context, d ocispec.Descriptor) error {
	if s.before == nil || d.Digest == "" {
		return nil
	}
	return s.before(ctx, d)
}

// fetchBlob downloads one blob into the store, resuming its ingest.
// openWriter opens the ingest ref, waiting while another pull writes the
// same blob (one of another image sharing a layer, in this process or in
// another registry helper): it returns when that writer is gone (the
// ingest is then resumed from what it wrote) or the blob is complete
// (ErrAlreadyExists), or when ctx ends.
func (s *session) openWriter(ctx context.Context, ref string, opts content.WriterOpts) (*content.Writer, error) {
	delay := 20 * time.Millisecond
	for {
		w, err := s.store.Writer(ctx, ref, opts)
		if !errors.Is(err, errdefs.ErrUnavailable) {
			return w, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("waiting for another writer of %s: %w", ref, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}

// openIngest is openWriter, discarding an ingest of ref that was started
// with another total: that size came from a different (wrong) manifest,
// or an interrupted pull was told another size; the bytes written now are
// checked against the digest anyway. Without this the stale ingest would
// fail every pull of that blob.
func (s *session) openIngest(ctx context.Context, ref string, opts content.WriterOpts) (*content.Writer, error) {
	w, err := s.openWriter(ctx, ref, opts)
	if errors.Is(err, errdefs.ErrFailedPrecondition) {
		slog.WarnContext(ctx, "remotes: discarding inconsistent ingest", "ref", ref, "error", err)
		if aerr := s.store.Abort(ctx, ref); aerr != nil && !errors.Is(aerr, errdefs.ErrNotFound) {
			return nil, aerr
		}
		w, err = s.openWriter(ctx, ref, opts)
	}
	return w, err
}

func (s *session) fetchBlob(ctx context.Context, desc ocispec.Descriptor) error {
	if err := s.beforeBlob(ctx, desc); err != nil {
		return err
	}
	if _, err := s.store.Info(ctx, desc.Digest); err == nil {
		s.emit(desc, desc.Size, ProgressExists)
		return nil
	}
	ref := "pull-" + desc.Digest.String()
	opts := content.WriterOpts{Expected: desc.Digest, Total: desc.Size}
	w, err := s.openIngest(ctx, ref, opts)
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		s.emit(desc, desc.Size, ProgressExists)
		return nil
	}
	if err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	defer w.Close()
	if w.Offset() > 0 {
		s.emit(desc, w.Offset(), ProgressResuming)
	} else {
		s.emit(desc, 0, ProgressDownloading)
	}
	err = s.each(ctx, func(ep *endpoint) error {
		for {
			resumed := w.Offset() > 0
			if err := s.download(ctx, ep, w, desc); err != nil {
				return err
			}
			got := w.Digest()
			if got == desc.Digest {
				return nil
			}
			if terr := w.Truncate(0); terr != nil {
				return terr
			}
			if !resumed {
				return fmt.Errorf("registry %s: blob %s of %s: the registry served bytes with digest %s: %w",
					ep.host, desc.Digest, s.ref.Name(), got, errdefs.ErrDataLoss)
			}
			// The kept prefix may be what is wrong (data not yet on disk
			// when the machine went down): download it all once more.
			slog.WarnContext(ctx, "remotes: resumed blob does not verify, downloading it again", "digest", desc.Digest, "got", got)
		}
	})
	if err != nil {
		if errors.Is(err, errdefs.ErrDataLoss) {
			w.Close()
			if aerr := s.store.Abort(context.WithoutCancel(ctx), ref); aerr != nil && !errors.Is(aerr, errdefs.ErrNotFound) {
				slog.WarnContext(ctx, "remotes: aborting ingest", "ref", ref, "error", aerr)
			}
		}
		return err
	}
	if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
		return fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	s.emit(desc, desc.Size, ProgressDone)
	return nil
}

// download fills w up to desc.Size from ep, retrying with Range requests
// from the bytes already written. Attempts that make no progress are
// bounded by the retry count.
func (s *session) download(ctx context.Context, ep *endpoint, w *content.Writer, desc ocispec.Descriptor) error {
	buf := make([]byte, copyBufferSize)
	stalled := 0
	for attempt := 1; ; attempt++ {
		off := w.Offset()
		if off >= desc.Size {
			return nil
		}
		err := s.downloadOnce(ctx, ep, w, desc, off, buf)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, errdefs.ErrUnavailable) || ep.mirror || attempt >= maxBlobAttempts {
			return err
		}
		if w.Offset() > off {
			stalled = 0
		} else {
			stalled++
		}
		if stalled >= s.rt.attempts {
			return err
		}
		slog.InfoContext(ctx, "remotes: blob download interrupted, retrying", "digest", desc.Digest, "offset", w.Offset(), "error", err)
		if err := s.rt.wait(ctx, stalled); err != nil {
			return err
		}
	}
}

// downloadOnce sends one GET for the blob (with Range when off > 0) and
// copies the answer into w.
func (s *session) downloadOnce(ctx context.Context, ep *endpoint, w *content.Writer, desc ocispec.Descriptor, off int64, buf []byte) error {
	rq := &request{method: http.MethodGet, path: s.ref.Repository + "/blobs/" + desc.Digest.String(), scope: s.scope, header: http.Header{}}
	if off > 0 {
		rq.header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	// send's watchdog bounds the wait for the answer and then the body, so
	// that neither a silently dead connection nor a trickle hangs the pull.
	resp, err := s.r.send(ctx, ep, rq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sizeErr := func(n int64) error {
		return fmt.Errorf("registry %s: blob %s of %s: the registry reports %d bytes, the manifest says %d: %w",
			ep.host, desc.Digest, s.ref.Name(), n, desc.Size, errdefs.ErrDataLoss)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != desc.Size {
			return sizeErr(resp.ContentLength)
		}
		if off > 0 {
			// The server ignored the Range: start over.
			slog.InfoContext(ctx, "remotes: registry ignored the Range request, restarting the blob", "digest", desc.Digest, "offset", off)
			if err := w.Truncate(0); err != nil {
				return err
			}
			off = 0
			s.emit(desc, 0, ProgressDownloading)
		}
	case http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if ok && total >= 0 && total != desc.Size {
			return sizeErr(total)
		}
		if !ok || start != off {
			if err := w.Truncate(0); err != nil {
				return err
			}
			return fmt.Errorf("registry %s: blob %s: asked for bytes from %d, got Content-Range %q; restarting: %w",
				ep.host, desc.Digest, off, resp.Header.Get("Content-Range"), errdefs.ErrUnavailable)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		// The registry's blob is shorter than what we hold: start over.
		if err := w.Truncate(0); err != nil {
			return err
		}
		return fmt.Errorf("registry %s: blob %s: range from %d not satisfiable; restarting: %w", ep.host, desc.Digest, off, errdefs.ErrUnavailable)
	default:
		return s.notFound(statusError(ep, rq, resp))
	}
	pw := &progressWriter{w: w, s: s, desc: desc, last: time.Now()}
	_, err = io.CopyBuffer(pw, io.LimitReader(resp.Body, desc.Size-off), buf)
	if pw.err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, pw.err)
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		var se *stallError
		if errors.As(err, &se) {
			return fmt.Errorf("registry %s: blob %s: at byte %d of %d: %w: %w", ep.host, desc.Digest, w.Offset(), desc.Size, err, errdefs.ErrUnavailable)
		}
		return fmt.Errorf("registry %s: blob %s: connection lost at byte %d of %d: %w: %w", ep.host, desc.Digest, w.Offset(), desc.Size, err, errdefs.ErrUnavailable)
	}
	if w.Offset() < desc.Size {
		return fmt.Errorf("registry %s: blob %s: response ended at byte %d of %d: %w", ep.host, desc.Digest, w.Offset(), desc.Size, errdefs.ErrUnavailable)
	}
	var one [1]byte
	if n, _ := io.ReadFull(resp.Body, one[:]); n > 0 {
		return fmt.Errorf("registry %s: blob %s of %s: the registry sent more than the %d bytes the manifest says: %w",
			ep.host, desc.Digest, s.ref.Name(), desc.Size, errdefs.ErrDataLoss)
	}
	return nil
}

// parseContentRange parses "bytes <start>-<end>/<total|*>"; total is -1
// when unknown.
func parseContentRange(v string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, total, true
}

// progressWriter writes into an ingest and reports progress, throttled.
type progressWriter struct {
	w    *content.Writer
	s    *session
	desc ocispec.Descriptor
	last time.Time
	err  error
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	if err != nil {
		p.err = err
		return n, err
	}
	if now := time.Now(); now.Sub(p.last) >= progressInterval {
		p.last = now
		p.s.emit(p.desc, p.w.Offset(), ProgressDownloading)
	}
	return n, nil
}

// Resolve returns the descriptor a reference points to (its root manifest
// or index) without downloading anything else.
func (r *Resolver) Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error) {
	s, err := newSession(ref, r, 0, 0, nil, true)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d, _, err := s.resolve(ctx)
	return d, err
}
