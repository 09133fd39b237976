package main

import (
	"testing"

	"github.com/edged/edged/internal/testutil"
)

// The helper starts for every pull or push: what it links is loaded and
// initialised each time, so it stays free of the daemon's parts and of the
// RPC stacks it does not speak.
func TestForbiddenDependencies(t *testing.T) {
	forbidden := []string{
		"database/sql",
		"modernc.org/sqlite",
		"google.golang.org/grpc",     // errdefs/errgrpc is for ttrpc programs
		"google.golang.org/protobuf", // ditto, and ttrpc
		"github.com/containerd/ttrpc",
		"github.com/gogo/protobuf",
		"github.com/edged/edged/edged/metadata",
		"github.com/edged/edged/fsstore/snapshots",
		"github.com/containernetworking/",
	}
	testutil.ForbidDeps(t, "github.com/edged/edged/cmd/edged-remote", forbidden)
}
