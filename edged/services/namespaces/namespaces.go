// Package namespaces serves the Namespaces API over the metadata store.
package namespaces

import (
	"context"
	"strings"

	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/events"
	"github.com/edged/edged/edged/filters"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/edged/metadata"
	ns "github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/edged/protoconv"
	eventtypes "github.com/edged/edged/proto/events"
	"github.com/edged/edged/proto/rpc"
	api "github.com/edged/edged/proto/services/namespaces/v1"
)

type service struct {
	db *metadata.DB
	ex *events.Exchange
}

// Register adds the Namespaces service to srv.
func Register(srv rpc.Registrar, db *metadata.DB, ex *events.Exchange) {
	api.RegisterNamespacesService(srv, &service{db: db, ex: ex})
}

func toProto(n metadata.Namespace) *api.Namespace {
	return &api.Namespace{Name: n.Name, Labels: n.Labels, CreatedAt: protoconv.Timestamp(n.CreatedAt), UpdatedAt: protoconv.Timestamp(n.UpdatedAt)}
}

func (s *service) Get(ctx context.Context, r *api.GetNamespaceRequest) (*api.GetNamespaceResponse, error) {
	if err := identifiers.Validate("name", r.Name); err != nil {
		return nil, err
	}
	var n metadata.Namespace
	err := s.db.View(ctx, func(tx *metadata.Tx) (err error) {
		n, err = tx.GetNamespace(ctx, r.Name)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &api.GetNamespaceResponse{Namespace: toProto(n)}, nil
}

func (s *service) List(ctx context.Context, r *api.ListNamespacesRequest) (*api.ListNamespacesResponse, error) {
	set, err := filters.Parse(r.Filters...)
	if err != nil {
		return nil, err
	}
	var list []metadata.Namespace
	if err := s.db.View(ctx, func(tx *metadata.Tx) (err error) {
		list, err = tx.ListNamespaces(ctx)
		return err
	}); err != nil {
		return nil, err
	}
	resp := &api.ListNamespacesResponse{}
	for _, n := range list {
		n := n
		if set.Match(filters.AdaptorFunc(func(p []string) (string, bool) {
			switch p[0] {
			case "name":
				return n.Name, true
			case "labels":
				return filters.Labels(n.Labels, p)
			}
			return "", false
		})) {
			resp.Namespaces = append(resp.Namespaces, toProto(n))
		}
	}
	return resp, nil
}

func (s *service) Create(ctx context.Context, r *api.CreateNamespaceRequest) (*api.CreateNamespaceResponse, error) {
	if r.Namespace == nil {
		return nil, errdefs.InvalidArgument("namespace", "must be set")
	}
	if err := identifiers.Validate("namespace.name", r.Namespace.Name); err != nil {
		return nil, err
	}
	var n metadata.Namespace
	if err := s.db.Update(ctx, func(tx *metadata.Tx) (err error) {
		n, err = tx.CreateNamespace(ctx, r.Namespace.Name, r.Namespace.Labels)
		return err
	}); err != nil {
		return nil, err
	}
	s.publish(ctx, n.Name, "/namespaces/create", &eventtypes.NamespaceCreate{Name: n.Name, Labels: n.Labels})
	return &api.CreateNamespaceResponse{Namespace: toProto(n)}, nil
}

func (s *service) Update(ctx context.Context, r *api.UpdateNamespaceRequest) (*api.UpdateNamespaceResponse, error) {
	if r.Namespace == nil {
		return nil, errdefs.InvalidArgument("namespace", "must be set")
	}
	name := r.Namespace.Name
	if err := identifiers.Validate("namespace.name", name); err != nil {
		return nil, err
	}
	paths := protoconv.FieldPaths(r.UpdateMask)
	var n metadata.Namespace
	err := s.db.Update(ctx, func(tx *metadata.Tx) (err error) {
		if len(paths) == 0 {
			n, err = tx.SetNamespaceLabels(ctx, name, r.Namespace.Labels, true)
			return err
		}
		for _, p := range paths {
			switch {
			case p == "labels":
				n, err = tx.SetNamespaceLabels(ctx, name, r.Namespace.Labels, true)
			case strings.HasPrefix(p, "labels."):
				key := strings.TrimPrefix(p, "labels.")
				// An empty or missing value deletes the label.
				n, err = tx.SetNamespaceLabels(ctx, name, map[string]string{key: r.Namespace.Labels[key]}, false)
			default:
				return errdefs.InvalidArgument("update_mask", "cannot update %q of a namespace (only labels)", p)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.publish(ctx, n.Name, "/namespaces/update", &eventtypes.NamespaceUpdate{Name: n.Name, Labels: n.Labels})
	return &api.UpdateNamespaceResponse{Namespace: toProto(n)}, nil
}

func (s *service) Delete(ctx context.Context, r *api.DeleteNamespaceRequest) (*ptypes.Empty, error) {
	if err := identifiers.Validate("name", r.Name); err != nil {
		return nil, err
	}
	if err := s.db.Update(ctx, func(tx *metadata.Tx) error {
		return tx.DeleteNamespace(ctx, r.Name)
	}); err != nil {
		return nil, err
	}
	s.publish(ctx, r.Name, "/namespaces/delete", &eventtypes.NamespaceDelete{Name: r.Name})
	return &ptypes.Empty{}, nil
}

// publish reports a namespace event in the namespace it is about.
func (s *service) publish(ctx context.Context, name, topic string, ev interface {
	Reset()
	String() string
	ProtoMessage()
}) {
	// Publishing cannot fail for a validated namespace and a known event.
	_ = s.ex.Publish(ns.WithNamespace(ctx, name), topic, ev)
}
