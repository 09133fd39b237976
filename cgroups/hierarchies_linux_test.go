package cgroups

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

// TestHierarchiesLayout builds a v1-style root with real mounts: two
// cgroup2 mounts, a symlink to one of them, a plain directory of the
// tmpfs and a file. Only the two mounts are hierarchies, once each.
func TestHierarchiesLayout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	root := filepath.Join(t.TempDir(), "root")
	mountT(t, "tmpfs", root)
	mountT(t, "cgroup2", filepath.Join(root, "unified"))
	mountT(t, "cgroup2", filepath.Join(root, "b"))
	if err := os.Symlink("b", filepath.Join(root, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "plain"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Hierarchies(root, Hybrid)
	want := []string{filepath.Join(root, "b"), filepath.Join(root, "unified")}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Hierarchies: %v, %v; want %v", got, err, want)
	}
	if got, err := Hierarchies(root, Unified); err != nil || !slices.Equal(got, []string{root}) {
		t.Fatalf("Hierarchies of a unified root: %v, %v; want the root alone", got, err)
	}
	if _, err := Hierarchies(root, Unavailable); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Hierarchies without cgroups: %v; want ErrFailedPrecondition", err)
	}
	if _, err := Hierarchies(filepath.Join(root, "missing"), Legacy); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Hierarchies of a missing root: %v", err)
	}
}

// TestHierarchiesHost: on this host, Hierarchies lists the cgroup mounts
// of /proc/self/mountinfo at DefaultRoot (unified) or directly below it.
func TestHierarchiesHost(t *testing.T) {
	mode, err := DetectMode("")
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	got, err := Hierarchies("", mode)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source super
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		mp, fstype := fields[4], fields[sep+1]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		if mode == Unified && mp == DefaultRoot || mode != Unified && filepath.Dir(mp) == DefaultRoot {
			if !slices.Contains(want, mp) {
				want = append(want, mp)
			}
		}
	}
	slices.Sort(want)
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Fatalf("Hierarchies on this %v host: %v; mountinfo has %v", mode, got, want)
	}
	t.Logf("%v: %v", mode, got)
}
