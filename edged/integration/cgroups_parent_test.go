package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edged/edged/internal/testutil"
)

// TestCgroupParentConfig runs containers under a configured cgroup parent
// and with the systemd slice naming, and reads where the kernel put them.
func TestCgroupParentConfig(t *testing.T) {
	requireRunc(t)
	rootfs := busybox(t)
	// runc removes the containers' cgroups; the parents stay, as they do
	// for edged's default parent. Remove this test's.
	t.Cleanup(func() {
		for _, pat := range []string{"/sys/fs/cgroup/*/edged-it/default", "/sys/fs/cgroup/edged-it/default", "/sys/fs/cgroup/*/edged-it", "/sys/fs/cgroup/edged-it",
			"/sys/fs/cgroup/*/edged.slice/edged-default.slice", "/sys/fs/cgroup/edged.slice/edged-default.slice", "/sys/fs/cgroup/*/edged.slice", "/sys/fs/cgroup/edged.slice"} {
			dirs, _ := filepath.Glob(pat)
			for _, d := range dirs {
				os.Remove(d)
			}
		}
	})
	for _, tc := range []struct {
		config string
		want   func(id string) string
	}{
		{"[cgroups]\nparent = \"/edged-it\"\n", func(id string) string { return "/edged-it/default/" + id }},
		{"[cgroups]\nsystemd_slices = true\n", func(id string) string { return "/edged.slice/edged-default.slice/edged-" + id + ".scope" }},
	} {
		dir := testutil.ShortTempDir(t)
		cfg := filepath.Join(dir, "edged.toml")
		os.WriteFile(cfg, []byte(tc.config), 0o600)
		d := testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: dir, Args: []string{"--config", cfg}})
		c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
		id := fmt.Sprintf("cg%d", len(dir)%1000)
		out := c.ok("run", "--rm", "--rootfs", rootfs, id, "cat", "/proc/self/cgroup")
		if !strings.Contains(out, tc.want(id)) {
			t.Fatalf("config %q: the container's cgroups do not end in %s:\n%s", tc.config, tc.want(id), out)
		}
		d.Stop(t)
	}
	// A bad parent is refused at start with the setting named.
	dir := testutil.ShortTempDir(t)
	cfg := filepath.Join(dir, "edged.toml")
	os.WriteFile(cfg, []byte("[cgroups]\nparent = \"edged/../x\"\n"), 0o600)
	out, err := exec.Command(filepath.Join(binDir, "edged"), "--config", cfg, "--root", dir+"/r", "--state", dir+"/s", "--address", dir+"/s/sock").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cgroups.parent") {
		t.Fatalf("bad cgroup parent: %v %s", err, out)
	}
}
