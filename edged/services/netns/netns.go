// Package netns serves the Netns API: named, persistent network namespaces
// that containers join with --net ns:NAME.
package netns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/netns"
	"github.com/edged/edged/proto/rpc"
	api "github.com/edged/edged/proto/services/netns/v1"
)

// Config wires the service.
type Config struct {
	// Dir holds the namespaces (<state>/netns).
	Dir string
	// Manager returns the manager of Dir, creating the directory (a shared
	// mount point) on first use.
	Manager func() (*netns.Manager, error)
	// InUse returns the containers ("ns/id") whose tasks joined the named
	// namespace; Delete refuses while there are any. May be nil.
	InUse func(name string) []string
}

type service struct{ Config }

// Register adds the Netns service to srv.
func Register(srv rpc.Registrar, cfg Config) {
	api.RegisterNetnsService(srv, &service{cfg})
}

func toProto(n netns.Namespace) *api.Namespace {
	return &api.Namespace{Name: n.Name, Path: n.Path}
}

func (s *service) Create(ctx context.Context, r *api.CreateNetnsRequest) (*api.CreateNetnsResponse, error) {
	if err := identifiers.Validate("name", r.Name); err != nil {
		return nil, err
	}
	m, err := s.Manager()
	if err != nil {
		return nil, err
	}
	n, err := m.Create(ctx, r.Name)
	if err != nil {
		return nil, err
	}
	return &api.CreateNetnsResponse{Netns: toProto(n)}, nil
}

func (s *service) List(ctx context.Context, r *api.ListNetnsRequest) (*api.ListNetnsResponse, error) {
	if _, err := os.Stat(s.Dir); errors.Is(err, os.ErrNotExist) {
		// Nothing was ever created: do not add the mount point just to list.
		return &api.ListNetnsResponse{}, nil
	}
	m, err := s.Manager()
	if err != nil {
		return nil, err
	}
	list, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	resp := &api.ListNetnsResponse{}
	for _, n := range list {
		resp.Namespaces = append(resp.Namespaces, toProto(n))
	}
	return resp, nil
}

func (s *service) Delete(ctx context.Context, r *api.DeleteNetnsRequest) (*ptypes.Empty, error) {
	if err := identifiers.Validate("name", r.Name); err != nil {
		return nil, err
	}
	if _, err := os.Stat(s.Dir); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("netns %q: %w", r.Name, errdefs.ErrNotFound)
	}
	if s.InUse != nil {
		if users := s.InUse(r.Name); len(users) > 0 {
			return nil, fmt.Errorf("netns %q is used by the tasks of %s: %w", r.Name, strings.Join(users, ", "), errdefs.ErrFailedPrecondition)
		}
	}
	m, err := s.Manager()
	if err != nil {
		return nil, err
	}
	if err := m.Delete(ctx, r.Name); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}
