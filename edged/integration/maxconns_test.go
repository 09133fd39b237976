package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/internal/testutil"
)

// api.max_connections: with two clients connected to an edged that allows
// two, edgectl gets an error naming the setting and exits 1, and edged
// logs a warning; once a client has gone, edgectl works again.
func TestAPIMaxConnections(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	p := filepath.Join(dir, "edged.toml")
	if err := os.WriteFile(p, []byte("[api]\nmax_connections = 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: dir, Args: []string{"--config", p}})
	ctx := ctxT(t)
	var held []*client.Client
	for range 2 {
		c, err := client.New(ctx, d.Address)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Version(ctx); err != nil {
			t.Fatalf("a client within the limit: %v", err)
		}
		held = append(held, c)
	}
	c := cli{t: t, env: []string{"EDGED_ADDRESS=" + d.Address}}
	_, errOut, code := c.run("version")
	want := "edged has reached its limit of 2 open API connections (api.max_connections): close idle connections or raise the limit"
	if code != 1 || !strings.Contains(errOut, want) {
		t.Fatalf("edgectl version over the limit: exit %d, stderr %q; want exit 1 and %q", code, errOut, want)
	}
	if log := d.Log(); !strings.Contains(log, "api: connection refused: too many open (api.max_connections)") || !strings.Contains(log, "limit=2") {
		t.Fatalf("edged's log has no warning about the refused connection:\n%s", log)
	}
	held[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, errOut, code = c.run("version")
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edgectl version after a client left: exit %d, stderr %q", code, errOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
