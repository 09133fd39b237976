package remotes

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/fsstore/content"
)

// fakeImage is a small image (config, layers, manifest) that a test
// server answers for as repository a/b, tag v1, so that tests can shape
// the HTTP exchanges around it.
type fakeImage struct {
	config, manifest []byte
	cd, md           digest.Digest
	layers           [][]byte
	blobs            map[digest.Digest][]byte
}

func newFakeImage(t testing.TB, layers ...[]byte) *fakeImage {
	t.Helper()
	f := &fakeImage{layers: layers, blobs: map[digest.Digest][]byte{}}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest}
	m.SchemaVersion = 2
	var diffs []digest.Digest
	for _, l := range layers {
		d := digest.SHA256.FromBytes(l)
		f.blobs[d] = l
		diffs = append(diffs, d)
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(l))})
	}
	cfg, err := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffs}})
	if err != nil {
		t.Fatal(err)
	}
	f.config, f.cd = cfg, digest.SHA256.FromBytes(cfg)
	f.blobs[f.cd] = cfg
	m.Config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: f.cd, Size: int64(len(cfg))}
	if f.manifest, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	f.md = digest.SHA256.FromBytes(f.manifest)
	f.blobs[f.md] = f.manifest
	return f
}

func (f *fakeImage) root() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: f.md, Size: int64(len(f.manifest))}
}

// serve answers GET /v2/, and HEAD/GET (with Range) of the manifest and
// blobs; anything else is 404.
func (f *fakeImage) serve(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == "/v2/":
		w.WriteHeader(http.StatusOK)
	case p == "/v2/a/b/manifests/v1" || p == "/v2/a/b/manifests/"+f.md.String():
		w.Header().Set("Docker-Content-Digest", f.md.String())
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.manifest))
	case strings.HasPrefix(p, "/v2/a/b/blobs/"):
		b, ok := f.blobs[digest.Digest(strings.TrimPrefix(p, "/v2/a/b/blobs/"))]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// putBlob stores data in store.
func putBlob(t testing.TB, store *content.Store, data []byte) {
	t.Helper()
	ctx := ctxTimeout(t)
	d := digest.SHA256.FromBytes(data)
	w, err := store.Writer(ctx, "test-"+d.Encoded(), content.WriterOpts{Expected: d, Total: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
}

// stallBody writes the headers and the first n bytes of body, then sends
// nothing more until the client goes away or the test ends.
func stallBody(w http.ResponseWriter, r *http.Request, status int, body []byte, n int, done <-chan struct{}) {
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body[:n])
	w.(http.Flusher).Flush()
	select {
	case <-done:
	case <-r.Context().Done():
	}
}

// TestPullManifestBodyStall: a manifest whose body stops arriving after
// the headers is dropped after IdleTimeout with an Unavailable error that
// names the manifest, and retried like other transient failures; the
// caller's own deadline is still reported as such.
func TestPullManifestBodyStall(t *testing.T) {
	img := newFakeImage(t)
	start := func(t *testing.T, stalls int32) (host string, gets *atomic.Int32) {
		gets = new(atomic.Int32)
		done := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/manifests/"+img.md.String()) && gets.Add(1) <= stalls {
				w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
				stallBody(w, r, http.StatusOK, img.manifest, 10, done)
				return
			}
			img.serve(w, r)
		}))
		t.Cleanup(srv.Close)
		t.Cleanup(func() { close(done) })
		return srv.Listener.Addr().String(), gets
	}

	t.Run("fails unavailable", func(t *testing.T) {
		host, _ := start(t, 1<<30)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		begin := time.Now()
		_, _, err := Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{
			Resolver: plainResolver(t, "", host), IdleTimeout: time.Second, Retries: 1})
		if el := time.Since(begin); errors.Is(err, context.DeadlineExceeded) || el > 5*time.Second {
			t.Fatalf("manifest GET with a stalled body hung until the caller's context ended (%s): %v", el.Round(time.Second), err)
		}
		t.Logf("error: %v", err)
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "manifest "+host+"/a/b@"+img.md.String()) ||
			!strings.Contains(err.Error(), "stalled") || !strings.Contains(err.Error(), "10 bytes read") {
			t.Fatalf("want an Unavailable error naming the stalled manifest, got: %v", err)
		}
	})

	t.Run("retried", func(t *testing.T) {
		host, gets := start(t, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, m, err := Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{
			Resolver: plainResolver(t, "", host), IdleTimeout: time.Second, Retries: 3, RetryBackoff: time.Millisecond})
		if err != nil || m.Digest != img.md {
			t.Fatalf("pull after one stalled manifest GET: %v", err)
		}
		if n := gets.Load(); n != 2 {
			t.Fatalf("%d manifest GETs, want 2 (one stalled, one retry)", n)
		}
	})

	t.Run("caller deadline", func(t *testing.T) {
		host, _ := start(t, 1<<30)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _, err := Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{
			Resolver: plainResolver(t, "", host), IdleTimeout: time.Minute, Retries: 1})
		if !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "stalled") {
			t.Fatalf("caller's deadline: got %v", err)
		}
	})
}

