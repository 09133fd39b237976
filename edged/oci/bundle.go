package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/internal/atomicfile"
)

// ConfigFile is the name of the runtime spec inside a bundle.
const ConfigFile = "config.json"

// MaxConfigSize bounds the config.json LoadBundleSpec reads.
const MaxConfigSize = 8 << 20

// WriteBundle writes spec as bundleDir/config.json, mode 0600, atomically
// and durably: a crash leaves the old file or the new one, never a mix.
// bundleDir must exist.
func WriteBundle(bundleDir string, spec *specs.Spec) error {
	if spec == nil {
		return errdefs.InvalidArgument("spec", "nil")
	}
	if err := checkBundleDir(bundleDir); err != nil {
		return err
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("bundle %s: encoding spec: %w", bundleDir, err)
	}
	if len(data) > MaxConfigSize {
		return errdefs.InvalidArgument("spec", "encoded size %d is above the maximum of %d", len(data), MaxConfigSize)
	}
	if err := atomicfile.WriteFile(filepath.Join(bundleDir, ConfigFile), data, 0o600); err != nil {
		return fmt.Errorf("bundle %s: %w", bundleDir, err)
	}
	return nil
}

// LoadBundleSpec reads bundleDir/config.json. A missing file is ErrNotFound;
// one that is not a valid spec (bad JSON, no ociVersion, larger than
// MaxConfigSize) is ErrDataLoss, since WriteBundle never leaves one.
func LoadBundleSpec(bundleDir string) (*specs.Spec, error) {
	if err := checkBundleDir(bundleDir); err != nil {
		return nil, err
	}
	name := filepath.Join(bundleDir, ConfigFile)
	f, err := os.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("bundle %s: %s: %w", bundleDir, ConfigFile, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("bundle %s: %w", bundleDir, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("bundle %s: reading %s: %w", bundleDir, ConfigFile, err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("bundle %s: %s is larger than %d bytes: %w", bundleDir, ConfigFile, MaxConfigSize, errdefs.ErrDataLoss)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("bundle %s: %s: %v: %w", bundleDir, ConfigFile, err, errdefs.ErrDataLoss)
	}
	if spec.Version == "" {
		return nil, fmt.Errorf("bundle %s: %s has no ociVersion: %w", bundleDir, ConfigFile, errdefs.ErrDataLoss)
	}
	return &spec, nil
}

func checkBundleDir(dir string) error {
	if dir == "" || !filepath.IsAbs(dir) {
		return errdefs.InvalidArgument("bundle dir", "%q is not an absolute path", dir)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("bundle %s: %w", dir, errdefs.ErrNotFound)
		}
		return fmt.Errorf("bundle %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return errdefs.InvalidArgument("bundle dir", "%s is not a directory", dir)
	}
	return nil
}
