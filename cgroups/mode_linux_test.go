package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

// mountT mounts fstype at dir and unmounts it when the test ends.
func mountT(t *testing.T, fstype, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fstype, dir, fstype, 0, ""); err != nil {
		t.Skipf("cannot mount %s (needs root and a kernel with %s): %v", fstype, fstype, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// TestDetectModeLayouts builds each layout with real mounts under a
// configurable root.
func TestDetectModeLayouts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	base := t.TempDir()

	legacy := filepath.Join(base, "legacy")
	mountT(t, "tmpfs", legacy)
	if m, err := DetectMode(legacy); err != nil || m != Legacy {
		t.Fatalf("tmpfs root: %v, %v; want legacy", m, err)
	}

	hybrid := filepath.Join(base, "hybrid")
	mountT(t, "tmpfs", hybrid)
	mountT(t, "cgroup2", filepath.Join(hybrid, "unified"))
	if m, err := DetectMode(hybrid); err != nil || m != Hybrid {
		t.Fatalf("tmpfs + unified: %v, %v; want hybrid", m, err)
	}

	unified := filepath.Join(base, "unified")
	mountT(t, "cgroup2", unified)
	if m, err := DetectMode(unified); err != nil || m != Unified {
		t.Fatalf("cgroup2 root: %v, %v; want unified", m, err)
	}

	_, err := DetectMode(filepath.Join(base, "missing"))
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing root: %v", err)
	}
	// A plain directory (the test's temp dir is on disk or tmpfs).
	plain := filepath.Join(base, "plain")
	os.Mkdir(plain, 0o755)
	mountT(t, "proc", plain)
	_, err = DetectMode(plain)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "unexpected file system") {
		t.Fatalf("proc as root: %v", err)
	}
}

func TestDetectModeHost(t *testing.T) {
	mode, err := DetectMode("")
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(DefaultRoot, &st); err != nil {
		t.Fatal(err)
	}
	if (st.Type == unix.CGROUP2_SUPER_MAGIC) != (mode == Unified) {
		t.Fatalf("mode %v but root magic %#x", mode, st.Type)
	}
	t.Logf("host cgroup mode: %v", mode)
}

func TestModeString(t *testing.T) {
	for m, s := range map[Mode]string{Unavailable: "unavailable", Legacy: "legacy", Hybrid: "hybrid", Unified: "unified"} {
		if m.String() != s {
			t.Errorf("%d: %q", m, m.String())
		}
	}
}
