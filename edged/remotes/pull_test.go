package remotes

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/fsstore/content"
)

// events collects progress events.
type events struct {
	mu  sync.Mutex
	all []ProgressEvent
}

func (e *events) add(ev ProgressEvent) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) last(d digest.Digest) (ProgressEvent, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.all) - 1; i >= 0; i-- {
		if e.all[i].Digest == d {
			return e.all[i], true
		}
	}
	return ProgressEvent{}, false
}

func (e *events) has(d digest.Digest, st ProgressStatus, minOffset int64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.all {
		if ev.Digest == d && ev.Status == st && ev.Offset >= minOffset {
			return true
		}
	}
	return false
}

// checkBlob asserts that store holds d with the right size and content.
func checkBlob(t *testing.T, store *content.Store, d ocispec.Descriptor) {
	t.Helper()
	ra, err := store.ReaderAt(ctxTimeout(t), d.Digest)
	if err != nil {
		t.Fatalf("blob %s: %v", d.Digest, err)
	}
	defer ra.Close()
	if ra.Size() != d.Size {
		t.Fatalf("blob %s: size %d, want %d", d.Digest, ra.Size(), d.Size)
	}
	dg := digest.SHA256.Digester()
	if _, err := io.Copy(dg.Hash(), io.NewSectionReader(ra, 0, ra.Size())); err != nil {
		t.Fatal(err)
	}
	if dg.Digest() != d.Digest {
		t.Fatalf("blob %s: content has digest %s", d.Digest, dg.Digest())
	}
}

