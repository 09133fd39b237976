package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoShimCodeInDaemon keeps the shim's code out of edged: the daemon
// talks to shims over ttrpc and runs `edged-shim delete` for cleanups.
func TestNoShimCodeInDaemon(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/edged/edged/shimd") {
			t.Errorf("edged depends on %s", dep)
		}
	}
}