// TestPullTokenAndErrorBodyStall: the bodies of a token response and of an
// error response are bounded by the idle watchdog too.
func TestPullTokenAndErrorBodyStall(t *testing.T) {
	t.Run("token", func(t *testing.T) {
		done := make(chan struct{})
		var host string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/token" {
				stallBody(w, r, http.StatusOK, []byte(`{"token":"abcdefghijklmnop"}`), 5, done)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+host+`/token",service="s"`)
			w.WriteHeader(http.StatusUnauthorized)
		}))
		defer srv.Close()
		defer close(done)
		host = srv.Listener.Addr().String()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _, err := Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{
			Resolver: plainResolver(t, "", host), IdleTimeout: time.Second, Retries: 1})
		t.Logf("error: %v", err)
		if !errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
			!strings.Contains(err.Error(), "token endpoint "+host) || !strings.Contains(err.Error(), "stalled") {
			t.Fatalf("want an Unavailable error naming the stalled token endpoint, got: %v", err)
		}
	})
	t.Run("error body", func(t *testing.T) {
		done := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == "/v2/":
			case r.Method == http.MethodHead:
				w.WriteHeader(http.StatusMethodNotAllowed)
			default:
				stallBody(w, r, http.StatusInternalServerError, bytes.Repeat([]byte("x"), 1000), 10, done)
			}
		}))
		defer srv.Close()
		defer close(done)
		host := srv.Listener.Addr().String()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _, err := Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{
			Resolver: plainResolver(t, "", host), IdleTimeout: time.Second, Retries: 1})
		if !errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
			!strings.Contains(err.Error(), "500 Internal Server Error") {
			t.Fatalf("want the 500 as Unavailable despite its stalled body, got: %v", err)
		}
	})
}

// TestPullBlobBodyStall: a blob whose body stops arriving after the
// headers and a few bytes is dropped after IdleTimeout, and once the
// retries make no progress the pull fails Unavailable with a message naming
// the registry, the blob, where it stopped and the idle timeout.
func TestPullBlobBodyStall(t *testing.T) {
	layer := bytes.Repeat([]byte("0123456789abcdef"), 4<<10) // 64 KiB
	img := newFakeImage(t, layer)
	ld := digest.SHA256.FromBytes(layer)
	done := make(chan struct{})
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v2/a/b/blobs/"+ld.String() {
			gets.Add(1)
			// Every answer ignores the Range of a resume: each attempt
			// restarts the blob and stalls at the same byte.
			stallBody(w, r, http.StatusOK, layer, 10, done)
			return
		}
		img.serve(w, r)
	}))
	defer srv.Close()
	defer close(done)
	host := srv.Listener.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	begin := time.Now()
	_, _, err := Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{
		Resolver: plainResolver(t, "", host), IdleTimeout: time.Second, Retries: 1, RetryBackoff: time.Millisecond})
	if el := time.Since(begin); errors.Is(err, context.DeadlineExceeded) || el > 10*time.Second {
		t.Fatalf("blob GET with a stalled body hung until the caller's context ended (%s): %v", el.Round(time.Second), err)
	}
	t.Logf("error: %v", err)
	want := fmt.Sprintf("registry %s: blob %s: at byte 10 of %d: response stalled: less than 16 KiB in 1s (10 bytes read): unavailable", host, ld, len(layer))
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("want an Unavailable error ending in %q, got: %v", want, err)
	}
	// The first attempt made progress (10 bytes), so it was resumed once;
	// the second made none and ended the pull.
	if n := gets.Load(); n != 2 {
		t.Fatalf("%d blob GETs, want 2", n)
	}
}

