package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDaemonDependencies keeps the shim's code out of edged (the daemon
// talks to shims over ttrpc and runs `edged-shim delete` for cleanups),
// and keeps github.com/containerd/ttrpc out too: edged serves its API and
// calls shims with proto/rpc, which speaks the same protocol without the
// protobuf-go runtime and gRPC packages ttrpc needs (1.6 MiB of edged's
// binary, and ttrpc's server handed every request through three
// goroutines).
func TestDaemonDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{
		"github.com/edged/edged/shimd",
		"github.com/containerd/ttrpc",
		"google.golang.org/protobuf",
		"google.golang.org/grpc",
		"google.golang.org/genproto",
		"github.com/sirupsen/logrus",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f) {
				t.Errorf("edged depends on %s", dep)
			}
		}
	}
}
