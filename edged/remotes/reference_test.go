package remotes

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
)

func TestDockerConfigCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) *dockerConfig {
		t.Helper()
		p := filepath.Join(dir, "config.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := loadDockerConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := write(`{"auths":{
		"https://index.docker.io/v1/":{"auth":"dTpw"},
		"reg.example:5000":{"username":"bob","password":"pw"},
		"tok.example":{"identitytoken":"refresh-me"}}}`)
	for host, want := range map[string]Credentials{
		"docker.io":            {Username: "u", Password: "p"},
		"registry-1.docker.io": {Username: "u", Password: "p"},
		"reg.example:5000":     {Username: "bob", Password: "pw"},
		"tok.example":          {IdentityToken: "refresh-me"},
		"other.example":        {},
	} {
		got, err := c.credentials(host)
		if err != nil || got != want {
			t.Errorf("%s: %+v %v, want %+v", host, got, err, want)
		}
	}
	c = write(`{"auths":{"a.io":{"auth":"!!"},"b.io":{"auth":"bm9jb2xvbg=="},"c.io":{}},"credsStore":"desktop","credHelpers":{"gcr.io":"gcloud"}}`)
	for host, msg := range map[string]string{
		"a.io":   "not valid base64",
		"b.io":   "not base64(user:password)",
		"c.io":   `credential store "docker-credential-desktop"`,
		"gcr.io": `credential helper "docker-credential-gcloud"`,
	} {
		_, err := c.credentials(host)
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: %v, want %q", host, err, msg)
		}
	}
	if _, err := c.credentials("gcr.io"); !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Errorf("helper: %v", err)
	}
	p := filepath.Join(dir, "bad.json")
	os.WriteFile(p, []byte("{nope"), 0o600)
	if _, err := loadDockerConfig(p); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), p) {
		t.Errorf("bad json: %v", err)
	}
	if c, err := loadDockerConfig(filepath.Join(dir, "missing.json")); err != nil || len(c.auths) != 0 {
		t.Errorf("missing file: %v", err)
	}
	os.WriteFile(p, make([]byte, maxDockerConfigSize+1), 0o600)
	if _, err := loadDockerConfig(p); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("big file: %v", err)
	}
	t.Setenv("DOCKER_CONFIG", "/some/dir")
	if got := defaultDockerConfigPath(); got != "/some/dir/config.json" {
		t.Errorf("default path %q", got)
	}
}

// TestManifestRefusals uses a small HTTP server for documents a real
// registry will not serve: docker-registry 2.8 refuses schema 1 pushes and
// caps manifests itself. It also answers HEAD without a digest, as some
// mirrors do, to exercise the GET fallback.
func TestManifestRefusals(t *testing.T) {
	good := []byte(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
		digest.SHA256.FromString("c").String() + `","size":1},"layers":[]}`)
	schema1 := []byte(`{"schemaVersion":1,"name":"x","tag":"v1","fsLayers":[]}`)
	mux := http.NewServeMux()
	mux.HandleFunc("/v2/t/app/manifests/", func(w http.ResponseWriter, r *http.Request) {
		switch tag := filepath.Base(r.URL.Path); tag {
		case "schema1":
			w.Header().Set("Content-Type", mediaTypeDockerSchema1JWS)
			w.Write(schema1)
		case "schema1-untyped":
			w.Header().Set("Content-Type", "application/json")
			w.Write(schema1)
		case "huge":
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Header().Set("Content-Length", fmt.Sprint(MaxManifestSize+1))
			w.Header().Set("Docker-Content-Digest", digest.SHA256.FromString("h").String())
			if r.Method == http.MethodGet {
				w.Write(make([]byte, MaxManifestSize+1))
			}
		case "nohead", digest.SHA256.FromBytes(good).String():
			// No Docker-Content-Digest, no media type.
			w.Write(good)
		case "notjson":
			w.Write([]byte("<html>"))
		default:
			http.NotFound(w, r)
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()
	res := plainResolver(t, "", addr)
	ctx := ctxTimeout(t)
	for tag, want := range map[string]struct {
		kind error
		msg  string
	}{
		"schema1":         {errdefs.ErrNotImplemented, "schema 1 manifest"},
		"schema1-untyped": {errdefs.ErrNotImplemented, "schema 1 manifest"},
		"huge":            {errdefs.ErrResourceExhausted, "exceeds the limit"},
		"notjson":         {errdefs.ErrInvalidArgument, "invalid manifest JSON"},
	} {
		_, err := res.Resolve(ctx, addr+"/t/app:"+tag)
		if !errors.Is(err, want.kind) || !strings.Contains(err.Error(), want.msg) {
			t.Errorf("%s: %v, want %v %q", tag, err, want.kind, want.msg)
		}
	}
	d, err := res.Resolve(ctx, addr+"/t/app:nohead")
	if err != nil || d.Digest != digest.SHA256.FromBytes(good) || d.MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("GET fallback: %+v %v", d, err)
	}
	// The stored root of a digest pull is verified against the digest.
	store := newStore(t)
	_, _, err = Pull(ctx, addr+"/t/app@"+d.Digest.String(), store, PullOptions{Resolver: res})
	if !errors.Is(err, errdefs.ErrNotFound) { // config blob is not served
		t.Fatalf("pull: %v", err)
	}
	data, err := (&session{store: store}).readStored(ctx, d.Digest)
	if err != nil || string(data) != string(good) {
		t.Fatalf("stored manifest: %q %v", data, err)
	}
	var m ocispec.Manifest
	if json.Unmarshal(data, &m) != nil {
		t.Fatal("stored manifest is not JSON")
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 10-99/100", 10, 100, true},
		{"bytes 0-0/*", 0, -1, true},
		{"bytes x-1/2", 0, 0, false},
		{"10-99/100", 0, 0, false},
		{"bytes 10/100", 0, 0, false},
	} {
		s, tot, ok := parseContentRange(tc.in)
		if ok != tc.ok || (ok && (s != tc.start || tot != tc.total)) {
			t.Errorf("%q: %d %d %v", tc.in, s, tot, ok)
		}
	}
}
