package client

import (
	"context"

	api "github.com/edged/edged/proto/services/netns/v1"
)

// Netns is a named network namespace.
type Netns = api.Namespace

func (c *Client) netnsClient() api.NetnsService { return api.NewNetnsClient(c.caller) }

// CreateNetns creates the named network namespace name (loopback up), which
// containers join with --net ns:NAME.
func (c *Client) CreateNetns(ctx context.Context, name string) (*Netns, error) {
	r, err := c.netnsClient().Create(ctx, &api.CreateNetnsRequest{Name: name})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Netns, nil
}

// ListNetns lists the named network namespaces, sorted by name.
func (c *Client) ListNetns(ctx context.Context) ([]*Netns, error) {
	r, err := c.netnsClient().List(ctx, &api.ListNetnsRequest{})
	if err != nil {
		return nil, convertError(err)
	}
	return r.Namespaces, nil
}

// DeleteNetns deletes the named network namespace name. It fails with
// ErrFailedPrecondition while tasks use it.
func (c *Client) DeleteNetns(ctx context.Context, name string) error {
	_, err := c.netnsClient().Delete(ctx, &api.DeleteNetnsRequest{Name: name})
	return convertError(err)
}
