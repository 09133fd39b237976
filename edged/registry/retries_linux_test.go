package registry_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/registry"
	"github.com/edged/edged/fsstore/content"
)

// unavailable is a registry that answers 503 to everything and counts the
// requests by method and path.
type unavailable struct {
	mu   sync.Mutex
	reqs map[string]int
	addr string
}

func startUnavailable(t *testing.T) *unavailable {
	t.Helper()
	u := &unavailable{reqs: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs[r.Method+" "+r.URL.Path]++
		u.mu.Unlock()
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	u.addr = ln.Addr().String()
	return u
}

// take returns the counts so far and starts again.
func (u *unavailable) take() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := u.reqs
	u.reqs = map[string]int{}
	return m
}

// Config.Retries and RetryBackoff reach the helper: against a registry
// that answers 503 to everything, a pull tries its first request exactly
// Retries times, a push too, and PullOptions override them for one pull.
func TestRetriesReachHelper(t *testing.T) {
	u := startUnavailable(t)
	hosts := map[string]registry.HostConfig{u.addr: {PlainHTTP: true}}
	store, err := content.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	manifest := "HEAD /v2/x/manifests/y"
	wantFail := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "503") {
			t.Fatalf("%s: err = %v, want unavailable naming the 503", op, err)
		}
	}
	for _, retries := range []int{2, 3} {
		c, err := registry.New(registry.Config{Helper: helperBin, Hosts: hosts, DockerConfig: "/nonexistent/config.json",
			Retries: retries, RetryBackoff: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = c.Pull(ctx, store.Root(), u.addr+"/x:y", registry.PullOptions{})
		wantFail("pull", err)
		if got := u.take(); got[manifest] != retries || len(got) != 1 {
			t.Errorf("pull with Retries %d: requests %v, want %q %d times and nothing else", retries, got, manifest, retries)
		}
		if retries == 2 {
			_, _, err = c.Pull(ctx, store.Root(), u.addr+"/x:y", registry.PullOptions{Retries: 4})
			wantFail("pull with its own retries", err)
			if got := u.take(); got[manifest] != 4 {
				t.Errorf("pull with PullOptions.Retries 4 over Config's 2: requests %v, want %q 4 times", got, manifest)
			}
		}
		img := smallImage(t)
		err = c.Push(ctx, storeWith(t, img).Root(), u.addr+"/x:y", img.Manifest, registry.PushOptions{})
		wantFail("push", err)
		// Blobs are pushed a few at a time: the request that failed first
		// made Retries attempts, the others at most as many.
		most := 0
		got := u.take()
		for _, n := range got {
			most = max(most, n)
		}
		if most != retries {
			t.Errorf("push with Retries %d: requests %v, want at most %d of each and one with %d", retries, got, retries, retries)
		}
	}
}

// A negative retry setting is refused by name.
func TestRetriesNegative(t *testing.T) {
	for cfg, want := range map[*registry.Config]string{
		{Retries: -1}:                "registry retries: -1 must not be negative: invalid argument",
		{RetryBackoff: -time.Second}: "registry retry backoff: -1s must not be negative: invalid argument",
	} {
		if _, err := registry.New(*cfg); err == nil || err.Error() != want || !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
}