func TestPullAndPushRoundTrip(t *testing.T) {
	reg := startRegistry(t, "")
	img := publish(t, reg.addr, "team/app:v1", "", []ocispec.Platform{linuxAMD64}, []int64{1 << 20, 200 << 10})
	res := plainResolver(t, "", reg.addr)
	ctx := ctxTimeout(t)
	store := newStore(t)
	var ev events
	root, man, err := Pull(ctx, reg.addr+"/team/app:v1", store, PullOptions{Resolver: res, Progress: ev.add})
	if err != nil {
		t.Fatal(err)
	}
	if root.Digest != img.root.Digest || root.MediaType != ocispec.MediaTypeImageManifest || root.Size != img.root.Size {
		t.Fatalf("root = %+v, want %+v", root, img.root)
	}
	if man.Digest != root.Digest {
		t.Fatalf("manifest %s != root %s for a single-platform image", man.Digest, root.Digest)
	}
	for _, d := range append([]ocispec.Descriptor{img.root, img.configs[0]}, img.layers[0]...) {
		checkBlob(t, store, d)
	}
	for _, l := range img.layers[0] {
		if ev, ok := ev.last(l.Digest); !ok || ev.Status != ProgressDone || ev.Offset != l.Size || ev.Total != l.Size {
			t.Fatalf("last event of %s = %+v, want done at %d", l.Digest, ev, l.Size)
		}
	}
	if sts, _ := store.ListStatuses(ctx); len(sts) != 0 {
		t.Fatalf("ingests left behind: %+v", sts)
	}

	// A second pull finds everything in the store.
	var ev2 events
	if _, _, err := Pull(ctx, reg.addr+"/team/app:v1", store, PullOptions{Resolver: res, Progress: ev2.add}); err != nil {
		t.Fatal(err)
	}
	for _, l := range img.layers[0] {
		if e, _ := ev2.last(l.Digest); e.Status != ProgressExists {
			t.Fatalf("second pull: %s: %+v, want exists", l.Digest, e)
		}
	}

	// Pull by digest.
	store2 := newStore(t)
	root2, _, err := Pull(ctx, reg.addr+"/team/app@"+img.root.Digest.String(), store2, PullOptions{Resolver: res})
	if err != nil || root2.Digest != img.root.Digest {
		t.Fatalf("pull by digest: %v %+v", err, root2)
	}

	// Push to another repository (monolithic), then to a third one in
	// chunks; pull each back into a fresh store.
	for _, tc := range []struct {
		repo  string
		chunk int64
	}{{"other/copy:pushed", 0}, {"chunked/copy:pushed", 300 << 10}} {
		var pev events
		if err := Push(ctx, reg.addr+"/"+tc.repo, root, store, PushOptions{Resolver: res, Progress: pev.add, ChunkSize: tc.chunk}); err != nil {
			t.Fatalf("push %s: %v", tc.repo, err)
		}
		for _, l := range img.layers[0] {
			if e, _ := pev.last(l.Digest); e.Status != ProgressDone {
				t.Fatalf("push %s: %s: %+v, want done", tc.repo, l.Digest, e)
			}
		}
		fresh := newStore(t)
		back, _, err := Pull(ctx, reg.addr+"/"+tc.repo, fresh, PullOptions{Resolver: res})
		if err != nil {
			t.Fatal(err)
		}
		if back.Digest != root.Digest {
			t.Fatalf("pulled back %s, pushed %s", back.Digest, root.Digest)
		}
		for _, d := range append([]ocispec.Descriptor{img.configs[0]}, img.layers[0]...) {
			checkBlob(t, fresh, d)
		}
		// An independent client sees the same manifest.
		out, err := exec.Command("skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+reg.addr+"/"+tc.repo).Output()
		if err != nil {
			t.Fatal(err)
		}
		if digest.SHA256.FromBytes(out) != root.Digest {
			t.Fatalf("skopeo sees manifest %s, want %s", digest.SHA256.FromBytes(out), root.Digest)
		}
	}

	// Pushing again: every blob already exists in the registry.
	var pev events
	if err := Push(ctx, reg.addr+"/other/copy:again", root, store, PushOptions{Resolver: res, Progress: pev.add}); err != nil {
		t.Fatal(err)
	}
	for _, l := range img.layers[0] {
		if e, _ := pev.last(l.Digest); e.Status != ProgressExists {
			t.Fatalf("re-push: %s: %+v, want exists", l.Digest, e)
		}
	}
}

func TestPullErrors(t *testing.T) {
	reg := startRegistry(t, "")
	img := publish(t, reg.addr, "team/app:v1", "", []ocispec.Platform{linuxAMD64}, []int64{64 << 10})
	res := plainResolver(t, "", reg.addr)
	ctx := ctxTimeout(t)
	store := newStore(t)

	_, _, err := Pull(ctx, reg.addr+"/team/app:nope", store, PullOptions{Resolver: res})
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "team/app:nope not found") {
		t.Fatalf("missing tag: %v", err)
	}
	_, _, err = Pull(ctx, reg.addr+"/team/APP:v1", store, PullOptions{Resolver: res})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "invalid repository component") {
		t.Fatalf("bad reference: %v", err)
	}
	_, _, err = Pull(ctx, reg.addr+"/team/app:v1", nil, PullOptions{Resolver: res})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("nil store: %v", err)
	}
	// Single-platform image whose manifest is for amd64 while another
	// platform is asked for: no index, so the manifest is taken as is.
	if _, _, err := Pull(ctx, reg.addr+"/team/app:v1", store, PullOptions{Resolver: res, Platform: exactPlatform(linuxARM64)}); err != nil {
		t.Fatal(err)
	}
	// Push of something not in the store.
	missing := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.SHA256.FromString("x"), Size: 1}
	err = Push(ctx, reg.addr+"/team/other:v1", missing, store, PushOptions{Resolver: res})
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), missing.Digest.String()) {
		t.Fatalf("push of missing root: %v", err)
	}
	_ = img
}

