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

// Config.IdleTimeout reaches the helper and bounds the requests of pulls
// and pushes: against a registry that never answers, both fail after the
// retries with a message naming the request and the timeout, in seconds
// (with the default 60 s idle timeout they would take minutes).
func TestIdleTimeoutReachesHelper(t *testing.T) {
	addr := testregistry.Silent(t)
	c, err := registry.New(registry.Config{Helper: helperBin, Hosts: map[string]registry.HostConfig{addr: {PlainHTTP: true}},
		DockerConfig: "/nonexistent/config.json", IdleTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	store, err := content.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	check := func(op string, err error, elapsed time.Duration, want string) {
		t.Helper()
		t.Logf("%s failed after %v: %v", op, elapsed.Round(time.Millisecond), err)
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want unavailable containing %q", op, err, want)
		}
		if elapsed > 20*time.Second {
			t.Errorf("%s failed after %v", op, elapsed)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, _, err = c.Pull(ctx, store.Root(), addr+"/x:y", registry.PullOptions{})
	check("pull", err, time.Since(start), "registry "+addr+": HEAD /v2/x/manifests/y: no answer in 300ms")

	img := smallImage(t)
	src := storeWith(t, img)
	pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer pcancel()
	start = time.Now()
	err = c.Push(pctx, src.Root(), addr+"/x:y", img.Manifest, registry.PushOptions{})
	check("push", err, time.Since(start), "registry "+addr+": HEAD /v2/x/blobs/sha256:")
	if err != nil && !strings.Contains(err.Error(), "no answer in 300ms") {
		t.Errorf("push: err = %v, want the idle timeout named", err)
	}
}

func TestIdleTimeoutNegative(t *testing.T) {
	_, err := registry.New(registry.Config{IdleTimeout: -time.Second})
	if want := "registry idle timeout: -1s must not be negative: invalid argument"; err == nil || err.Error() != want || !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}
