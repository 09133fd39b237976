// Package leases is the ttrpc Leases service: leases protect content,
// snapshots, ingests and images from garbage collection while a client
// works with them.
package leases

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"

	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/filters"
	"github.com/edged/edged/edged/images"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/edged/protoconv"
	"github.com/edged/edged/proto/rpc"
	api "github.com/edged/edged/proto/services/leases/v1"
)

type service struct {
	db  *metadata.DB
	img *images.Service
}

// Register adds the Leases service to srv; img collects after deletions.
func Register(srv rpc.Registrar, db *metadata.DB, img *images.Service) {
	api.RegisterLeasesService(srv, &service{db: db, img: img})
}

func toProto(l metadata.Lease) *api.Lease {
	pl := &api.Lease{Id: l.ID, Labels: l.Labels, CreatedAt: protoconv.Timestamp(l.CreatedAt)}
	if l.ExpiresAt != nil {
		pl.ExpiresAt = protoconv.Timestamp(*l.ExpiresAt)
	}
	return pl
}

func (s *service) Create(ctx context.Context, r *api.CreateRequest) (*api.CreateResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	id := r.Id
	if id == "" {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		id = "lease-" + hex.EncodeToString(b[:])
	}
	if r.ExpireSeconds < 0 {
		return nil, errdefs.InvalidArgument("expire_seconds", "%d is negative", r.ExpireSeconds)
	}
	var exp *time.Time
	if r.ExpireSeconds > 0 {
		t := time.Now().Add(time.Duration(r.ExpireSeconds) * time.Second)
		exp = &t
	}
	var l metadata.Lease
	err = s.db.Update(ctx, func(tx *metadata.Tx) (err error) {
		l, err = tx.CreateLease(ctx, ns, id, r.Labels, exp)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &api.CreateResponse{Lease: toProto(l)}, nil
}

func (s *service) Delete(ctx context.Context, r *api.DeleteRequest) (*ptypes.Empty, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.db.Update(ctx, func(tx *metadata.Tx) error { return tx.DeleteLease(ctx, ns, r.Id) }); err != nil {
		return nil, err
	}
	if r.Sync {
		if _, err := s.img.GarbageCollect(ctx); err != nil {
			return nil, err
		}
	} else {
		s.img.CollectLater()
	}
	return &ptypes.Empty{}, nil
}

func (s *service) List(ctx context.Context, r *api.ListRequest) (*api.ListResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	set, err := filters.Parse(r.Filters...)
	if err != nil {
		return nil, err
	}
	var list []metadata.Lease
	if err := s.db.View(ctx, func(tx *metadata.Tx) (err error) {
		list, err = tx.ListLeases(ctx, ns)
		return err
	}); err != nil {
		return nil, err
	}
	resp := &api.ListResponse{}
	for _, l := range list {
		l := l
		if set.Match(filters.AdaptorFunc(func(p []string) (string, bool) {
			switch p[0] {
			case "id":
				return l.ID, true
			case "labels":
				return filters.Labels(l.Labels, p)
			}
			return "", false
		})) {
			resp.Leases = append(resp.Leases, toProto(l))
		}
	}
	return resp, nil
}

// resource converts an API resource: type "content", "snapshots/<name>",
// "ingests" or "images".
func resource(r *api.Resource) (metadata.Resource, error) {
	if r == nil {
		return metadata.Resource{}, errdefs.InvalidArgument("resource", "is required")
	}
	switch {
	case r.Type == "content":
		return metadata.Resource{Kind: metadata.ResourceContent, ID: r.Id}, nil
	case r.Type == "snapshots" || strings.HasPrefix(r.Type, "snapshots/"):
		return metadata.Resource{Kind: metadata.ResourceSnapshot, ID: r.Id}, nil
	case r.Type == "ingests":
		return metadata.Resource{Kind: metadata.ResourceIngest, ID: r.Id}, nil
	case r.Type == "images":
		return metadata.Resource{Kind: metadata.ResourceImage, ID: r.Id}, nil
	}
	return metadata.Resource{}, errdefs.InvalidArgument("resource.type", "%q must be content, snapshots/<snapshotter>, ingests or images", r.Type)
}

func (s *service) AddResource(ctx context.Context, r *api.AddResourceRequest) (*ptypes.Empty, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	res, err := resource(r.Resource)
	if err != nil {
		return nil, err
	}
	err = s.img.WithGCLock(func() error {
		return s.db.Update(ctx, func(tx *metadata.Tx) error { return tx.AddLeaseResource(ctx, ns, r.Id, res) })
	})
	if err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

func (s *service) DeleteResource(ctx context.Context, r *api.DeleteResourceRequest) (*ptypes.Empty, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	res, err := resource(r.Resource)
	if err != nil {
		return nil, err
	}
	if err := s.db.Update(ctx, func(tx *metadata.Tx) error { return tx.DeleteLeaseResource(ctx, ns, r.Id, res) }); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

func (s *service) ListResources(ctx context.Context, r *api.ListResourcesRequest) (*api.ListResourcesResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	var rs []metadata.Resource
	if err := s.db.View(ctx, func(tx *metadata.Tx) (err error) {
		rs, err = tx.ListLeaseResources(ctx, ns, r.Id)
		return err
	}); err != nil {
		return nil, err
	}
	resp := &api.ListResourcesResponse{}
	for _, x := range rs {
		t := map[string]string{metadata.ResourceContent: "content", metadata.ResourceSnapshot: "snapshots/default",
			metadata.ResourceIngest: "ingests", metadata.ResourceImage: "images"}[x.Kind]
		resp.Resources = append(resp.Resources, &api.Resource{Id: x.ID, Type: t})
	}
	return resp, nil
}
