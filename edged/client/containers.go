package client

import (
	"context"
	"errors"
	"io"

	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
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
//
// It uses ListStream, one container per message, since the containers of
// a namespace can take more than List's single 4 MiB message; with an
// edged older than ListStream it uses List.
func (c *Client) ListContainers(ctx context.Context, filters ...string) ([]*Container, error) {
	if _, ok := ctx.Deadline(); !ok && c.timeout > 0 {
		// A list is one API call, bounded as unary calls are.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req := &api.ListContainersRequest{Filters: filters, Namespace: c.streamNamespace(ctx)}
	var out []*Container
	s, err := c.containers.ListStream(ctx, req)
	for err == nil {
		var m *api.ListContainerMessage
		if m, err = s.Recv(); err == nil {
			out = append(out, m.Container)
		}
	}
	if err == io.EOF {
		return out, nil
	}
	err = convertError(err)
	if errors.Is(err, errdefs.ErrNotImplemented) && len(out) == 0 {
		req.Namespace = "" // List takes it from the call's metadata
		r, err := c.containers.List(c.nsctx(ctx), req)
		if err != nil {
			return nil, convertError(err)
		}
		return r.Containers, nil
	}
	return nil, err
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
