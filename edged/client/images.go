package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/namespaces"
	api "github.com/edged/edged/proto/services/images/v1"
	ptypesapi "github.com/edged/edged/proto/types"
)

// Image is the API's image record.
type Image = api.Image

// Progress is a pull or push progress message.
type Progress = api.Progress

// ImportChunk is the size of the data messages Import sends (the daemon
// accepts up to 1 MiB). ttrpc queues up to 64 messages of a stream in the
// daemon, so the chunk size bounds what an import holds in memory.
const ImportChunk = 64 << 10

func (c *Client) imagesClient() api.ImagesClient { return api.NewImagesClient(c.caller) }

// streamNamespace is the namespace of a streaming call: ctx's, else the
// client's. Streams carry it in the request, not in metadata.
func (c *Client) streamNamespace(ctx context.Context) string {
	if ns, ok := namespaces.Namespace(ctx); ok {
		return ns
	}
	return c.namespace
}

// GetImage returns an image by name ("busybox" finds
// docker.io/library/busybox:latest).
func (c *Client) GetImage(ctx context.Context, name string) (*Image, error) {
	r, err := c.imagesClient().Get(c.nsctx(ctx), &api.GetImageRequest{Name: name})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Image, nil
}

// ListImages lists images matching any filter (name==REF,
// target.digest==DIGEST, labels."k"==v).
func (c *Client) ListImages(ctx context.Context, filters ...string) ([]*Image, error) {
	r, err := c.imagesClient().List(c.nsctx(ctx), &api.ListImagesRequest{Filters: filters})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Images, nil
}

// CreateImage records an image whose target is in the content store.
func (c *Client) CreateImage(ctx context.Context, im *Image) (*Image, error) {
	r, err := c.imagesClient().Create(c.nsctx(ctx), &api.CreateImageRequest{Image: im})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Image, nil
}

// UpdateImage updates the fields of an image named by paths ("target",
// "labels", "labels.KEY"; none: all).
func (c *Client) UpdateImage(ctx context.Context, im *Image, paths ...string) (*Image, error) {
	req := &api.UpdateImageRequest{Image: im}
	if len(paths) > 0 {
		req.UpdateMask = &ptypes.FieldMask{Paths: paths}
	}
	r, err := c.imagesClient().Update(c.nsctx(ctx), req)
	if err != nil {
		return nil, convertError(err)
	}
	return r.Image, nil
}

// TagImage makes dst name the target of image src, creating dst or moving
// it.
func (c *Client) TagImage(ctx context.Context, src, dst string) (*Image, error) {
	im, err := c.GetImage(ctx, src)
	if err != nil {
		return nil, err
	}
	t := im.Target
	nim := &Image{Name: dst, Target: &ptypesapi.Descriptor{MediaType: t.MediaType, Digest: t.Digest, Size_: t.Size_}}
	out, err := c.CreateImage(ctx, nim)
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		return c.UpdateImage(ctx, nim, "target")
	}
	return out, err
}

// DeleteImageOpts tune DeleteImage.
type DeleteImageOpts struct {
	// Sync collects the image's unreferenced blobs and snapshots before
	// returning (otherwise in the background).
	Sync bool
	// Force deletes the image even while containers use it.
	Force bool
}

// DeleteImage deletes an image.
func (c *Client) DeleteImage(ctx context.Context, name string, o DeleteImageOpts) error {
	_, err := c.imagesClient().Delete(c.nsctx(ctx), &api.DeleteImageRequest{Name: name, Sync: o.Sync, Force: o.Force})
	return convertError(err)
}

// PullOpts tune Pull.
type PullOpts struct {
	// Platform ("os/arch[/variant]"); empty means the daemon's default.
	Platform   string
	SkipUnpack bool
	// Progress receives the progress messages (not the final one).
	Progress func(*Progress)
	// Credentials for the registry, instead of the daemon's config.json.
	Credentials *api.Credentials
}

type progressStream interface {
	Recv() (*Progress, error)
}

func recvProgress(s progressStream, fn func(*Progress)) (*Image, error) {
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return nil, fmt.Errorf("the stream ended without a result: %w", errdefs.ErrUnavailable)
		}
		if err != nil {
			return nil, convertError(err)
		}
		if fn != nil {
			fn(m)
		}
		if m.Done {
			return m.Image, nil
		}
	}
}

// Credentials returns registry credentials for PullOpts and PushOpts.
func Credentials(username, secret string) *api.Credentials {
	return &api.Credentials{Username: username, Secret: secret}
}