// TestPullCorruptBlob makes the real registry serve wrong bytes by editing
// its storage, and expects ErrDataLoss naming the digest, with nothing kept.
func TestPullCorruptBlob(t *testing.T) {
	reg := startRegistry(t, "")
	img := publish(t, reg.addr, "team/app:v1", "", []ocispec.Platform{linuxAMD64}, []int64{256 << 10})
	layer := img.layers[0][0]
	f, err := os.OpenFile(reg.blobPath(layer.Digest), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("CORRUPT"), 100<<10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	res := plainResolver(t, "", reg.addr)
	ctx := ctxTimeout(t)
	store := newStore(t)
	_, _, err = Pull(ctx, reg.addr+"/team/app:v1", store, PullOptions{Resolver: res})
	if !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), layer.Digest.String()) {
		t.Fatalf("corrupt blob: %v", err)
	}
	if _, err := store.Info(ctx, layer.Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("corrupt blob in store: %v", err)
	}
	if _, err := store.Status(ctx, "pull-"+layer.Digest.String()); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("ingest of corrupt blob kept: %v", err)
	}
}

func TestPullMultiPlatform(t *testing.T) {
	reg := startRegistry(t, "")
	img := publish(t, reg.addr, "multi/app:v1", "", []ocispec.Platform{linuxAMD64, linuxARM64}, []int64{128 << 10})
	res := plainResolver(t, "", reg.addr)
	ctx := ctxTimeout(t)
	store := newStore(t)
	root, man, err := Pull(ctx, reg.addr+"/multi/app:v1", store, PullOptions{Resolver: res, Platform: exactPlatform(linuxARM64)})
	if err != nil {
		t.Fatal(err)
	}
	if root.Digest != img.root.Digest || root.MediaType != ocispec.MediaTypeImageIndex {
		t.Fatalf("root %+v, want the index %s", root, img.root.Digest)
	}
	if man.Digest != img.manifest[1].Digest || man.Platform == nil || man.Platform.Architecture != "arm64" {
		t.Fatalf("manifest %+v, want arm64 %s", man, img.manifest[1].Digest)
	}
	checkBlob(t, store, img.layers[1][0])
	checkBlob(t, store, img.configs[1])
	if _, err := store.Info(ctx, img.layers[0][0].Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("amd64 layer was pulled too: %v", err)
	}

	_, _, err = Pull(ctx, reg.addr+"/multi/app:v1", newStore(t), PullOptions{Resolver: res,
		Platform: exactPlatform(ocispec.Platform{OS: "linux", Architecture: "riscv64"})})
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "no manifest for this platform") ||
		!strings.Contains(err.Error(), "linux/arm64") {
		t.Fatalf("no matching platform: %v", err)
	}

	// Only arm64 is present locally: its blobs and manifest are pushed,
	// and the registry (which checks indexes) refuses the index.
	err = Push(ctx, reg.addr+"/multi/partial:v1", root, store, PushOptions{Resolver: res})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "not present locally") {
		t.Fatalf("push of a partial index: %v", err)
	}
	// The arm64 manifest itself can be pushed and pulled back.
	if err := Push(ctx, reg.addr+"/multi/arm:v1", man, store, PushOptions{Resolver: res}); err != nil {
		t.Fatal(err)
	}
	back, _, err := Pull(ctx, reg.addr+"/multi/arm:v1", newStore(t), PullOptions{Resolver: res})
	if err != nil || back.Digest != man.Digest {
		t.Fatalf("pull back arm64: %v %+v", err, back)
	}

	// All platforms present: the full index is pushed and pulled back.
	full := newStore(t)
	for _, p := range []ocispec.Platform{linuxAMD64, linuxARM64} {
		if _, _, err := Pull(ctx, reg.addr+"/multi/app:v1", full, PullOptions{Resolver: res, Platform: exactPlatform(p)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := Push(ctx, reg.addr+"/multi/full:v1", root, full, PushOptions{Resolver: res}); err != nil {
		t.Fatal(err)
	}
	d, err := res.Resolve(ctx, reg.addr+"/multi/full:v1")
	if err != nil || d.Digest != root.Digest || d.MediaType != ocispec.MediaTypeImageIndex {
		t.Fatalf("resolve pushed index: %v %+v", err, d)
	}
}

// TestPullResumesAfterCut cuts the TCP connection in the middle of a layer
// download (a proxy in front of the real registry) and checks the pull
// continues with a Range request instead of starting over.
func TestPullResumesAfterCut(t *testing.T) {
	reg := startRegistry(t, "")
	img := publish(t, reg.addr, "team/app:v1", "", []ocispec.Platform{linuxAMD64}, []int64{2 << 20})
	layer := img.layers[0][0]
	px := startProxy(t, reg.addr)
	px.cutAfter, px.cuts, px.cutMatch = 700<<10, 1, layer.Digest.String()
	res := plainResolver(t, "", px.addr())
	ctx := ctxTimeout(t)
	store := newStore(t)
	var ev events
	_, _, err := Pull(ctx, px.addr()+"/team/app:v1", store, PullOptions{Resolver: res, Progress: ev.add, RetryBackoff: time.Millisecond, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	checkBlob(t, store, layer)
	var gets []proxyReq
	var down int64
	for _, r := range px.requests() {
		if strings.HasSuffix(r.Path, "/blobs/"+layer.Digest.String()) {
			gets = append(gets, r)
			down += r.Down
		}
	}
	if len(gets) != 2 || gets[0].Range != "" || !strings.HasPrefix(gets[1].Range, "bytes=") {
		t.Fatalf("blob requests: %+v", gets)
	}
	off, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(gets[1].Range, "bytes="), "-"), 10, 64)
	if off < 600<<10 || off > 700<<10 {
		t.Fatalf("resumed at %d, want about 700 KiB", off)
	}
	// Bytes on the wire: the blob once plus two sets of headers.
	if down < layer.Size || down > layer.Size+8<<10 {
		t.Fatalf("%d bytes transferred for a %d-byte blob", down, layer.Size)
	}
}

// TestPullRangeIgnored strips the Range header on its way to the registry,
// so the registry answers 200 with the whole blob, as a server without
// range support would: the pull must restart the blob and still verify.
func TestPullRangeIgnored(t *testing.T) {
	reg := startRegistry(t, "")
	img := publish(t, reg.addr, "team/app:v1", "", []ocispec.Platform{linuxAMD64}, []int64{1 << 20})
	layer := img.layers[0][0]
	px := startProxy(t, reg.addr)
	px.cutAfter, px.cuts, px.stripRange, px.cutMatch = 300<<10, 1, true, layer.Digest.String()
	res := plainResolver(t, "", px.addr())
	ctx := ctxTimeout(t)
	store := newStore(t)
	if _, _, err := Pull(ctx, px.addr()+"/team/app:v1", store, PullOptions{Resolver: res, RetryBackoff: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	checkBlob(t, store, layer)
	n := 0
	for _, r := range px.requests() {
		if strings.HasSuffix(r.Path, "/blobs/"+layer.Digest.String()) {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d blob requests, want 2", n)
	}
}

// TestPullRetriesExhausted: a proxy that always cuts the blob before any
// body byte leaves no progress; the pull gives up after Retries attempts
// with ErrUnavailable, keeping the (empty) ingest for later.
func TestPullRetriesExhausted(t *testing.T) {
	reg := startRegistry(t, "")
	img := publish(t, reg.addr, "team/app:v1", "", []ocispec.Platform{linuxAMD64}, []int64{64 << 10})
	px := startProxy(t, reg.addr)
	px.cutAfter, px.cuts = 10, -1
	res := plainResolver(t, "", px.addr())
	_, _, err := Pull(ctxTimeout(t), px.addr()+"/team/app:v1", newStore(t), PullOptions{Resolver: res, Retries: 3, RetryBackoff: time.Millisecond, Concurrency: 1})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), px.addr()) {
		t.Fatalf("err = %v", err)
	}
	n := 0
	for _, r := range px.requests() {
		if strings.Contains(r.Path, "/blobs/") {
			n++
		}
	}
	// The config comes first and fails 3 times; the layer is not tried.
	if n != 3 {
		t.Fatalf("%d blob requests, want 3 attempts", n)
	}
	_ = img
}

const helperEnv = "EDGED_REMOTES_HELPER_PULL"

// TestHelperPullProcess is the child of TestPullResumesAfterRestart (and of
// the benchmark): it pulls $EDGED_REMOTES_HELPER_PULL=<ref>|<store>|<plain
// host> and prints its peak RSS.
func TestHelperPullProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process only")
	}
	parts := strings.Split(spec, "|")
	store, err := content.New(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	res := plainResolver(t, "", parts[2])
	if _, _, err := Pull(ctxTimeout(t), parts[0], store, PullOptions{Resolver: res}); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("VmHWM-KiB=%d\n", vmHWM(t))
}

// helperCmd's child keeps its temporary files under tb's temporary
// directory (TMPDIR): a child that is killed cannot remove them itself.
func helperCmd(tb testing.TB, ref, storeDir, plainHost string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPullProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+ref+"|"+storeDir+"|"+plainHost, "TMPDIR="+tb.TempDir())
	return cmd
}

// TestPullResumesAfterRestart kills a pulling process mid-download (the
// proxy stalls the layer after 1 MiB) and checks that the next Pull
// continues from the ingest it left, with Range: bytes=<offset>-.
func TestPullResumesAfterRestart(t *testing.T) {
	reg := startRegistry(t, "")
	img := publish(t, reg.addr, "team/app:v1", "", []ocispec.Platform{linuxAMD64}, []int64{3 << 20})
	layer := img.layers[0][0]
	px := startProxy(t, reg.addr)
	px.mu.Lock()
	px.cutAfter, px.cuts, px.stall, px.cutMatch = 1<<20, 1, true, layer.Digest.String()
	px.mu.Unlock()
	storeDir := filepath.Join(t.TempDir(), "content")
	ref := px.addr() + "/team/app:v1"
	cmd := helperCmd(t, ref, storeDir, px.addr())
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-px.stalled:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatal("the child never reached the stall")
	}
	store, err := content.New(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t)
	ingest := "pull-" + layer.Digest.String()
	var partial int64
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, err := store.Status(ctx, ingest)
		if err == nil && st.Offset > 512<<10 {
			partial = st.Offset
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingest never filled: %+v %v", st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// The puller may have written more between the Status above and its
	// death: what the resume starts from is what the ingest holds now.
	if st, err := store.Status(ctx, ingest); err != nil || st.Offset < partial {
		t.Fatalf("ingest after the kill: %+v %v (had %d bytes before)", st, err, partial)
	} else {
		partial = st.Offset
	}

	var ev events
	res := plainResolver(t, "", px.addr())
	if _, _, err := Pull(ctx, ref, store, PullOptions{Resolver: res, Progress: ev.add}); err != nil {
		t.Fatal(err)
	}
	checkBlob(t, store, layer)
	if !ev.has(layer.Digest, ProgressResuming, partial) {
		t.Fatalf("no resuming event at offset >= %d: %+v", partial, ev.all)
	}
	var last proxyReq
	for _, r := range px.requests() {
		if strings.HasSuffix(r.Path, "/blobs/"+layer.Digest.String()) {
			last = r
		}
	}
	if last.Range != fmt.Sprintf("bytes=%d-", partial) {
		t.Fatalf("resume request Range %q, want bytes=%d-", last.Range, partial)
	}
	if last.Down > layer.Size-partial+4<<10 {
		t.Fatalf("resume transferred %d bytes for the remaining %d", last.Down, layer.Size-partial)
	}
}

// TestPullCorruptPartialIngest: the ingest holds wrong bytes (as after a
// power cut before the data reached the disk). The resumed download does
// not verify, so the blob is downloaded once more from the start.
func TestPullCorruptPartialIngest(t *testing.T) {
	reg := startRegistry(t, "")
	img := publish(t, reg.addr, "team/app:v1", "", []ocispec.Platform{linuxAMD64}, []int64{256 << 10})
	layer := img.layers[0][0]
	store := newStore(t)
	ctx := ctxTimeout(t)
	w, err := store.Writer(ctx, "pull-"+layer.Digest.String(), content.WriterOpts{Expected: layer.Digest, Total: layer.Size})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 100<<10)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	px := startProxy(t, reg.addr)
	res := plainResolver(t, "", px.addr())
	if _, _, err := Pull(ctx, px.addr()+"/team/app:v1", store, PullOptions{Resolver: res}); err != nil {
		t.Fatal(err)
	}
	checkBlob(t, store, layer)
	var ranges []string
	for _, r := range px.requests() {
		if strings.HasSuffix(r.Path, "/blobs/"+layer.Digest.String()) {
			ranges = append(ranges, r.Range)
		}
	}
	if len(ranges) != 2 || ranges[0] != fmt.Sprintf("bytes=%d-", 100<<10) || ranges[1] != "" {
		t.Fatalf("blob requests with ranges %q, want a resume then a full download", ranges)
	}
}

func writeDockerConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBasicAuth(t *testing.T) {
	htpasswd, err := exec.LookPath("htpasswd")
	if err != nil {
		t.Skip("htpasswd not installed (apt-get install apache2-utils)")
	}
	line, err := exec.Command(htpasswd, "-Bbn", "alice", "s3cret").Output()
	if err != nil {
		t.Fatal(err)
	}
	reg := startRegistry(t, string(line))
	img := publish(t, reg.addr, "team/app:v1", "alice:s3cret", []ocispec.Platform{linuxAMD64}, []int64{64 << 10})
	ctx := ctxTimeout(t)
	ref := reg.addr + "/team/app:v1"
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))

	good := plainResolver(t, writeDockerConfig(t, `{"auths":{"`+reg.addr+`":{"auth":"`+auth+`"}}}`), reg.addr)
	store := newStore(t)
	root, _, err := Pull(ctx, ref, store, PullOptions{Resolver: good})
	if err != nil || root.Digest != img.root.Digest {
		t.Fatalf("pull with basic auth: %v", err)
	}
	if err := Push(ctx, reg.addr+"/team/copy:v1", root, store, PushOptions{Resolver: good}); err != nil {
		t.Fatalf("push with basic auth: %v", err)
	}
	// username/password fields, with a URL key.
	up := plainResolver(t, writeDockerConfig(t, `{"auths":{"http://`+reg.addr+`/v2/":{"username":"alice","password":"s3cret"}}}`), reg.addr)
	if _, _, err := Pull(ctx, reg.addr+"/team/copy:v1", newStore(t), PullOptions{Resolver: up}); err != nil {
		t.Fatalf("pull with username/password: %v", err)
	}

	wrong := plainResolver(t, writeDockerConfig(t, `{"auths":{"`+reg.addr+`":{"username":"alice","password":"nope"}}}`), reg.addr)
	_, _, err = Pull(ctx, ref, newStore(t), PullOptions{Resolver: wrong})
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "registry "+reg.addr) || !strings.Contains(err.Error(), `user "alice"`) {
		t.Fatalf("wrong password: %v", err)
	}
	none := plainResolver(t, "", reg.addr)
	_, _, err = Pull(ctx, ref, newStore(t), PullOptions{Resolver: none})
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "no credentials for "+reg.addr) {
		t.Fatalf("no credentials: %v", err)
	}
	helper := plainResolver(t, writeDockerConfig(t, `{"credHelpers":{"`+reg.addr+`":"pass"}}`), reg.addr)
	_, _, err = Pull(ctx, ref, newStore(t), PullOptions{Resolver: helper})
	if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "docker-credential-pass") {
		t.Fatalf("credential helper: %v", err)
	}
}

