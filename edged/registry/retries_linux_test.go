package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/registry"
	"github.com/edged/edged/fsstore/content"
	testregistry "github.com/edged/edged/internal/testutil/registry"
)

// Config.Retries and RetryBackoff reach the helper: against a registry
// that answers 503 to everything, a pull tries its first request exactly
// Retries times, a push too, and PullOptions override them for one pull.
func TestRetriesReachHelper(t *testing.T) {
	u := testregistry.StartUnavailable(t)
	hosts := map[string]registry.HostConfig{u.Addr: {PlainHTTP: true}}
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
		_, _, err = c.Pull(ctx, store.Root(), u.Addr+"/x:y", registry.PullOptions{})
		wantFail("pull", err)
		if got := u.Take(); got[manifest] != retries || len(got) != 1 {
			t.Errorf("pull with Retries %d: requests %v, want %q %d times and nothing else", retries, got, manifest, retries)
		}
		if retries == 2 {
			_, _, err = c.Pull(ctx, store.Root(), u.Addr+"/x:y", registry.PullOptions{Retries: 4})
			wantFail("pull with its own retries", err)
			if got := u.Take(); got[manifest] != 4 {
				t.Errorf("pull with PullOptions.Retries 4 over Config's 2: requests %v, want %q 4 times", got, manifest)
			}
		}
		img := smallImage(t)
		err = c.Push(ctx, storeWith(t, img).Root(), u.Addr+"/x:y", img.Manifest, registry.PushOptions{})
		wantFail("push", err)
		// Blobs are pushed a few at a time: the request that failed first
		// made Retries attempts, the others at most as many.
		most := 0
		got := u.Take()
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
