package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The shim runs once per container group on small devices: its import graph
// must stay free of the daemon's heavy parts.
func TestForbiddenDependencies(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goBin, "list", "-deps", "github.com/edged/edged/cmd/edged-shim")
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
		"net/http",
		"database/sql",
		"modernc.org/sqlite",
		"github.com/edged/edged/fsstore",
		"github.com/edged/edged/edged/metadata",
		"github.com/containernetworking/",
		"crypto/tls",
		"google.golang.org/grpc/internal/transport", // a gRPC server/client
		"regexp",    // compiled patterns cost every shim their init allocations
		"os/signal", // a signal-handling thread per shim
		// The shim encodes its one events message by hand (shimd/publisher):
		// the generated service packages register their types at init.
		"github.com/edged/edged/proto/services/",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, strings.TrimSuffix(f, "/")+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)) {
				t.Errorf("edged-shim imports %s (forbidden: %s)", d, f)
			}
		}
	}
}
