package images

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/internal/atomicfile"
)

// Subdirectories of an import directory.
const (
	ImportedDir = "imported"
	FailedDir   = "failed"
)

// ImportDirResult is the outcome for one archive of an import directory.
type ImportDirResult struct {
	File   string // base name
	Images []metadata.Image
	Err    error
}

// ImportDir imports every *.tar, *.tar.gz and *.tgz file of dir into ns, in
// name order, like k3s' images directory: an archive that imported is moved
// to dir/imported/, one that failed to dir/failed/ next to a
// <name>.error.txt explaining why. Files that are not regular (symlinks
// included: never trust a path planted in the directory) are skipped. It
// fails only if dir cannot be read; per-file errors are in the results.
func (s *Service) ImportDir(ctx context.Context, ns, dir string) ([]ImportDirResult, error) {
	if err := checkNamespace(ns); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("import dir: %w", err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	var out []ImportDirResult
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || !(strings.HasSuffix(name, ".tar") || strings.HasSuffix(name, ".tar.gz") || strings.HasSuffix(name, ".tgz")) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return out, err
		}
		res := ImportDirResult{File: name}
		res.Images, res.Err = s.importFile(ctx, ns, filepath.Join(dir, name))
		dest := ImportedDir
		if res.Err != nil {
			dest = FailedDir
			s.log.Warn("images: import dir: archive failed", "file", name, "error", res.Err)
		} else {
			s.log.Info("images: import dir: imported", "file", name, "images", len(res.Images))
		}
		if err := moveTo(dir, dest, name, res.Err); err != nil {
			s.log.Warn("images: import dir: cannot move archive", "file", name, "error", err)
			if res.Err == nil {
				res.Err = err
			}
		}
		out = append(out, res)
	}
	return out, nil
}

func (s *Service) importFile(ctx context.Context, ns, path string) ([]metadata.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return s.Import(ctx, ns, f, ImportOptions{})
}

func moveTo(dir, sub, name string, cause error) error {
	d := filepath.Join(dir, sub)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	if cause != nil {
		if err := atomicfile.WriteFile(filepath.Join(d, name+".error.txt"), []byte(cause.Error()+"\n"), 0o644); err != nil {
			return err
		}
	}
	if err := os.Rename(filepath.Join(dir, name), filepath.Join(d, name)); err != nil {
		return err
	}
	return atomicfile.SyncDir(d)
}
