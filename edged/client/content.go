package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/edged/edged/edged/errdefs"
	api "github.com/edged/edged/proto/services/content/v1"
)

// ContentInfo describes a blob of the namespace.
type ContentInfo = api.Info

// IngestStatus is the state of a partial write.
type IngestStatus = api.Status

func (c *Client) contentClient() api.ContentClient { return api.NewContentClient(c.caller) }

// ContentInfo returns a blob's size and labels.
func (c *Client) ContentInfo(ctx context.Context, dgst string) (*ContentInfo, error) {
	r, err := c.contentClient().Info(c.nsctx(ctx), &api.InfoRequest{Digest: dgst})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Info, nil
}

// ListContent lists the namespace's blobs matching any filter
// (digest==D, labels."k"==v).
func (c *Client) ListContent(ctx context.Context, filters ...string) ([]*ContentInfo, error) {
	s, err := c.contentClient().List(ctx, &api.ListContentRequest{Filters: filters, Namespace: c.streamNamespace(ctx)})
	if err != nil {
		return nil, convertError(err)
	}
	var out []*ContentInfo
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, convertError(err)
		}
		out = append(out, m.Info...)
	}
}

// ReadContent streams size bytes (0: to the end) of blob dgst from offset
// to w.
func (c *Client) ReadContent(ctx context.Context, dgst string, offset, size int64, w io.Writer) error {
	s, err := c.contentClient().Read(ctx, &api.ReadContentRequest{Digest: dgst, Offset: offset, Size_: size, Namespace: c.streamNamespace(ctx)})
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
			return err
		}
	}
}

// DeleteContent removes the namespace's reference to a blob.
func (c *Client) DeleteContent(ctx context.Context, dgst string) error {
	_, err := c.contentClient().Delete(c.nsctx(ctx), &api.DeleteContentRequest{Digest: dgst})
	return convertError(err)
}

// IngestStatus returns the status of the partial write ref.
func (c *Client) IngestStatus(ctx context.Context, ref string) (*IngestStatus, error) {
	r, err := c.contentClient().Status(c.nsctx(ctx), &api.StatusRequest{Ref: ref})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Status, nil
}

// AbortIngest removes the partial write ref.
func (c *Client) AbortIngest(ctx context.Context, ref string) error {
	_, err := c.contentClient().Abort(c.nsctx(ctx), &api.AbortRequest{Ref: ref})
	return convertError(err)
}

// WriteContentOpts tune WriteContent.
type WriteContentOpts struct {
	Total    int64  // size, 0 when unknown
	Expected string // digest, "" when unknown
	Labels   map[string]string
	// NoCommit leaves the ingest open (to be resumed).
	NoCommit bool
}

// WriteContent writes r as blob through ingest ref, resuming a partial
// ingest of ref: the bytes the daemon has are skipped in r (seeking when r
// is an io.Seeker). It returns the blob's digest.
func (c *Client) WriteContent(ctx context.Context, ref string, r io.Reader, o WriteContentOpts) (string, error) {
	var offset int64
	st, err := c.IngestStatus(ctx, ref)
	switch {
	case err == nil:
		offset = st.Offset
	case !errors.Is(err, errdefs.ErrNotFound):
		return "", err
	}
	if offset > 0 {
		if sk, ok := r.(io.Seeker); ok {
			if _, err := sk.Seek(offset, io.SeekCurrent); err != nil {
				return "", err
			}
		} else if _, err := io.CopyN(io.Discard, r, offset); err != nil {
			return "", fmt.Errorf("skip %d bytes already written: %w", offset, err)
		}
	}
	s, err := c.contentClient().Write(ctx)
	if err != nil {
		return "", convertError(err)
	}
	first := &api.WriteContentRequest{Ref: ref, Total: o.Total, Expected: o.Expected, Offset: offset, Labels: o.Labels, Namespace: c.streamNamespace(ctx)}
	if err := s.Send(first); err != nil {
		return "", convertError(err)
	}
	buf := make([]byte, 1<<20)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := s.Send(&api.WriteContentRequest{Data: buf[:n]}); err != nil {
				if _, rerr := s.CloseAndRecv(); rerr != nil {
					return "", convertError(rerr)
				}
				return "", convertError(err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			s.CloseSend()
			return "", rerr
		}
	}
	if !o.NoCommit {
		if err := s.Send(&api.WriteContentRequest{Commit: true, Total: o.Total, Expected: o.Expected, Labels: o.Labels}); err != nil {
			return "", convertError(err)
		}
	}
	resp, err := s.CloseAndRecv()
	if err != nil {
		return "", convertError(err)
	}
	return resp.Digest, nil
}
