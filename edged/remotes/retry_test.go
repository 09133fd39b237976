package remotes

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
)

// unavailable answers 503 with a registry error body.
func unavailable(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	w.Write([]byte(`{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}`))
}

// TestPullManifestRetriesBounded: a manifest request is attempted exactly
// Retries times, with backoff, whatever mix of failures the registry
// serves (a 503 before the body, a connection cut in the body), not
// Retries attempts of Retries attempts; the error names the reference, the
// attempts and the registry's last answer.
func TestPullManifestRetriesBounded(t *testing.T) {
	img := newFakeImage(t)

	t.Run("tag, always 503", func(t *testing.T) {
		var reqs atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/v2/a/b/manifests/") {
				reqs.Add(1)
				unavailable(w)
				return
			}
			img.serve(w, r)
		}))
		defer srv.Close()
		host := srv.Listener.Addr().String()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		begin := time.Now()
		_, _, err := Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{
			Resolver: plainResolver(t, "", host), Retries: 3, RetryBackoff: 40 * time.Millisecond})
		el := time.Since(begin)
		t.Logf("error after %s: %v", el.Round(time.Millisecond), err)
		if n := reqs.Load(); n != 3 {
			t.Fatalf("%d manifest requests, want exactly 3 (Retries)", n)
		}
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), host+"/a/b:v1: manifest v1: giving up after 3 attempts") ||
			!strings.Contains(err.Error(), "HEAD /v2/a/b/manifests/v1: 503 Service Unavailable") {
			t.Fatalf("want an Unavailable error naming the reference, the attempts and the last status, got: %v", err)
		}
		// Backoff 40 ms doubled, with jitter down to half: at least 20+40 ms.
		if el < 60*time.Millisecond {
			t.Fatalf("3 attempts in %s: no backoff between them", el)
		}
	})

	t.Run("digest, 503 and cut bodies", func(t *testing.T) {
		// Odd requests answer 503, even ones send the headers and part of
		// the manifest, then drop the connection.
		var reqs atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.URL.Path, "/v2/a/b/manifests/") {
				img.serve(w, r)
				return
			}
			if reqs.Add(1)%2 == 1 {
				unavailable(w)
				return
			}
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Header().Set("Content-Length", strconv.Itoa(len(img.manifest)))
			w.WriteHeader(http.StatusOK)
			w.Write(img.manifest[:10])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}))
		defer srv.Close()
		host := srv.Listener.Addr().String()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ref := host + "/a/b@" + img.md.String()
		_, _, err := Pull(ctx, ref, newStore(t), PullOptions{
			Resolver: plainResolver(t, "", host), Retries: 3, RetryBackoff: time.Millisecond})
		t.Logf("error: %v", err)
		if n := reqs.Load(); n != 3 {
			t.Fatalf("%d manifest requests, want exactly 3 (Retries)", n)
		}
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), ref+": manifest "+img.md.String()+": giving up after 3 attempts") ||
			!strings.Contains(err.Error(), "503 Service Unavailable: UNAVAILABLE: try later") {
			t.Fatalf("want an Unavailable error naming the reference, the attempts and the last status, got: %v", err)
		}
	})
}

// TestPushUploadRetriesBounded: an upload whose POST always gets 503 is
// attempted Retries times in all, not Retries POSTs per upload attempt.
func TestPushUploadRetriesBounded(t *testing.T) {
	img := newFakeImage(t, []byte("layer bytes"))
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case r.Method == http.MethodHead:
			w.WriteHeader(http.StatusNotFound)
		case r.Method == http.MethodPost:
			posts.Add(1)
			unavailable(w)
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	host := srv.Listener.Addr().String()
	store := newStore(t)
	for _, b := range append([][]byte{img.config, img.manifest}, img.layers...) {
		putBlob(t, store, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := Push(ctx, host+"/a/b:v1", img.root(), store, PushOptions{
		Resolver: plainResolver(t, "", host), Retries: 3, RetryBackoff: time.Millisecond, Concurrency: 1})
	t.Logf("error: %v", err)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "503 Service Unavailable") {
		t.Fatalf("want the 503 as Unavailable, got: %v", err)
	}
	if n := posts.Load(); n != 3 {
		t.Fatalf("%d upload POSTs, want exactly 3 (Retries)", n)
	}
}

// TestPullSilentServer: a registry that accepts the connection and never
// answers is given up on after IdleTimeout per attempt (not the
// transport's fixed header timeout), for manifests, tokens and blobs alike,
// with an error naming what got no answer.
func TestPullSilentServer(t *testing.T) {
	const idle = 300 * time.Millisecond
	// silent holds a request until the client goes away or the test ends.
	silent := func(t *testing.T) func(w http.ResponseWriter, r *http.Request) {
		done := make(chan struct{})
		t.Cleanup(func() { close(done) })
		return func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-done:
			case <-r.Context().Done():
			}
		}
	}
	pull := func(t *testing.T, host string) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		begin := time.Now()
		_, _, err := Pull(ctx, host+"/a/b:v1", newStore(t), PullOptions{
			Resolver: plainResolver(t, "", host), IdleTimeout: idle, Retries: 2, RetryBackoff: time.Millisecond})
		el := time.Since(begin)
		t.Logf("after %s: %v", el.Round(time.Millisecond), err)
		if errors.Is(err, context.DeadlineExceeded) || el > 5*time.Second {
			t.Fatalf("a silent server held the pull for %s (the caller's context or a fixed timeout ended it): %v", el.Round(time.Millisecond), err)
		}
		return el, err
	}

	t.Run("manifest", func(t *testing.T) {
		img := newFakeImage(t)
		hold := silent(t)
		var reqs atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/v2/a/b/manifests/") {
				reqs.Add(1)
				hold(w, r)
				return
			}
			img.serve(w, r)
		}))
		defer srv.Close()
		host := srv.Listener.Addr().String()
		_, err := pull(t, host)
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "HEAD /v2/a/b/manifests/v1: no answer in 300ms") {
			t.Fatalf("want an Unavailable error naming the unanswered manifest request, got: %v", err)
		}
		if n := reqs.Load(); n != 2 {
			t.Fatalf("%d manifest requests, want 2 (Retries)", n)
		}
	})

	t.Run("token", func(t *testing.T) {
		hold := silent(t)
		var host string
		var tokens atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/token" {
				tokens.Add(1)
				hold(w, r)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+host+`/token",service="s"`)
			w.WriteHeader(http.StatusUnauthorized)
		}))
		defer srv.Close()
		host = srv.Listener.Addr().String()
		_, err := pull(t, host)
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "token endpoint "+host+": no answer in 300ms") {
			t.Fatalf("want an Unavailable error naming the unanswered token endpoint, got: %v", err)
		}
		if n := tokens.Load(); n != 2 {
			t.Fatalf("%d token requests, want 2 (Retries)", n)
		}
	})

	t.Run("blob resumed", func(t *testing.T) {
		layer := []byte("layer bytes")
		img := newFakeImage(t, layer)
		hold := silent(t)
		var gets atomic.Int32
		ld := "/v2/a/b/blobs/" + img.root().Digest.Algorithm().FromBytes(layer).String()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == ld && gets.Add(1) == 1 {
				hold(w, r)
				return
			}
			img.serve(w, r)
		}))
		defer srv.Close()
		host := srv.Listener.Addr().String()
		if _, err := pull(t, host); err != nil {
			t.Fatalf("pull after one unanswered blob request: %v", err)
		}
		if n := gets.Load(); n != 2 {
			t.Fatalf("%d blob requests, want 2 (one unanswered, one retry)", n)
		}
	})
}
