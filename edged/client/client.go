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

	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/proto/rpc"
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
//
// It speaks ttrpc through rpc.Conn, edged's own ttrpc client, not through
// github.com/containerd/ttrpc: that keeps protobuf-go and gRPC, most of
// ttrpc's code, out of edgectl and of fleet agents (a smaller binary that
// starts faster).
type Client struct {
	conn      *rpc.Conn
	caller    caller
	namespace string
	timeout   time.Duration
	busyPoll  time.Duration

	version    versionapi.VersionService
	namespaces namespacesapi.NamespacesService
	containers containersapi.ContainersClient
	events     eventsapi.EventsClient
}

// Opt configures New.
type Opt func(*Client)

// WithNamespace sets the namespace of calls whose context has none
// (default: $EDGED_NAMESPACE or "default").
func WithNamespace(ns string) Opt { return func(c *Client) { c.namespace = ns } }

// WithTimeout sets the deadline of unary calls whose context has none.
func WithTimeout(d time.Duration) Opt { return func(c *Client) { c.timeout = d } }

// DefaultBusyPoll is the longest a call reads for its answer without
// sleeping before it waits for it, unless WithBusyPoll says otherwise.
const DefaultBusyPoll = 600 * time.Microsecond

// WithBusyPoll sets the longest a call polls edged's socket for its answer
// before it sleeps (0 turns polling off; default DefaultBusyPoll). A call
// polls for twice the connection's recent average answer time, at most d.
// Polling trades the client's CPU for latency: a call that sleeps must be
// woken by edged's answer, which costs edged CPU as well. The connection
// polls only with more than one P (GOMAXPROCS) and while its recent answers
// averaged under d/2; see rpc.Conn.SetBusyPoll for the figures.
func WithBusyPoll(d time.Duration) Opt { return func(c *Client) { c.busyPoll = max(d, 0) } }

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
	c := &Client{namespace: namespaces.FromEnv(), timeout: DefaultTimeout, busyPoll: DefaultBusyPoll}
	for _, o := range opts {
		o(c)
	}
	c.conn = rpc.NewConn(conn)
	c.conn.SetBusyPoll(c.busyPoll)
	c.caller = caller{c}
	c.version = versionapi.NewVersionClient(c.caller)
	c.namespaces = namespacesapi.NewNamespacesClient(c.caller)
	c.containers = containersapi.NewContainersClient(c.caller)
	c.events = eventsapi.NewEventsClient(c.caller)
	return c
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Done is closed when the connection to edged has ended: closed, or lost
// (edged stopped or crashed). A client that outlives edged connects
// again with New.
func (c *Client) Done() <-chan struct{} { return c.conn.Done() }

// BusyPoll returns how long a call polls for its answer (see WithBusyPoll).
func (c *Client) BusyPoll() time.Duration { return c.conn.BusyPoll() }

// Namespace returns the client's default namespace.
func (c *Client) Namespace() string { return c.namespace }

// Caller returns the client's connection for the generated service
// clients of APIs without a typed method here
// (tasksapi.NewTasksClient(c.Caller())). Its calls get the client's
// namespace and deadline as the typed methods do; their errors are
// *rpc.StatusError values (see ConvertError).
func (c *Client) Caller() rpc.Caller { return c.caller }

// caller adds the client's namespace, and a deadline to unary calls, when
// a call's context has none.
type caller struct{ c *Client }

func (k caller) Call(ctx context.Context, service, method string, req, resp rpc.Message) error {
	if _, ok := ctx.Deadline(); !ok && k.c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, k.c.timeout)
		defer cancel()
	}
	return k.c.conn.Call(k.c.nsctx(ctx), service, method, req, resp)
}

func (k caller) NewStream(ctx context.Context, desc *rpc.StreamDesc, service, method string, req rpc.Message) (rpc.ClientStream, error) {
	return k.c.conn.NewStream(k.c.nsctx(ctx), desc, service, method, req)
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

// ConvertError turns an error of a call into a typed error: the status
// edged sent becomes its errdefs kind (errors.Is(err, errdefs.ErrNotFound)),
// a lost connection ErrUnavailable. The typed methods return converted
// errors already.
func ConvertError(err error) error {
	if err == nil {
		return nil
	}
	var st *rpc.StatusError
	if errors.As(err, &st) {
		return errdefs.FromStatus(err)
	}
	if errors.Is(err, rpc.ErrStreamFull) {
		return fmt.Errorf("stream dropped: the receiver fell behind: %w", errdefs.ErrResourceExhausted)
	}
	if errors.Is(err, rpc.ErrClosed) {
		return fmt.Errorf("edged connection: %v: %w", err, errdefs.ErrUnavailable)
	}
	return err
}

func convertError(err error) error { return ConvertError(err) }

// Version returns edged's version.
func (c *Client) Version(ctx context.Context) (*versionapi.VersionResponse, error) {
	v, err := c.version.Version(ctx, &ptypes.Empty{})
	return v, convertError(err)
}
