package remotes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/fsstore/content"
)

// PushOptions configure Push.
type PushOptions struct {
	// Progress, when set, receives per-blob events.
	Progress func(ProgressEvent)
	// Resolver holds registry configuration, credentials and cached
	// tokens; nil means NewResolver(ResolverConfig{}).
	Resolver *Resolver
	// Retries bounds the attempts of a request or upload (default
	// DefaultRetries).
	Retries int
	// RetryBackoff is the first delay between attempts (default
	// DefaultRetryBackoff).
	RetryBackoff time.Duration
	// IdleTimeout bounds every request (HEAD, upload, manifest, token) as
	// PullOptions.IdleTimeout does: an upload must move 16 KiB in this long
	// (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// Concurrency bounds parallel blob uploads (default 3).
	Concurrency int
	// ChunkSize > 0 uploads blobs in PATCH chunks of this many bytes;
	// 0 uploads each blob with one streamed PUT.
	ChunkSize int64
}

// Push uploads the image root (a manifest or an index, read from store) to
// ref: first the config and layer blobs the registry lacks (checked with
// HEAD), then the manifests, then root under ref's tag (or digest). Of an
// index only the manifests present in store are pushed, so an image pulled
// for one platform pushes that platform; registries that verify indexes
// then refuse the index with an ErrFailedPrecondition naming the missing
// manifests. Pushes always go to the origin, never to mirrors; cross-repo
// mounts are not used.
func Push(ctx context.Context, ref string, root ocispec.Descriptor, store *content.Store, opts PushOptions) error {
	if store == nil {
		return errdefs.InvalidArgument("store", "must not be nil")
	}
	if err := checkDescriptor(root); err != nil {
		return err
	}
	s, err := newSession(ref, opts.Resolver, opts.Retries, opts.RetryBackoff, opts.Progress, false)
	if err != nil {
		return err
	}
	defer s.close()
	s.store = store
	if opts.IdleTimeout > 0 {
		s.setIdle(opts.IdleTimeout)
	}
	if opts.ChunkSize < 0 {
		return errdefs.InvalidArgument("chunk size", "%d is negative", opts.ChunkSize)
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = DefaultConcurrency
	}
	p := &pushPlan{seen: map[digest.Digest]bool{}}
	if err := s.plan(ctx, p, &root, 0); err != nil {
		return err
	}
	ep := s.eps[len(s.eps)-1]
	err = parallel(ctx, conc, p.blobs, func(ctx context.Context, d ocispec.Descriptor) error {
		return s.pushBlob(ctx, ep, d, opts.ChunkSize)
	})
	if err != nil {
		return err
	}
	for _, m := range p.manifests {
		if err := s.pushManifest(ctx, ep, m, m.Digest.String(), true); err != nil {
			return err
		}
	}
	return s.pushManifest(ctx, ep, root, s.ref.Object(), false)
}

// pushPlan lists what Push uploads, children before parents.
type pushPlan struct {
	seen      map[digest.Digest]bool
	blobs     []ocispec.Descriptor
	manifests []ocispec.Descriptor // excluding the root
}

