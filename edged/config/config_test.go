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
		"bogus = 1\n":                                  `unknown setting "bogus"`,
		"root = \"relative\"\n":                        "root: \"relative\" must be an absolute path",
		"[log]\nlevel = \"loud\"\n":                    "log.level",
		"[metadata]\nsynchronous = \"off\"\n":          "metadata.synchronous",
		"[api]\ndefault_timeout = \"soon\"\n":          "invalid duration",
		"root = [\n":                                   "config",
		"[events]\nsubscriber_queue = 0\n":             "events.subscriber_queue",
		"max_procs = -1\n":                             "max_procs: -1 must not be negative",
		"[memory]\nidle_release = \"-1s\"\n":           "memory.idle_release: must not be negative",
		"[images]\nmax_layer_size = \"8 GB\"\n":        "images.max_layer_size",
		"[images]\nmax_layer_size = \"-1MiB\"\n":       "images.max_layer_size",
		"[images]\nmax_layer_size = -1\n":              "images.max_layer_size",
		"[images]\nmax_layer_size = 8\n":               "images.max_layer_size: 8 bytes is below the minimum of 1MiB",
		"[images]\nmax_layer_size = true\n":            "images.max_layer_size",
		"[images]\nmax_layer_size = \"99999999TiB\"\n": "too large",
		"[images]\nmax_layer_entries = -1\n":           "images.max_layer_entries: -1 must not be negative",
		"[images]\nmax_layer_entries = \"1M\"\n":       "max_layer_entries",
		"[images]\nmin_free_space = \"lots\"\n":        "images.min_free_space",
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

func TestImageLimitDefaults(t *testing.T) {
	im := Default().Images
	if im.MaxLayerSize != 8<<30 || im.MaxLayerEntries != 1<<20 || im.MinFreeSpace != 128<<20 {
		t.Fatalf("image limits: max_layer_size %d, max_layer_entries %d, min_free_space %d", im.MaxLayerSize, im.MaxLayerEntries, im.MinFreeSpace)
	}
}

func TestImageLimitsLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "edged.toml")
	if err := os.WriteFile(p, []byte("[images]\nmax_layer_size = 0\nmax_layer_entries = 0\nmin_free_space = \"512 KiB\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, false)
	if err != nil {
		t.Fatal(err)
	}
	if im := c.Images; im.MaxLayerSize != 0 || im.MaxLayerEntries != 0 || im.MinFreeSpace != 512<<10 {
		t.Fatalf("0 must turn the limits off: %+v", im)
	}
}

// A negative layer limit in edged.toml is refused with a message naming
// the file, the line and the setting; a Config built in Go (not parsed)
// is refused by Validate naming the setting.
func TestImageLimitsNegative(t *testing.T) {
	p := filepath.Join(t.TempDir(), "edged.toml")
	for text, want := range map[string]string{
		"[images]\nmax_layer_size = -1\n":        `toml: line 2 (last key "images.max_layer_size"): -1 is not a size: it must not be negative: invalid argument`,
		"[images]\nmin_free_space = -1\n":        `toml: line 2 (last key "images.min_free_space"): -1 is not a size: it must not be negative: invalid argument`,
		"[images]\nmin_free_space = \"-5MiB\"\n": `toml: line 2 (last key "images.min_free_space"): "-5MiB" is not a size: want a non-negative integer`,
		"[images]\nmax_layer_entries = -1\n":     "images.max_layer_entries: -1 must not be negative: invalid argument",
	} {
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p, false)
		if want = "config " + p + ": " + want; err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: got %v, want InvalidArgument %q", text, err, want)
		}
	}
	for want, set := range map[string]func(*Images){
		"images.max_layer_size: -1 must not be negative: invalid argument":    func(im *Images) { im.MaxLayerSize = -1 },
		"images.max_layer_entries: -1 must not be negative: invalid argument": func(im *Images) { im.MaxLayerEntries = -1 },
		"images.min_free_space: -1 must not be negative: invalid argument":    func(im *Images) { im.MinFreeSpace = -1 },
	} {
		c := Default()
		set(&c.Images)
		if err := c.Validate(); err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || err.Error() != want {
			t.Errorf("Validate: got %v, want %q", err, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{
		"0": 0, "4096": 4096, "17B": 17, "1KiB": 1 << 10, "128MiB": 128 << 20, "128 MiB": 128 << 20,
		" 8GiB ": 8 << 30, "2TiB": 2 << 40, "8191PiB": -1, "": -1, "1.5GiB": -1, "8G": -1, "8GB": -1, "8gib": -1,
		"-1": -1, "MiB": -1, "9223372036854775807": 1<<63 - 1, "8388608TiB": -1,
	} {
		got, err := ParseSize(in)
		switch {
		case want < 0 && err == nil:
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		case want >= 0 && (err != nil || got != want):
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	// The messages.
	for in, want := range map[string]string{
		"8GB":        `"8GB" is not a size: want a non-negative integer with an optional unit (B, KiB, MiB, GiB, TiB), e.g. "128MiB"`,
		"8388608TiB": `"8388608TiB" is too large`,
	} {
		if _, err := ParseSize(in); err == nil || err.Error() != want {
			t.Errorf("ParseSize(%q): %v, want %q", in, err, want)
		}
	}
	var sz Size
	for v, want := range map[any]string{
		int64(-5): "-5 is not a size: it must not be negative",
		true:      `true is not a size: want a number of bytes or a string like "128MiB"`,
	} {
		if err := sz.UnmarshalTOML(v); err == nil || err.Error() != want {
			t.Errorf("UnmarshalTOML(%v): %v, want %q", v, err, want)
		}
	}
}

// images.registry_idle_timeout: 60s by default, a duration with a unit
// like every other, and a value that is not a positive duration is refused
// naming the file, the setting and the value.
func TestRegistryIdleTimeout(t *testing.T) {
	if d := Default().Images.RegistryIdleTimeout.Duration; d != 60*time.Second {
		t.Fatalf("default registry_idle_timeout = %v, want 60s", d)
	}
	p := filepath.Join(t.TempDir(), "edged.toml")
	if err := os.WriteFile(p, []byte("[images]\nregistry_idle_timeout = \"500ms\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, false)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Images.RegistryIdleTimeout.Duration; d != 500*time.Millisecond {
		t.Fatalf("registry_idle_timeout = %v, want 500ms", d)
	}
	for text, want := range map[string]string{
		"[images]\nregistry_idle_timeout = \"0s\"\n":   `images.registry_idle_timeout: 0s must be positive, e.g. "60s": invalid argument`,
		"[images]\nregistry_idle_timeout = \"-5s\"\n":  `images.registry_idle_timeout: -5s must be positive, e.g. "60s": invalid argument`,
		"[images]\nregistry_idle_timeout = \"soon\"\n": `toml: line 2 (last key "images.registry_idle_timeout"): time: invalid duration "soon": invalid argument`,
		"[images]\nregistry_idle_timeout = 60\n":       `toml: line 2 (last key "images.registry_idle_timeout"): time: missing unit in duration "60": invalid argument`,
	} {
		wantLoadError(t, p, text, want)
	}
}

// images.registry_retries (5) and registry_retry_backoff (250ms): the
// defaults, a file's values, and values out of range refused by name.
func TestRegistryRetrySettings(t *testing.T) {
	if im := Default().Images; im.RegistryRetries != 5 || im.RegistryRetryBackoff.Duration != 250*time.Millisecond {
		t.Fatalf("defaults: registry_retries %d, registry_retry_backoff %v; want 5 and 250ms", im.RegistryRetries, im.RegistryRetryBackoff.Duration)
	}
	p := filepath.Join(t.TempDir(), "edged.toml")
	if err := os.WriteFile(p, []byte("[images]\nregistry_retries = 12\nregistry_retry_backoff = \"2s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, false)
	if err != nil {
		t.Fatal(err)
	}
	if im := c.Images; im.RegistryRetries != 12 || im.RegistryRetryBackoff.Duration != 2*time.Second {
		t.Fatalf("from the file: registry_retries %d, registry_retry_backoff %v; want 12 and 2s", im.RegistryRetries, im.RegistryRetryBackoff.Duration)
	}
	for text, want := range map[string]string{
		"[images]\nregistry_retries = 0\n":             "images.registry_retries: 0 is not between 1 and 100 (the attempts of a request in all): invalid argument",
		"[images]\nregistry_retries = 101\n":           "images.registry_retries: 101 is not between 1 and 100 (the attempts of a request in all): invalid argument",
		"[images]\nregistry_retry_backoff = \"0s\"\n":  "images.registry_retry_backoff: 0s is not between 1ms and 8s: invalid argument",
		"[images]\nregistry_retry_backoff = \"9s\"\n":  "images.registry_retry_backoff: 9s is not between 1ms and 8s: invalid argument",
		"[images]\nregistry_retry_backoff = \"-1s\"\n": "images.registry_retry_backoff: -1s is not between 1ms and 8s: invalid argument",
	} {
		wantLoadError(t, p, text, want)
	}
}

// api.max_connections: 1024 by default, 1 to 65536.
func TestAPIMaxConnections(t *testing.T) {
	if n := Default().API.MaxConnections; n != 1024 {
		t.Fatalf("default api.max_connections = %d, want 1024", n)
	}
	p := filepath.Join(t.TempDir(), "edged.toml")
	if err := os.WriteFile(p, []byte("[api]\nmax_connections = 8\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(p, false); err != nil || c.API.MaxConnections != 8 {
		t.Fatalf("max_connections = 8: %v, %+v", err, c)
	}
	for text, want := range map[string]string{
		"[api]\nmax_connections = 0\n":     "api.max_connections: 0 is not between 1 and 65536: invalid argument",
		"[api]\nmax_connections = 65537\n": "api.max_connections: 65537 is not between 1 and 65536: invalid argument",
	} {
		wantLoadError(t, p, text, want)
	}
}

// wantLoadError writes text to p and checks that Load refuses it as an
// invalid argument with exactly "config <p>: " + want.
func wantLoadError(t *testing.T, p, text, want string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p, false)
	if want = "config " + p + ": " + want; err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || err.Error() != want {
		t.Errorf("%q: got %v, want %q", text, err, want)
	}
}
