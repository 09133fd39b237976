package oci

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
)

func TestWriteAndLoadBundle(t *testing.T) {
	dir := t.TempDir()
	spec, err := Generate(context.Background(), "default", "c1", testRootfs(t), &ocispec.ImageConfig{Cmd: []string{"/bin/sh"}},
		WithMemoryLimit(8<<20), WithAnnotations(map[string]string{"k": "v"}), WithOOMScoreAdj(10))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteBundle(dir, spec); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := LoadBundleSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, spec) {
		t.Errorf("loaded spec differs:\n%+v\n%+v", got, spec)
	}
	// Overwrite: the new spec replaces the old, no temp files are left.
	spec.Hostname = "changed"
	if err := WriteBundle(dir, spec); err != nil {
		t.Fatal(err)
	}
	got, err = LoadBundleSpec(dir)
	if err != nil || got.Hostname != "changed" {
		t.Fatalf("reload: %v %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("bundle holds %q, want only config.json", names)
	}
}

func TestBundleErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	file := filepath.Join(dir, "file")
	mustWrite(t, file, "x")
	spec, err := Generate(context.Background(), "default", "c1", "", &ocispec.ImageConfig{Cmd: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, err error, kind error, msg string) {
		t.Helper()
		if !errors.Is(err, kind) || !strings.Contains(err.Error(), msg) {
			t.Errorf("error %v, want %v containing %q", err, kind, msg)
		}
	}
	t.Run("write nil spec", func(t *testing.T) {
		check(t, WriteBundle(dir, nil), errdefs.ErrInvalidArgument, "spec: nil")
	})
	t.Run("write relative dir", func(t *testing.T) {
		check(t, WriteBundle("bundle", spec), errdefs.ErrInvalidArgument, `bundle dir: "bundle" is not an absolute path`)
	})
	t.Run("write missing dir", func(t *testing.T) {
		check(t, WriteBundle(missing, spec), errdefs.ErrNotFound, "bundle "+missing)
	})
	t.Run("write to a file", func(t *testing.T) {
		check(t, WriteBundle(file, spec), errdefs.ErrInvalidArgument, "is not a directory")
	})
	t.Run("load missing dir", func(t *testing.T) {
		_, err := LoadBundleSpec(missing)
		check(t, err, errdefs.ErrNotFound, "bundle "+missing)
	})
	t.Run("load missing config", func(t *testing.T) {
		_, err := LoadBundleSpec(t.TempDir())
		check(t, err, errdefs.ErrNotFound, "config.json")
	})
	t.Run("load bad json", func(t *testing.T) {
		d := t.TempDir()
		mustWrite(t, filepath.Join(d, ConfigFile), `{"ociVersion": "1.0", "process": `)
		_, err := LoadBundleSpec(d)
		check(t, err, errdefs.ErrDataLoss, "config.json: unexpected end of JSON input")
	})
	t.Run("load no version", func(t *testing.T) {
		d := t.TempDir()
		mustWrite(t, filepath.Join(d, ConfigFile), `{}`)
		_, err := LoadBundleSpec(d)
		check(t, err, errdefs.ErrDataLoss, "config.json has no ociVersion")
	})
	t.Run("load oversized", func(t *testing.T) {
		d := t.TempDir()
		f, err := os.Create(filepath.Join(d, ConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(MaxConfigSize + 1); err != nil {
			t.Fatal(err)
		}
		f.Close()
		_, err = LoadBundleSpec(d)
		check(t, err, errdefs.ErrDataLoss, "config.json is larger than 8388608 bytes")
	})
	t.Run("load relative", func(t *testing.T) {
		_, err := LoadBundleSpec("")
		check(t, err, errdefs.ErrInvalidArgument, `bundle dir: "" is not an absolute path`)
	})
}

func TestDedupe(t *testing.T) {
	var in, want []uint32
	for i := 0; i < 40; i++ {
		in = append(in, uint32(i%20))
		if i < 20 {
			want = append(want, uint32(i))
		}
	}
	if got := dedupe(in); !reflect.DeepEqual(got, want) {
		t.Errorf("dedupe = %v", got)
	}
	if got := dedupe([]uint32{3, 1, 3, 2, 1}); !reflect.DeepEqual(got, []uint32{3, 1, 2}) {
		t.Errorf("dedupe = %v", got)
	}
}
