// Package rpc is the shim's ttrpc client for publishing events: unary
// calls of the wire protocol of github.com/containerd/ttrpc (framed by
// package internal/ttrpcwire), one at a time, with no goroutine of its
// own. The shim serves its task API with proto/rpc's Server. Neither uses
// ttrpc's google.golang.org/protobuf message machinery: ttrpc encodes its
// envelopes with protobuf-go, whose first use builds message descriptors
// and coder tables at run time, and runs goroutines per connection; in a
// shim that idles with a few KiB of live heap, that garbage and those
// stacks stay resident for the shim's life (every heap size class touched
// keeps a span).
package rpc

import "github.com/edged/edged/internal/ttrpcwire"

// MaxMessage is the largest payload a frame may carry (ttrpc's limit).
const MaxMessage = ttrpcwire.MaxMessage