// plan walks desc in the store, filling in its media type.
func (s *session) plan(ctx context.Context, p *pushPlan, desc *ocispec.Descriptor, depth int) error {
	if depth > maxIndexDepth {
		return fmt.Errorf("%s: indexes nested deeper than %d: %w", desc.Digest, maxIndexDepth, errdefs.ErrInvalidArgument)
	}
	data, err := s.readStored(ctx, desc.Digest)
	if err != nil {
		return fmt.Errorf("push %s: manifest %s: %w", s.ref, desc.Digest, err)
	}
	what := "manifest " + desc.Digest.String()
	mt, err := detectMediaType(what, desc.MediaType, data)
	if err != nil {
		return err
	}
	desc.MediaType, desc.Size = mt, int64(len(data))
	if isIndex(mt) {
		var idx ocispec.Index
		if err := json.Unmarshal(data, &idx); err != nil {
			return fmt.Errorf("%s: %v: %w", what, err, errdefs.ErrInvalidArgument)
		}
		present := 0
		for _, c := range idx.Manifests {
			if err := checkDescriptor(c); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			if _, err := s.store.Info(ctx, c.Digest); err != nil {
				if errors.Is(err, errdefs.ErrNotFound) {
					slog.InfoContext(ctx, "remotes: push: manifest not present locally, skipped", "index", desc.Digest, "manifest", c.Digest)
					continue
				}
				return err
			}
			present++
			if p.seen[c.Digest] {
				continue
			}
			p.seen[c.Digest] = true
			if err := s.plan(ctx, p, &c, depth+1); err != nil {
				return err
			}
			p.manifests = append(p.manifests, c)
		}
		if present == 0 {
			return fmt.Errorf("push %s: none of the manifests of index %s is present locally: %w", s.ref, desc.Digest, errdefs.ErrFailedPrecondition)
		}
		return nil
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%s: %v: %w", what, err, errdefs.ErrInvalidArgument)
	}
	for _, b := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		if err := checkDescriptor(b); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		info, err := s.store.Info(ctx, b.Digest)
		if err != nil {
			return fmt.Errorf("push %s: blob %s of %s: %w", s.ref, b.Digest, what, err)
		}
		if info.Size != b.Size {
			return fmt.Errorf("push %s: blob %s is %d bytes in the store, %s says %d: %w", s.ref, b.Digest, info.Size, what, b.Size, errdefs.ErrFailedPrecondition)
		}
		if !p.seen[b.Digest] {
			p.seen[b.Digest] = true
			p.blobs = append(p.blobs, b)
		}
	}
	return nil
}

// exists HEADs a blob or manifest in the registry.
func (s *session) exists(ctx context.Context, ep *endpoint, kind string, d digest.Digest) (bool, error) {
	rq := &request{method: http.MethodHead, path: s.ref.Repository + "/" + kind + "/" + d.String(), scope: s.scope}
	if kind == "manifests" {
		rq.header = http.Header{"Accept": {acceptManifests}}
	}
	resp, err := s.r.do(ctx, ep, rq, s.rt)
	if err != nil {
		return false, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		resp.Body.Close()
		return true, nil
	case http.StatusNotFound:
		resp.Body.Close()
		return false, nil
	}
	return false, statusError(ep, rq, resp)
}

// pushBlob uploads one blob unless the registry has it, retrying whole
// uploads on transient errors.
func (s *session) pushBlob(ctx context.Context, ep *endpoint, desc ocispec.Descriptor, chunk int64) error {
	ok, err := s.exists(ctx, ep, "blobs", desc.Digest)
	if err != nil {
		return err
	}
	if ok {
		s.emit(desc, desc.Size, ProgressExists)
		return nil
	}
	for n := 0; ; n++ {
		s.emit(desc, 0, ProgressUploading)
		err := s.upload(ctx, ep, desc, chunk)
		if err == nil {
			s.emit(desc, desc.Size, ProgressDone)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, errdefs.ErrUnavailable) || n+1 >= s.rt.attempts {
			return err
		}
		slog.InfoContext(ctx, "remotes: blob upload failed, retrying", "digest", desc.Digest, "error", err)
		if err := s.rt.wait(ctx, n); err != nil {
			return err
		}
	}
}

// upload starts an upload session and sends the blob, in one PUT or in
// PATCH chunks followed by a closing PUT.
func (s *session) upload(ctx context.Context, ep *endpoint, desc ocispec.Descriptor, chunk int64) error {
	rq := &request{method: http.MethodPost, path: s.ref.Repository + "/blobs/uploads/", scope: s.scope,
		body: func() (io.ReadCloser, error) { return http.NoBody, nil }}
	// One attempt: pushBlob retries the whole upload.
	resp, err := s.r.send(ctx, ep, rq)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted {
		return statusError(ep, rq, resp)
	}
	loc, err := resp.Location()
	discard(resp)
	if err != nil {
		return fmt.Errorf("registry %s: upload of %s: no usable Location: %v: %w", ep.host, desc.Digest, err, errdefs.ErrUnavailable)
	}
	if err := checkLocation(ep, desc, loc); err != nil {
		return err
	}
	put := func(u *url.URL, off, n int64) *request {
		q := u.Query()
		q.Set("digest", desc.Digest.String())
		pu := *u
		pu.RawQuery = q.Encode()
		r := &request{method: http.MethodPut, url: &pu, scope: s.scope, length: n,
			header: http.Header{"Content-Type": {"application/octet-stream"}},
			body:   s.blobBody(ctx, desc, off, n)}
		return r
	}
	if chunk > 0 {
		for off := int64(0); off < desc.Size; {
			n := min(chunk, desc.Size-off)
			rq := &request{method: http.MethodPatch, url: loc, scope: s.scope, length: n,
				header: http.Header{
					"Content-Type":  {"application/octet-stream"},
					"Content-Range": {strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+n-1, 10)},
				},
				body: s.blobBody(ctx, desc, off, n)}
			resp, err := s.r.send(ctx, ep, rq)
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusAccepted {
				return statusError(ep, rq, resp)
			}
			next, err := resp.Location()
			discard(resp)
			if err != nil {
				return fmt.Errorf("registry %s: upload of %s: no usable Location after a chunk: %v: %w", ep.host, desc.Digest, err, errdefs.ErrUnavailable)
			}
			if err := checkLocation(ep, desc, next); err != nil {
				return err
			}
			loc = next
			off += n
		}
		rq = put(loc, 0, 0)
	} else {
		rq = put(loc, 0, desc.Size)
	}
	resp, err = s.r.send(ctx, ep, rq)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return statusError(ep, rq, resp)
	}
	discard(resp)
	return nil
}

