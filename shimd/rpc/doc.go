// Package rpc is the shim's own ttrpc server and client: the wire protocol
// of github.com/containerd/ttrpc (unary calls only, framed by package
// internal/ttrpcwire) without its google.golang.org/protobuf message
// machinery. ttrpc encodes its request and response envelopes with
// protobuf-go, whose first use builds message descriptors and coder tables
// at run time, and runs two goroutines per connection; in a shim that idles
// with a few KiB of live heap, that garbage and those stacks stay resident
// for the shim's life (every heap size class touched keeps a span). Here
// the envelopes are encoded by hand and a connection has one goroutine,
// plus one per call in progress.
package rpc

import "github.com/edged/edged/internal/ttrpcwire"

// MaxMessage is the largest payload a frame may carry (ttrpc's limit).
const MaxMessage = ttrpcwire.MaxMessage
