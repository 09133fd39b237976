// Package config loads edged's TOML configuration. The defaults are the
// embedded configs/edged.toml; a file on disk overrides them field by field.
package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/edged/edged/configs"
	"github.com/edged/edged/edged/errdefs"
)

// Config is edged's configuration.
type Config struct {
	Root    string `toml:"root"`
	State   string `toml:"state"`
	Address string `toml:"address"`
	// MaxProcs caps the threads running edged's Go code at once
	// (GOMAXPROCS); 0 is one per CPU. The GOMAXPROCS variable overrides it.
	MaxProcs int      `toml:"max_procs"`
	Log      Log      `toml:"log"`
	API      API      `toml:"api"`
	Metadata Metadata `toml:"metadata"`
	Runtime  Runtime  `toml:"runtime"`
	Cgroups  Cgroups  `toml:"cgroups"`
	Events   Events   `toml:"events"`
	Memory   Memory   `toml:"memory"`
	Network  Network  `toml:"network"`
	Images   Images   `toml:"images"`
	// Registries holds per-registry settings keyed by registry host
	// ("docker.io", "registry.local:5000").
	Registries map[string]Registry `toml:"registries"`
}

// Bounds of the registry retry settings: more than 100 attempts of one
// request is a misconfiguration, and the backoff doubles up to 8 s anyway
// (remotes' maxRetryBackoff).
const (
	maxRegistryRetries      = 100
	maxRegistryRetryBackoff = 8 * time.Second
)

// Images configures the image store and registry pulls.
type Images struct {
	// Snapshotter is the snapshot backend: "overlayfs", "native" or ""
	// (overlayfs when it works under the root, else native).
	Snapshotter string `toml:"snapshotter"`
	// Platform is the default platform ("os/arch[/variant]"); "" is the
	// host's.
	Platform string `toml:"platform"`
	// ImportDir holds archives imported at start-up; "" is <root>/import.
	ImportDir string `toml:"import_dir"`
	// ImportNamespace is the namespace ImportDir's images go to.
	ImportNamespace string `toml:"import_namespace"`
	// DiscardLayers deletes compressed layer blobs once unpacked.
	DiscardLayers bool `toml:"discard_layers"`
	// DockerConfig is a docker-style config.json with registry
	// credentials; "" is $DOCKER_CONFIG/config.json or ~/.docker/config.json.
	DockerConfig string `toml:"docker_config"`
	// RegistryHelper is the edged-remote binary that runs registry pulls
	// and pushes; "" is the one next to edged, else from PATH.
	RegistryHelper string `toml:"registry_helper"`
	// RegistryIdleTimeout bounds every request of a registry pull or push:
	// one that gets no answer, or moves less than 16 KiB, in this long is
	// dropped and retried. It must be positive.
	RegistryIdleTimeout Duration `toml:"registry_idle_timeout"`
	// RegistryRetries is how many times in all a registry request (a
	// manifest, a token, a blob, an upload) is tried before the pull or
	// push fails: 1 to 100.
	RegistryRetries int `toml:"registry_retries"`
	// RegistryRetryBackoff is the pause before the first retry, doubled
	// at each next one up to 8 s (with jitter): 1ms to 8s.
	RegistryRetryBackoff Duration `toml:"registry_retry_backoff"`
	// MaxLayerSize is the most one layer may unpack to (its uncompressed
	// tar stream); 0 is no limit. It stops decompression bombs.
	MaxLayerSize Size `toml:"max_layer_size"`
	// MaxLayerEntries is the most entries (files, directories, links, ...)
	// one layer may have; 0 is the unpacker's default (2097152).
	MaxLayerEntries int64 `toml:"max_layer_entries"`
	// MinFreeSpace is the free space unpacking leaves on the filesystem of
	// the snapshots: a layer that would go below it fails. 0 is no check.
	MinFreeSpace Size `toml:"min_free_space"`
}

// Registry is the configuration of one registry host.
type Registry struct {
	Mirrors   []string `toml:"mirrors"`
	Insecure  bool     `toml:"insecure"`
	PlainHTTP bool     `toml:"plain_http"`
}

// Runtime configures shims and container logs.
type Runtime struct {
	ShimBinary         string   `toml:"shim_binary"`
	ShimCallTimeout    Duration `toml:"shim_call_timeout"`
	ShimConnectTimeout Duration `toml:"shim_connect_timeout"`
	SpareShim          bool     `toml:"spare_shim"`
	LogMaxSize         int64    `toml:"log_max_size"`
	LogMaxFiles        int      `toml:"log_max_files"`
}

