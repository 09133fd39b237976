package main

import (
	"testing"

	"github.com/edged/edged/internal/testutil"
)

// The shim runs once per container group on small devices: its import graph
// must stay free of the daemon's heavy parts.
func TestForbiddenDependencies(t *testing.T) {
	forbidden := []string{
		"net/http",
		"database/sql",
		"modernc.org/sqlite",
		"github.com/edged/edged/fsstore",
		"github.com/edged/edged/edged/metadata",
		"github.com/containernetworking/",
		"crypto/tls",
		// ttrpc's envelopes are encoded by internal/ttrpcwire and statuses
		// are proto/rpc's: no protobuf-go runtime (descriptors built at
		// init, detrand reading the binary) and no gRPC packages.
		"google.golang.org/grpc",
		"google.golang.org/protobuf",
		"google.golang.org/genproto",
		"github.com/containerd/ttrpc",
		"regexp",    // compiled patterns cost every shim their init allocations
		"os/signal", // a signal-handling thread per shim
		// The shim encodes its one events message by hand (shimd/publisher):
		// the generated service packages register their types at init.
		"github.com/edged/edged/proto/services/",
	}
	testutil.ForbidDeps(t, "github.com/edged/edged/cmd/edged-shim", forbidden)
}
