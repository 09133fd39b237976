package measure

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	ptypes "github.com/gogo/protobuf/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/oci"
	containersapi "github.com/edged/edged/proto/services/containers/v1"
)

// specTypeURL is the type of an OCI runtime spec in a container record.
const specTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

// BenchSpec returns the JSON OCI spec the benchmarks store with each
// container: edged's default spec for a typical service (about 3 KiB), so
// that the bytes per operation are realistic.
func BenchSpec() ([]byte, error) {
	img := &ocispec.ImageConfig{
		User:       "1000:1000",
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Entrypoint: []string{"/bin/sensor-agent"},
		Cmd:        []string{"--interval", "5s"},
		WorkingDir: "/",
	}
	s, err := oci.Generate(context.Background(), "bench", "bench", "", img,
		oci.WithHostname("edge"), oci.WithMemoryLimit(64<<20), oci.WithPidsLimit(64))
	if err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// BenchContainer returns the container record the benchmarks create.
func BenchContainer(id string, spec []byte) *client.Container {
	return &client.Container{
		Id:      id,
		Image:   "registry.local/fleet/sensor-agent:1.4.2",
		Labels:  map[string]string{"app": "sensor-agent", "fleet.rev": "42"},
		Runtime: &containersapi.Container_Runtime{Name: "io.containerd.runc.v2"},
		Spec:    &ptypes.Any{TypeUrl: specTypeURL, Value: spec},
	}
}

// APICalls makes n (rounded down to a multiple of 10) namespace and
// container calls: each round of ten creates, labels, lists and deletes a
// namespace, and creates, reads, labels, lists and deletes a container in
// namespace "bench" (every tenth container is kept, so the database is not
// empty afterwards). tag makes the names unique between runs on one edged.
func APICalls(ctx context.Context, c *client.Client, n int, spec []byte, tag string) error {
	bctx := c.WithNamespace(ctx, "bench")
	for i := 0; i < n/10; i++ {
		ns := "tmp-" + tag + strconv.Itoa(i)
		id := "ctr-" + tag + strconv.Itoa(i)
		steps := []func() error{
			func() error { _, err := c.CreateNamespace(ctx, ns, map[string]string{"owner": "bench"}); return err },
			func() error {
				_, err := c.SetNamespaceLabels(ctx, ns, map[string]string{"round": strconv.Itoa(i)})
				return err
			},
			func() error { _, err := c.ListNamespaces(ctx); return err },
			func() error { return c.DeleteNamespace(ctx, ns) },
			func() error { _, err := c.CreateContainer(bctx, BenchContainer(id, spec)); return err },
			func() error { _, err := c.GetContainer(bctx, id); return err },
			func() error {
				_, err := c.SetContainerLabels(bctx, id, map[string]string{"round": strconv.Itoa(i)})
				return err
			},
			func() error { _, err := c.ListContainers(bctx, `labels."app"==sensor-agent`); return err },
			func() error {
				if i%10 == 0 {
					_, err := c.GetNamespace(ctx, "bench")
					return err
				}
				return c.DeleteContainer(bctx, id)
			},
			func() error { _, err := c.Version(ctx); return err },
		}
		for k, step := range steps {
			if err := step(); err != nil {
				return fmt.Errorf("API call %d of round %d: %w", k, i, err)
			}
		}
	}
	return nil
}

// RoundTrips runs the command n times (after 5 unmeasured warm-up runs)
// and returns the wall time of each run, from fork to exit.
func RoundTrips(ctx context.Context, n int, want string, name string, args ...string) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	var stdout bytes.Buffer
	for i := -5; i < n; i++ {
		stdout.Reset()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Stdout = &stdout
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		err := cmd.Run()
		d := time.Since(start)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w: %s", name, args, err, stderr.Bytes())
		}
		if !bytes.Contains(stdout.Bytes(), []byte(want)) {
			return nil, fmt.Errorf("%s %q: output lacks %q: %s", name, args, want, stdout.Bytes())
		}
		if i >= 0 {
			out = append(out, d)
		}
	}
	return out, nil
}

// Percentile returns the p-th Percentile (0..100) of ds, nearest rank.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Throughput is the result of a create+delete run.
type Throughput struct {
	Ops     int
	Elapsed time.Duration
	// Windows are the durations of consecutive windows of Window
	// completed operations.
	Windows []time.Duration
}

// Rate is the overall operations per second.
func (t Throughput) Rate() float64 { return float64(t.Ops) / t.Elapsed.Seconds() }

// SlowestRate is the rate of the slowest window.
func (t Throughput) SlowestRate(window int) float64 {
	if len(t.Windows) == 0 {
		return t.Rate()
	}
	return float64(window) / slices.Max(t.Windows).Seconds()
}

// CreateDelete creates and deletes total containers through clients
// concurrent connections to sock (each creates a container and then
// deletes it, sequentially); one operation is one create plus its delete.
// opts go to client.New after the namespace.
func CreateDelete(ctx context.Context, sock, namespace string, total, clients, window int, spec []byte, opts ...client.Opt) (Throughput, error) {
	clients = max(1, clients)
	cs := make([]*client.Client, clients)
	opts = append([]client.Opt{client.WithNamespace(namespace)}, opts...)
	for i := range cs {
		c, err := client.New(ctx, sock, opts...)
		if err != nil {
			return Throughput{}, err
		}
		defer c.Close()
		cs[i] = c
	}
	var (
		next    atomic.Int64 // next operation index to claim
		done    atomic.Int64 // completed operations
		mu      sync.Mutex
		windows []time.Duration
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	last := start
	for w, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(total) {
					return
				}
				id := fmt.Sprintf("c%d-%d", w, i)
				_, err := c.CreateContainer(ctx, BenchContainer(id, spec))
				if err == nil {
					err = c.DeleteContainer(ctx, id)
				}
				if err != nil {
					errOnce.Do(func() { runErr = fmt.Errorf("container %s: %w", id, err); cancel() })
					return
				}
				if n := done.Add(1); n%int64(window) == 0 {
					now := time.Now()
					mu.Lock()
					windows = append(windows, now.Sub(last))
					last = now
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if runErr != nil {
		return Throughput{}, runErr
	}
	return Throughput{Ops: total, Elapsed: elapsed, Windows: windows}, nil
}

// FileSize returns the size of path, 0 if it does not exist.
func FileSize(path string) int64 {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) || err != nil {
		return 0
	}
	return st.Size()
}
