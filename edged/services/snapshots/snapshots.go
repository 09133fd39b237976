// Package snapshots is the ttrpc Snapshots service over the daemon's one
// snapshotter (fsstore/snapshots); keys are scoped by the call's namespace.
package snapshots

import (
	"context"
	"fmt"
	"strings"

	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/edged/protoconv"
	"github.com/edged/edged/fsstore/snapshots"
	"github.com/edged/edged/fsstore/snapshots/mount"
	"github.com/edged/edged/proto/rpc"
	api "github.com/edged/edged/proto/services/snapshots/v1"
	ptypesapi "github.com/edged/edged/proto/types"
)

// listBatch is the number of infos per List message.
const listBatch = 100

type service struct {
	sn  snapshots.Snapshotter
	img *images.Service
}

// Register adds the Snapshots service to srv; img schedules collections
// after removals.
func Register(srv rpc.Registrar, sn snapshots.Snapshotter, img *images.Service) {
	api.RegisterSnapshotsService(srv, &service{sn: sn, img: img})
}

// check returns the namespace and checks the snapshotter name: empty,
// "default" or the backend in use.
func (s *service) check(ctx context.Context, name string) (string, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	return ns, s.checkName(name)
}

func (s *service) checkName(name string) error {
	if name != "" && name != "default" && name != string(s.sn.Backend()) {
		return fmt.Errorf("snapshotter %q: only %q is configured: %w", name, s.sn.Backend(), errdefs.ErrNotFound)
	}
	return nil
}

// MountsToProto converts mounts.
func MountsToProto(ms []mount.Mount) []*ptypesapi.Mount {
	out := make([]*ptypesapi.Mount, len(ms))
	for i, m := range ms {
		out[i] = &ptypesapi.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options}
	}
	return out
}

func infoProto(i snapshots.Info) *api.Info {
	k := api.Kind_UNKNOWN
	switch i.Kind {
	case snapshots.KindView:
		k = api.Kind_VIEW
	case snapshots.KindActive:
		k = api.Kind_ACTIVE
	case snapshots.KindCommitted:
		k = api.Kind_COMMITTED
	}
	return &api.Info{Name: i.Name, Parent: i.Parent, Kind: k, Labels: i.Labels,
		CreatedAt: protoconv.Timestamp(i.Created), UpdatedAt: protoconv.Timestamp(i.Updated)}
}

func (s *service) Prepare(ctx context.Context, r *api.PrepareSnapshotRequest) (*api.PrepareSnapshotResponse, error) {
	ns, err := s.check(ctx, r.Snapshotter)
	if err != nil {
		return nil, err
	}
	var ms []mount.Mount
	err = s.img.WithGCLock(func() (err error) {
		ms, err = s.sn.Prepare(ctx, ns, r.Key, r.Parent, r.Labels)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &api.PrepareSnapshotResponse{Mounts: MountsToProto(ms)}, nil
}

func (s *service) View(ctx context.Context, r *api.ViewSnapshotRequest) (*api.ViewSnapshotResponse, error) {
	ns, err := s.check(ctx, r.Snapshotter)
	if err != nil {
		return nil, err
	}
	var ms []mount.Mount
	err = s.img.WithGCLock(func() (err error) {
		ms, err = s.sn.View(ctx, ns, r.Key, r.Parent, r.Labels)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &api.ViewSnapshotResponse{Mounts: MountsToProto(ms)}, nil
}

func (s *service) Mounts(ctx context.Context, r *api.MountsRequest) (*api.MountsResponse, error) {
	ns, err := s.check(ctx, r.Snapshotter)
	if err != nil {
		return nil, err
	}
	ms, err := s.sn.Mounts(ctx, ns, r.Key)
	if err != nil {
		return nil, err
	}
	return &api.MountsResponse{Mounts: MountsToProto(ms)}, nil
}

func (s *service) Commit(ctx context.Context, r *api.CommitSnapshotRequest) (*ptypes.Empty, error) {
	ns, err := s.check(ctx, r.Snapshotter)
	if err != nil {
		return nil, err
	}
	if err := s.sn.Commit(ctx, ns, r.Name, r.Key, r.Labels); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

func (s *service) Remove(ctx context.Context, r *api.RemoveSnapshotRequest) (*ptypes.Empty, error) {
	ns, err := s.check(ctx, r.Snapshotter)
	if err != nil {
		return nil, err
	}
	if err := s.sn.Remove(ctx, ns, r.Key); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

func (s *service) Stat(ctx context.Context, r *api.StatSnapshotRequest) (*api.StatSnapshotResponse, error) {
	ns, err := s.check(ctx, r.Snapshotter)
	if err != nil {
		return nil, err
	}
	i, err := s.sn.Stat(ctx, ns, r.Key)
	if err != nil {
		return nil, err
	}
	return &api.StatSnapshotResponse{Info: infoProto(i)}, nil
}

func (s *service) Update(ctx context.Context, r *api.UpdateSnapshotRequest) (*api.UpdateSnapshotResponse, error) {
	ns, err := s.check(ctx, r.Snapshotter)
	if err != nil {
		return nil, err
	}
	if r.Info == nil {
		return nil, errdefs.InvalidArgument("info", "is required")
	}
	paths := protoconv.FieldPaths(r.UpdateMask)
	for _, p := range paths {
		if p != "labels" && !strings.HasPrefix(p, "labels.") {
			return nil, errdefs.InvalidArgument("update_mask", "cannot update %q (only labels)", p)
		}
	}
	i, err := s.sn.Update(ctx, ns, snapshots.Info{Name: r.Info.Name, Labels: r.Info.Labels}, paths...)
	if err != nil {
		return nil, err
	}
	return &api.UpdateSnapshotResponse{Info: infoProto(i)}, nil
}

func (s *service) List(ctx context.Context, r *api.ListSnapshotsRequest, stream api.Snapshots_ListServer) error {
	err := func() error {
		ns, err := namespaces.StreamRequired(ctx, r.Namespace)
		if err != nil {
			return err
		}
		if err := s.checkName(r.Snapshotter); err != nil {
			return err
		}
		list, err := s.sn.List(ctx, ns, r.Filters...)
		if err != nil {
			return err
		}
		batch := &api.ListSnapshotsResponse{}
		for _, i := range list {
			batch.Info = append(batch.Info, infoProto(i))
			if len(batch.Info) == listBatch {
				if err := stream.Send(batch); err != nil {
					return err
				}
				batch = &api.ListSnapshotsResponse{}
			}
		}
		if len(batch.Info) > 0 {
			return stream.Send(batch)
		}
		return nil
	}()
	return errdefs.ToStatus(err)
}

func (s *service) Usage(ctx context.Context, r *api.UsageRequest) (*api.UsageResponse, error) {
	ns, err := s.check(ctx, r.Snapshotter)
	if err != nil {
		return nil, err
	}
	u, err := s.sn.Usage(ctx, ns, r.Key)
	if err != nil {
		return nil, err
	}
	return &api.UsageResponse{Size_: u.Size, Inodes: u.Inodes}, nil
}

// Cleanup runs a garbage collection, which removes unreferenced snapshots.
func (s *service) Cleanup(ctx context.Context, r *api.CleanupRequest) (*ptypes.Empty, error) {
	if _, err := s.check(ctx, r.Snapshotter); err != nil {
		return nil, err
	}
	if _, err := s.img.GarbageCollect(ctx); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}
