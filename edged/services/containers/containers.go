// Package containers serves the Containers API over the metadata store.
package containers

import (
	"context"
	"fmt"
	"strings"

	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/events"
	"github.com/edged/edged/edged/filters"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/edged/protoconv"
	"github.com/edged/edged/internal/ttrpcwire"
	eventtypes "github.com/edged/edged/proto/events"
	"github.com/edged/edged/proto/rpc"
	api "github.com/edged/edged/proto/services/containers/v1"
)

// MaxSpecBytes bounds the OCI spec of a container.
const MaxSpecBytes = 1 << 20

// MaxRuntimeOptionsBytes bounds a container's runtime options.
const MaxRuntimeOptionsBytes = 64 << 10

type service struct {
	db      *metadata.DB
	ex      *events.Exchange
	creator Creator
	hasTask func(ns, id string) bool
	deleted []DeleteHook
}

// DeleteHook runs after a container was deleted (its snapshot is removed
// this way). Errors are the hook's to log. The container is as
// metadata.Tx.TakeContainer returns it: without spec, runtime options and
// extensions.
type DeleteHook func(ctx context.Context, ns string, c metadata.Container)

// Creator implements CreateFromImage (the image, snapshot and spec work).
type Creator func(ctx context.Context, r *api.CreateFromImageRequest) (*api.CreateContainerResponse, error)

// Register adds the Containers service to srv. creator may be nil;
// hasTask, when set, keeps containers with a task from being deleted;
// onDelete hooks run after a deletion.
//
// It returns the service, for other services that create or delete
// containers as part of their calls (the tasks service's one-call runs).
func Register(srv rpc.Registrar, db *metadata.DB, ex *events.Exchange, creator Creator, hasTask func(ns, id string) bool, onDelete ...DeleteHook) api.ContainersService {
	svc := &service{db: db, ex: ex, creator: creator, hasTask: hasTask, deleted: onDelete}
	api.RegisterContainersService(srv, svc)
	return svc
}

// ToProto converts a metadata container to its API form.
func ToProto(c metadata.Container) *api.Container {
	pc := &api.Container{
		Id:          c.ID,
		Labels:      c.Labels,
		Image:       c.Image,
		Runtime:     &api.Container_Runtime{Name: c.Runtime.Name},
		SnapshotKey: c.SnapshotKey,
		Snapshotter: c.Snapshotter,
		CreatedAt:   protoconv.Timestamp(c.CreatedAt),
		UpdatedAt:   protoconv.Timestamp(c.UpdatedAt),
	}
	if c.Runtime.Options != nil {
		pc.Runtime.Options = decodeAny(c.Runtime.Options)
	}
	if c.SpecType != "" || c.Spec != nil {
		pc.Spec = &ptypes.Any{TypeUrl: c.SpecType, Value: c.Spec}
	}
	if len(c.Extensions) > 0 {
		pc.Extensions = map[string]*ptypes.Any{}
		for k, v := range c.Extensions {
			pc.Extensions[k] = decodeAny(v)
		}
	}
	return pc
}

// fromProto converts and validates an API container.
func fromProto(pc *api.Container) (metadata.Container, error) {
	if pc == nil {
		return metadata.Container{}, errdefs.InvalidArgument("container", "must be set")
	}
	if err := identifiers.Validate("container.id", pc.Id); err != nil {
		return metadata.Container{}, err
	}
	c := metadata.Container{
		ID:          pc.Id,
		Labels:      pc.Labels,
		Image:       pc.Image,
		SnapshotKey: pc.SnapshotKey,
		Snapshotter: pc.Snapshotter,
	}
	if pc.Runtime != nil {
		c.Runtime.Name = pc.Runtime.Name
		if pc.Runtime.Options != nil {
			b, err := pc.Runtime.Options.Marshal()
			if err != nil {
				return c, errdefs.InvalidArgument("container.runtime.options", "%v", err)
			}
			if len(b) > MaxRuntimeOptionsBytes {
				return c, errdefs.InvalidArgument("container.runtime.options", "%d bytes is more than the maximum of %d", len(b), MaxRuntimeOptionsBytes)
			}
			c.Runtime.Options = b
		}
	}
	if pc.Spec != nil {
		if len(pc.Spec.Value) > MaxSpecBytes {
			return c, errdefs.InvalidArgument("container.spec", "%d bytes is more than the maximum of %d", len(pc.Spec.Value), MaxSpecBytes)
		}
		c.Spec, c.SpecType = pc.Spec.Value, pc.Spec.TypeUrl
	}
	if len(pc.Extensions) > 0 {
		c.Extensions = map[string][]byte{}
		for k, v := range pc.Extensions {
			if v == nil {
				continue
			}
			b, err := v.Marshal()
			if err != nil {
				return c, errdefs.InvalidArgument("container.extensions", "%q: %v", k, err)
			}
			c.Extensions[k] = b
		}
	}
	return c, nil
}

