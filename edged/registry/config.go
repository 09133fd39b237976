package registry

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/edged/edged/edged/errdefs"
)

// HostConfig is the configuration of one registry, keyed by registry host
// ("docker.io", "host:5000").
type HostConfig struct {
	// Mirrors are tried in order for pulls before the origin. Each is
	// "host[:port]" (HTTPS) or "http(s)://host[:port][/path]"; requests go to
	// <mirror>/v2/<repository>/.... Pushes always go to the origin.
	Mirrors []string `json:"mirrors,omitempty"`
	// Insecure skips TLS certificate verification for the origin and its
	// mirrors.
	Insecure bool `json:"insecure,omitempty"`
	// PlainHTTP talks plain HTTP to the origin.
	PlainHTTP bool `json:"plain_http,omitempty"`
}

// Credentials authenticate to one registry host.
type Credentials struct {
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// IdentityToken is an OAuth2 refresh token (docker's "identitytoken"),
	// exchanged at the token endpoint.
	IdentityToken string `json:"identity_token,omitempty"`
}

// Empty reports whether c holds no credentials (anonymous access).
func (c Credentials) Empty() bool {
	return c.Username == "" && c.Password == "" && c.IdentityToken == ""
}

// ProgressStatus is the state of one blob in a ProgressEvent.
type ProgressStatus string

// Blob states.
const (
	// ProgressResuming: a download continues from bytes already in the
	// ingest (Offset > 0).
	ProgressResuming ProgressStatus = "resuming"
	// ProgressDownloading: bytes are arriving; Offset grows.
	ProgressDownloading ProgressStatus = "downloading"
	// ProgressUploading: a push is sending bytes; Offset grows.
	ProgressUploading ProgressStatus = "uploading"
	// ProgressExists: nothing to transfer, the destination (the local store
	// for pulls, the registry for pushes) has the blob.
	ProgressExists ProgressStatus = "exists"
	// ProgressDone: the blob was transferred and verified.
	ProgressDone ProgressStatus = "done"
)

// ProgressEvent reports the state of one blob. Events of one pull or push
// are delivered one at a time (never concurrently), at most every 100 ms per
// blob while bytes are flowing.
type ProgressEvent struct {
	Digest    digest.Digest  `json:"digest"`
	MediaType string         `json:"media_type,omitempty"`
	Offset    int64          `json:"offset"` // bytes present so far
	Total     int64          `json:"total"`  // blob size
	Status    ProgressStatus `json:"status"`
}

// NormalizeHost maps "https://index.docker.io/v1/" and friends (docker
// config keys, configured hosts) to a registry host as used in references.
func NormalizeHost(k string) string {
	if strings.Contains(k, "://") {
		if u, err := url.Parse(k); err == nil {
			k = u.Host
		}
	}
	k, _, _ = strings.Cut(k, "/")
	switch k {
	case "index.docker.io", DockerHubHost:
		return DockerHub
	}
	return k
}

// ParseMirror parses a mirror: "host[:port]" (HTTPS) or
// "http(s)://host[:port][/path]".
func ParseMirror(m string) (*url.URL, error) {
	if !strings.Contains(m, "://") {
		m = "https://" + m
	}
	u, err := url.Parse(m)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: scheme must be http or https", m)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q: want http(s)://host[:port][/path]", m)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// ValidateHosts checks per-registry configuration: every key is a registry
// host[:port] and every mirror parses.
func ValidateHosts(hosts map[string]HostConfig) error {
	for host, hc := range hosts {
		if !ValidHost(NormalizeHost(host)) {
			return errdefs.InvalidArgument("registry", "%q is not a registry host[:port]", host)
		}
		for _, m := range hc.Mirrors {
			if _, err := ParseMirror(m); err != nil {
				return errdefs.InvalidArgument("registry "+host+" mirror", "%v", err)
			}
		}
	}
	return nil
}
