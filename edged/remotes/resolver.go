package remotes

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/registry"
)

// Defaults of PullOptions and PushOptions.
const (
	DefaultRetries      = 5
	DefaultConcurrency  = 3
	DefaultRetryBackoff = 250 * time.Millisecond
	maxRetryBackoff     = 8 * time.Second
	// maxErrorBody bounds how much of an error response is read.
	maxErrorBody = 64 << 10
	// maxResponseHeader bounds the headers of a response (Go's default is
	// 10 MB, much for a device with 256 MB; registries send a few KiB).
	maxResponseHeader = 1 << 20
)

// Resolver talks to registries: it holds the configuration, the
// credentials read from config.json, two small HTTP clients (verifying and
// not verifying TLS) and the bearer tokens, cached in memory for their
// lifetime. Keep one Resolver for the daemon's lifetime; it is safe for
// concurrent use.
type Resolver struct {
	registries map[string]registryEndpoints
	docker     *dockerConfig
	userAgent  string
	auth       *authState
	client     *http.Client
	insecure   *http.Client
	// override holds credentials given with one request, by origin host.
	override map[string]Credentials
}

// WithCredentials returns a resolver that authenticates to host's
// origin (not its mirrors, which may be operated by someone else) with c
// instead of the docker config, for one pull or push. It shares the HTTP
// clients and keeps its own token cache, so tokens of different
// identities never mix.
func (r *Resolver) WithCredentials(host string, c Credentials) *Resolver {
	cp := *r
	cp.auth = newAuthState()
	cp.override = map[string]Credentials{}
	key := registry.NormalizeHost(host)
	cp.override[key] = c
	if key == DockerHub {
		cp.override[DockerHubHost] = c
	}
	return &cp
}

type registryEndpoints struct {
	mirrors   []*url.URL
	insecure  bool
	plainHTTP bool
}

// endpoint is one base URL serving a registry's API: a mirror or the origin.
type endpoint struct {
	base   *url.URL
	host   string // base.Host: key for credentials and tokens
	client *http.Client
	mirror bool
	idle   time.Duration // stall limit of response bodies (watchBody), set by the session
}

// NewResolver validates cfg and reads the docker config file.
func NewResolver(cfg ResolverConfig) (*Resolver, error) {
	path := cfg.DockerConfig
	if path == "" {
		path = defaultDockerConfigPath()
	}
	dc, err := loadDockerConfig(path)
	if err != nil {
		return nil, err
	}
	r := &Resolver{
		registries: map[string]registryEndpoints{},
		docker:     dc,
		userAgent:  cfg.UserAgent,
		auth:       newAuthState(),
		client:     newHTTPClient(false),
		insecure:   newHTTPClient(true),
	}
	if r.userAgent == "" {
		r.userAgent = "edged"
	}
	for host, rc := range cfg.Registries {
		key := registry.NormalizeHost(host)
		if !registry.ValidHost(key) {
			return nil, errdefs.InvalidArgument("registry", "%q is not a registry host[:port]", host)
		}
		re := registryEndpoints{insecure: rc.Insecure, plainHTTP: rc.PlainHTTP}
		for _, m := range rc.Mirrors {
			u, err := registry.ParseMirror(m)
			if err != nil {
				return nil, errdefs.InvalidArgument("registry "+host+" mirror", "%v", err)
			}
			re.mirrors = append(re.mirrors, u)
		}
		r.registries[key] = re
	}
	return r, nil
}

