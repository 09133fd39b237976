package remotes

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/fsstore/content"
	"github.com/edged/edged/internal/testutil/registry"
)

// ---- real registry (Debian docker-registry, internal/testutil/registry) ----

type testRegistry struct {
	addr string // 127.0.0.1:port
	reg  *registry.Registry
}

// startRegistry runs docker-registry on a free 127.0.0.1 port with its
// storage in a temporary directory; htpasswd, when set, enables basic auth.
func startRegistry(t testing.TB, htpasswd string) *testRegistry {
	t.Helper()
	r := registry.Start(t, htpasswd)
	return &testRegistry{addr: r.Addr, reg: r}
}

// blobPath is where the registry keeps a blob's bytes.
func (r *testRegistry) blobPath(d digest.Digest) string { return r.reg.BlobPath(d) }

func freeAddr(t testing.TB) string { return registry.FreeAddr(t) }

// ---- OCI layout builder ----

type testImage struct {
	root     ocispec.Descriptor // what index.json points to
	manifest []ocispec.Descriptor
	layers   [][]ocispec.Descriptor // per manifest
	configs  []ocispec.Descriptor
}

// buildImage writes an OCI layout into dir: one manifest per platform, each
// with layers of random bytes of the given sizes (tarred, gzipped without
// compression so sizes stay predictable) and a config. With more than one
// platform the root is an index.
func buildImage(t testing.TB, dir string, platforms []ocispec.Platform, layerSizes []int64) testImage {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	var img testImage
	for _, p := range platforms {
		var layers []ocispec.Descriptor
		var diffIDs []digest.Digest
		for _, sz := range layerSizes {
			l, diff := writeLayer(t, dir, sz)
			layers = append(layers, l)
			diffIDs = append(diffIDs, diff)
		}
		cfg := ocispec.Image{Platform: p, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}}
		cd := writeJSON(t, dir, ocispec.MediaTypeImageConfig, cfg)
		m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: layers}
		m.SchemaVersion = 2
		md := writeJSON(t, dir, ocispec.MediaTypeImageManifest, m)
		pp := p
		md.Platform = &pp
		img.manifest = append(img.manifest, md)
		img.layers = append(img.layers, layers)
		img.configs = append(img.configs, cd)
	}
	if len(platforms) == 1 {
		img.root = img.manifest[0]
		img.root.Platform = nil
	} else {
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: img.manifest}
		idx.SchemaVersion = 2
		img.root = writeJSON(t, dir, ocispec.MediaTypeImageIndex, idx)
	}
	top := ocispec.Index{Manifests: []ocispec.Descriptor{img.root}}
	top.SchemaVersion = 2
	b, _ := json.Marshal(top)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return img
}

