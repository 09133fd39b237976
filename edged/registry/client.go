// Package registry gives edged image pulls and pushes without linking a
// registry client: the client (package remotes: HTTP, TLS, token auth,
// resumable downloads) runs in edged-remote, a helper process started for
// each pull or push, and writes blobs straight into the content store.
//
// Why a separate process: HTTP and TLS are about a tenth of a static Go
// binary (≈2 MB of code and tables), loaded into a daemon that on a device
// pulls an image a few times a month. Out of edged they cost nothing
// between pulls, and edged's own binary and resident set stay small. The
// price is a process start per pull (a few milliseconds) and bearer tokens
// that are not cached across pulls.
//
// The package also holds what both sides share: image references, registry
// host configuration, credentials, progress events and the line protocol
// between edged and the helper (protocol.go).
package registry

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
)

// HelperName is the helper's binary name.
const HelperName = "edged-remote"

// Config configures a Client.
type Config struct {
	// Helper is the edged-remote binary; empty means the one next to the
	// running executable, else the one on $PATH.
	Helper string
	// Hosts holds per-registry settings by registry host. Docker Hub
	// ("docker.io") is served by registry-1.docker.io.
	Hosts map[string]HostConfig
	// DockerConfig is the path of a docker-style config.json with
	// credentials; empty means $DOCKER_CONFIG/config.json, else
	// ~/.docker/config.json. It is read by the helper at each call, so a
	// changed file takes effect without restarting edged.
	DockerConfig string
	// UserAgent is sent with every request; empty means "edged".
	UserAgent string
	// Logger receives one line per call; nil means slog.Default().
	Logger *slog.Logger
	// ExitGrace is how long the helper has to exit after its last message
	// before it is killed; 0 means 10 s.
	ExitGrace time.Duration
	// IdleTimeout bounds every request of a pull or push (manifests,
	// tokens, blobs, uploads): one that gets no answer, or moves less than
	// 16 KiB, in this long is dropped and retried (remotes.PullOptions
	// IdleTimeout); 0 means the helper's default, 60 s.
	IdleTimeout time.Duration
	// Retries is how many times in all a request of a pull or push is
	// tried, and RetryBackoff the pause before the first retry (doubled
	// at each next one); 0 means the helper's defaults (5, 250 ms).
	// PullOptions may override them for one pull.
	Retries      int
	RetryBackoff time.Duration
}

// Client starts a helper for each pull or push. It is safe for concurrent
// use.
type Client struct {
	cfg Config
	log *slog.Logger
}

// New validates cfg. A missing helper binary is not an error here (a
// device that only imports images does not need it); calls then fail with
// a clear ErrUnavailable.
func New(cfg Config) (*Client, error) {
	if err := ValidateHosts(cfg.Hosts); err != nil {
		return nil, err
	}
	if cfg.IdleTimeout < 0 {
		return nil, errdefs.InvalidArgument("registry idle timeout", "%s must not be negative", cfg.IdleTimeout)
	}
	if cfg.Retries < 0 {
		return nil, errdefs.InvalidArgument("registry retries", "%d must not be negative", cfg.Retries)
	}
	if cfg.RetryBackoff < 0 {
		return nil, errdefs.InvalidArgument("registry retry backoff", "%s must not be negative", cfg.RetryBackoff)
	}
	if cfg.Helper == "" {
		cfg.Helper = findHelper()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ExitGrace <= 0 {
		cfg.ExitGrace = defaultExitGrace
	}
	return &Client{cfg: cfg, log: cfg.Logger}, nil
}

// Helper returns the helper binary the client runs.
func (c *Client) Helper() string { return c.cfg.Helper }

func findHelper() string {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), HelperName)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(HelperName); err == nil {
		return p
	}
	return HelperName
}

