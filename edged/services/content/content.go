// Package content is the ttrpc Content service: the daemon's blob store,
// shared by all namespaces, each seeing the blobs it references (with
// labels kept in the metadata database). Writes are resumable: an ingest
// survives a dropped connection and a restart of edged, and a new Write
// continues at the offset Status reports.
package content

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	ptypes "github.com/gogo/protobuf/types"
	"github.com/opencontainers/go-digest"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/filters"
	"github.com/edged/edged/edged/images"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/edged/protoconv"
	"github.com/edged/edged/fsstore/content"
	"github.com/edged/edged/proto/rpc"
	api "github.com/edged/edged/proto/services/content/v1"
)

// MaxWriteChunk is the largest data message a Write accepts.
const MaxWriteChunk = 1 << 20

// readChunk is the size of the data messages of a Read.
const readChunk = 256 << 10

// listBatch is the number of infos per List message.
const listBatch = 100

type service struct {
	db  *metadata.DB
	cs  *content.Store
	img *images.Service
}

// Register adds the Content service to srv. img provides the GC lock and
// background collection.
func Register(srv rpc.Registrar, db *metadata.DB, cs *content.Store, img *images.Service) {
	api.RegisterContentService(srv, &service{db: db, cs: cs, img: img})
}

// ingestRef scopes a client's ingest ref by namespace: ingests live in the
// one shared store.
func ingestRef(ns, ref string) (string, error) {
	if ref == "" {
		return "", errdefs.InvalidArgument("ref", "must not be empty")
	}
	return "ns/" + ns + "/" + ref, nil
}

func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", errdefs.InvalidArgument("digest", "%q: %v", s, err)
	}
	return d, nil
}

func toProto(ci metadata.ContentInfo) *api.Info {
	return &api.Info{Digest: ci.Digest, Size_: ci.Size, Labels: ci.Labels,
		CreatedAt: protoconv.Timestamp(ci.CreatedAt), UpdatedAt: protoconv.Timestamp(ci.UpdatedAt)}
}

func (s *service) info(ctx context.Context, ns string, d digest.Digest) (metadata.ContentInfo, error) {
	var ci metadata.ContentInfo
	err := s.db.View(ctx, func(tx *metadata.Tx) (err error) {
		ci, err = tx.GetContent(ctx, ns, d.String())
		return err
	})
	return ci, err
}

func (s *service) Info(ctx context.Context, r *api.InfoRequest) (*api.InfoResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	d, err := parseDigest(r.Digest)
	if err != nil {
		return nil, err
	}
	ci, err := s.info(ctx, ns, d)
	if err != nil {
		return nil, err
	}
	return &api.InfoResponse{Info: toProto(ci)}, nil
}

