package remotes

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/registry"
)

// ResolverConfig configures a Resolver.
type ResolverConfig struct {
	// Registries holds per-registry settings by registry host. Docker Hub
	// ("docker.io") is always served by registry-1.docker.io.
	Registries map[string]RegistryConfig
	// DockerConfig is the path of a docker-style config.json with
	// credentials. Empty means $DOCKER_CONFIG/config.json, else
	// ~/.docker/config.json. A missing file means anonymous access.
	DockerConfig string
	// UserAgent is sent with every request; empty means "edged".
	UserAgent string
}

// maxDockerConfigSize bounds config.json.
const maxDockerConfigSize = 1 << 20

// dockerConfig is the parsed subset of a docker config.json.
type dockerConfig struct {
	path        string
	auths       map[string]dockerAuth // keyed by normalized host
	credsStore  string
	credHelpers map[string]string
}

type dockerAuth struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

// defaultDockerConfigPath returns $DOCKER_CONFIG/config.json or
// ~/.docker/config.json ("" when there is no home directory).
func defaultDockerConfigPath() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".docker", "config.json")
}

// loadDockerConfig reads path; a missing file yields an empty config.
func loadDockerConfig(path string) (*dockerConfig, error) {
	c := &dockerConfig{path: path, auths: map[string]dockerAuth{}}
	if path == "" {
		return c, nil
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return c, nil
		}
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxDockerConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	if len(data) > maxDockerConfigSize {
		return nil, errdefs.InvalidArgument("docker config", "%s is larger than %d bytes", path, maxDockerConfigSize)
	}
	var raw struct {
		Auths       map[string]dockerAuth `json:"auths"`
		CredsStore  string                `json:"credsStore"`
		CredHelpers map[string]string     `json:"credHelpers"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, errdefs.InvalidArgument("docker config", "%s: %v", path, err)
	}
	for k, v := range raw.Auths {
		c.auths[registry.NormalizeHost(k)] = v
	}
	c.credsStore = raw.CredsStore
	c.credHelpers = map[string]string{}
	for k, v := range raw.CredHelpers {
		c.credHelpers[registry.NormalizeHost(k)] = v
	}
	return c, nil
}

// credentials returns the credentials for a registry host; empty ones mean
// anonymous. A host whose credentials live in a credential helper is an
// ErrNotImplemented error: helpers are not supported.
func (c *dockerConfig) credentials(host string) (Credentials, error) {
	host = registry.NormalizeHost(host)
	if h, ok := c.credHelpers[host]; ok {
		return Credentials{}, fmt.Errorf("credentials for %s: credential helper %q (credHelpers in %s) is not supported by edged; put the credentials under \"auths\" instead: %w",
			host, "docker-credential-"+h, c.path, errdefs.ErrNotImplemented)
	}
	a, ok := c.auths[host]
	if !ok {
		return Credentials{}, nil
	}
	cr := Credentials{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken}
	if a.Auth != "" {
		dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a.Auth))
		if err != nil {
			return Credentials{}, errdefs.InvalidArgument("docker config", "%s: auths[%q].auth is not valid base64: %v", c.path, host, err)
		}
		user, pass, ok := strings.Cut(string(dec), ":")
		if !ok {
			return Credentials{}, errdefs.InvalidArgument("docker config", "%s: auths[%q].auth is not base64(user:password)", c.path, host)
		}
		cr.Username, cr.Password = user, pass
	}
	if cr.Empty() && c.credsStore != "" {
		return Credentials{}, fmt.Errorf("credentials for %s: credential store %q (credsStore in %s) is not supported by edged; put the credentials under \"auths\" instead: %w",
			host, "docker-credential-"+c.credsStore, c.path, errdefs.ErrNotImplemented)
	}
	return cr, nil
}
