package remotes

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
)

// tokenGate puts Bearer token auth in front of the real registry.
// docker-registry's own token auth needs a signing certificate and a JWT
// issuer, so instead this small server issues opaque tokens at /token (to
// alice:s3cret, or anonymously for pulls) and a reverse proxy to the
// registry demands them, answering 401 with a Bearer challenge otherwise.
// The registry behind it is real; only the token issuing is ours.
type tokenGate struct {
	registry string
	ttl      int // expires_in of issued tokens, seconds

	mu      sync.Mutex
	tokens  map[string]string // token -> scope
	fetches []string          // scopes asked for, one entry per token request
	addr    string
}

func startTokenGate(t *testing.T, registry string, ttl int) *tokenGate {
	g := &tokenGate{registry: registry, ttl: ttl, tokens: map[string]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = ln.Addr().String()
	target, _ := url.Parse("http://" + registry)
	rp := httputil.NewSingleHostReverseProxy(target)
	mux := http.NewServeMux()
	mux.HandleFunc("/token", g.token)
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		repo, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/")
		repo, _, _ = strings.Cut(repo, "/manifests/")
		need := "repository:" + repo + ":pull"
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			need += ",push"
		}
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		g.mu.Lock()
		scope, ok := g.tokens[tok]
		g.mu.Unlock()
		if !ok || !strings.Contains(scope, need) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="edged-test",scope=%q`, g.addr, need))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		r.Header.Del("Authorization")
		rp.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return g
}

func (g *tokenGate) token(w http.ResponseWriter, r *http.Request) {
	scopes := strings.Join(r.URL.Query()["scope"], " ")
	user, pass, hasAuth := r.BasicAuth()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fetches = append(g.fetches, scopes)
	if r.URL.Query().Get("service") != "edged-test" {
		http.Error(w, "bad service", http.StatusBadRequest)
		return
	}
	if hasAuth && (user != "alice" || pass != "s3cret") {
		http.Error(w, "bad credentials", http.StatusUnauthorized)
		return
	}
	if !hasAuth && strings.Contains(scopes, "push") {
		http.Error(w, "anonymous push", http.StatusUnauthorized)
		return
	}
	tok := fmt.Sprintf("tok-%d", len(g.fetches))
	g.tokens[tok] = scopes
	fmt.Fprintf(w, `{"token":%q,"expires_in":%d}`, tok, g.ttl)
}

func (g *tokenGate) fetchCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.fetches)
}

func TestBearerTokenAuth(t *testing.T) {
	reg := startRegistry(t, "")
	img := publish(t, reg.addr, "team/app:v1", "", []ocispec.Platform{linuxAMD64}, []int64{64 << 10, 32 << 10})
	gate := startTokenGate(t, reg.addr, 300)
	ctx := ctxTimeout(t)
	ref := gate.addr + "/team/app:v1"
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	res := plainResolver(t, writeDockerConfig(t, `{"auths":{"`+gate.addr+`":{"auth":"`+auth+`"}}}`), gate.addr)

	store := newStore(t)
	root, _, err := Pull(ctx, ref, store, PullOptions{Resolver: res})
	if err != nil || root.Digest != img.root.Digest {
		t.Fatalf("pull through token auth: %v", err)
	}
	if n := gate.fetchCount(); n != 1 {
		t.Fatalf("%d token requests for one pull, want 1 (cached per scope)", n)
	}
	if _, _, err := Pull(ctx, ref, newStore(t), PullOptions{Resolver: res}); err != nil {
		t.Fatal(err)
	}
	if n := gate.fetchCount(); n != 1 {
		t.Fatalf("%d token requests after a second pull, want 1", n)
	}
	// A push needs a pull,push token for the new repository.
	if err := Push(ctx, gate.addr+"/team/copy:v1", root, store, PushOptions{Resolver: res}); err != nil {
		t.Fatal(err)
	}
	gate.mu.Lock()
	last := gate.fetches[len(gate.fetches)-1]
	gate.mu.Unlock()
	if !strings.Contains(last, "repository:team/copy:pull,push") {
		t.Fatalf("push token scope %q", last)
	}

	// Anonymous token for a pull.
	anon := plainResolver(t, "", gate.addr)
	if _, _, err := Pull(ctx, ref, newStore(t), PullOptions{Resolver: anon}); err != nil {
		t.Fatalf("anonymous token pull: %v", err)
	}
	err = Push(ctx, gate.addr+"/team/anon:v1", root, store, PushOptions{Resolver: anon})
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "anonymous access") {
		t.Fatalf("anonymous push: %v", err)
	}

	// Wrong password: the token endpoint refuses.
	wrong := plainResolver(t, writeDockerConfig(t, `{"auths":{"`+gate.addr+`":{"username":"alice","password":"bad"}}}`), gate.addr)
	_, _, err = Pull(ctx, ref, newStore(t), PullOptions{Resolver: wrong})
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "registry "+gate.addr) ||
		!strings.Contains(err.Error(), `refused user "alice"`) {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestBearerTokenExpiry(t *testing.T) {
	reg := startRegistry(t, "")
	publish(t, reg.addr, "team/app:v1", "", []ocispec.Platform{linuxAMD64}, []int64{16 << 10})
	gate := startTokenGate(t, reg.addr, 1)
	ctx := ctxTimeout(t)
	res := plainResolver(t, "", gate.addr)
	ref := gate.addr + "/team/app:v1"
	start := time.Now()
	if _, _, err := Pull(ctx, ref, newStore(t), PullOptions{Resolver: res}); err != nil {
		t.Fatal(err)
	}
	n := gate.fetchCount()
	// Within the token's lifetime one token serves every request; a pull
	// slowed past it by a loaded host may fetch another, legitimately.
	if time.Since(start) < time.Second && n != 1 {
		t.Fatalf("a pull within the token's lifetime fetched %d tokens, want 1", n)
	}
	time.Sleep(time.Until(start.Add(1100 * time.Millisecond)))
	if _, _, err := Pull(ctx, ref, newStore(t), PullOptions{Resolver: res}); err != nil {
		t.Fatal(err)
	}
	if gate.fetchCount() <= n {
		t.Fatalf("token requests %d -> %d, want a new token after expiry", n, gate.fetchCount())
	}
}

func TestParseChallenges(t *testing.T) {
	c, ok := parseChallenges([]string{`Basic realm="x"`, `Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push"`})
	if !ok || c.scheme != "bearer" || c.realm != "https://auth.example/token" || c.service != "reg.example" || c.scope != "repository:a/b:pull,push" {
		t.Fatalf("%+v", c)
	}
	c, ok = parseChallenges([]string{`Basic realm="r\"q"`})
	if !ok || c.scheme != "basic" || c.realm != `r"q` {
		t.Fatalf("%+v", c)
	}
	if _, ok := parseChallenges([]string{`Negotiate abc`}); ok {
		t.Fatal("unknown scheme accepted")
	}
	if _, ok := parseChallenges([]string{`Bearer service="x"`}); ok {
		t.Fatal("bearer without realm accepted")
	}
}