// TestPullDropsTricklingBlob: a blob response that delivers a byte now and
// then is dropped after IdleTimeout (it must bring 16 KiB per window) and
// the download resumes with a Range request.
func TestPullDropsTricklingBlob(t *testing.T) {
	layer := bytes.Repeat([]byte("0123456789abcdef"), 4<<10) // 64 KiB
	img := newFakeImage(t, layer)
	ld := digest.SHA256.FromBytes(layer)
	var mu sync.Mutex
	var ranges []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/v2/a/b/blobs/"+ld.String() {
			img.serve(w, r)
			return
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		first := len(ranges) == 1
		mu.Unlock()
		if !first {
			img.serve(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(layer)))
		w.WriteHeader(http.StatusOK)
		for i := 0; i < len(layer); i++ {
			if _, err := w.Write(layer[i : i+1]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}))
	defer srv.Close()
	host := srv.Listener.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store := newStore(t)
	begin := time.Now()
	_, _, err := Pull(ctx, host+"/a/b:v1", store, PullOptions{
		Resolver: plainResolver(t, "", host), IdleTimeout: time.Second, Retries: 2, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatalf("pull with a trickling blob response (%s): %v", time.Since(begin).Round(time.Second), err)
	}
	checkBlob(t, store, ocispec.Descriptor{Digest: ld, Size: int64(len(layer))})
	mu.Lock()
	defer mu.Unlock()
	if len(ranges) != 2 || ranges[0] != "" || !strings.HasPrefix(ranges[1], "bytes=") || ranges[1] == "bytes=0-" {
		t.Fatalf("blob requests with ranges %q: want the trickling one dropped, then a resume", ranges)
	}
}

// TestHTTPClientBoundsResponseHeaders: the transport refuses response
// headers larger than 1 MiB (Go's default, 10 MB, is much for a device).
func TestHTTPClientBoundsResponseHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("x", 2<<20))
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c := newHTTPClient(false)
	defer c.CloseIdleConnections()
	resp, err := c.Get(srv.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatal("2 MiB of response headers accepted")
	}
	if !strings.Contains(err.Error(), "headers exceeded") {
		t.Fatalf("unexpected error: %v", err)
	}
}

// authRecorder records the Authorization headers a server receives.
type authRecorder struct {
	mu   sync.Mutex
	seen []string // one entry per request, "" without Authorization
}

func (a *authRecorder) add(r *http.Request) {
	a.mu.Lock()
	a.seen = append(a.seen, r.Header.Get("Authorization"))
	a.mu.Unlock()
}