// TestMirrors: a mirror that is down is skipped for the origin; a working
// mirror serves the whole pull without the origin being asked.
func TestMirrors(t *testing.T) {
	reg := startRegistry(t, "")
	img := publish(t, reg.addr, "team/app:v1", "", []ocispec.Platform{linuxAMD64}, []int64{64 << 10})
	origin := startProxy(t, reg.addr)
	mirror := startProxy(t, reg.addr)
	dead := freeAddr(t) // nothing listens there
	ctx := ctxTimeout(t)
	mk := func(mirrors ...string) *Resolver {
		r, err := NewResolver(ResolverConfig{
			Registries:   map[string]RegistryConfig{origin.addr(): {PlainHTTP: true, Mirrors: mirrors}},
			DockerConfig: filepath.Join(t.TempDir(), "none.json"),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		return r
	}
	ref := origin.addr() + "/team/app:v1"
	root, _, err := Pull(ctx, ref, newStore(t), PullOptions{Resolver: mk("http://" + dead)})
	if err != nil || root.Digest != img.root.Digest {
		t.Fatalf("dead mirror: %v", err)
	}
	if len(origin.requests()) == 0 {
		t.Fatal("origin not used after the mirror failed")
	}
	before := len(origin.requests())
	store := newStore(t)
	root, _, err = Pull(ctx, ref, store, PullOptions{Resolver: mk("http://"+dead, "http://"+mirror.addr()+"/")})
	if err != nil || root.Digest != img.root.Digest {
		t.Fatalf("working mirror: %v", err)
	}
	checkBlob(t, store, img.layers[0][0])
	if n := len(origin.requests()); n != before {
		t.Fatalf("origin got %d requests although the mirror works", n-before)
	}
	if len(mirror.requests()) < 3 {
		t.Fatalf("mirror requests: %+v", mirror.requests())
	}
	_, err = NewResolver(ResolverConfig{Registries: map[string]RegistryConfig{"x.io": {Mirrors: []string{"ftp://m"}}}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "scheme") {
		t.Fatalf("bad mirror: %v", err)
	}
}

// TestPullStalledConnection: the proxy stops forwarding in the middle of
// the layer but keeps the connection open; the idle watchdog drops it and
// the download resumes with a Range request.
func TestPullStalledConnection(t *testing.T) {
	reg := startRegistry(t, "")
	img := publish(t, reg.addr, "team/app:v1", "", []ocispec.Platform{linuxAMD64}, []int64{1 << 20})
	layer := img.layers[0][0]
	px := startProxy(t, reg.addr)
	px.cutAfter, px.cuts, px.stall, px.cutMatch = 400<<10, 1, true, layer.Digest.String()
	res := plainResolver(t, "", px.addr())
	store := newStore(t)
	start := time.Now()
	_, _, err := Pull(ctxTimeout(t), px.addr()+"/team/app:v1", store, PullOptions{Resolver: res, IdleTimeout: 300 * time.Millisecond, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 20*time.Second {
		t.Fatalf("took %s", time.Since(start))
	}
	checkBlob(t, store, layer)
	var ranges []string
	for _, r := range px.requests() {
		if strings.HasSuffix(r.Path, "/blobs/"+layer.Digest.String()) {
			ranges = append(ranges, r.Range)
		}
	}
	// One stall, so one resume; a host loaded enough to starve the
	// transfer for IdleTimeout may add more, each of them a resume too.
	if len(ranges) < 2 || ranges[0] != "" {
		t.Fatalf("ranges %q: want the first request whole, then resumes", ranges)
	}
	for _, r := range ranges[1:] {
		if !strings.HasPrefix(r, "bytes=") || r == "bytes=0-" {
			t.Fatalf("ranges %q: a retry restarted instead of resuming", ranges)
		}
	}
}

// TestPullReplacesStaleManifestIngest: an ingest "pull-<manifest digest>"
// left with another total (by an interrupted pull that was told another
// size) is discarded, not returned as an error on every pull.
func TestPullReplacesStaleManifestIngest(t *testing.T) {
	img := newFakeImage(t)
	srv := httptest.NewServer(http.HandlerFunc(img.serve))
	defer srv.Close()
	host := srv.Listener.Addr().String()
	store := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ref := "pull-" + img.md.String()
	w, err := store.Writer(ctx, ref, content.WriterOpts{Expected: img.md, Total: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	_, m, err := Pull(ctx, host+"/a/b:v1", store, PullOptions{Resolver: plainResolver(t, "", host), Retries: 1})
	if err != nil {
		t.Fatalf("pull fails on a stale manifest ingest: %v", err)
	}
	checkBlob(t, store, m)
	if _, err := store.Status(ctx, ref); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("ingest %s after the pull: %v", ref, err)
	}
}
