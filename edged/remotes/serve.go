package remotes

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images/platforms"
	"github.com/edged/edged/edged/registry"
	"github.com/edged/edged/fsstore/content"
	"github.com/edged/edged/internal/pageout"
)

// Serve is the helper side of the registry protocol (package registry):
// it reads one Request from r, runs the pull or push, and writes progress,
// blob questions and finally the Result or Error to w. Replies to blob
// questions arrive on r; r's end (edged gone) cancels the call. The error
// returned is a broken protocol (bad request line, w closed); the call's
// own failure is sent to edged and Serve returns nil. The last message
// carries the process's peak RSS (pageout.PeakRSS) and startKiB, its peak
// during start-up, for edged's log.
func Serve(ctx context.Context, r io.Reader, w io.Writer, startKiB int64) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), registry.MaxLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return fmt.Errorf("read request: %w", err)
		}
		return fmt.Errorf("no request: %w", io.ErrUnexpectedEOF)
	}
	var req registry.Request
	if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
		return fmt.Errorf("malformed request: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &server{w: w, waiting: map[uint64]chan error{}}
	go s.readReplies(sc, cancel)
	res, err := s.run(ctx, req)
	m := registry.Message{PeakRSSKiB: pageout.PeakRSS(), StartRSSKiB: startKiB}
	if err != nil {
		m.Error = registry.ToWire(err)
	} else {
		m.Result = &res
	}
	return s.send(m)
}

type server struct {
	wmu sync.Mutex
	w   io.Writer

	mu      sync.Mutex
	next    uint64
	waiting map[uint64]chan error
	closed  bool
}

func (s *server) send(m registry.Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, err = s.w.Write(append(b, '\n'))
	return err
}

// readReplies hands replies to the blob questions waiting for them, and
// cancels the call when edged's side closes.
func (s *server) readReplies(sc *bufio.Scanner, cancel context.CancelFunc) {
	for sc.Scan() {
		var rep registry.Reply
		if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
			break
		}
		s.mu.Lock()
		ch := s.waiting[rep.ID]
		delete(s.waiting, rep.ID)
		s.mu.Unlock()
		if ch != nil {
			ch <- rep.Error.Err()
		}
	}
	s.mu.Lock()
	s.closed = true
	for id, ch := range s.waiting {
		ch <- fmt.Errorf("edged closed the helper's input: %w", errdefs.ErrAborted)
		delete(s.waiting, id)
	}
	s.mu.Unlock()
	cancel()
}

// beforeBlob asks edged about d and waits for its reply.
func (s *server) beforeBlob(ctx context.Context, d ocispec.Descriptor) error {
	ch := make(chan error, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("edged closed the helper's input: %w", errdefs.ErrAborted)
	}
	s.next++
	id := s.next
	s.waiting[id] = ch
	s.mu.Unlock()
	if err := s.send(registry.Message{Blob: &d, ID: id}); err != nil {
		return fmt.Errorf("ask edged about blob %s: %w: %w", d.Digest, err, errdefs.ErrAborted)
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *server) progress(ev ProgressEvent) {
	// Errors show up at the next send of the call's end.
	_ = s.send(registry.Message{Progress: &ev})
}

func (s *server) run(ctx context.Context, req registry.Request) (registry.Result, error) {
	if req.Store == "" {
		return registry.Result{}, errdefs.InvalidArgument("store", "must not be empty")
	}
	store, err := content.New(req.Store)
	if err != nil {
		return registry.Result{}, err
	}
	res, err := NewResolver(ResolverConfig{Registries: req.Hosts, DockerConfig: req.DockerConfig, UserAgent: req.UserAgent})
	if err != nil {
		return registry.Result{}, err
	}
	defer res.Close()
	if req.Credentials != nil {
		ref, err := ParseReference(req.Ref)
		if err != nil {
			return registry.Result{}, err
		}
		res = res.WithCredentials(ref.Registry, *req.Credentials)
	}
	switch req.Op {
	case registry.OpPull:
		opts := PullOptions{Resolver: res, Progress: s.progress, Retries: req.Retries, RetryBackoff: req.RetryBackoff,
			IdleTimeout: req.IdleTimeout}
		if req.Platform != "" {
			p, err := platforms.Parse(req.Platform)
			if err != nil {
				return registry.Result{}, err
			}
			opts.Platform = platformMatcher{platforms.NewMatcher(p)}
		}
		if req.BeforeBlob {
			opts.BeforeBlob = s.beforeBlob
		}
		root, manifest, err := Pull(ctx, req.Ref, store, opts)
		return registry.Result{Root: root, Manifest: manifest}, err
	case registry.OpPush:
		if req.Target == nil {
			return registry.Result{}, errdefs.InvalidArgument("target", "a push needs the root descriptor")
		}
		err := Push(ctx, req.Ref, *req.Target, store, PushOptions{Resolver: res, Progress: s.progress,
			Retries: req.Retries, RetryBackoff: req.RetryBackoff, IdleTimeout: req.IdleTimeout, ChunkSize: req.ChunkSize})
		return registry.Result{}, err
	default:
		return registry.Result{}, errdefs.InvalidArgument("op", "%q is not %q or %q", req.Op, registry.OpPull, registry.OpPush)
	}
}

// platformMatcher lets a platforms.Matcher select registry manifests.
type platformMatcher struct{ m platforms.Matcher }

func (a platformMatcher) Match(p ocispec.Platform) bool { return a.m.Match(p) }
func (a platformMatcher) Less(x, y ocispec.Platform) bool {
	return a.m.Rank(x) < a.m.Rank(y)
}
