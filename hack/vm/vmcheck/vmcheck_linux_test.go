package vmcheck

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const cgroupRoot = "/sys/fs/cgroup"

func requireVM(t *testing.T) {
	t.Helper()
	if os.Getenv("EDGED_IN_VM") != "1" {
		t.Skip("EDGED_IN_VM is not 1: run through hack/vm/run.sh")
	}
}

// TestCgroup2 asserts the VM offers a pure cgroup v2 hierarchy with the
// controllers edged's accounting and OOM monitoring use.
func TestCgroup2(t *testing.T) {
	requireVM(t)
	var st unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &st); err != nil {
		t.Fatalf("statfs %s: %v", cgroupRoot, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Fatalf("%s has fs magic %#x, want cgroup2 %#x", cgroupRoot, st.Type, unix.CGROUP2_SUPER_MAGIC)
	}
	data, err := os.ReadFile(filepath.Join(cgroupRoot, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	have := strings.Fields(string(data))
	for _, c := range []string{"cpu", "io", "memory", "pids"} {
		if !slices.Contains(have, c) {
			t.Errorf("controller %q missing from cgroup.controllers %q", c, have)
		}
	}
}

// TestChildCgroupMemoryLimit creates a child cgroup, sets memory.max and
// reads it back, then removes it: what the cgroups package does for real.
func TestChildCgroupMemoryLimit(t *testing.T) {
	requireVM(t)
	dir, err := os.MkdirTemp(cgroupRoot, "vmcheck-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "memory.max"), []byte("16777216"), 0); err != nil {
		t.Fatalf("set memory.max: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "memory.max"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != "16777216" {
		t.Fatalf("memory.max = %q, want 16777216", got)
	}
}

// TestTmpWritable asserts the scratch space tests are told to use is writable.
func TestTmpWritable(t *testing.T) {
	requireVM(t)
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatalf("write under TMPDIR: %v", err)
	}
}
