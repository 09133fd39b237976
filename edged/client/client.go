// Package client is the Go client of edged for fleet agents and edgectl.
//
//	c, err := client.New(ctx, "/run/edged/edged.sock", client.WithNamespace("fleet"))
//	defer c.Close()
//	info, err := c.Version(ctx)
//
// Errors keep their kind across the wire: errors.Is(err, errdefs.ErrNotFound).
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/containerd/ttrpc"
	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/errdefs/errgrpc"
	"github.com/edged/edged/edged/namespaces"
	containersapi "github.com/edged/edged/proto/services/containers/v1"
	eventsapi "github.com/edged/edged/proto/services/events/v1"
	namespacesapi "github.com/edged/edged/proto/services/namespaces/v1"
	versionapi "github.com/edged/edged/proto/services/version/v1"
)

// DefaultAddress is edged's default API socket.
const DefaultAddress = "/run/edged/edged.sock"

// AddressEnv names the environment variable with the socket address.
const AddressEnv = "EDGED_ADDRESS"

// DefaultTimeout bounds a unary call whose context has no deadline.
const DefaultTimeout = 30 * time.Second

// Client is a connection to edged. It is safe for concurrent use.
type Client struct {
	tc        *ttrpc.Client
	namespace string
	timeout   time.Duration

	version    versionapi.VersionService
	namespaces namespacesapi.NamespacesService
	containers containersapi.ContainersService
	events     eventsapi.EventsClient
}

// Opt configures New.
type Opt func(*Client)

// WithNamespace sets the namespace of calls whose context has none
// (default: $EDGED_NAMESPACE or "default").
func WithNamespace(ns string) Opt { return func(c *Client) { c.namespace = ns } }

// WithTimeout sets the deadline of unary calls whose context has none.
func WithTimeout(d time.Duration) Opt { return func(c *Client) { c.timeout = d } }

// AddressFromEnv returns $EDGED_ADDRESS or DefaultAddress.
func AddressFromEnv() string {
	if a := os.Getenv(AddressEnv); a != "" {
		return a
	}
	return DefaultAddress
}

// New connects to edged's socket at address ("unix://" prefix optional).
func New(ctx context.Context, address string, opts ...Opt) (*Client, error) {
	if len(address) > 7 && address[:7] == "unix://" {
		address = address[7:]
	}
	var d net.Dialer
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	conn, err := d.DialContext(ctx, "unix", address)
	if err != nil {
		return nil, fmt.Errorf("connect to edged at %s: %v: %w", address, err, errdefs.ErrUnavailable)
	}
	return NewFromConn(conn, opts...), nil
}

// NewFromConn wraps an established connection.
func NewFromConn(conn net.Conn, opts ...Opt) *Client {
	c := &Client{namespace: namespaces.FromEnv(), timeout: DefaultTimeout}
	for _, o := range opts {
		o(c)
	}
	c.tc = ttrpc.NewClient(conn, ttrpc.WithUnaryClientInterceptor(c.intercept))
	c.version = versionapi.NewVersionClient(c.tc)
	c.namespaces = namespacesapi.NewNamespacesClient(c.tc)
	c.containers = containersapi.NewContainersClient(c.tc)
	c.events = eventsapi.NewEventsClient(c.tc)
	return c
}

// Close closes the connection.
func (c *Client) Close() error { return c.tc.Close() }

// Namespace returns the client's default namespace.
func (c *Client) Namespace() string { return c.namespace }

// TTRPC returns the underlying ttrpc client, for the generated service
// clients of APIs without a typed method here.
func (c *Client) TTRPC() *ttrpc.Client { return c.tc }

// intercept adds the namespace and a deadline, and types the error.
func (c *Client) intercept(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, info *ttrpc.UnaryClientInfo, invoker ttrpc.Invoker) error {
	if _, ok := ctx.Deadline(); !ok && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
		req.TimeoutNano = c.timeout.Nanoseconds()
	}
	if _, ok := namespaces.Namespace(ctx); !ok {
		req.Metadata = append(req.Metadata, &ttrpc.KeyValue{Key: namespaces.TTRPCHeader, Value: c.namespace})
	}
	// ttrpc returns the server's status after the interceptor; the typed
	// methods convert it with convertError.
	return invoker(ctx, req, resp)
}

// WithNamespace returns ctx carrying ns for calls made with it.
func (c *Client) WithNamespace(ctx context.Context, ns string) context.Context {
	return namespaces.WithNamespace(ctx, ns)
}

func (c *Client) nsctx(ctx context.Context) context.Context {
	if _, ok := namespaces.Namespace(ctx); ok {
		return ctx
	}
	return namespaces.WithNamespace(ctx, c.namespace)
}

func convertError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ttrpc.ErrStreamFull) {
		return fmt.Errorf("stream dropped: the receiver fell behind: %w", errdefs.ErrResourceExhausted)
	}
	if errors.Is(err, ttrpc.ErrClosed) || errors.Is(err, ttrpc.ErrServerClosed) {
		return fmt.Errorf("edged connection: %v: %w", err, errdefs.ErrUnavailable)
	}
	return errgrpc.FromGRPC(err)
}

// Version returns edged's version.
func (c *Client) Version(ctx context.Context) (*versionapi.VersionResponse, error) {
	v, err := c.version.Version(ctx, &ptypes.Empty{})
	return v, convertError(err)
}
