// Package atomicfile writes files durably: write to a temporary file in the
// same directory, fsync it, rename it over the target and fsync the directory.
// A crash at any point leaves either the old or the new content, never a mix.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFile atomically and durably replaces path with data, with
// permissions perm.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteStream(path, perm, bytesWriter(data))
}

// WriteStream is WriteFile for content that fn streams into the file; when
// fn fails, path is left as it was.
func WriteStream(path string, perm os.FileMode, fn func(io.Writer) error) error {
	if err := write(path, perm, true, fn); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

func bytesWriter(data []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		if _, err := w.Write(data); err != nil {
			return fmt.Errorf("atomicfile: write: %w", err)
		}
		return nil
	}
}

// Replace atomically replaces path with data (temp file + rename) without
// fsync. It is for runtime state under the state directory (tmpfs on a
// device, gone after a reboot anyway): a crash of the writer keeps the page
// cache, so readers see the old or the new content, and no flash write is
// forced per container start.
func Replace(path string, data []byte, perm os.FileMode) error {
	return write(path, perm, false, bytesWriter(data))
}

// write has fn write a temporary file next to path, fsyncs it if sync, and
// renames it over path.
func write(path string, perm os.FileMode, sync bool, fn func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("atomicfile: chmod %s: %w", tmp, err)
	}
	if err = fn(f); err != nil {
		return err // the content's own error, as the caller's fn returned it
	}
	if sync {
		if err = f.Sync(); err != nil {
			return fmt.Errorf("atomicfile: fsync %s: %w", tmp, err)
		}
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("atomicfile: close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("atomicfile: rename %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs a directory so that a rename or create inside it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync dir %s: %w", dir, err)
	}
	return nil
}
