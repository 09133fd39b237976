package client

import (
	"context"
	"io"

	api "github.com/edged/edged/proto/services/snapshots/v1"
)

// SnapshotInfo describes a snapshot.
type SnapshotInfo = api.Info

// Snapshots returns the generated Snapshots client, for calls without a
// typed method here (errors are not converted).
func (c *Client) Snapshots() api.SnapshotsClient { return api.NewSnapshotsClient(c.caller) }

// ListSnapshots lists the namespace's snapshots matching any filter.
func (c *Client) ListSnapshots(ctx context.Context, filters ...string) ([]*SnapshotInfo, error) {
	s, err := c.Snapshots().List(ctx, &api.ListSnapshotsRequest{Filters: filters, Namespace: c.streamNamespace(ctx)})
	if err != nil {
		return nil, convertError(err)
	}
	var out []*SnapshotInfo
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

// StatSnapshot returns a snapshot's info.
func (c *Client) StatSnapshot(ctx context.Context, key string) (*SnapshotInfo, error) {
	r, err := c.Snapshots().Stat(c.nsctx(ctx), &api.StatSnapshotRequest{Key: key})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Info, nil
}

// RemoveSnapshot removes a snapshot.
func (c *Client) RemoveSnapshot(ctx context.Context, key string) error {
	_, err := c.Snapshots().Remove(c.nsctx(ctx), &api.RemoveSnapshotRequest{Key: key})
	return convertError(err)
}

// SnapshotUsage returns the disk use of a snapshot's own data.
func (c *Client) SnapshotUsage(ctx context.Context, key string) (size, inodes int64, err error) {
	r, err := c.Snapshots().Usage(c.nsctx(ctx), &api.UsageRequest{Key: key})
	if err != nil {
		return 0, 0, convertError(err)
	}
	return r.Size_, r.Inodes, nil
}
