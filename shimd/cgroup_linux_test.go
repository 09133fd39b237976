package shimd

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/edged/edged/cgroups"
)

// TestBundleCgroup: the shim resolves a bundle's cgroupsPath as runc does
// — an absolute path (cleaned) with the cgroupfs driver, slice:prefix:name
// with the systemd driver — into its directory in every hierarchy of the
// host, and tells whether one of them exists before runc runs; it gives
// up (zero bundleCgroup: no cgroup to remove, Add counts OOM kills from
// its own call) for a relative or missing path, which runc resolves
// against its own cgroup, a path of the other driver's syntax, and a
// config.json it cannot read.
func TestBundleCgroup(t *testing.T) {
	mode, err := cgroups.DetectMode("")
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	hier, err := cgroups.Hierarchies("", mode)
	if err != nil || len(hier) == 0 {
		t.Fatalf("hierarchies: %v, %v", hier, err)
	}
	s := New(Config{Log: slog.New(slog.DiscardHandler)})
	b := make([]byte, 4)
	rand.Read(b)
	id := "cg-" + hex.EncodeToString(b)
	abs := "/edged-shim-test/" + id
	dirs := func(p string) []string {
		var out []string
		for _, h := range hier {
			out = append(out, filepath.Join(h, p))
		}
		return out
	}
	for _, tc := range []struct {
		config  string
		systemd bool
		want    string
	}{
		{`{"linux":{"cgroupsPath":"` + abs + `"}}`, false, abs},
		{`{"linux":{"cgroupsPath":"/edged-shim-test//` + id + `/"}}`, false, abs},
		{`{"linux":{"cgroupsPath":"edged-t.slice:edged:` + id + `"}}`, true, "/edged.slice/edged-t.slice/edged-" + id + ".scope"},
		{`{"linux":{"cgroupsPath":"edged-t.slice:edged:` + id + `"}}`, false, ""},
		{`{"linux":{"cgroupsPath":"` + abs + `"}}`, true, ""},
		{`{"linux":{"cgroupsPath":"edged-shim-test/` + id + `"}}`, false, ""},
		{`{"linux":{"cgroupsPath":"/"}}`, false, ""},
		{`{"linux":{}}`, false, ""},
		{`{"linux":{}}`, true, ""},
		{`{}`, false, ""},
		{`{`, false, ""},
	} {
		bundle := t.TempDir()
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(tc.config), 0o644); err != nil {
			t.Fatal(err)
		}
		got := s.bundleCgroup(bundle, tc.systemd)
		if got.path != tc.want || got.existed || tc.want != "" && !slices.Equal(got.dirs, dirs(tc.want)) || tc.want == "" && got.dirs != nil {
			t.Errorf("%s (systemd %v): %+v, want path %q in %v, not existing", tc.config, tc.systemd, got, tc.want, dirs(tc.want))
		}
	}
	if got := s.bundleCgroup(t.TempDir(), false); got.path != "" || got.dirs != nil {
		t.Errorf("no config.json: %+v", got)
	}

	// In one hierarchy only (the last: not the memory one): it existed.
	last := filepath.Join(hier[len(hier)-1], abs)
	if err := os.MkdirAll(last, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(last) }) // its parent is the tests' (the shim's tests make it too)
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"linux":{"cgroupsPath":"`+abs+`"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := s.bundleCgroup(bundle, false); !got.existed || got.path != abs {
		t.Errorf("cgroup %s there before: %+v, want it to have existed", last, got)
	}
}
