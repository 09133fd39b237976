package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSmallDependencies keeps edgectl small: the CLI talks to edged over
// ttrpc and must not link the daemon's storage, image or HTTP code. It
// speaks ttrpc with proto/rpc's own client, so it does not link
// github.com/containerd/ttrpc either, nor the protobuf-go runtime and gRPC
// packages ttrpc needs (they were a quarter of the binary and most of its
// start-up work).
func TestSmallDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{
		"database/sql",
		"modernc.org/",
		"net/http",
		"github.com/edged/edged/edged/metadata",
		"github.com/edged/edged/fsstore",
		"github.com/edged/edged/edged/server",
		"github.com/containernetworking/",
		"github.com/containerd/ttrpc",
		"google.golang.org/protobuf",
		"google.golang.org/grpc",
		"google.golang.org/genproto",
		"github.com/sirupsen/logrus",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f) {
				t.Errorf("edgectl depends on %s", dep)
			}
		}
	}
}
