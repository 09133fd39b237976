// Package registry runs a real OCI registry (Debian's docker-registry) for
// tests, pushes archives to it with skopeo, and puts a logging, throttling
// TCP proxy in front of it.
package registry

import (
	"bufio"
	"fmt"
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
)

// Registry is a running docker-registry on 127.0.0.1.
type Registry struct {
	Addr string // host:port
	Root string // storage directory
}

// Start runs docker-registry on a free port with storage in a temporary
// directory; htpasswd (file content), when set, enables basic auth. The
// test fails when docker-registry is not installed.
func Start(t testing.TB, htpasswd string) *Registry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("docker-registry is required (apt-get install docker-registry): %v", err)
	}
	dir := t.TempDir()
	addr := FreeAddr(t)
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n  secret: edged-test-secret\n",
		filepath.Join(dir, "data"), addr)
	if htpasswd != "" {
		hp := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(hp, []byte(htpasswd), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: edged-test\n    path: %s\n", hp)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Fatalf("registry did not start: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &Registry{Addr: addr, Root: filepath.Join(dir, "data")}
}

// BlobPath is where the registry keeps a blob's bytes.
func (r *Registry) BlobPath(d digest.Digest) string {
	h := d.Encoded()
	return filepath.Join(r.Root, "docker/registry/v2/blobs/sha256", h[:2], h, "data")
}

// FreeAddr returns a free 127.0.0.1 TCP address.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// PushArchive copies an OCI layout tar to docker://dest with skopeo over
// plain HTTP; creds is "user:pass" or "".
func PushArchive(t testing.TB, archive, dest, creds string) {
	t.Helper()
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatalf("skopeo is required (apt-get install skopeo): %v", err)
	}
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

// Request is one HTTP request that went through a Proxy.
type Request struct {
	Method, Path, Range string
	Down                int64 // response bytes (headers and body) forwarded
}

// Proxy forwards TCP connections to a registry, one HTTP request per
// connection, logging each request; blob GET responses can be throttled.
type Proxy struct {
	ln     net.Listener
	target string

	mu   sync.Mutex
	log  []Request
	rate int64 // bytes per second of blob GET responses; 0: unthrottled
	done chan struct{}
	wg   sync.WaitGroup
}

// StartProxy listens on 127.0.0.1 and forwards to target.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, done: make(chan struct{})}
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
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetRate throttles blob GET responses to bytesPerSec (0: no limit).
func (p *Proxy) SetRate(bytesPerSec int64) {
	p.mu.Lock()
	p.rate = bytesPerSec
	p.mu.Unlock()
}

// Close stops the proxy and its connections.
func (p *Proxy) Close() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	p.ln.Close()
	p.wg.Wait()
}

// Requests returns the requests so far.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.log...)
}

// BlobDown returns the response bytes of GETs of blob d, and the Range
// headers sent.
func (p *Proxy) BlobDown(d digest.Digest) (n int64, ranges []string) {
	for _, r := range p.Requests() {
		if r.Method == http.MethodGet && strings.HasSuffix(r.Path, "/blobs/"+d.String()) {
			n += r.Down
			ranges = append(ranges, r.Range)
		}
	}
	return n, ranges
}

func (p *Proxy) serve(c net.Conn) {
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
	go func() { <-p.done; c.Close(); up.Close() }()
	isBlobGet := req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:")
	p.mu.Lock()
	i := len(p.log)
	p.log = append(p.log, Request{Method: req.Method, Path: req.URL.Path, Range: req.Header.Get("Range")})
	p.mu.Unlock()
	req.Close = true
	req.Header.Set("Connection", "close")
	if err := req.Write(up); err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	var total int64
	start := time.Now()
	for {
		n, rerr := up.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				break
			}
			total += int64(n)
			p.mu.Lock()
			p.log[i].Down = total
			rate := p.rate
			p.mu.Unlock()
			if isBlobGet && rate > 0 {
				want := time.Duration(float64(total) / float64(rate) * float64(time.Second))
				if d := want - time.Since(start); d > 0 {
					select {
					case <-time.After(d):
					case <-p.done:
						return
					}
				}
			}
		}
		if rerr != nil {
			break
		}
	}
}

// Htpasswd returns an htpasswd line for user:pass made with htpasswd -nbB
// (apache2-utils).
func Htpasswd(t testing.TB, user, pass string) string {
	t.Helper()
	out, err := exec.Command("htpasswd", "-nbB", user, pass).Output()
	if err != nil {
		t.Fatalf("htpasswd is required (apt-get install apache2-utils): %v", err)
	}
	return strings.TrimSpace(string(out)) + "\n"
}
