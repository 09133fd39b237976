package remotes

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

// challenge is a parsed WWW-Authenticate header.
type challenge struct {
	scheme  string // "basic" or "bearer"
	realm   string
	service string
	scope   string
}

// parseChallenges picks the first Bearer or Basic challenge of the
// WWW-Authenticate headers (RFC 7235 syntax: scheme k="v", k=v, ...).
func parseChallenges(values []string) (challenge, bool) {
	var basic *challenge
	for _, v := range values {
		scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
		c := challenge{scheme: strings.ToLower(scheme)}
		params := parseAuthParams(rest)
		c.realm, c.service, c.scope = params["realm"], params["service"], params["scope"]
		switch c.scheme {
		case "bearer":
			if c.realm != "" {
				return c, true
			}
		case "basic":
			basic = &c
		}
	}
	if basic != nil {
		return *basic, true
	}
	return challenge{}, false
}

func parseAuthParams(s string) map[string]string {
	out := map[string]string{}
	for len(s) > 0 && len(out) < 16 {
		s = strings.TrimLeft(s, " ,\t")
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		var v string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest); i++ {
				c := rest[i]
				if c == '\\' && i+1 < len(rest) {
					i++
					b.WriteByte(rest[i])
					continue
				}
				if c == '"' {
					break
				}
				b.WriteByte(c)
			}
			v = b.String()
			if i < len(rest) {
				i++
			}
			s = rest[i:]
		} else {
			v, s, _ = strings.Cut(rest, ",")
			v = strings.TrimSpace(v)
		}
		out[k] = v
	}
	return out
}

// authState is a Resolver's in-memory authentication state: the last
// challenge per host and bearer tokens per (host, scope), kept for their
// lifetime.
type authState struct {
	mu         sync.Mutex
	challenges map[string]challenge
	tokens     map[string]*tokenEntry // host + " " + scope
}

type tokenEntry struct {
	mu      sync.Mutex // held while the token is being fetched
	token   string
	expires time.Time
}

// maxTokenResponse bounds a token endpoint's response body.
const maxTokenResponse = 1 << 20

func newAuthState() *authState {
	return &authState{challenges: map[string]challenge{}, tokens: map[string]*tokenEntry{}}
}

func (a *authState) challenge(host string) (challenge, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.challenges[host]
	return c, ok
}

func (a *authState) setChallenge(host string, c challenge) {
	a.mu.Lock()
	a.challenges[host] = c
	a.mu.Unlock()
}

func (a *authState) entry(host, scope string) *tokenEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := host + " " + scope
	e := a.tokens[key]
	if e == nil {
		// Drop expired entries so the map stays small.
		now := time.Now()
		for k, old := range a.tokens {
			if old.mu.TryLock() {
				if old.token != "" && now.After(old.expires) {
					delete(a.tokens, k)
				}
				old.mu.Unlock()
			}
		}
		e = &tokenEntry{}
		a.tokens[key] = e
	}
	return e
}

// invalidate forgets the token for (host, scope).
func (a *authState) invalidate(host, scope string) {
	e := a.entry(host, scope)
	e.mu.Lock()
	e.token = ""
	e.mu.Unlock()
}

// token returns a valid bearer token for (host, scope), fetching one from the
// challenge's realm when none is cached.
func (r *Resolver) token(ctx context.Context, ep *endpoint, c challenge, scope string, cred Credentials) (string, error) {
	e := r.auth.entry(ep.host, scope)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.token != "" && time.Now().Before(e.expires) {
		return e.token, nil
	}
	tok, lifetime, err := r.fetchToken(ctx, ep, c, scope, cred)
	if err != nil {
		return "", err
	}
	e.token = tok
	// Refresh a little before the server's deadline.
	e.expires = time.Now().Add(lifetime - lifetime/10)
	return tok, nil
}