// PullOptions tune a Pull.
type PullOptions struct {
	// Platform ("os/arch[/variant]") selects the manifest of a
	// multi-platform image; empty means the helper's host platform.
	Platform string
	// Credentials, when set, authenticate to the reference's registry
	// (not its mirrors) instead of the docker config.
	Credentials *Credentials
	// Progress receives per-blob events, one at a time.
	Progress func(ProgressEvent)
	// BeforeBlob, when set, is called with every blob (manifests, config,
	// layers) before the helper looks for it in the store or writes it; an
	// error stops the pull. Callers lease the blob there.
	BeforeBlob func(ctx context.Context, d ocispec.Descriptor) error
	// Retries and RetryBackoff override Config's for this pull (0: the
	// Config's).
	Retries      int
	RetryBackoff time.Duration
}

// Pull fetches the image ref into the content store at store: the root
// manifest or index, the selected platform's manifest, its config and
// layers, resuming downloads from the bytes already in their ingests. It
// returns the root descriptor and the platform manifest's.
func (c *Client) Pull(ctx context.Context, store, ref string, opts PullOptions) (root, manifest ocispec.Descriptor, err error) {
	req := c.request(OpPull, store, ref, opts.Credentials)
	req.Platform = opts.Platform
	if opts.Retries > 0 {
		req.Retries = opts.Retries
	}
	if opts.RetryBackoff > 0 {
		req.RetryBackoff = opts.RetryBackoff
	}
	req.BeforeBlob = opts.BeforeBlob != nil
	res, err := c.run(ctx, req, opts.Progress, opts.BeforeBlob)
	if err != nil {
		return root, manifest, err
	}
	return res.Root, res.Manifest, nil
}

// PushOptions tune a Push.
type PushOptions struct {
	// Credentials, when set, authenticate to the reference's registry
	// instead of the docker config.
	Credentials *Credentials
	// Progress receives per-blob events, one at a time.
	Progress func(ProgressEvent)
	// ChunkSize, when > 0, uploads blobs in chunks of this size.
	ChunkSize int64
}

// Push sends target (an index or manifest) and every blob it references
// from the content store at store to ref, skipping blobs the registry has.
func (c *Client) Push(ctx context.Context, store, ref string, target ocispec.Descriptor, opts PushOptions) error {
	req := c.request(OpPush, store, ref, opts.Credentials)
	req.Target, req.ChunkSize = &target, opts.ChunkSize
	_, err := c.run(ctx, req, opts.Progress, nil)
	return err
}

func (c *Client) request(op, store, ref string, creds *Credentials) Request {
	if creds != nil && creds.Empty() {
		creds = nil
	}
	return Request{Op: op, Store: store, Ref: ref, Hosts: c.cfg.Hosts, DockerConfig: c.cfg.DockerConfig,
		UserAgent: c.cfg.UserAgent, Credentials: creds, IdleTimeout: c.cfg.IdleTimeout, Retries: c.cfg.Retries, RetryBackoff: c.cfg.RetryBackoff}
}

// maxStderr bounds the helper's stderr kept for error messages.
const maxStderr = 4 << 10

// defaultExitGrace is the default Config.ExitGrace.
const defaultExitGrace = 10 * time.Second

