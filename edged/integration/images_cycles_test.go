package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/images/testimage"
	"github.com/edged/edged/internal/testutil"
	"github.com/edged/edged/internal/testutil/registry"
)

// du returns the disk usage of dir in bytes (du -s --block-size=1).
func du(t *testing.T, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-s", "--block-size=1", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHundredCyclesLeaveNoTrace runs 100 cycles of pull image (from the
// test registry), run a container, remove container and image;
// the root (content, snapshots, database) returns to its size at the
// start, measured with edged stopped (database checkpointed).
func TestHundredCyclesLeaveNoTrace(t *testing.T) {
	requireRunc(t)
	reg := registry.Start(t, "")
	tmp := t.TempDir()
	archive := demoImage(t, tmp, testimage.DemoName)
	registry.PushArchive(t, archive, reg.Addr+"/lib/busybox:1", "")
	dir := testutil.ShortTempDir(t)
	d := registryDaemon(t, dir, filepath.Join(tmp, "none.json"), reg.Addr)
	cl := newClient(t, d)
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	cycle := func(i int) {
		name := reg.Addr + "/lib/busybox:1"
		if _, err := cl.Pull(ctx, name, client.PullOpts{}); err != nil {
			t.Fatalf("cycle %d: pull: %v", i, err)
		}
		if out := c.ok("run", "--rm", name, "cyc", "sh", "-c", "echo x > /tmp/f; cat /tmp/f"); out != "x\n" {
			t.Fatalf("cycle %d: run: %q", i, out)
		}
		if err := cl.DeleteImage(ctx, name, client.DeleteImageOpts{Sync: true}); err != nil {
			t.Fatalf("cycle %d: rm: %v", i, err)
		}
	}
	cycle(1) // warm up: database pages, directories
	// Stopping edged checkpoints the database and removes its log, so du
	// sees everything in the database file.
	d.Stop(t)
	content, snaps, root := filepath.Join(d.Root, "content"), filepath.Join(d.Root, "snapshots"), d.Root
	c0, s0, r0 := du(t, content), du(t, snaps), du(t, root)
	d = registryDaemon(t, dir, filepath.Join(tmp, "none.json"), reg.Addr)
	cl = newClient(t, d)
	c = cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	for i := 0; i < 100; i++ {
		cycle(i)
	}
	d.Stop(t)
	c1, s1, r1 := du(t, content), du(t, snaps), du(t, root)
	t.Logf("du before/after 100 cycles: content %d/%d, snapshots %d/%d, root %d/%d bytes", c0, c1, s0, s1, r0, r1)
	if c1 != c0 || s1 != s0 {
		t.Fatalf("content %d → %d, snapshots %d → %d bytes", c0, c1, s0, s1)
	}
	if r1 != r0 {
		out, _ := exec.Command("du", "-a", "--block-size=1", root).Output()
		t.Logf("%s", out)
		t.Fatalf("root grew from %d to %d bytes", r0, r1)
	}
}