// newHTTPClient builds a client with a small transport: HTTP/1.1 only (Go's
// HTTP/2 transport lets a server push up to 4 MiB per stream before the
// reader consumes it, which alone would blow the daemon's memory budget
// with three parallel downloads), at most two idle connections per host,
// response headers of at most 1 MiB. Redirects keep credentials within
// their origin (checkRedirect). It has no ResponseHeaderTimeout: the
// watchdog of each exchange bounds the wait for an answer with the
// session's idle timeout (PullOptions.IdleTimeout), manifests and tokens
// as much as blobs.
func newHTTPClient(insecure bool) *http.Client {
	tr := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:    15 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxResponseHeader,
		MaxIdleConns:           4,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        30 * time.Second,
		ForceAttemptHTTP2:      false,
		TLSNextProto:           map[string]func(string, *tls.Conn) http.RoundTripper{},
		TLSClientConfig:        &tls.Config{InsecureSkipVerify: insecure, MinVersion: tls.VersionTLS12}, //nolint:gosec // only when configured
	}
	return &http.Client{Transport: tr, CheckRedirect: checkRedirect}
}

// checkRedirect bounds redirects and keeps credentials within their
// origin. Go's client forwards Authorization to any URL whose host name is
// the same (or a subdomain), whatever its port or scheme, so another
// service on the registry's machine, or anyone on the path of a plain HTTP
// connection, could receive credentials meant for the registry. Here a
// redirect to another origin (scheme, host or port) is followed without
// Authorization, the only credential the resolver sets (blob redirects to
// a storage service carry their own signature in the URL), and a redirect
// from HTTPS to plain HTTP is refused: what was asked over TLS must not be
// answered in clear text.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if prev := via[len(via)-1].URL; prev.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirected from %s to %s: refusing to leave HTTPS for plain HTTP: %w",
			redactURL(prev), redactURL(req.URL), errdefs.ErrFailedPrecondition)
	}
	if !sameOrigin(req.URL, via[0].URL) {
		req.Header.Del("Authorization")
	}
	return nil
}

// sameOrigin reports whether a and b have the same scheme, host and port
// (a missing port being the scheme's default).
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && hostPort(a) == hostPort(b)
}

func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// redactURL shows u without its query (signed URLs of blob storage carry
// secrets there) or user info, for error messages.
func redactURL(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// refusedRedirect returns the error of checkRedirect in err, or nil:
// retrying cannot help, so it must not be reported as ErrUnavailable.
func refusedRedirect(err error) error {
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		return nil
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// url.Error quotes the whole target URL, query included.
		return ue.Err
	}
	return err
}

// Close drops idle connections.
func (r *Resolver) Close() {
	r.client.CloseIdleConnections()
	r.insecure.CloseIdleConnections()
}

// endpoints lists the endpoints of a registry: for pulls its mirrors in
// order, then the origin; for pushes only the origin.
func (r *Resolver) endpoints(registry string, pull bool) []*endpoint {
	rc := r.registries[registry]
	client := r.client
	if rc.insecure {
		client = r.insecure
	}
	var eps []*endpoint
	if pull {
		for _, m := range rc.mirrors {
			eps = append(eps, &endpoint{base: m, host: m.Host, client: client, mirror: true})
		}
	}
	host := registry
	if host == DockerHub {
		host = DockerHubHost
	}
	scheme := "https"
	if rc.plainHTTP {
		scheme = "http"
	}
	return append(eps, &endpoint{base: &url.URL{Scheme: scheme, Host: host}, host: host, client: client})
}

// credentials returns the credentials for an endpoint host.
func (r *Resolver) credentials(host string) (Credentials, error) {
	if c, ok := r.override[host]; ok {
		return c, nil
	}
	return r.docker.credentials(host)
}

// request is one registry API call.
type request struct {
	method string
	path   string   // below <base>/v2/, e.g. "library/busybox/manifests/latest"
	url    *url.URL // absolute URL (upload locations); overrides path
	header http.Header
	body   func() (io.ReadCloser, error) // nil: no body
	length int64
	scope  string
}

func (rq *request) target(ep *endpoint) *url.URL {
	if rq.url != nil {
		return rq.url
	}
	u := *ep.base
	u.Path = ep.base.Path + "/v2/" + rq.path
	u.RawPath = ""
	return &u
}