// checkLocation refuses an upload location over plain HTTP from a registry
// reached over HTTPS: the blob, and the credentials when the location is
// on the registry's host and port, would go in clear text. (send gives
// credentials only to the registry's own origin, scheme included.)
func checkLocation(ep *endpoint, desc ocispec.Descriptor, loc *url.URL) error {
	if ep.base.Scheme == "https" && loc.Scheme != "https" {
		return fmt.Errorf("registry %s: upload of %s: the registry gave an upload location over plain HTTP (%s); refusing to send the blob unencrypted: %w",
			ep.host, desc.Digest, redactURL(loc), errdefs.ErrFailedPrecondition)
	}
	return nil
}

// blobBody returns a factory of readers of n bytes of a stored blob from
// off, reporting upload progress.
func (s *session) blobBody(ctx context.Context, desc ocispec.Descriptor, off, n int64) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		ra, err := s.store.ReaderAt(ctx, desc.Digest)
		if err != nil {
			return nil, err
		}
		return &uploadReader{r: io.NewSectionReader(ra, off, n), c: ra, s: s, desc: desc, off: off, last: time.Now()}, nil
	}
}

type uploadReader struct {
	r    io.Reader
	c    io.Closer
	s    *session
	desc ocispec.Descriptor
	off  int64
	last time.Time
}

func (u *uploadReader) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	u.off += int64(n)
	if now := time.Now(); now.Sub(u.last) >= progressInterval {
		u.last = now
		u.s.emit(u.desc, u.off, ProgressUploading)
	}
	return n, err
}

func (u *uploadReader) Close() error { return u.c.Close() }

// pushManifest PUTs a stored manifest or index under object (tag or
// digest). With skipExisting, a manifest the registry has is not sent.
func (s *session) pushManifest(ctx context.Context, ep *endpoint, desc ocispec.Descriptor, object string, skipExisting bool) error {
	if skipExisting {
		ok, err := s.exists(ctx, ep, "manifests", desc.Digest)
		if err != nil {
			return err
		}
		if ok {
			s.emit(desc, desc.Size, ProgressExists)
			return nil
		}
	}
	data, err := s.readStored(ctx, desc.Digest)
	if err != nil {
		return err
	}
	rq := &request{method: http.MethodPut, path: s.ref.Repository + "/manifests/" + object, scope: s.scope,
		header: http.Header{"Content-Type": {desc.MediaType}}, length: int64(len(data)),
		body: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}
	resp, err := s.r.do(ctx, ep, rq, s.rt)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		err := statusError(ep, rq, resp)
		if isIndex(desc.MediaType) && errors.Is(err, errdefs.ErrFailedPrecondition) {
			return fmt.Errorf("push %s: the registry refused index %s (manifests of platforms not present locally were not pushed): %w", s.ref, desc.Digest, err)
		}
		return err
	}
	got := resp.Header.Get("Docker-Content-Digest")
	discard(resp)
	if got != "" && got != desc.Digest.String() {
		return fmt.Errorf("registry %s: manifest %s stored with digest %s: %w", ep.host, desc.Digest, got, errdefs.ErrDataLoss)
	}
	s.emit(desc, desc.Size, ProgressDone)
	return nil
}
