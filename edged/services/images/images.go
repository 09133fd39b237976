// Package images is the ttrpc Images service: image records, registry pull
// and push with streamed progress, archive import and export, usage and
// garbage collection, over edged/images.
package images

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	ptypes "github.com/gogo/protobuf/types"
	"github.com/opencontainers/go-digest"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/filters"
	"github.com/edged/edged/edged/images"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/edged/protoconv"
	"github.com/edged/edged/edged/registry"
	"github.com/edged/edged/fsstore/content"
	"github.com/edged/edged/proto/rpc"
	api "github.com/edged/edged/proto/services/images/v1"
	ptypesapi "github.com/edged/edged/proto/types"
)

// MaxImportChunk is the largest data message an Import accepts.
const MaxImportChunk = 1 << 20

// exportChunk is the size of the data messages of an Export.
const exportChunk = 512 << 10

// progressInterval is how often Pull and Push send progress.
const progressInterval = 200 * time.Millisecond

// Config is what the service needs.
type Config struct {
	DB      *metadata.DB
	Images  *images.Service
	Content *content.Store
	Log     *slog.Logger
}

type service struct{ Config }

// Register adds the Images service to srv.
func Register(srv rpc.Registrar, cfg Config) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	api.RegisterImagesService(srv, &service{cfg})
}

// ToProto converts an image record.
func ToProto(im metadata.Image) *api.Image {
	return &api.Image{
		Name:      im.Name,
		Labels:    im.Labels,
		Target:    &ptypesapi.Descriptor{MediaType: im.Target.MediaType, Digest: im.Target.Digest, Size_: im.Target.Size, Annotations: im.Target.Annotations},
		CreatedAt: protoconv.Timestamp(im.CreatedAt),
		UpdatedAt: protoconv.Timestamp(im.UpdatedAt),
	}
}

// get finds an image by its stored name or its normalized form.
func (s *service) get(ctx context.Context, tx *metadata.Tx, ns, name string) (metadata.Image, error) {
	if name == "" {
		return metadata.Image{}, errdefs.InvalidArgument("name", "must not be empty")
	}
	im, err := tx.GetImage(ctx, ns, name)
	if errdefs.IsNotFound(err) {
		if n, nerr := images.NormalizeName(name); nerr == nil && n != name {
			if im2, err2 := tx.GetImage(ctx, ns, n); err2 == nil {
				return im2, nil
			}
		}
	}
	return im, err
}

func (s *service) Get(ctx context.Context, r *api.GetImageRequest) (*api.GetImageResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	var im metadata.Image
	if err := s.DB.View(ctx, func(tx *metadata.Tx) (err error) {
		im, err = s.get(ctx, tx, ns, r.Name)
		return err
	}); err != nil {
		return nil, err
	}
	return &api.GetImageResponse{Image: ToProto(im)}, nil
}

func adaptor(im *metadata.Image) filters.Adaptor {
	return filters.AdaptorFunc(func(p []string) (string, bool) {
		switch p[0] {
		case "name":
			return im.Name, true
		case "target":
			if len(p) == 2 {
				switch p[1] {
				case "digest":
					return im.Target.Digest, true
				case "mediatype", "media_type":
					return im.Target.MediaType, true
				}
			}
		case "labels":
			return filters.Labels(im.Labels, p)
		}
		return "", false
	})
}

func (s *service) List(ctx context.Context, r *api.ListImagesRequest) (*api.ListImagesResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	set, err := filters.Parse(r.Filters...)
	if err != nil {
		return nil, err
	}
	var list []metadata.Image
	if err := s.DB.View(ctx, func(tx *metadata.Tx) (err error) {
		list, err = tx.ListImages(ctx, ns)
		return err
	}); err != nil {
		return nil, err
	}
	resp := &api.ListImagesResponse{}
	for i := range list {
		if set.Match(adaptor(&list[i])) {
			resp.Images = append(resp.Images, ToProto(list[i]))
		}
	}
	return resp, nil
}