func (s *service) Update(ctx context.Context, r *api.UpdateRequest) (*api.UpdateResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	if r.Info == nil {
		return nil, errdefs.InvalidArgument("info", "is required")
	}
	d, err := parseDigest(r.Info.Digest)
	if err != nil {
		return nil, err
	}
	replace := false
	labels := map[string]string{}
	paths := protoconv.FieldPaths(r.UpdateMask)
	if len(paths) == 0 {
		paths = []string{"labels"}
	}
	for _, p := range paths {
		switch {
		case p == "labels":
			replace = true
			for k, v := range r.Info.Labels {
				labels[k] = v
			}
		case strings.HasPrefix(p, "labels."):
			k := strings.TrimPrefix(p, "labels.")
			labels[k] = r.Info.Labels[k] // absent: "" deletes
		default:
			return nil, errdefs.InvalidArgument("update_mask", "cannot update %q (only labels)", p)
		}
	}
	var ci metadata.ContentInfo
	err = s.db.Update(ctx, func(tx *metadata.Tx) (err error) {
		ci, err = tx.UpdateContentLabels(ctx, ns, d.String(), labels, replace)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &api.UpdateResponse{Info: toProto(ci)}, nil
}

func adaptor(ci *metadata.ContentInfo) filters.Adaptor {
	return filters.AdaptorFunc(func(p []string) (string, bool) {
		switch p[0] {
		case "digest":
			return ci.Digest, true
		case "labels":
			return filters.Labels(ci.Labels, p)
		}
		return "", false
	})
}

func (s *service) List(ctx context.Context, r *api.ListContentRequest, stream api.Content_ListServer) error {
	err := func() error {
		ns, err := namespaces.StreamRequired(ctx, r.Namespace)
		if err != nil {
			return err
		}
		set, err := filters.Parse(r.Filters...)
		if err != nil {
			return err
		}
		var list []metadata.ContentInfo
		if err := s.db.View(ctx, func(tx *metadata.Tx) (err error) {
			list, err = tx.ListContent(ctx, ns)
			return err
		}); err != nil {
			return err
		}
		batch := &api.ListContentResponse{}
		for i := range list {
			if !set.Match(adaptor(&list[i])) {
				continue
			}
			batch.Info = append(batch.Info, toProto(list[i]))
			if len(batch.Info) == listBatch {
				if err := stream.Send(batch); err != nil {
					return err
				}
				batch = &api.ListContentResponse{}
			}
		}
		if len(batch.Info) > 0 {
			return stream.Send(batch)
		}
		return nil
	}()
	return errdefs.ToStatus(err)
}

// Delete removes the namespace's reference; the blob goes at the next
// garbage collection if nothing else references it.
func (s *service) Delete(ctx context.Context, r *api.DeleteContentRequest) (*ptypes.Empty, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	d, err := parseDigest(r.Digest)
	if err != nil {
		return nil, err
	}
	if err := s.db.Update(ctx, func(tx *metadata.Tx) error { return tx.DeleteContent(ctx, ns, d.String()) }); err != nil {
		return nil, err
	}
	s.img.CollectLater()
	return &ptypes.Empty{}, nil
}

func (s *service) Read(ctx context.Context, r *api.ReadContentRequest, stream api.Content_ReadServer) error {
	return errdefs.ToStatus(s.read(ctx, r, stream))
}

func (s *service) read(ctx context.Context, r *api.ReadContentRequest, stream api.Content_ReadServer) error {
	ns, err := namespaces.StreamRequired(ctx, r.Namespace)
	if err != nil {
		return err
	}
	d, err := parseDigest(r.Digest)
	if err != nil {
		return err
	}
	if _, err := s.info(ctx, ns, d); err != nil {
		return err
	}
	ra, err := s.cs.ReaderAt(ctx, d)
	if err != nil {
		return err
	}
	defer ra.Close()
	if r.Offset < 0 || r.Offset > ra.Size() {
		return errdefs.InvalidArgument("offset", "%d is outside the blob of %d bytes", r.Offset, ra.Size())
	}
	if r.Size_ < 0 {
		return errdefs.InvalidArgument("size", "%d is negative", r.Size_)
	}
	end := ra.Size()
	if r.Size_ > 0 && r.Offset+r.Size_ < end {
		end = r.Offset + r.Size_
	}
	buf := make([]byte, readChunk)
	for off := r.Offset; off < end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int64(len(buf))
		if end-off < n {
			n = end - off
		}
		got, err := ra.ReadAt(buf[:n], off)
		if got > 0 {
			if serr := stream.Send(&api.ReadContentResponse{Offset: off, Data: buf[:got]}); serr != nil {
				return serr
			}
			off += int64(got)
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("read %s: %w", d, err)
		}
		if err == io.EOF && off < end {
			return fmt.Errorf("read %s: blob shorter than expected: %w", d, errdefs.ErrDataLoss)
		}
	}
	return nil
}

func statusProto(ns string, st content.Status) *api.Status {
	return &api.Status{Ref: strings.TrimPrefix(st.Ref, "ns/"+ns+"/"), Offset: st.Offset, Total: st.Total, Expected: st.Expected.String(),
		StartedAt: protoconv.Timestamp(st.StartedAt), UpdatedAt: protoconv.Timestamp(st.UpdatedAt)}
}

func (s *service) Status(ctx context.Context, r *api.StatusRequest) (*api.StatusResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	ref, err := ingestRef(ns, r.Ref)
	if err != nil {
		return nil, err
	}
	st, err := s.cs.Status(ctx, ref)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("ingest %q: %w", r.Ref, errdefs.ErrNotFound)
		}
		return nil, err
	}
	return &api.StatusResponse{Status: statusProto(ns, st)}, nil
}

func (s *service) ListStatuses(ctx context.Context, r *api.ListStatusesRequest) (*api.ListStatusesResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	set, err := filters.Parse(r.Filters...)
	if err != nil {
		return nil, err
	}
	sts, err := s.cs.ListStatuses(ctx)
	if err != nil {
		return nil, err
	}
	resp := &api.ListStatusesResponse{}
	for _, st := range sts {
		if !strings.HasPrefix(st.Ref, "ns/"+ns+"/") {
			continue
		}
		p := statusProto(ns, st)
		if set.Match(filters.AdaptorFunc(func(path []string) (string, bool) {
			if path[0] == "ref" {
				return p.Ref, true
			}
			return "", false
		})) {
			resp.Statuses = append(resp.Statuses, p)
		}
	}
	return resp, nil
}

func (s *service) Abort(ctx context.Context, r *api.AbortRequest) (*ptypes.Empty, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	ref, err := ingestRef(ns, r.Ref)
	if err != nil {
		return nil, err
	}
	if err := s.cs.Abort(ctx, ref); err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("ingest %q: %w", r.Ref, errdefs.ErrNotFound)
		}
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

