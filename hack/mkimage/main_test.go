package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edged/edged/edged/images/testimage"
)

func TestRunDeterministic(t *testing.T) {
	if _, err := os.Stat(testimage.DefaultBusybox); err != nil {
		t.Skip("busybox-static is not installed")
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	for _, p := range []string{a, b} {
		if err := run(p, testimage.DemoName, "linux/arm64", testimage.DefaultBusybox); err != nil {
			t.Fatal(err)
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if len(da) == 0 || !bytes.Equal(da, db) {
		t.Fatal("outputs differ or are empty")
	}
	if !bytes.Contains(da, []byte(`"architecture":"arm64"`)) {
		t.Fatal("platform not recorded")
	}
	if err := run("", "x", "linux/amd64", testimage.DefaultBusybox); err == nil || !strings.Contains(err.Error(), "-o is required") {
		t.Fatalf("missing -o: %v", err)
	}
	if err := run(a, "x", "linux/amd64", filepath.Join(dir, "nope")); err == nil || !strings.Contains(err.Error(), "busybox-static") {
		t.Fatalf("missing busybox: %v", err)
	}
}