// send performs rq once against ep, authenticating as the registry demands:
// a 401 records the challenge (Basic, or Bearer with realm/service/scope),
// and the request is repeated once with credentials or a token. Further
// requests to the host authenticate up front. Credentials are only sent to
// ep's own origin (scheme, host and port). The body of the response is
// bounded by an idle watchdog (watchBody): reading it fails with a
// *stallError when it makes too little progress.
func (r *Resolver) send(ctx context.Context, ep *endpoint, rq *request) (*http.Response, error) {
	u := rq.target(ep)
	own := sameOrigin(u, ep.base)
	for try := 0; ; try++ {
		resp, again, err := r.sendOnce(ctx, ep, rq, u, own, try)
		if !again {
			return resp, err
		}
	}
}

// sendOnce is one try of send; again says that the registry answered 401
// and the request is to be repeated with the credentials it asked for.
func (r *Resolver) sendOnce(ctx context.Context, ep *endpoint, rq *request, u *url.URL, own bool, try int) (_ *http.Response, again bool, _ error) {
	header := http.Header{}
	for k, v := range rq.header {
		header[k] = v
	}
	header.Set("User-Agent", r.userAgent)
	sentAuth, basic := false, false
	var cred Credentials
	if c, ok := r.auth.challenge(ep.host); ok && own {
		var err error
		if cred, err = r.credentials(ep.host); err != nil {
			return nil, false, err
		}
		switch c.scheme {
		case "basic":
			if !cred.Empty() {
				sentAuth, basic = true, true
			}
		case "bearer":
			tok, err := r.token(ctx, ep, c, rq.scope, cred)
			if err != nil {
				return nil, false, err
			}
			header.Set("Authorization", "Bearer "+tok)
			sentAuth = true
		}
	}
	// The request has its own context, which its watchdog cancels when the
	// exchange stalls (no answer, a stalled upload or body) without ending
	// the caller's; closing the response body releases it.
	rctx, wd := newWatchdog(ctx, ep.idle)
	req, err := http.NewRequestWithContext(rctx, rq.method, u.String(), nil)
	if err != nil {
		wd.close()
		return nil, false, fmt.Errorf("registry %s: %w", ep.host, err)
	}
	req.Header = header
	if basic {
		req.SetBasicAuth(cred.Username, cred.Password)
	}
	if rq.body != nil {
		b, err := rq.body()
		if err != nil {
			wd.close()
			return nil, false, err
		}
		req.Body, req.ContentLength = wd.upload(b), rq.length
		if rq.length == 0 {
			b.Close()
			req.Body = http.NoBody
		}
	}
	resp, err := ep.client.Do(req)
	if err == nil && !wd.progress() {
		// The answer came as the deadline passed: too late.
		resp.Body.Close()
		resp, err = nil, context.Canceled
	}
	if err != nil {
		wd.close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, false, cerr
		}
		if wd.expired() {
			return nil, false, fmt.Errorf("registry %s: %s %s: no answer in %s: %w", ep.host, rq.method, u.Path, wd.idle, errdefs.ErrUnavailable)
		}
		if rerr := refusedRedirect(err); rerr != nil {
			return nil, false, fmt.Errorf("registry %s: %s %s: %w", ep.host, rq.method, u.Path, rerr)
		}
		return nil, false, fmt.Errorf("registry %s: %s %s: %w: %w", ep.host, rq.method, u.Path, err, errdefs.ErrUnavailable)
	}
	// From here the body owns the exchange: closing it ends it.
	resp.Body = wd.response(resp.Body)
	// Only a 401 of the registry's own origin is its challenge; one from a
	// redirect target elsewhere could name a token realm of its choosing,
	// to which credentials would then be sent.
	if resp.StatusCode != http.StatusUnauthorized || !own || !sameOrigin(resp.Request.URL, ep.base) {
		return resp, false, nil
	}
	c, ok := parseChallenges(resp.Header.Values("Www-Authenticate"))
	discard(resp)
	if !ok {
		return nil, false, fmt.Errorf("registry %s: %s %s: %s without a Basic or Bearer challenge: %w",
			ep.host, rq.method, u.Path, resp.Status, errdefs.ErrPermissionDenied)
	}
	r.auth.setChallenge(ep.host, c)
	if try > 0 || (sentAuth && c.scheme == "basic") {
		return nil, false, fmt.Errorf("registry %s: %s %s: %s: access denied for %s (credentials from %s): %w",
			ep.host, rq.method, u.Path, resp.Status, r.who(cred), r.docker.path, errdefs.ErrPermissionDenied)
	}
	if sentAuth {
		r.auth.invalidate(ep.host, rq.scope)
	}
	if cred, err = r.credentials(ep.host); err != nil {
		return nil, false, err
	}
	if c.scheme == "basic" && cred.Empty() {
		return nil, false, fmt.Errorf("registry %s: %s %s: authentication required and no credentials for %s in %s: %w",
			ep.host, rq.method, u.Path, ep.host, r.docker.path, errdefs.ErrPermissionDenied)
	}
	return nil, true, nil
}

