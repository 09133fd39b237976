package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

func TestDefaults(t *testing.T) {
	c := Default()
	if c.Root != "/var/lib/edged" || c.State != "/run/edged" || c.Address != "/run/edged/edged.sock" {
		t.Fatalf("unexpected defaults: %+v", c)
	}
	if c.API.DefaultTimeout.Duration != 30*time.Second || c.Metadata.Synchronous != "normal" {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

func TestLoadOverrides(t *testing.T) {
	p := filepath.Join(t.TempDir(), "edged.toml")
	if err := os.WriteFile(p, []byte("root = \"/data/edged\"\n[log]\nlevel = \"debug\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != "/data/edged" || c.Log.Level != "debug" || c.State != "/run/edged" {
		t.Fatalf("override not applied over defaults: %+v", c)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"bogus = 1\n":                         `unknown setting "bogus"`,
		"root = \"relative\"\n":               "root: \"relative\" must be an absolute path",
		"[log]\nlevel = \"loud\"\n":           "log.level",
		"[metadata]\nsynchronous = \"off\"\n": "metadata.synchronous",
		"[api]\ndefault_timeout = \"soon\"\n": "invalid duration",
		"root = [\n":                          "config",
		"[events]\nsubscriber_queue = 0\n":    "events.subscriber_queue",
		"max_procs = -1\n":                    "max_procs: -1 must not be negative",
		"[memory]\nidle_release = \"-1s\"\n":  "memory.idle_release: must not be negative",
	}
	i := 0
	for text, want := range cases {
		i++
		p := filepath.Join(dir, strings.Repeat("x", i)+".toml")
		os.WriteFile(p, []byte(text), 0o600)
		_, err := Load(p, false)
		if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want InvalidArgument containing %q", text, err, want)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing.toml"), false); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing required file: %v", err)
	}
	if c, err := Load(filepath.Join(dir, "missing.toml"), true); err != nil || c.Root != "/var/lib/edged" {
		t.Errorf("missing optional file: %v %v", c, err)
	}
}