// run starts the helper, sends req and serves its messages until the
// result.
func (c *Client) run(ctx context.Context, req Request, progress func(ProgressEvent), beforeBlob func(context.Context, ocispec.Descriptor) error) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	line, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("registry helper request: %w", err)
	}
	start := time.Now()
	stderr := &tailBuffer{max: maxStderr}
	cmd := exec.Command(c.cfg.Helper)
	cmd.Env = helperEnv(os.Environ())
	cmd.Stderr = stderr
	// The helper dies with edged; it also stops when its stdin closes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("registry helper: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("registry helper: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("registry access needs the %s helper: %w: %w", HelperName, err, errdefs.ErrUnavailable)
	}
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	res, perr := c.serve(ctx, stdin, stdout, append(line, '\n'), progress, beforeBlob)
	stdin.Close()
	if perr != nil && !errors.Is(perr, errHelperFailed) {
		// A broken protocol: do not wait for a helper that may never exit.
		cmd.Process.Kill()
	}
	// A helper that hangs after its last message is killed.
	hung := time.AfterFunc(c.cfg.ExitGrace, func() { cmd.Process.Kill() })
	defer hung.Stop()
	io.Copy(io.Discard, stdout)
	werr := cmd.Wait()
	stop()
	c.log.Info("registry helper", "op", req.Op, "ref", req.Ref, "duration", time.Since(start), "peak_rss_kib", res.peakKiB, "start_rss_kib", res.startKiB)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case perr != nil && !errors.Is(perr, errHelperFailed):
		return nil, fmt.Errorf("registry helper %s: %w%s", req.Op, perr, stderr.suffix())
	case perr != nil:
		return nil, res.err
	case werr != nil:
		return nil, fmt.Errorf("registry helper %s: %v%s: %w", req.Op, werr, stderr.suffix(), errdefs.ErrUnavailable)
	}
	return res.result, nil
}

// helperEnv is the helper's environment: edged's, with one P (a download
// waits on the network; one P saves the per-P caches and threads) unless
// GOMAXPROCS is set.
func helperEnv(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "GOMAXPROCS=") {
			return env
		}
	}
	return append(env, "GOMAXPROCS=1")
}

// errHelperFailed marks a call the helper ended with an Error message.
var errHelperFailed = errors.New("helper reported an error")

type outcome struct {
	result   *Result
	err      error
	peakKiB  int64
	startKiB int64
}

// serve writes the request and handles the helper's lines until its
// Result or Error. A nil error means a Result; errHelperFailed means
// out.err holds the helper's error.
func (c *Client) serve(ctx context.Context, w io.Writer, r io.Reader, req []byte, progress func(ProgressEvent), beforeBlob func(context.Context, ocispec.Descriptor) error) (outcome, error) {
	if _, err := w.Write(req); err != nil {
		return outcome{}, fmt.Errorf("send request: %w: %w", err, errdefs.ErrUnavailable)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLine)
	for sc.Scan() {
		var m Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return outcome{}, fmt.Errorf("malformed message %.80q: %v: %w", sc.Bytes(), err, errdefs.ErrUnknown)
		}
		switch {
		case m.Error != nil:
			return outcome{err: m.Error.Err(), peakKiB: m.PeakRSSKiB, startKiB: m.StartRSSKiB}, errHelperFailed
		case m.Result != nil:
			return outcome{result: m.Result, peakKiB: m.PeakRSSKiB, startKiB: m.StartRSSKiB}, nil
		case m.Progress != nil:
			if progress != nil {
				progress(*m.Progress)
			}
		case m.Blob != nil:
			if beforeBlob == nil {
				return outcome{}, fmt.Errorf("unexpected blob message: %w", errdefs.ErrUnknown)
			}
			rep := Reply{ID: m.ID, Error: ToWire(beforeBlob(ctx, *m.Blob))}
			b, err := json.Marshal(rep)
			if err != nil {
				return outcome{}, err
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return outcome{}, fmt.Errorf("send reply: %w: %w", err, errdefs.ErrUnavailable)
			}
		default:
			return outcome{}, fmt.Errorf("empty message: %w", errdefs.ErrUnknown)
		}
	}
	if err := sc.Err(); err != nil {
		return outcome{}, fmt.Errorf("read: %w: %w", err, errdefs.ErrUnknown)
	}
	if err := ctx.Err(); err != nil {
		return outcome{}, err
	}
	return outcome{}, fmt.Errorf("exited without a result: %w", errdefs.ErrUnavailable)
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// suffix returns "; stderr: <last line(s)>" or "".
func (t *tailBuffer) suffix() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(bytes.ToValidUTF8(t.buf, []byte("?"))))
	if s == "" {
		return ""
	}
	return "; stderr: " + s
}
