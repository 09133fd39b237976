package snapshots

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// diskUsage walks dir and sums allocated blocks and inodes, counting each
// hardlinked inode once.
func diskUsage(ctx context.Context, dir string) (Usage, error) {
	var u Usage
	type ino struct{ dev, ino uint64 }
	seen := map[ino]struct{}{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: path, Err: err}
		}
		if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			k := ino{uint64(st.Dev), st.Ino}
			if _, ok := seen[k]; ok {
				return nil
			}
			seen[k] = struct{}{}
		}
		u.Inodes++
		u.Size += st.Blocks * 512
		return nil
	})
	return u, err
}

// syncFS flushes the filesystem holding dir (one syncfs instead of an fsync
// per file written into the snapshot).
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		err := unix.Syncfs(int(f.Fd()))
		if !errors.Is(err, unix.EINTR) {
			if err != nil {
				return &fs.PathError{Op: "syncfs", Path: dir, Err: err}
			}
			return nil
		}
	}
}

func isNotEmpty(err error) bool {
	return errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST)
}