// Pull pulls ref from its registry, with the registry settings of the
// daemon's configuration and its credentials unless o.Credentials is set.
func (c *Client) Pull(ctx context.Context, ref string, o PullOpts) (*Image, error) {
	s, err := c.imagesClient().Pull(ctx, &api.PullRequest{Ref: ref, Platform: o.Platform, SkipUnpack: o.SkipUnpack, Namespace: c.streamNamespace(ctx), Credentials: o.Credentials})
	if err != nil {
		return nil, convertError(err)
	}
	return recvProgress(s, o.Progress)
}

// PushOpts tune Push.
type PushOpts struct {
	// RemoteRef is the destination; empty means the image's name.
	RemoteRef string
	Progress  func(*Progress)
	// Credentials for the registry, instead of the daemon's config.json.
	Credentials *api.Credentials
}

// Push uploads image ref to a registry.
func (c *Client) Push(ctx context.Context, ref string, o PushOpts) (*Image, error) {
	s, err := c.imagesClient().Push(ctx, &api.PushRequest{Ref: ref, RemoteRef: o.RemoteRef, Namespace: c.streamNamespace(ctx), Credentials: o.Credentials})
	if err != nil {
		return nil, convertError(err)
	}
	return recvProgress(s, o.Progress)
}

// ImportOpts tune Import.
type ImportOpts struct {
	Platform     string
	AllPlatforms bool
	// IndexName names the image of an archive whose entries carry no name.
	IndexName  string
	SkipUnpack bool
	// Path, when set, is the archive's absolute path on edged's host:
	// edged reads the file itself and r is not read. Use it for local
	// files: nothing is copied through the socket.
	Path string
}

// Import sends an OCI image-layout or docker-save tar (gzip allowed) read
// from r, in ImportChunk messages (or asks edged to read o.Path), and
// returns the images created.
func (c *Client) Import(ctx context.Context, r io.Reader, o ImportOpts) ([]*Image, error) {
	s, err := c.imagesClient().Import(ctx)
	if err != nil {
		return nil, convertError(err)
	}
	opts := &api.ImportOptions{Platform: o.Platform, AllPlatforms: o.AllPlatforms, IndexName: o.IndexName, SkipUnpack: o.SkipUnpack, Namespace: c.streamNamespace(ctx), Path: o.Path}
	if err := s.Send(&api.ImportRequest{Options: opts}); err != nil {
		return nil, convertError(err)
	}
	if o.Path != "" {
		r = eofReader{}
	}
	buf := make([]byte, ImportChunk)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := s.Send(&api.ImportRequest{Data: buf[:n]}); err != nil {
				// The daemon ended the call (it refused the archive):
				// its answer says why.
				if _, rerr := s.CloseAndRecv(); rerr != nil {
					return nil, convertError(rerr)
				}
				return nil, convertError(err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			s.CloseSend()
			return nil, fmt.Errorf("read archive: %w", rerr)
		}
	}
	resp, err := s.CloseAndRecv()
	if err != nil {
		return nil, convertError(err)
	}
	return resp.Images, nil
}

// ExportOpts tune Export.
type ExportOpts struct {
	Platform     string
	AllPlatforms bool
}

// Export writes images refs as an OCI image-layout tar to w.
func (c *Client) Export(ctx context.Context, w io.Writer, refs []string, o ExportOpts) error {
	s, err := c.imagesClient().Export(ctx, &api.ExportRequest{Refs: refs, Platform: o.Platform, AllPlatforms: o.AllPlatforms, Namespace: c.streamNamespace(ctx)})
	if err != nil {
		return convertError(err)
	}
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return convertError(err)
		}
		if _, err := w.Write(m.Data); err != nil {
			return fmt.Errorf("export: write: %w", err)
		}
	}
}

// ImageUsage is the disk use of an image.
type ImageUsage = api.UsageResponse

// ImageUsage returns the disk use of an image: its blobs and snapshots.
func (c *Client) ImageUsage(ctx context.Context, name string) (*ImageUsage, error) {
	r, err := c.imagesClient().Usage(c.nsctx(ctx), &api.UsageRequest{Name: name})
	return r, convertError(err)
}

// GCResult is what a garbage collection removed.
type GCResult = api.GarbageCollectResponse

// GarbageCollect removes blobs and snapshots nothing references.
func (c *Client) GarbageCollect(ctx context.Context) (*GCResult, error) {
	r, err := c.imagesClient().GarbageCollect(c.nsctx(ctx), &api.GarbageCollectRequest{})
	return r, convertError(err)
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
