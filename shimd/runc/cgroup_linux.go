package runc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/cgroups"
)

// removeHalfMadeCgroup removes the cgroup directories dirs (one per
// hierarchy) of a container whose creation was killed part way, and the
// cgroups below them. They did not exist before runc ran, so the
// processes still in them are the half-made container's (a `runc init`
// that has not died yet, or one the kill missed): they are killed first,
// again until none is left, or ctx ends.
func removeHalfMadeCgroup(ctx context.Context, dirs []string) error {
	for {
		pids, err := cgroupProcs(dirs)
		if err != nil {
			return fmt.Errorf("cgroup %s: %w", dirs[0], err)
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("cgroup %s: %d processes left in it after SIGKILL %v: %w", dirs[0], len(pids), pids, ctx.Err())
		case <-t.C:
		}
	}
	return cgroups.RemoveDirs(ctx, dirs...)
}

// cgroupProcs lists the processes in the cgroups dirs and below them (each
// once: v1 hierarchies list the same processes). A missing directory has
// none.
func cgroupProcs(dirs []string) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed meanwhile
				}
				return err
			}
			if !e.IsDir() {
				return nil
			}
			data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 0 && !seen[pid] {
					seen[pid] = true
					out = append(out, pid)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