// discard drains a little of resp's body, so the connection can be reused,
// and closes it.
func discard(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
}

// retrier bounds and spaces retries.
type retrier struct {
	attempts int
	backoff  time.Duration
}

func newRetrier(retries int, backoff time.Duration) retrier {
	if retries <= 0 {
		retries = DefaultRetries
	}
	if backoff <= 0 {
		backoff = DefaultRetryBackoff
	}
	return retrier{attempts: retries, backoff: backoff}
}

// wait sleeps before retry number n (0-based): backoff*2^n, capped, with
// jitter; it returns early with ctx's error.
func (rt retrier) wait(ctx context.Context, n int) error {
	d := rt.backoff << min(n, 10)
	if d > maxRetryBackoff || d <= 0 {
		d = maxRetryBackoff
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// transient reports whether a status is worth retrying.
func transient(code int) bool {
	return code == http.StatusTooManyRequests || code >= 500
}

// do sends rq, retrying transient failures (network errors, 5xx, 429) with
// exponential backoff. Mirrors are not retried: the caller moves on to the
// next endpoint. Any other response is returned for the caller to judge.
func (r *Resolver) do(ctx context.Context, ep *endpoint, rq *request, rt retrier) (*http.Response, error) {
	for n := 0; ; n++ {
		resp, err := r.send(ctx, ep, rq)
		if err == nil && !transient(resp.StatusCode) {
			return resp, nil
		}
		if err == nil {
			err = statusError(ep, rq, resp)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, errdefs.ErrUnavailable) || ep.mirror || n+1 >= rt.attempts {
			return nil, err
		}
		if werr := rt.wait(ctx, n); werr != nil {
			return nil, werr
		}
	}
}

// statusError turns an unexpected response into an error of the matching
// kind, quoting the registry's error codes, and closes the body.
func statusError(ep *endpoint, rq *request, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	var detail string
	var er struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &er) == nil && len(er.Errors) > 0 {
		var parts []string
		for i, e := range er.Errors {
			if i == 4 {
				break
			}
			parts = append(parts, e.Code+": "+e.Message)
		}
		detail = ": " + strings.Join(parts, "; ")
	}
	var kind error
	switch code := resp.StatusCode; {
	case code == http.StatusNotFound:
		kind = errdefs.ErrNotFound
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		kind = errdefs.ErrPermissionDenied
	case transient(code):
		kind = errdefs.ErrUnavailable
	case code == http.StatusRequestedRangeNotSatisfiable:
		kind = errdefs.ErrFailedPrecondition
	default:
		kind = errdefs.ErrFailedPrecondition
	}
	path := rq.target(ep).Path
	return fmt.Errorf("registry %s: %s %s: %s%s: %w", ep.host, rq.method, path, resp.Status, detail, kind)
}