// fromProto validates and converts an image of a Create or Update request.
func (s *service) fromProto(ctx context.Context, pi *api.Image, needTarget bool) (metadata.Image, error) {
	if pi == nil {
		return metadata.Image{}, errdefs.InvalidArgument("image", "is required")
	}
	name, err := images.NormalizeName(pi.Name)
	if err != nil {
		return metadata.Image{}, err
	}
	im := metadata.Image{Name: name, Labels: pi.Labels}
	if pi.Target != nil {
		im.Target = metadata.Descriptor{MediaType: pi.Target.MediaType, Digest: pi.Target.Digest, Size: pi.Target.Size_, Annotations: pi.Target.Annotations}
	}
	if needTarget {
		if pi.Target == nil || pi.Target.Digest == "" {
			return im, errdefs.InvalidArgument("target", "a target descriptor with a digest is required")
		}
		d, err := digest.Parse(pi.Target.Digest)
		if err != nil {
			return im, errdefs.InvalidArgument("target.digest", "%q: %v", pi.Target.Digest, err)
		}
		info, err := s.Content.Info(ctx, d)
		if err != nil {
			return im, fmt.Errorf("target %s: %w", d, err)
		}
		if info.Size != pi.Target.Size_ {
			return im, errdefs.InvalidArgument("target.size", "%d does not match the blob's size %d", pi.Target.Size_, info.Size)
		}
	}
	return im, nil
}

