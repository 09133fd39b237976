package client

import (
	"context"

	api "github.com/edged/edged/proto/services/leases/v1"
)

// Lease protects resources from garbage collection.
type Lease = api.Lease

// LeaseResource is a resource held by a lease: type "content",
// "snapshots/default", "ingests" or "images".
type LeaseResource = api.Resource

func (c *Client) leasesClient() api.LeasesService { return api.NewLeasesClient(c.caller) }

// CreateLease creates a lease (id "" generates one) expiring after
// expireSeconds (0: never).
func (c *Client) CreateLease(ctx context.Context, id string, labels map[string]string, expireSeconds int64) (*Lease, error) {
	r, err := c.leasesClient().Create(c.nsctx(ctx), &api.CreateRequest{Id: id, Labels: labels, ExpireSeconds: expireSeconds})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Lease, nil
}

// DeleteLease deletes a lease; sync collects what it alone held first.
func (c *Client) DeleteLease(ctx context.Context, id string, sync bool) error {
	_, err := c.leasesClient().Delete(c.nsctx(ctx), &api.DeleteRequest{Id: id, Sync: sync})
	return convertError(err)
}

// ListLeases lists leases matching any filter.
func (c *Client) ListLeases(ctx context.Context, filters ...string) ([]*Lease, error) {
	r, err := c.leasesClient().List(c.nsctx(ctx), &api.ListRequest{Filters: filters})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Leases, nil
}

// AddLeaseResource adds a resource to a lease.
func (c *Client) AddLeaseResource(ctx context.Context, id string, r LeaseResource) error {
	_, err := c.leasesClient().AddResource(c.nsctx(ctx), &api.AddResourceRequest{Id: id, Resource: &r})
	return convertError(err)
}

// ListLeaseResources lists a lease's resources.
func (c *Client) ListLeaseResources(ctx context.Context, id string) ([]*LeaseResource, error) {
	r, err := c.leasesClient().ListResources(c.nsctx(ctx), &api.ListResourcesRequest{Id: id})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Resources, nil
}