func (a *authRecorder) get() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// basicGate wraps h with Basic authentication for alice:s3cret.
func basicGate(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="r"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

func aliceConfig(t *testing.T, host string) string {
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	return writeDockerConfig(t, `{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`)
}

// TestRedirectCredentials: credentials follow a redirect only within the
// registry's origin (scheme, host and port); a redirect to another port of
// the same host gets none, and one from HTTPS to plain HTTP is refused.
func TestRedirectCredentials(t *testing.T) {
	img := newFakeImage(t)

	t.Run("other origin", func(t *testing.T) {
		var rec authRecorder
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec.add(r)
			r.URL.Path = strings.Replace(r.URL.Path, "/storage/", "/v2/a/b/blobs/", 1)
			img.serve(w, r)
		}))
		defer other.Close()
		reg := httptest.NewServer(basicGate(func(w http.ResponseWriter, r *http.Request) {
			if d, ok := strings.CutPrefix(r.URL.Path, "/v2/a/b/blobs/"); ok {
				http.Redirect(w, r, other.URL+"/storage/"+d, http.StatusTemporaryRedirect)
				return
			}
			img.serve(w, r)
		}))
		defer reg.Close()
		host := reg.Listener.Addr().String()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, _, err := Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{Resolver: plainResolver(t, aliceConfig(t, host), host), Retries: 1}); err != nil {
			t.Fatalf("pull with blobs redirected to another origin: %v", err)
		}
		seen := rec.get()
		if len(seen) == 0 {
			t.Fatal("the redirect was not followed")
		}
		for _, a := range seen {
			if a != "" {
				t.Fatalf("server %s (other port) received Authorization %q meant for %s", other.Listener.Addr(), a, host)
			}
		}
	})

	t.Run("challenge from other origin", func(t *testing.T) {
		// The redirect target answers 401 with a Bearer challenge whose
		// realm it controls: it is not the registry's challenge, so no
		// credentials go to that realm.
		var rec authRecorder
		var other *httptest.Server
		other = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec.add(r)
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+other.URL+`/token",service="s"`)
			w.WriteHeader(http.StatusUnauthorized)
		}))
		defer other.Close()
		reg := httptest.NewServer(basicGate(func(w http.ResponseWriter, r *http.Request) {
			if d, ok := strings.CutPrefix(r.URL.Path, "/v2/a/b/blobs/"); ok {
				http.Redirect(w, r, other.URL+"/storage/"+d, http.StatusTemporaryRedirect)
				return
			}
			img.serve(w, r)
		}))
		defer reg.Close()
		host := reg.Listener.Addr().String()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, _, err := Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{Resolver: plainResolver(t, aliceConfig(t, host), host), Retries: 1})
		t.Logf("error: %v", err)
		for _, a := range rec.get() {
			if a != "" {
				t.Fatalf("server %s (other port) received Authorization %q meant for %s", other.Listener.Addr(), a, host)
			}
		}
		if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "401") {
			t.Fatalf("want the redirect target's 401 as PermissionDenied, got: %v", err)
		}
	})

	t.Run("same origin", func(t *testing.T) {
		var rec authRecorder
		reg := httptest.NewServer(basicGate(func(w http.ResponseWriter, r *http.Request) {
			if d, ok := strings.CutPrefix(r.URL.Path, "/v2/a/b/blobs/"); ok {
				http.Redirect(w, r, "/storage/"+d, http.StatusTemporaryRedirect)
				return
			}
			if strings.HasPrefix(r.URL.Path, "/storage/") {
				rec.add(r)
				r.URL.Path = strings.Replace(r.URL.Path, "/storage/", "/v2/a/b/blobs/", 1)
			}
			img.serve(w, r)
		}))
		defer reg.Close()
		host := reg.Listener.Addr().String()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, _, err := Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{Resolver: plainResolver(t, aliceConfig(t, host), host), Retries: 1}); err != nil {
			t.Fatalf("pull with blobs redirected within the registry (credentials kept): %v", err)
		}
		if seen := rec.get(); len(seen) == 0 {
			t.Fatal("the redirect was not followed")
		}
	})

	t.Run("https to http", func(t *testing.T) {
		var rec authRecorder
		plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec.add(r)
			w.WriteHeader(http.StatusNotFound)
		}))
		defer plain.Close()
		reg := httptest.NewTLSServer(basicGate(func(w http.ResponseWriter, r *http.Request) {
			if d, ok := strings.CutPrefix(r.URL.Path, "/v2/a/b/blobs/"); ok {
				http.Redirect(w, r, plain.URL+"/storage/"+d+"?sig=secret", http.StatusTemporaryRedirect)
				return
			}
			img.serve(w, r)
		}))
		defer reg.Close()
		host := reg.Listener.Addr().String()
		res, err := NewResolver(ResolverConfig{Registries: map[string]RegistryConfig{host: {Insecure: true}}, DockerConfig: aliceConfig(t, host)})
		if err != nil {
			t.Fatal(err)
		}
		defer res.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, _, err = Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{Resolver: res, Retries: 3, RetryBackoff: time.Millisecond})
		if seen := rec.get(); len(seen) != 0 {
			t.Fatalf("plain HTTP server received %d requests (Authorization %q) redirected from https://%s", len(seen), seen, host)
		}
		t.Logf("error: %v", err)
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "plain HTTP") ||
			!strings.Contains(err.Error(), "registry "+host) || strings.Contains(err.Error(), "secret") {
			t.Fatalf("want a FailedPrecondition refusing the downgrade (without the URL's query), got: %v", err)
		}
	})
}

