package client

import (
	"context"

	ptypes "github.com/gogo/protobuf/types"

	api "github.com/edged/edged/proto/services/containers/v1"
)

// Container is the API's container.
type Container = api.Container

// CreateContainer creates a container in the namespace of ctx (or the
// client's).
func (c *Client) CreateContainer(ctx context.Context, ctr *Container) (*Container, error) {
	r, err := c.containers.Create(c.nsctx(ctx), &api.CreateContainerRequest{Container: ctr})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Container, nil
}

// GetContainer returns a container.
func (c *Client) GetContainer(ctx context.Context, id string) (*Container, error) {
	r, err := c.containers.Get(c.nsctx(ctx), &api.GetContainerRequest{Id: id})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Container, nil
}

// ListContainers lists containers matching any filter, e.g.
// `labels."env"==prod`, `image==busybox`, `id==web`.
func (c *Client) ListContainers(ctx context.Context, filters ...string) ([]*Container, error) {
	r, err := c.containers.List(c.nsctx(ctx), &api.ListContainersRequest{Filters: filters})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Containers, nil
}

// SetContainerLabels sets labels of a container; an empty value removes
// the label.
func (c *Client) SetContainerLabels(ctx context.Context, id string, labels map[string]string) (*Container, error) {
	mask := &ptypes.FieldMask{}
	for k := range labels {
		mask.Paths = append(mask.Paths, "labels."+k)
	}
	if len(mask.Paths) == 0 {
		return c.GetContainer(ctx, id)
	}
	r, err := c.containers.Update(c.nsctx(ctx), &api.UpdateContainerRequest{Container: &Container{Id: id, Labels: labels}, UpdateMask: mask})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Container, nil
}

// UpdateContainer updates the fields of a container named by paths.
func (c *Client) UpdateContainer(ctx context.Context, ctr *Container, paths ...string) (*Container, error) {
	req := &api.UpdateContainerRequest{Container: ctr}
	if len(paths) > 0 {
		req.UpdateMask = &ptypes.FieldMask{Paths: paths}
	}
	r, err := c.containers.Update(c.nsctx(ctx), req)
	if err != nil {
		return nil, convertError(err)
	}
	return r.Container, nil
}

// DeleteContainer deletes a container.
func (c *Client) DeleteContainer(ctx context.Context, id string) error {
	_, err := c.containers.Delete(c.nsctx(ctx), &api.DeleteContainerRequest{Id: id})
	return convertError(err)
}