func (s *service) Write(ctx context.Context, stream api.Content_WriteServer) (*api.WriteContentResponse, error) {
	resp, err := s.write(ctx, stream)
	return resp, errdefs.ToStatus(err)
}

func (s *service) write(ctx context.Context, stream api.Content_WriteServer) (*api.WriteContentResponse, error) {
	m, err := stream.Recv()
	if err == io.EOF {
		return nil, errdefs.InvalidArgument("write", "empty stream: the first message must name the ref")
	}
	if err != nil {
		return nil, fmt.Errorf("write stream: %v: %w", err, errdefs.ErrAborted)
	}
	ns, err := namespaces.StreamRequired(ctx, m.Namespace)
	if err != nil {
		return nil, err
	}
	ref, err := ingestRef(ns, m.Ref)
	if err != nil {
		return nil, err
	}
	var expected digest.Digest
	if m.Expected != "" {
		if expected, err = parseDigest(m.Expected); err != nil {
			return nil, err
		}
	}
	labels := m.Labels
	w, err := s.cs.Writer(ctx, ref, content.WriterOpts{Expected: expected, Total: m.Total})
	if exists, ok := errors.AsType[*content.ExistsError](err); ok {
		// The blob is in the store (maybe from another namespace): only
		// the reference is new; no byte is written. The digest is the
		// store's: a write resuming an ingest need not repeat the expected
		// digest the ingest was started with, and the store removed the
		// ingest, so this is the only time the write can be completed.
		d := exists.Digest
		if err := s.addRef(ctx, ns, d, labels); err != nil {
			return nil, err
		}
		info, err := s.cs.Info(ctx, d)
		if err != nil {
			return nil, err
		}
		return &api.WriteContentResponse{Digest: d.String(), Offset: info.Size, Total: info.Size, Committed: true}, nil
	}
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if m.Offset != w.Offset() {
		if m.Offset != 0 {
			return nil, fmt.Errorf("ingest %q is at offset %d, the write starts at %d; resume at the offset Status reports, or start at 0: %w",
				m.Ref, w.Offset(), m.Offset, errdefs.ErrFailedPrecondition)
		}
		if err := w.Truncate(0); err != nil {
			return nil, err
		}
	}
	for {
		if len(m.Data) > MaxWriteChunk {
			return nil, fmt.Errorf("write: a data message of %d bytes is larger than the limit of %d: %w", len(m.Data), MaxWriteChunk, errdefs.ErrResourceExhausted)
		}
		if len(m.Data) > 0 {
			if m.Offset != 0 && m.Offset != w.Offset() {
				return nil, fmt.Errorf("write: data at offset %d, but the ingest is at %d: %w", m.Offset, w.Offset(), errdefs.ErrFailedPrecondition)
			}
			if _, err := w.Write(m.Data); err != nil {
				return nil, err
			}
		}
		if m.Labels != nil {
			labels = m.Labels
		}
		if m.Commit {
			var dgst digest.Digest
			if m.Expected != "" {
				if dgst, err = parseDigest(m.Expected); err != nil {
					return nil, err
				}
			}
			size := w.Offset()
			var committed digest.Digest
			err := s.img.WithGCLock(func() error {
				committed = w.Digest()
				err := w.Commit(ctx, m.Total, dgst)
				if err != nil && !errdefs.IsAlreadyExists(err) {
					return err
				}
				return s.addRefLocked(ctx, ns, committed, size, labels)
			})
			if err != nil {
				return nil, err
			}
			return &api.WriteContentResponse{Digest: committed.String(), Offset: size, Total: size, Committed: true}, nil
		}
		m, err = stream.Recv()
		if err == io.EOF {
			// No commit: the ingest stays, to be resumed.
			return &api.WriteContentResponse{Digest: w.Digest().String(), Offset: w.Offset(), Total: m0(w)}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("write stream: %v: %w", err, errdefs.ErrAborted)
		}
	}
}

func m0(w *content.Writer) int64 {
	st, err := w.Status()
	if err != nil {
		return 0
	}
	return st.Total
}

func (s *service) addRef(ctx context.Context, ns string, d digest.Digest, labels map[string]string) error {
	return s.img.WithGCLock(func() error {
		info, err := s.cs.Info(ctx, d)
		if err != nil {
			return err
		}
		return s.addRefLocked(ctx, ns, d, info.Size, labels)
	})
}

func (s *service) addRefLocked(ctx context.Context, ns string, d digest.Digest, size int64, labels map[string]string) error {
	return s.db.Update(ctx, func(tx *metadata.Tx) error {
		if _, err := tx.AddContent(ctx, ns, d.String(), size, nil); err != nil {
			return err
		}
		if len(labels) > 0 {
			_, err := tx.UpdateContentLabels(ctx, ns, d.String(), labels, false)
			return err
		}
		return nil
	})
}
