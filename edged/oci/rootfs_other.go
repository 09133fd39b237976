//go:build !linux

package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/edged/edged/edged/errdefs"
)

// rootFS reads files inside a container root filesystem with os.Root, which
// refuses any path or symlink that would leave it.
type rootFS struct {
	path    string
	osRoot  *os.Root
	scanBuf []byte
}

func newRootFS(path string) *rootFS { return &rootFS{path: path} }

func (r *rootFS) close() {
	if r.osRoot != nil {
		r.osRoot.Close()
		r.osRoot = nil
	}
}

func (r *rootFS) open(name string) (*os.File, error) {
	if r.path == "" {
		return nil, errNoRootfs
	}
	if r.osRoot == nil {
		root, err := os.OpenRoot(r.path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("rootfs %s: %w", r.path, errdefs.ErrNotFound)
			}
			return nil, fmt.Errorf("rootfs %s: %w", r.path, err)
		}
		r.osRoot = root
	}
	rel := strings.TrimLeft(name, "/")
	fi, err := r.osRoot.Stat(rel)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("image file %s is not a regular file: %w", name, errdefs.ErrInvalidArgument)
	}
	return r.osRoot.Open(rel)
}

// grantableCaps returns every capability edged knows, as a bit mask.
func grantableCaps() uint64 { return uint64(1)<<numCaps - 1 }