// TestTokenRedirectToPlainHTTPRefused: an HTTPS registry's token realm
// that redirects to plain HTTP is not followed (the token request carries
// the user's credentials): the pull fails FailedPrecondition, not retried,
// naming the registry, the token endpoint and both ends of the redirect,
// without the realm's query.
func TestTokenRedirectToPlainHTTPRefused(t *testing.T) {
	img := newFakeImage(t)
	var rec authRecorder
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		w.Write([]byte(`{"token":"from-plain-http"}`))
	}))
	defer plain.Close()
	var host string
	var tokenGets atomic.Int32
	reg := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/token":
			tokenGets.Add(1)
			http.Redirect(w, r, plain.URL+"/token?"+r.URL.RawQuery, http.StatusFound)
		case r.Header.Get("Authorization") == "":
			w.Header().Set("WWW-Authenticate", `Bearer realm="https://`+host+`/token",service="reg"`)
			w.WriteHeader(http.StatusUnauthorized)
		default:
			img.serve(w, r)
		}
	}))
	defer reg.Close()
	host = reg.Listener.Addr().String()
	res, err := NewResolver(ResolverConfig{Registries: map[string]RegistryConfig{host: {Insecure: true}}, DockerConfig: aliceConfig(t, host)})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, _, err = Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{Resolver: res, Retries: 3, RetryBackoff: time.Millisecond})
	if seen := rec.get(); len(seen) != 0 {
		t.Fatalf("plain HTTP server received %d token requests (Authorization %q) redirected from https://%s", len(seen), seen, host)
	}
	t.Logf("error: %v", err)
	want := fmt.Sprintf("registry %s: token endpoint %s: redirected from https://%s/token to %s/token: refusing to leave HTTPS for plain HTTP: failed precondition",
		host, host, host, plain.URL)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || errors.Is(err, errdefs.ErrUnavailable) || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("want a FailedPrecondition ending in %q, got: %v", want, err)
	}
	if n := tokenGets.Load(); n != 1 {
		t.Fatalf("%d token requests, want 1 (a refused redirect is not retried)", n)
	}
}

// recordingListener keeps every byte its connections receive: TLS traffic
// is encrypted, so credentials found in it were sent in clear text.
type recordingListener struct {
	net.Listener
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, l: l}, nil
}

func (l *recordingListener) received() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type recordingConn struct {
	net.Conn
	l *recordingListener
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	c.l.buf.Write(p[:n])
	c.l.mu.Unlock()
	return n, err
}

// TestPushRefusesPlainHTTPUploadLocation: an HTTPS registry whose upload
// Location points to plain HTTP (same host and port) gets neither the
// blob nor the credentials in clear text.
func TestPushRefusesPlainHTTPUploadLocation(t *testing.T) {
	img := newFakeImage(t, []byte("layer bytes"))
	var host string
	srv := httptest.NewUnstartedServer(basicGate(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case r.Method == http.MethodHead:
			w.WriteHeader(http.StatusNotFound)
		case r.Method == http.MethodPost && r.URL.Path == "/v2/a/b/blobs/uploads/":
			w.Header().Set("Location", "http://"+host+"/upload/1")
			w.WriteHeader(http.StatusAccepted)
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	rl := &recordingListener{Listener: srv.Listener}
	srv.Listener = rl
	srv.StartTLS()
	defer srv.Close()
	host = srv.Listener.Addr().String()
	store := newStore(t)
	for _, b := range append([][]byte{img.config, img.manifest}, img.layers...) {
		putBlob(t, store, b)
	}
	res, err := NewResolver(ResolverConfig{Registries: map[string]RegistryConfig{host: {Insecure: true}}, DockerConfig: aliceConfig(t, host)})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = Push(ctx, host+"/a/b:v1", img.root(), store, PushOptions{Resolver: res, Retries: 1})
	cred := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	if got := rl.received(); strings.Contains(got, cred) || strings.Contains(got, "layer bytes") {
		t.Fatalf("credentials or blob sent in clear text to https://%s:\n%s", host, got)
	}
	t.Logf("error: %v", err)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "plain HTTP") ||
		!strings.Contains(err.Error(), fmt.Sprintf("registry %s: upload of sha256:", host)) {
		t.Fatalf("want a FailedPrecondition refusing the plain HTTP upload location, got: %v", err)
	}
}