// Log configures logging.
type Log struct {
	Level string `toml:"level"`
}

// API configures the ttrpc API.
type API struct {
	SocketGID       int      `toml:"socket_gid"`
	DefaultTimeout  Duration `toml:"default_timeout"`
	MaxTimeout      Duration `toml:"max_timeout"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// MaxConnections bounds the open API connections (1 to 65536).
	MaxConnections int `toml:"max_connections"`
}

// Metadata configures the SQLite database.
type Metadata struct {
	Synchronous   string `toml:"synchronous"`
	CacheSizeKiB  int    `toml:"cache_size_kib"`
	CompressSpecs bool   `toml:"compress_specs"`
}

// Cgroups configures where containers' cgroups go.
type Cgroups struct {
	Parent        string `toml:"parent"`
	SystemdSlices bool   `toml:"systemd_slices"`
}

// Events configures the event exchange.
type Events struct {
	SubscriberQueue int `toml:"subscriber_queue"`
}

// Memory configures what edged gives back to the system when idle.
type Memory struct {
	// IdleRelease is the idle time (no API calls) after which edged returns
	// the Go heap a burst of calls grew, and with PageOutCode its code
	// pages; 0 never does.
	IdleRelease Duration `toml:"idle_release"`
	// PageOutCode pages edged's executable out when idle (see
	// internal/pageout).
	PageOutCode bool `toml:"page_out_code"`
}

// Duration is a time.Duration written as "30s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Size is a number of bytes, written in TOML as an integer ("1048576") or
// as a string of an integer with an optional binary unit: "8GiB",
// "128 MiB"; the units are B, KiB, MiB, GiB and TiB.
type Size int64

// ParseSize parses a size string as Size does.
func ParseSize(s string) (Size, error) {
	num, shift := strings.TrimSpace(s), uint(0)
	for _, u := range [...]struct {
		suffix string
		shift  uint
	}{{"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40}, {"B", 0}} {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, shift = strings.TrimSpace(n), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size: want a non-negative integer with an optional unit (B, KiB, MiB, GiB, TiB), e.g. \"128MiB\"", s)
	}
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(n << shift), nil
}

// UnmarshalTOML implements toml.Unmarshaler: an integer is bytes, a string
// is parsed by ParseSize.
func (sz *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return fmt.Errorf("%d is not a size: it must not be negative", v)
		}
		*sz = Size(v)
		return nil
	case string:
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		*sz = n
		return nil
	}
	return fmt.Errorf("%v is not a size: want a number of bytes or a string like \"128MiB\"", v)
}

// Default returns the embedded defaults.
func Default() *Config {
	c, err := parse(nil, configs.DefaultTOML, "embedded defaults")
	if err != nil {
		// The embedded file is tested; failing here is a build defect.
		panic(err)
	}
	return c
}

// Load reads path over the defaults. When path does not exist and optional
// is set, the defaults are returned.
func Load(path string, optional bool) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) && optional {
			return Default(), nil
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(Default(), string(b), path)
}

func parse(base *Config, text, name string) (*Config, error) {
	c := &Config{}
	if base != nil {
		*c = *base
	}
	md, err := toml.NewDecoder(bytes.NewReader([]byte(text))).Decode(c)
	if err != nil {
		return nil, fmt.Errorf("config %s: %v: %w", name, err, errdefs.ErrInvalidArgument)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("config %s: unknown setting %q: %w", name, und[0].String(), errdefs.ErrInvalidArgument)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	return c, nil
}

// Validate checks the values.
func (c *Config) Validate() error {
	for field, p := range map[string]string{"root": c.Root, "state": c.State, "address": c.Address} {
		if p == "" || !filepath.IsAbs(p) {
			return errdefs.InvalidArgument(field, "%q must be an absolute path", p)
		}
	}
	if len(c.Address) > 107 {
		return errdefs.InvalidArgument("address", "%q is longer than a unix socket path may be (107 bytes)", c.Address)
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		return err
	}
	switch c.Metadata.Synchronous {
	case "normal", "full":
	default:
		return errdefs.InvalidArgument("metadata.synchronous", "%q must be \"normal\" or \"full\"", c.Metadata.Synchronous)
	}
	if c.API.DefaultTimeout.Duration <= 0 || c.API.MaxTimeout.Duration <= 0 || c.API.ShutdownTimeout.Duration <= 0 {
		return errdefs.InvalidArgument("api", "timeouts must be positive")
	}
	if n := c.API.MaxConnections; n < 1 || n > 65536 {
		return errdefs.InvalidArgument("api.max_connections", "%d is not between 1 and 65536", n)
	}
	if c.Runtime.ShimCallTimeout.Duration <= 0 || c.Runtime.ShimConnectTimeout.Duration <= 0 {
		return errdefs.InvalidArgument("runtime", "shim timeouts must be positive")
	}
	if c.Runtime.LogMaxSize < 4096 {
		return errdefs.InvalidArgument("runtime.log_max_size", "%d is below the minimum of 4096 bytes", c.Runtime.LogMaxSize)
	}
	if c.Runtime.LogMaxFiles < 1 || c.Runtime.LogMaxFiles > 100 {
		return errdefs.InvalidArgument("runtime.log_max_files", "%d must be between 1 and 100", c.Runtime.LogMaxFiles)
	}
	if p := c.Cgroups.Parent; p == "" || p[0] != '/' || path.Clean(p) != p || p == "/" {
		return errdefs.InvalidArgument("cgroups.parent", "%q must be a clean absolute cgroup path other than /", p)
	}
	if c.MaxProcs < 0 {
		return errdefs.InvalidArgument("max_procs", "%d must not be negative", c.MaxProcs)
	}
	if c.Memory.IdleRelease.Duration < 0 {
		return errdefs.InvalidArgument("memory.idle_release", "must not be negative")
	}
	if c.Events.SubscriberQueue <= 0 {
		return errdefs.InvalidArgument("events.subscriber_queue", "must be positive")
	}
	if err := c.Network.validate(); err != nil {
		return err
	}
	if err := c.Images.validate(); err != nil {
		return err
	}
	return nil
}

func (im *Images) validate() error {
	switch im.Snapshotter {
	case "", "overlayfs", "native":
	default:
		return errdefs.InvalidArgument("images.snapshotter", "%q must be \"overlayfs\", \"native\" or empty", im.Snapshotter)
	}
	for field, p := range map[string]string{"images.import_dir": im.ImportDir, "images.docker_config": im.DockerConfig, "images.registry_helper": im.RegistryHelper} {
		if p != "" && !filepath.IsAbs(p) {
			return errdefs.InvalidArgument(field, "%q must be an absolute path", p)
		}
	}
	if im.ImportNamespace == "" {
		return errdefs.InvalidArgument("images.import_namespace", "must not be empty")
	}
	if d := im.RegistryIdleTimeout.Duration; d <= 0 {
		return errdefs.InvalidArgument("images.registry_idle_timeout", "%s must be positive, e.g. \"60s\"", d)
	}
	if n := im.RegistryRetries; n < 1 || n > maxRegistryRetries {
		return errdefs.InvalidArgument("images.registry_retries", "%d is not between 1 and %d (the attempts of a request in all)", n, maxRegistryRetries)
	}
	if d := im.RegistryRetryBackoff.Duration; d < time.Millisecond || d > maxRegistryRetryBackoff {
		return errdefs.InvalidArgument("images.registry_retry_backoff", "%s is not between 1ms and %s", d, maxRegistryRetryBackoff)
	}
	if im.MaxLayerSize < 0 {
		return errdefs.InvalidArgument("images.max_layer_size", "%d must not be negative", im.MaxLayerSize)
	}
	// Below 1 MiB no real layer fits: most likely a unit was left out.
	if im.MaxLayerSize != 0 && im.MaxLayerSize < 1<<20 {
		return errdefs.InvalidArgument("images.max_layer_size", "%d bytes is below the minimum of 1MiB (0 is no limit)", im.MaxLayerSize)
	}
	if im.MaxLayerEntries < 0 {
		return errdefs.InvalidArgument("images.max_layer_entries", "%d must not be negative", im.MaxLayerEntries)
	}
	if im.MinFreeSpace < 0 {
		return errdefs.InvalidArgument("images.min_free_space", "%d must not be negative", im.MinFreeSpace)
	}
	return nil
}

// ParseLevel parses a log level name.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, errdefs.InvalidArgument("log.level", "%q must be debug, info, warn or error", s)
	}
	return l, nil
}
