package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The helper starts for every pull or push: what it links is loaded and
// initialised each time, so it stays free of the daemon's parts and of the
// RPC stacks it does not speak.
func TestForbiddenDependencies(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goBin, "list", "-deps", "github.com/edged/edged/cmd/edged-remote")
	cmd.Env = append(cmd.Environ(), "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list returned %d packages", len(deps))
	}
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
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("edged-remote imports %s (forbidden: %s)", d, f)
			}
		}
	}
}
