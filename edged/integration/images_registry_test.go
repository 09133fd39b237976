package integration

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/images/platforms"
	"github.com/edged/edged/edged/images/testimage"
	"github.com/edged/edged/internal/testutil"
	"github.com/edged/edged/internal/testutil/registry"
)

// registryDaemon starts edged with a config that talks plain HTTP to the
// registries at addrs and reads credentials from dockerConfig.
func registryDaemon(t *testing.T, dir, dockerConfig string, addrs ...string) *testutil.Daemon {
	t.Helper()
	if dir == "" {
		dir = testutil.ShortTempDir(t)
	}
	cfg := fmt.Sprintf("[images]\ndocker_config = %q\n", dockerConfig)
	for _, a := range addrs {
		cfg += fmt.Sprintf("[registries.%q]\nplain_http = true\n", a)
	}
	p := filepath.Join(dir, "edged.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: dir, Args: []string{"--config", p}})
}

// writeDockerConfig writes a config.json with credentials for host.
func writeDockerConfig(t *testing.T, dir, host, user, pass string) string {
	t.Helper()
	p := filepath.Join(dir, "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	if err := os.WriteFile(p, []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// randomImageArchive writes an OCI layout tar of an image with one random
// layer of size bytes and returns its path and the layer descriptor.
func randomImageArchive(t *testing.T, dir string, size int64) (string, ocispec.Descriptor) {
	t.Helper()
	l, err := testimage.WriteRandomLayer(dir, size, uint64(size))
	if err != nil {
		t.Fatal(err)
	}
	img := testimage.MustBuild(testimage.Image{Platform: platforms.Default(), Layers: []testimage.Layer{l}})
	lay := testimage.NewLayout()
	lay.AddImage(img, map[string]string{ocispec.AnnotationRefName: "big"})
	p := filepath.Join(dir, "big.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := lay.WriteTar(f, testimage.TarOptions{}); err != nil {
		t.Fatal(err)
	}
	return p, img.Layers[0]
}

func TestImagesPullPushWithAuth(t *testing.T) {
	requireRunc(t)
	reg := registry.Start(t, registry.Htpasswd(t, "edge", "s3cret"))
	tmp := t.TempDir()
	registry.PushArchive(t, demoImage(t, tmp, testimage.DemoName), reg.Addr+"/lib/busybox:1", "edge:s3cret")
	dcfg := writeDockerConfig(t, tmp, reg.Addr, "edge", "s3cret")

	d := registryDaemon(t, "", dcfg, reg.Addr)
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	ref := reg.Addr + "/lib/busybox:1"
	// The image's name on stdout, the progress on stderr (so that
	// $(edgectl images pull REF) is the name); not a terminal: plain
	// lines, one per state change.
	out, progress, code := c.run("images", "pull", ref)
	if code != 0 || out != ref+"\n" {
		t.Fatalf("pull: exit %d, stdout %q, want the image name", code, out)
	}
	if !strings.Contains(progress, " done ") || strings.Contains(progress, "\r") {
		t.Fatalf("pull progress %q", progress)
	}
	if got := c.ok("run", "--rm", ref, "p1", "echo", "pulled"); got != "pulled\n" {
		t.Fatalf("run pulled image: %q", got)
	}
	// Pulling again transfers nothing.
	if _, progress, _ := c.run("images", "pull", ref); !strings.Contains(progress, " exists ") || strings.Contains(progress, "downloading") {
		t.Fatalf("second pull %q", progress)
	}

	// Push to another repository, then again (everything exists).
	dst := reg.Addr + "/copies/busybox:2"
	out, progress, code = c.run("images", "push", ref, dst)
	if code != 0 || out != dst+"\n" || !strings.Contains(progress, " done ") {
		t.Fatalf("push: exit %d, stdout %q, stderr %q", code, out, progress)
	}
	if _, progress, _ := c.run("images", "push", ref, dst); !strings.Contains(progress, " exists ") || strings.Contains(progress, "uploading") {
		t.Fatalf("second push %q", progress)
	}
	// --format json: the image as JSON, nothing else on stdout.
	var pulled struct {
		Name   string `json:"name"`
		Target struct {
			Digest string `json:"digest"`
		} `json:"target"`
	}
	if err := json.Unmarshal([]byte(c.ok("images", "pull", "--format", "json", ref)), &pulled); err != nil || pulled.Name != ref || !strings.HasPrefix(pulled.Target.Digest, "sha256:") {
		t.Fatalf("pull --format json: %+v %v", pulled, err)
	}
	// Pull it back into a fresh root and run it.
	d2 := registryDaemon(t, "", dcfg, reg.Addr)
	c2 := cli{t: t, env: []string{"EDGED_ADDRESS=" + d2.Address}}
	c2.ok("images", "pull", dst)
	if got := c2.ok("run", "--rm", dst, "p2", "echo", "round trip"); got != "round trip\n" {
		t.Fatalf("run pushed image: %q", got)
	}

	// Without credentials the registry refuses.
	d3 := registryDaemon(t, "", filepath.Join(tmp, "missing.json"), reg.Addr)
	c3 := cli{t: t, env: []string{"EDGED_ADDRESS=" + d3.Address}}
	c3.fails(1, "authentication required and no credentials for "+reg.Addr, "images", "pull", ref)
	// Credentials sent with the request work where the daemon has none;
	// wrong ones are refused by the registry.
	c3.fails(1, "permission denied", "images", "pull", "--user", "edge:wrong", ref)
	c3.fails(2, "want USER:PASSWORD", "images", "pull", "--user", "edge", ref)
	c3.ok("images", "pull", "--user", "edge:s3cret", ref)
	c3.ok("images", "rm", ref)
	c3.ok("gc")
	c3.fails(1, "not found", "images", "push", "nothere:1", dst)
	c.fails(1, "not found", "images", "pull", reg.Addr+"/lib/nothere:1")
	c.fails(1, `no manifest for platform linux/s390x`, "images", "pull", "--platform", "linux/s390x", ref)
	if out := c3.ok("images", "ls", "-q"); out != "" {
		t.Fatalf("failed pulls left images: %q", out)
	}
	// No lease of a permanently failed pull is left behind.
	cl := newClient(t, d)
	if ls, err := cl.ListLeases(ctxT(t)); err != nil || len(ls) != 0 {
		t.Fatalf("leases after pulls: %v %v", ls, err)
	}
}

// vmHWM returns a process's peak RSS in KiB.
func vmHWM(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// ingestOffset returns the bytes in the daemon's ingests.
func ingestOffset(root string) int64 {
	var n int64
	ents, _ := os.ReadDir(filepath.Join(root, "content", "ingest"))
	for _, e := range ents {
		if fi, err := os.Stat(filepath.Join(root, "content", "ingest", e.Name(), "data")); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestPullResumesAfterDaemonKill kills edged mid-pull (the transfer slowed
// by a proxy), restarts it and pulls again: the second pull fetches only
// the remaining bytes of the layer. It also bounds edged's peak RSS during
// a pull of a 100 MiB layer.
func TestPullResumesAfterDaemonKill(t *testing.T) {
	reg := registry.Start(t, "")
	tmp := t.TempDir()
	const size = 100 << 20
	archive, layer := randomImageArchive(t, tmp, size)
	registry.PushArchive(t, archive, reg.Addr+"/big/img:1", "")
	proxy := registry.StartProxy(t, reg.Addr)
	proxy.SetRate(20 << 20)
	ref := proxy.Addr() + "/big/img:1"

	dir := testutil.ShortTempDir(t)
	d := registryDaemon(t, dir, filepath.Join(tmp, "none.json"), proxy.Addr())
	cl := newClient(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pullErr := make(chan error, 1)
	go func() {
		_, err := cl.Pull(ctx, ref, client.PullOpts{})
		pullErr <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for ingestOffset(d.Root) < layer.Size/3 {
		if time.Now().After(deadline) {
			t.Fatalf("the pull did not progress: %d bytes", ingestOffset(d.Root))
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.Kill()
	if err := <-pullErr; err == nil {
		t.Fatal("pull succeeded although edged was killed")
	}
	have := ingestOffset(d.Root)
	if have <= 0 || have >= layer.Size {
		t.Fatalf("ingest after kill: %d of %d bytes", have, layer.Size)
	}
	// The proxy counts what it forwarded; its copy of the killed
	// connection may still be running (it learns of the close on its next
	// write): read the count once it has stopped moving.
	firstDown, _ := proxy.BlobDown(layer.Digest)
	for settle := time.Now().Add(5 * time.Second); time.Now().Before(settle); {
		time.Sleep(200 * time.Millisecond)
		n, _ := proxy.BlobDown(layer.Digest)
		if n == firstDown {
			break
		}
		firstDown = n
	}

	proxy.SetRate(0)
	d2 := registryDaemon(t, dir, filepath.Join(tmp, "none.json"), proxy.Addr())
	cl2 := newClient(t, d2)
	// Nothing half-made is visible after the kill.
	if imgs, err := cl2.ListImages(ctx); err != nil || len(imgs) != 0 {
		t.Fatalf("images after a killed pull: %v %v", imgs, err)
	}
	if snaps, err := cl2.ListSnapshots(ctx); err != nil || len(snaps) != 0 {
		t.Fatalf("snapshots after a killed pull: %v %v", snaps, err)
	}
	start := time.Now()
	im, err := cl2.Pull(ctx, ref, client.PullOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if im.Name != ref {
		t.Fatalf("pulled %q", im.Name)
	}
	total, ranges := proxy.BlobDown(layer.Digest)
	second := total - firstDown
	remaining := layer.Size - have
	t.Logf("layer %d bytes: %d in the ingest after the kill; second pull fetched %d bytes (ranges %q) in %v", layer.Size, have, second, ranges, time.Since(start))
	if len(ranges) < 2 || !strings.HasPrefix(ranges[len(ranges)-1], "bytes=") || ranges[len(ranges)-1] == "bytes=0-" {
		t.Fatalf("second pull did not resume with a Range request: %q", ranges)
	}
	// Headers add a few hundred bytes; the ingest may hold up to one
	// unsynced buffer less than what arrived before the kill.
	if second > remaining+64<<10 || second < remaining-(1<<20) {
		t.Fatalf("second pull fetched %d bytes, want about the remaining %d", second, remaining)
	}
	hwm := vmHWM(t, d2.Pid())
	t.Logf("edged peak RSS (VmHWM) after resuming a pull of a %d MiB layer: %d KiB", size>>20, hwm)

	// A full pull of the 100 MiB layer in a fresh daemon, bounded memory.
	d3 := registryDaemon(t, "", filepath.Join(tmp, "none.json"), reg.Addr)
	cl3 := newClient(t, d3)
	base := vmHWM(t, d3.Pid())
	if _, err := cl3.Pull(ctx, reg.Addr+"/big/img:1", client.PullOpts{}); err != nil {
		t.Fatal(err)
	}
	hwm = vmHWM(t, d3.Pid())
	// The idle daemon's own footprint is not the pull's: the budget is on
	// what the pull adds (the whole-daemon figure is logged).
	t.Logf("edged peak RSS (VmHWM) during a pull of a %d MiB layer: %d KiB (%d KiB before the pull, +%d KiB)", size>>20, hwm, base, hwm-base)
	if hwm-base > 8<<10 {
		t.Errorf("a pull of a %d MiB layer raised edged's peak RSS by %d KiB, more than 8 MiB", size>>20, hwm-base)
	}
}

// TestPullWithoutRegistryHelper: a device without edged-remote (or with a
// wrong registry_helper) gets a clear error from a pull, and nothing is
// recorded.
func TestPullWithoutRegistryHelper(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	p := filepath.Join(dir, "edged.toml")
	if err := os.WriteFile(p, []byte("[images]\nregistry_helper = \"/nonexistent/edged-remote\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: dir, Args: []string{"--config", p}})
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	c.fails(1, "registry access needs the edged-remote helper", "images", "pull", "127.0.0.1:1/lib/app:1")
	if out := c.ok("images", "ls", "-q"); out != "" {
		t.Fatalf("images after a failed pull: %q", out)
	}
	// A relative path is refused when edged starts.
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[images]\nregistry_helper = \"bin/edged-remote\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(binDir, "edged"), "--config", bad, "--root", filepath.Join(dir, "r2"), "--state", filepath.Join(dir, "s2")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "images.registry_helper") || !strings.Contains(string(out), "must be an absolute path") {
		t.Fatalf("edged with a relative registry_helper: %v: %s", err, out)
	}
}

// TestPullIdleTimeoutSetting: [images] registry_idle_timeout reaches the
// registry helper. Against a registry that accepts connections and never
// answers, a pull with the setting at 500ms fails within seconds (the
// retries included) with a message naming the request and the timeout; at
// the default 60 s it would take minutes. Nothing is recorded.
func TestPullIdleTimeoutSetting(t *testing.T) {
	addr := registry.Silent(t)
	dir := testutil.ShortTempDir(t)
	p := filepath.Join(dir, "edged.toml")
	cfg := fmt.Sprintf("[images]\nregistry_idle_timeout = \"500ms\"\ndocker_config = %q\n[registries.%q]\nplain_http = true\n",
		filepath.Join(dir, "none.json"), addr)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d := testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: dir, Args: []string{"--config", p}})
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	start := time.Now()
	_, errOut, code := c.run("images", "pull", addr+"/x:y")
	elapsed := time.Since(start)
	want := "registry " + addr + ": HEAD /v2/x/manifests/y: no answer in 500ms"
	if code != 1 || !strings.Contains(errOut, want) {
		t.Fatalf("pull from a silent registry: exit %d after %v, stderr %q; want exit 1 and %q", code, elapsed, errOut, want)
	}
	// 5 attempts of 500ms and the backoff between them (0.25+0.5+1+2 s).
	if elapsed > 15*time.Second {
		t.Fatalf("pull from a silent registry failed after %v", elapsed)
	}
	t.Logf("failed after %v: %s", elapsed.Round(time.Millisecond), strings.TrimSpace(errOut))
	if out := c.ok("images", "ls", "-q"); out != "" {
		t.Fatalf("images after a failed pull: %q", out)
	}
}

// images.registry_retries and registry_retry_backoff reach the pulls: a
// registry that answers 503 to everything sees the manifest request
// exactly registry_retries times, and edgectl names the status.
func TestPullRetrySettings(t *testing.T) {
	u := registry.StartUnavailable(t)
	addr := u.Addr
	dir := testutil.ShortTempDir(t)
	p := filepath.Join(dir, "edged.toml")
	cfg := fmt.Sprintf("[images]\nregistry_retries = 2\nregistry_retry_backoff = \"1ms\"\ndocker_config = %q\n[registries.%q]\nplain_http = true\n",
		filepath.Join(dir, "none.json"), addr)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d := testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: dir, Args: []string{"--config", p}})
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	_, errOut, code := c.run("images", "pull", addr+"/x:y")
	if code != 1 || !strings.Contains(errOut, "503") {
		t.Fatalf("pull from a registry answering 503: exit %d, stderr %q; want exit 1 naming the 503", code, errOut)
	}
	if reqs := u.Take(); reqs["HEAD /v2/x/manifests/y"] != 2 || len(reqs) != 1 {
		t.Fatalf("requests %v, want the manifest's HEAD twice (registry_retries = 2) and nothing else", reqs)
	}
}
