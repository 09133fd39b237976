package client

import (
	"context"

	ptypes "github.com/gogo/protobuf/types"

	api "github.com/edged/edged/proto/services/namespaces/v1"
)

// CreateNamespace creates a namespace.
func (c *Client) CreateNamespace(ctx context.Context, name string, labels map[string]string) (*api.Namespace, error) {
	r, err := c.namespaces.Create(ctx, &api.CreateNamespaceRequest{Namespace: &api.Namespace{Name: name, Labels: labels}})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Namespace, nil
}

// GetNamespace returns a namespace.
func (c *Client) GetNamespace(ctx context.Context, name string) (*api.Namespace, error) {
	r, err := c.namespaces.Get(ctx, &api.GetNamespaceRequest{Name: name})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Namespace, nil
}

// ListNamespaces lists the namespaces matching any of the filters.
func (c *Client) ListNamespaces(ctx context.Context, filters ...string) ([]*api.Namespace, error) {
	r, err := c.namespaces.List(ctx, &api.ListNamespacesRequest{Filters: filters})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Namespaces, nil
}

// SetNamespaceLabels sets labels of a namespace; an empty value removes
// the label. Other labels are kept.
func (c *Client) SetNamespaceLabels(ctx context.Context, name string, labels map[string]string) (*api.Namespace, error) {
	return c.updateNamespaceLabels(ctx, name, labels, false)
}

// ReplaceNamespaceLabels replaces all labels of a namespace.
func (c *Client) ReplaceNamespaceLabels(ctx context.Context, name string, labels map[string]string) (*api.Namespace, error) {
	return c.updateNamespaceLabels(ctx, name, labels, true)
}

func (c *Client) updateNamespaceLabels(ctx context.Context, name string, labels map[string]string, replace bool) (*api.Namespace, error) {
	mask := &ptypes.FieldMask{Paths: []string{"labels"}}
	if !replace {
		mask.Paths = mask.Paths[:0]
		for k := range labels {
			mask.Paths = append(mask.Paths, "labels."+k)
		}
		if len(mask.Paths) == 0 {
			return c.GetNamespace(ctx, name)
		}
	}
	r, err := c.namespaces.Update(ctx, &api.UpdateNamespaceRequest{Namespace: &api.Namespace{Name: name, Labels: labels}, UpdateMask: mask})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Namespace, nil
}

// DeleteNamespace deletes an empty namespace.
func (c *Client) DeleteNamespace(ctx context.Context, name string) error {
	_, err := c.namespaces.Delete(ctx, &api.DeleteNamespaceRequest{Name: name})
	return convertError(err)
}