// decodeAny decodes a stored Any; stored bytes were produced by Marshal.
func decodeAny(b []byte) *ptypes.Any {
	a := &ptypes.Any{}
	if err := a.Unmarshal(b); err != nil {
		return &ptypes.Any{}
	}
	return a
}

func (s *service) Get(ctx context.Context, r *api.GetContainerRequest) (*api.GetContainerResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	if err := identifiers.Validate("id", r.Id); err != nil {
		return nil, err
	}
	var c metadata.Container
	if err := s.db.View(ctx, func(tx *metadata.Tx) (err error) {
		c, err = tx.GetContainer(ctx, ns, r.Id)
		return err
	}); err != nil {
		return nil, err
	}
	return &api.GetContainerResponse{Container: ToProto(c)}, nil
}

// ParseFilters converts filter strings into metadata filters. Conditions
// the store cannot evaluate are returned as a Set evaluated afterwards.
func ParseFilters(fs []string) ([]metadata.ContainerFilter, filters.Set, error) {
	set, err := filters.Parse(fs...)
	if err != nil {
		return nil, nil, err
	}
	var out []metadata.ContainerFilter
	for _, f := range set {
		mf, ok := toStoreFilter(f)
		if !ok {
			// Let the store return everything; the set filters in Go.
			return nil, set, nil
		}
		out = append(out, mf)
	}
	return out, nil, nil
}

// toStoreFilter maps a filter made only of equality and presence conditions
// on id, image, runtime.name and labels to a store filter.
func toStoreFilter(f filters.Filter) (metadata.ContainerFilter, bool) {
	var mf metadata.ContainerFilter
	ok := true
	for _, cond := range filters.Conditions(f) {
		switch {
		case cond.Op == filters.OpEqual && len(cond.Path) == 1 && cond.Path[0] == "id" && mf.ID == "":
			mf.ID = cond.Value
		case cond.Op == filters.OpEqual && len(cond.Path) == 1 && cond.Path[0] == "image" && mf.Image == "":
			mf.Image = cond.Value
		case cond.Op == filters.OpEqual && len(cond.Path) == 2 && cond.Path[0] == "runtime" && cond.Path[1] == "name" && mf.Runtime == "":
			mf.Runtime = cond.Value
		case len(cond.Path) >= 2 && cond.Path[0] == "labels" && (cond.Op == filters.OpEqual || cond.Op == filters.OpPresent):
			mf.Labels = append(mf.Labels, metadata.LabelMatch{Key: strings.Join(cond.Path[1:], "."), Value: cond.Value, Exists: cond.Op == filters.OpPresent})
		default:
			ok = false
		}
	}
	return mf, ok
}

// Adaptor exposes a container's fields to filters.
func Adaptor(c *metadata.Container) filters.Adaptor {
	return filters.AdaptorFunc(func(p []string) (string, bool) {
		switch p[0] {
		case "id":
			return c.ID, true
		case "image":
			return c.Image, c.Image != ""
		case "runtime":
			if len(p) == 2 && p[1] == "name" {
				return c.Runtime.Name, true
			}
		case "snapshotter":
			return c.Snapshotter, c.Snapshotter != ""
		case "labels":
			return filters.Labels(c.Labels, p)
		}
		return "", false
	})
}

// listResponseLimit is the largest List response edged sends: the API's
// message limit less room for ttrpc's response envelope (a status and the
// payload's tag and length, under 16 bytes).
const listResponseLimit = ttrpcwire.MaxMessage - 16

func (s *service) List(ctx context.Context, r *api.ListContainersRequest) (*api.ListContainersResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	list, err := s.list(ctx, ns, r.Filters)
	if err != nil {
		return nil, err
	}
	resp := &api.ListContainersResponse{Containers: list}
	// Containers of up to a 1 MiB spec each soon take more than a message
	// may carry; say what to do instead of rpc's bare "message length
	// exceeds the maximum".
	if size := resp.Size(); size > listResponseLimit {
		return nil, fmt.Errorf("%d containers of namespace %q take %d bytes, more than the %d byte message limit of List: use ListStream (edged/client's ListContainers does), or filters that match fewer: %w",
			len(list), ns, size, ttrpcwire.MaxMessage, errdefs.ErrResourceExhausted)
	}
	return resp, nil
}

