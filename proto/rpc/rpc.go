// Package rpc is the calling convention of edged's generated service code
// (the *_ttrpc.pb.go files under proto/): what a server registers and what
// a client calls, for gogo-generated messages, and edged's implementation
// of both over the wire protocol of github.com/containerd/ttrpc (its
// PROTOCOL.md, framed by internal/ttrpcwire): Server and Conn.
//
// edged, edged-shim and edgectl use Server and Conn, not ttrpc: ttrpc
// encodes its envelopes with protobuf-go and needs gRPC's status
// packages, most of its code and most of a small binary's start-up, and
// its server hands every request through three goroutines. proto/wire
// adapts ttrpc's client and server to these interfaces for code that wants
// ttrpc itself (and for the tests that check the two interoperate).
package rpc

import (
	"context"
	"sort"
)

// Message is a gogo-generated message: it encodes itself.
type Message interface {
	Size() int
	MarshalTo([]byte) (int, error)
	Unmarshal([]byte) error
	Reset()
}

// Registrar takes the services of a server.
type Registrar interface {
	RegisterService(name string, desc *ServiceDesc)
}

// ServiceDesc describes the methods of one service.
type ServiceDesc struct {
	Methods map[string]Method
	Streams map[string]Stream
}

// Method serves one unary call: unmarshal decodes the request into the
// message given to it.
type Method func(ctx context.Context, unmarshal func(Message) error) (Message, error)

// Stream serves one streaming method.
type Stream struct {
	Handler         func(ctx context.Context, stream StreamServer) (Message, error)
	StreamingClient bool
	StreamingServer bool
}

// StreamServer is the server's end of a stream.
type StreamServer interface {
	SendMsg(m Message) error
	RecvMsg(m Message) error
}

// Caller makes calls: Conn, or a ttrpc.Client adapted by proto/wire.
type Caller interface {
	Call(ctx context.Context, service, method string, req, resp Message) error
	NewStream(ctx context.Context, desc *StreamDesc, service, method string, req Message) (ClientStream, error)
}

// StreamDesc tells which sides of a stream send more than one message.
type StreamDesc struct {
	StreamingClient bool
	StreamingServer bool
}

// ClientStream is the client's end of a stream. RecvMsg returns io.EOF
// after the server's last message.
type ClientStream interface {
	CloseSend() error
	SendMsg(m Message) error
	RecvMsg(m Message) error
}

// MD is request metadata, as ttrpc's MD: keys with their values.
type MD map[string][]string

// Get returns the values of key.
func (m MD) Get(key string) ([]string, bool) {
	v, ok := m[key]
	return v, ok
}

// Set replaces the values of key.
func (m MD) Set(key string, values ...string) {
	if len(values) == 0 {
		return
	}
	m[key] = values
}

// Clone returns a copy of m.
func (m MD) Clone() MD {
	c := make(MD, len(m))
	for k, v := range m {
		c[k] = append([]string(nil), v...)
	}
	return c
}

// pairs returns m as key-value pairs in key order (one pair per value).
func (m MD) pairs() [][2]string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var kv [][2]string
	for _, k := range keys {
		for _, v := range m[k] {
			kv = append(kv, [2]string{k, v})
		}
	}
	return kv
}

type mdKey struct{}

// WithMetadata returns ctx carrying md: a client sends it with each call
// made with ctx, and a server's handlers find the request's metadata in
// their context.
func WithMetadata(ctx context.Context, md MD) context.Context {
	return context.WithValue(ctx, mdKey{}, md)
}

// GetMetadata returns the metadata of ctx.
func GetMetadata(ctx context.Context) (MD, bool) {
	md, ok := ctx.Value(mdKey{}).(MD)
	return md, ok
}

// GetMetadataValue returns the first value of key in the metadata of ctx.
func GetMetadataValue(ctx context.Context, key string) (string, bool) {
	md, ok := GetMetadata(ctx)
	if !ok {
		return "", false
	}
	if v, ok := md.Get(key); ok && len(v) > 0 {
		return v[0], true
	}
	return "", false
}

// readBufferSize is the read buffer of a connection, either side: a
// frame's header and a payload of up to this size (a container create
// with its spec) come in with one read(2) instead of two.
const readBufferSize = 4096
