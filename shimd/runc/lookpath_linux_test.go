package runc

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// lookPath finds what exec.LookPath finds, and fails the same way.
func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	noexec, isdir, good := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	for _, d := range []string{noexec, isdir, good} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(noexec, "rt"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(isdir, "rt"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(good, "rt"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", noexec+":"+isdir+":"+good)
	got, err := lookPath("rt")
	want, werr := exec.LookPath("rt")
	if err != nil || werr != nil || got != want || got != filepath.Join(good, "rt") {
		t.Errorf("lookPath = %q, %v; exec.LookPath = %q, %v", got, err, want, werr)
	}
	_, err = lookPath("missing-rt")
	if !errors.Is(err, exec.ErrNotFound) || err.Error() != `exec: "missing-rt": executable file not found in $PATH` {
		t.Errorf("missing: %v", err)
	}
	// A relative PATH entry is exec.LookPath's case (ErrDot).
	t.Chdir(good)
	t.Setenv("PATH", ".")
	if _, err := lookPath("rt"); !errors.Is(err, exec.ErrDot) {
		t.Errorf("relative PATH entry: %v, want exec.ErrDot", err)
	}
	// A path is used as it is.
	if got, err := lookPath(filepath.Join(good, "rt")); err != nil || got != filepath.Join(good, "rt") {
		t.Errorf("absolute path: %q, %v", got, err)
	}
}