func writeLayer(t testing.TB, dir string, size int64) (ocispec.Descriptor, digest.Digest) {
	t.Helper()
	tmp, err := os.CreateTemp(dir, "layer-")
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()
	compressed := digest.SHA256.Digester()
	gz, _ := gzip.NewWriterLevel(io.MultiWriter(tmp, compressed.Hash()), gzip.NoCompression)
	diff := digest.SHA256.Digester()
	tw := tar.NewWriter(io.MultiWriter(gz, diff.Hash()))
	if err := tw.WriteHeader(&tar.Header{Name: "data.bin", Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(tw, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := tmp.Stat()
	if err != nil {
		t.Fatal(err)
	}
	d := compressed.Digest()
	if err := os.Rename(tmp.Name(), filepath.Join(dir, "blobs", "sha256", d.Encoded())); err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: fi.Size()}, diff.Digest()
}

func writeJSON(t testing.TB, dir, mt string, v any) ocispec.Descriptor {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.SHA256.FromBytes(b)
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
}

// tarLayout writes the layout in dir as an oci-archive tarball.
func tarLayout(t testing.TB, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			_, err = io.Copy(tw, src)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// pushWithSkopeo builds an oci-archive of the layout and copies it to
// docker://dest with skopeo (plain HTTP). creds is "user:pass" or "".
func pushWithSkopeo(t testing.TB, layout, dest, creds string) {
	t.Helper()
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Skip("skopeo not installed (apt-get install skopeo)")
	}
	archive := layout + ".tar"
	tarLayout(t, layout, archive)
	args := []string{"--insecure-policy", "copy", "--all", "--dest-tls-verify=false"}
	if creds != "" {
		args = append(args, "--dest-creds", creds)
	}
	args = append(args, "oci-archive:"+archive, "docker://"+dest)
	out, err := exec.Command("skopeo", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %v: %v\n%s", args, err, out)
	}
}

// publish builds an image and pushes it to registry addr as repo:tag.
func publish(t testing.TB, addr, repoTag, creds string, platforms []ocispec.Platform, layerSizes []int64) testImage {
	t.Helper()
	layout := filepath.Join(t.TempDir(), "layout")
	img := buildImage(t, layout, platforms, layerSizes)
	pushWithSkopeo(t, layout, addr+"/"+repoTag, creds)
	return img
}

var linuxAMD64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}
var linuxARM64 = ocispec.Platform{OS: "linux", Architecture: "arm64"}

type exactPlatform ocispec.Platform

func (e exactPlatform) Match(p ocispec.Platform) bool {
	return p.OS == e.OS && p.Architecture == e.Architecture
}
func (exactPlatform) Less(a, b ocispec.Platform) bool { return false }

func newStore(t testing.TB) *content.Store {
	t.Helper()
	s, err := content.New(filepath.Join(t.TempDir(), "content"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// plainResolver returns a resolver for plain-HTTP registries at addrs, with
// a docker config at cfgPath ("" = a path that does not exist).
func plainResolver(t testing.TB, cfgPath string, addrs ...string) *Resolver {
	t.Helper()
	if cfgPath == "" {
		cfgPath = filepath.Join(t.TempDir(), "no-config.json")
	}
	regs := map[string]RegistryConfig{}
	for _, a := range addrs {
		regs[a] = RegistryConfig{PlainHTTP: true}
	}
	r, err := NewResolver(ResolverConfig{Registries: regs, DockerConfig: cfgPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// ---- TCP proxy that sees HTTP requests ----

// proxyReq is one request that went through the proxy.
type proxyReq struct {
	Method, Path, Range string
	Down                int64 // response bytes (headers+body) forwarded to the client
}

// tcpProxy forwards 127.0.0.1 TCP connections to target, one HTTP request
// per connection (it adds Connection: close), logging each request. It can
// cut or stall the response of blob GETs after a number of bytes, and strip
// Range headers, to cause real network faults.
type tcpProxy struct {
	ln     net.Listener
	target string

	mu         sync.Mutex
	log        []proxyReq
	cutAfter   int64  // > 0: cut blob GET responses after this many bytes
	cuts       int    // how many responses to cut; -1: all
	cutMatch   string // when set, only paths containing it are cut
	stall      bool   // stall instead of cutting
	stripRange bool
	stalled    chan struct{}
	done       chan struct{}
	wg         sync.WaitGroup
}

func startProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, done: make(chan struct{}), stalled: make(chan struct{}, 16)}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) close() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	p.ln.Close()
	p.wg.Wait()
}

func (p *tcpProxy) requests() []proxyReq {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxyReq(nil), p.log...)
}

func (p *tcpProxy) serve(c net.Conn) {
	defer c.Close()
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	isBlobGet := req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:")
	p.mu.Lock()
	i := len(p.log)
	p.log = append(p.log, proxyReq{Method: req.Method, Path: req.URL.Path, Range: req.Header.Get("Range")})
	limit := int64(-1)
	stall := false
	if isBlobGet && p.cutAfter > 0 && p.cuts != 0 && strings.Contains(req.URL.Path, p.cutMatch) {
		limit, stall = p.cutAfter, p.stall
		if p.cuts > 0 {
			p.cuts--
		}
	}
	if p.stripRange {
		req.Header.Del("Range")
	}
	p.mu.Unlock()
	req.Close = true
	req.Header.Set("Connection", "close")
	if err := req.Write(up); err != nil {
		return
	}
	var src io.Reader = up
	if limit >= 0 {
		src = io.LimitReader(up, limit)
	}
	n, _ := io.Copy(c, src)
	p.mu.Lock()
	p.log[i].Down = n
	p.mu.Unlock()
	if limit >= 0 && stall {
		p.stalled <- struct{}{}
		<-p.done
	}
}

// ctxTimeout is the bound of every test's context.
func ctxTimeout(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