func (r *Resolver) fetchToken(ctx context.Context, ep *endpoint, c challenge, scope string, cred Credentials) (string, time.Duration, error) {
	realm, err := url.Parse(c.realm)
	if err != nil || (realm.Scheme != "https" && realm.Scheme != "http") || realm.Host == "" {
		return "", 0, fmt.Errorf("registry %s: bad token realm %q: %w", ep.host, c.realm, errdefs.ErrUnavailable)
	}
	// As in send: the request's own context lets its watchdog end a token
	// request that gets no answer, or a stalled response, without ending
	// the caller's context.
	rctx, wd := newWatchdog(ctx, ep.idle)
	defer wd.close()
	scopes := []string{scope}
	if c.scope != "" && c.scope != scope {
		scopes = append(scopes, c.scope)
	}
	var req *http.Request
	if cred.IdentityToken != "" {
		form := url.Values{
			"grant_type":    {"refresh_token"},
			"refresh_token": {cred.IdentityToken},
			"service":       {c.service},
			"client_id":     {"edged"},
			"scope":         {strings.Join(scopes, " ")},
		}
		req, err = http.NewRequestWithContext(rctx, http.MethodPost, realm.String(), strings.NewReader(form.Encode()))
		if err != nil {
			return "", 0, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		q := realm.Query()
		if c.service != "" {
			q.Set("service", c.service)
		}
		for _, s := range scopes {
			q.Add("scope", s)
		}
		realm.RawQuery = q.Encode()
		req, err = http.NewRequestWithContext(rctx, http.MethodGet, realm.String(), nil)
		if err != nil {
			return "", 0, err
		}
		if cred.Username != "" || cred.Password != "" {
			req.SetBasicAuth(cred.Username, cred.Password)
		}
	}
	req.Header.Set("User-Agent", r.userAgent)
	resp, err := ep.client.Do(req)
	if err == nil && !wd.progress() {
		// The answer came as the deadline passed: too late.
		resp.Body.Close()
		resp, err = nil, context.Canceled
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return "", 0, cerr
		}
		if wd.expired() {
			return "", 0, fmt.Errorf("registry %s: token endpoint %s: no answer in %s: %w", ep.host, realm.Host, wd.idle, errdefs.ErrUnavailable)
		}
		if rerr := refusedRedirect(err); rerr != nil {
			return "", 0, fmt.Errorf("registry %s: token endpoint %s: %w", ep.host, realm.Host, rerr)
		}
		return "", 0, fmt.Errorf("registry %s: token endpoint %s: %w: %w", ep.host, realm.Host, err, errdefs.ErrUnavailable)
	}
	rb := wd.response(resp.Body)
	defer rb.Close()
	body, err := io.ReadAll(io.LimitReader(rb, maxTokenResponse+1))
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return "", 0, cerr
		}
		return "", 0, fmt.Errorf("registry %s: token endpoint %s: %w: %w", ep.host, realm.Host, err, errdefs.ErrUnavailable)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return "", 0, fmt.Errorf("registry %s: token endpoint %s refused %s for scope %q (%s): %w",
			ep.host, realm.Host, r.who(cred), strings.Join(scopes, " "), resp.Status, errdefs.ErrPermissionDenied)
	case resp.StatusCode != http.StatusOK:
		return "", 0, fmt.Errorf("registry %s: token endpoint %s: %s: %w", ep.host, realm.Host, resp.Status, errdefs.ErrUnavailable)
	case len(body) > maxTokenResponse:
		return "", 0, fmt.Errorf("registry %s: token endpoint %s: response larger than %d bytes: %w", ep.host, realm.Host, maxTokenResponse, errdefs.ErrUnavailable)
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", 0, fmt.Errorf("registry %s: token endpoint %s: bad response: %v: %w", ep.host, realm.Host, err, errdefs.ErrUnavailable)
	}
	tok := tr.Token
	if tok == "" {
		tok = tr.AccessToken
	}
	if tok == "" {
		return "", 0, fmt.Errorf("registry %s: token endpoint %s returned no token: %w", ep.host, realm.Host, errdefs.ErrUnavailable)
	}
	lifetime := time.Duration(tr.ExpiresIn) * time.Second
	if tr.ExpiresIn <= 0 || tr.ExpiresIn > 24*3600 {
		lifetime = 60 * time.Second // the spec's default
	}
	return tok, lifetime, nil
}

// who describes credentials for error messages, never showing secrets.
func (r *Resolver) who(cred Credentials) string {
	switch {
	case cred.Username != "":
		return fmt.Sprintf("user %q", cred.Username)
	case cred.IdentityToken != "":
		return "the identity token"
	default:
		return "anonymous access"
	}
}

// scopeFor returns the token scope of an operation on repo.
func scopeFor(repo string, push bool) string {
	actions := []string{"pull"}
	if push {
		actions = append(actions, "push")
	}
	return "repository:" + repo + ":" + strings.Join(actions, ",")
}
