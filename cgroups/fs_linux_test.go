package cgroups

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
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