func (s *service) Create(ctx context.Context, r *api.CreateImageRequest) (*api.CreateImageResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	im, err := s.fromProto(ctx, r.Image, true)
	if err != nil {
		return nil, err
	}
	err = s.Images.WithGCLock(func() error {
		return s.DB.Update(ctx, func(tx *metadata.Tx) (err error) {
			if _, err := tx.AddContent(ctx, ns, im.Target.Digest, im.Target.Size, nil); err != nil {
				return err
			}
			im, err = tx.CreateImage(ctx, ns, im)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return &api.CreateImageResponse{Image: ToProto(im)}, nil
}

func (s *service) Update(ctx context.Context, r *api.UpdateImageRequest) (*api.UpdateImageResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	paths := protoconv.FieldPaths(r.UpdateMask)
	needTarget := len(paths) == 0
	for _, p := range paths {
		if p == "target" {
			needTarget = true
		}
	}
	im, err := s.fromProto(ctx, r.Image, needTarget)
	if err != nil {
		return nil, err
	}
	err = s.Images.WithGCLock(func() error {
		return s.DB.Update(ctx, func(tx *metadata.Tx) (err error) {
			cur, err := s.get(ctx, tx, ns, r.Image.Name)
			if err != nil {
				return err
			}
			im.Name = cur.Name
			if needTarget {
				if _, err := tx.AddContent(ctx, ns, im.Target.Digest, im.Target.Size, nil); err != nil {
					return err
				}
			}
			im, err = tx.UpdateImage(ctx, ns, im, paths...)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return &api.UpdateImageResponse{Image: ToProto(im)}, nil
}

func (s *service) Delete(ctx context.Context, r *api.DeleteImageRequest) (*ptypes.Empty, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	if r.Name == "" {
		return nil, errdefs.InvalidArgument("name", "must not be empty")
	}
	if err := s.Images.DeleteImage(ctx, ns, r.Name, r.Sync, r.Force); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

// progress collects per-blob events and sends them at most every
// progressInterval, so a slow client never slows a transfer and memory
// stays one entry per blob.
type progress struct {
	mu      sync.Mutex
	layers  map[string]*api.Progress_Layer
	order   []string
	changed bool
}

func newProgress() *progress { return &progress{layers: map[string]*api.Progress_Layer{}} }

func (p *progress) event(ev registry.ProgressEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := ev.Digest.String()
	l, ok := p.layers[d]
	if !ok {
		l = &api.Progress_Layer{Digest: d}
		p.layers[d] = l
		p.order = append(p.order, d)
	}
	l.MediaType, l.Offset, l.Total, l.Status = ev.MediaType, ev.Offset, ev.Total, string(ev.Status)
	p.changed = true
}

func (p *progress) snapshot(force bool) *api.Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.changed && !force {
		return nil
	}
	p.changed = false
	out := &api.Progress{}
	for _, d := range p.order {
		l := *p.layers[d]
		out.Layers = append(out.Layers, &l)
	}
	return out
}

// run sends progress until fn returns, then the final message.
func (p *progress) run(ctx context.Context, send func(*api.Progress) error, fn func() (*api.Image, error)) error {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if m := p.snapshot(false); m != nil {
					if err := send(m); err != nil {
						return
					}
				}
			}
		}
	}()
	img, err := fn()
	close(done)
	wg.Wait()
	if err != nil {
		return errdefs.ToStatus(err)
	}
	last := p.snapshot(true)
	last.Done, last.Image = true, img
	return send(last)
}

func (s *service) Pull(ctx context.Context, r *api.PullRequest, stream api.Images_PullServer) error {
	ns, err := namespaces.StreamRequired(ctx, r.Namespace)
	if err != nil {
		return errdefs.ToStatus(err)
	}
	creds, err := credentials(r.Credentials)
	if err != nil {
		return errdefs.ToStatus(err)
	}
	p := newProgress()
	return p.run(ctx, stream.Send, func() (*api.Image, error) {
		start := time.Now()
		im, err := s.Images.Pull(ctx, ns, r.Ref, images.PullOptions{
			Platform: r.Platform, SkipUnpack: r.SkipUnpack, Credentials: creds, Progress: p.event,
		})
		if err != nil {
			s.Log.Info("pull failed", "namespace", ns, "ref", r.Ref, "error", err)
			return nil, err
		}
		s.Log.Info("pulled", "namespace", ns, "image", im.Name, "digest", im.Target.Digest, "duration", time.Since(start))
		return ToProto(im), nil
	})
}

func (s *service) Push(ctx context.Context, r *api.PushRequest, stream api.Images_PushServer) error {
	ns, err := namespaces.StreamRequired(ctx, r.Namespace)
	if err != nil {
		return errdefs.ToStatus(err)
	}
	if r.Ref == "" {
		return errdefs.ToStatus(errdefs.InvalidArgument("ref", "must not be empty"))
	}
	creds, err := credentials(r.Credentials)
	if err != nil {
		return errdefs.ToStatus(err)
	}
	p := newProgress()
	return p.run(ctx, stream.Send, func() (*api.Image, error) {
		if err := s.Images.Push(ctx, ns, r.Ref, r.RemoteRef, images.PushOptions{Credentials: creds, Progress: p.event}); err != nil {
			return nil, err
		}
		var im metadata.Image
		err := s.DB.View(ctx, func(tx *metadata.Tx) (err error) {
			im, err = s.get(ctx, tx, ns, r.Ref)
			return err
		})
		if err != nil {
			return nil, err
		}
		return ToProto(im), nil
	})
}

// importReader reads the data messages of an Import stream, holding one
// message at a time.
type importReader struct {
	stream api.Images_ImportServer
	buf    []byte
	eof    bool
}

func (r *importReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		m, err := r.stream.Recv()
		if err == io.EOF {
			r.eof = true
			return 0, io.EOF
		}
		if err != nil {
			return 0, fmt.Errorf("import stream: %v: %w", err, errdefs.ErrAborted)
		}
		if m.Options != nil {
			return 0, errdefs.InvalidArgument("options", "only the first message may carry options")
		}
		if len(m.Data) > MaxImportChunk {
			return 0, fmt.Errorf("import: a data message of %d bytes is larger than the limit of %d: %w", len(m.Data), MaxImportChunk, errdefs.ErrResourceExhausted)
		}
		r.buf = m.Data
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (s *service) Import(ctx context.Context, stream api.Images_ImportServer) (*api.ImportResponse, error) {
	resp, err := s.importStream(ctx, stream)
	if err != nil {
		s.Log.Info("import failed", "error", err)
		return nil, errdefs.ToStatus(err)
	}
	return resp, nil
}

func (s *service) importStream(ctx context.Context, stream api.Images_ImportServer) (*api.ImportResponse, error) {
	first, err := stream.Recv()
	if err == io.EOF {
		return nil, errdefs.InvalidArgument("import", "empty stream: the first message must carry the options")
	}
	if err != nil {
		return nil, fmt.Errorf("import stream: %v: %w", err, errdefs.ErrAborted)
	}
	o := first.Options
	if o == nil {
		return nil, errdefs.InvalidArgument("options", "the first message must carry the options")
	}
	ns, err := namespaces.StreamRequired(ctx, o.Namespace)
	if err != nil {
		return nil, err
	}
	if len(first.Data) > MaxImportChunk {
		return nil, fmt.Errorf("import: a data message of %d bytes is larger than the limit of %d: %w", len(first.Data), MaxImportChunk, errdefs.ErrResourceExhausted)
	}
	var r io.Reader = &importReader{stream: stream, buf: first.Data}
	if o.Path != "" {
		f, err := openArchive(o.Path, len(first.Data))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	imgs, err := s.Images.Import(ctx, ns, r, images.ImportOptions{
		Platform: o.Platform, AllPlatforms: o.AllPlatforms, IndexName: o.IndexName, SkipUnpack: o.SkipUnpack,
	})
	if err != nil {
		return nil, err
	}
	// Drain what the client still sends (e.g. tar padding after the end).
	if _, err := io.Copy(io.Discard, r); err != nil {
		s.Log.Debug("import: trailing data", "error", err)
	}
	resp := &api.ImportResponse{}
	for _, im := range imgs {
		resp.Images = append(resp.Images, ToProto(im))
	}
	return resp, nil
}

// chunkSender sends what is written as ExportChunk messages.
type chunkSender struct{ stream api.Images_ExportServer }

func (c chunkSender) Write(p []byte) (int, error) {
	if err := c.stream.Send(&api.ExportChunk{Data: p}); err != nil {
		return 0, fmt.Errorf("export stream: %v: %w", err, errdefs.ErrAborted)
	}
	return len(p), nil
}

func (s *service) Export(ctx context.Context, r *api.ExportRequest, stream api.Images_ExportServer) error {
	ns, err := namespaces.StreamRequired(ctx, r.Namespace)
	if err != nil {
		return errdefs.ToStatus(err)
	}
	w := bufio.NewWriterSize(chunkSender{stream}, exportChunk)
	err = s.Images.Export(ctx, ns, w, r.Refs, images.ExportOptions{Platform: r.Platform, AllPlatforms: r.AllPlatforms})
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		s.Log.Info("export failed", "namespace", ns, "refs", r.Refs, "error", err)
		return errdefs.ToStatus(err)
	}
	return nil
}

func (s *service) Usage(ctx context.Context, r *api.UsageRequest) (*api.UsageResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	if r.Name == "" {
		return nil, errdefs.InvalidArgument("name", "must not be empty")
	}
	u, err := s.Images.Usage(ctx, ns, r.Name)
	if err != nil {
		return nil, err
	}
	return &api.UsageResponse{ContentBytes: u.ContentBytes, SnapshotBytes: u.SnapshotBytes, SnapshotInodes: u.SnapshotInodes}, nil
}

func (s *service) GarbageCollect(ctx context.Context, r *api.GarbageCollectRequest) (*api.GarbageCollectResponse, error) {
	res, err := s.Images.GarbageCollect(ctx)
	if err != nil {
		return nil, err
	}
	s.Log.Info("garbage collected", "blobs", res.RemovedBlobs, "snapshots", res.RemovedSnapshots, "freed", res.FreedBytes, "duration", res.Duration)
	return &api.GarbageCollectResponse{RemovedBlobs: int64(res.RemovedBlobs), RemovedSnapshots: int64(res.RemovedSnapshots), FreedBytes: res.FreedBytes}, nil
}

// credentials returns the credentials sent with a request (nil: the
// docker config's).
func credentials(c *api.Credentials) (*registry.Credentials, error) {
	if c == nil || (c.Username == "" && c.Secret == "" && c.IdentityToken == "") {
		return nil, nil
	}
	if (c.Username == "") != (c.Secret == "") && c.IdentityToken == "" {
		return nil, errdefs.InvalidArgument("credentials", "give a username with its secret, or an identity token")
	}
	return &registry.Credentials{Username: c.Username, Password: c.Secret, IdentityToken: c.IdentityToken}, nil
}

// openArchive opens an archive named by path for Import: an absolute path
// to a regular file on edged's host.
func openArchive(path string, data int) (*os.File, error) {
	if data > 0 {
		return nil, errdefs.InvalidArgument("options.path", "an import from a path takes no data messages")
	}
	if !filepath.IsAbs(path) {
		return nil, errdefs.InvalidArgument("options.path", "%q must be an absolute path", path)
	}
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("archive %q: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("archive %q: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, errdefs.InvalidArgument("options.path", "%q is not a regular file", path)
	}
	return f, nil
}
