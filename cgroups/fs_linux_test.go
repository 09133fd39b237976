package cgroups

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadIntoGrows reads files smaller than, exactly as large as, and
// larger than the initial buffer: readInto stops at a short read, so a
// full buffer must make it read on.
func TestReadIntoGrows(t *testing.T) {
	dir := t.TempDir()
	var buf []byte
	for _, size := range []int{0, 10, 4095, 4096, 4097, 20000} {
		want := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		if err := os.WriteFile(filepath.Join(dir, "f"), want, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := newCfile(dir, "f").readInto(&buf)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("size %d: read %d bytes, %v", size, len(got), err)
		}
	}
	_, err := newCfile(dir, "missing").readInto(&buf)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want not exist", err)
	}
}

// TestNlink: the statx link count (Stat's check for sub-cgroups) and the
// open+fstat one used where statx is missing agree: 2 + the number of
// subdirectories.
func TestNlink(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a", "b", "c"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := newCfile(dir, ".")
	for name, nlink := range map[string]func() (uint64, error){"statx": f.nlink, "fstat": f.nlinkFstat} {
		if n, err := nlink(); n != 5 || err != nil {
			t.Errorf("%s: %d, %v; want 5", name, n, err)
		}
	}
	missing := newCfile(dir, "missing")
	for name, nlink := range map[string]func() (uint64, error){"statx": missing.nlink, "fstat": missing.nlinkFstat} {
		if _, err := nlink(); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing") {
			t.Errorf("%s of a missing directory: %v, want not exist naming it", name, err)
		}
	}
}
