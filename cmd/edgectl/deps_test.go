package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSmallDependencies keeps edgectl small: the CLI talks to edged over
// ttrpc and must not link the daemon's storage, image or HTTP code.
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
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f) {
				t.Errorf("edgectl depends on %s", dep)
			}
		}
	}
}