// ListStream sends the containers List would return one per message, so
// that any number of them fits: each container is below the message limit.
func (s *service) ListStream(ctx context.Context, r *api.ListContainersRequest, stream api.Containers_ListStreamServer) error {
	err := func() error {
		ns, err := namespaces.StreamRequired(ctx, r.Namespace)
		if err != nil {
			return err
		}
		// Read them all first: sending to a slow client inside the read
		// transaction would keep the WAL from being checkpointed.
		list, err := s.list(ctx, ns, r.Filters)
		if err != nil {
			return err
		}
		for i, c := range list {
			if err := stream.Send(&api.ListContainerMessage{Container: c}); err != nil {
				return err
			}
			list[i] = nil // sent: let it go
		}
		return nil
	}()
	return errdefs.ToStatus(err)
}

// list returns the containers of namespace ns matching any filter.
func (s *service) list(ctx context.Context, ns string, fs []string) ([]*api.Container, error) {
	storeFilters, post, err := ParseFilters(fs)
	if err != nil {
		return nil, err
	}
	var list []*api.Container
	err = s.db.View(ctx, func(tx *metadata.Tx) error {
		return tx.WalkContainers(ctx, ns, func(c metadata.Container) error {
			if post.Match(Adaptor(&c)) {
				list = append(list, ToProto(c))
			}
			return nil
		}, storeFilters...)
	})
	if err != nil {
		return nil, err
	}
	return list, nil
}

func (s *service) Create(ctx context.Context, r *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	c, err := fromProto(r.Container)
	if err != nil {
		return nil, err
	}
	if err := s.db.Update(ctx, func(tx *metadata.Tx) (err error) {
		c, err = tx.CreateContainer(ctx, ns, c)
		return err
	}); err != nil {
		return nil, err
	}
	pc := ToProto(c)
	_ = s.ex.Publish(ctx, "/containers/create", &eventtypes.ContainerCreate{
		Id: c.ID, Image: c.Image,
		Runtime: &eventtypes.ContainerCreate_Runtime{Name: c.Runtime.Name, Options: pc.Runtime.Options},
	})
	return &api.CreateContainerResponse{Container: pc}, nil
}

func (s *service) Update(ctx context.Context, r *api.UpdateContainerRequest) (*api.UpdateContainerResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	c, err := fromProto(r.Container)
	if err != nil {
		return nil, err
	}
	if err := s.db.Update(ctx, func(tx *metadata.Tx) (err error) {
		c, err = tx.UpdateContainer(ctx, ns, c, protoconv.FieldPaths(r.UpdateMask)...)
		return err
	}); err != nil {
		return nil, err
	}
	_ = s.ex.Publish(ctx, "/containers/update", &eventtypes.ContainerUpdate{Id: c.ID, Image: c.Image, Labels: c.Labels, SnapshotKey: c.SnapshotKey})
	return &api.UpdateContainerResponse{Container: ToProto(c)}, nil
}

func (s *service) Delete(ctx context.Context, r *api.DeleteContainerRequest) (*ptypes.Empty, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	if err := identifiers.Validate("id", r.Id); err != nil {
		return nil, err
	}
	if s.hasTask != nil && s.hasTask(ns, r.Id) {
		return nil, fmt.Errorf("container %q has a task; delete the task first: %w", r.Id, errdefs.ErrFailedPrecondition)
	}
	var c metadata.Container
	if err := s.db.Update(ctx, func(tx *metadata.Tx) (err error) {
		c, err = tx.TakeContainer(ctx, ns, r.Id)
		return err
	}); err != nil {
		return nil, err
	}
	for _, h := range s.deleted {
		h(ctx, ns, c)
	}
	_ = s.ex.Publish(ctx, "/containers/delete", &eventtypes.ContainerDelete{Id: r.Id})
	return &ptypes.Empty{}, nil
}

// CreateFromImage needs the image store and the snapshotter; until the
// server configures a Creator it answers NotImplemented.
func (s *service) CreateFromImage(ctx context.Context, r *api.CreateFromImageRequest) (*api.CreateContainerResponse, error) {
	if s.creator == nil {
		return nil, fmt.Errorf("creating containers from images: %w", errdefs.ErrNotImplemented)
	}
	return s.creator(ctx, r)
}
