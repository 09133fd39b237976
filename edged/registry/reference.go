package registry

import (
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/edged/edged/edged/errdefs"
)

// Docker Hub names: references without a registry host belong to DockerHub,
// whose API is served by DockerHubHost.
const (
	DockerHub     = "docker.io"
	DockerHubHost = "registry-1.docker.io"
	// maxNameLength bounds registry/repository (docker's limit).
	maxNameLength = 255
	maxTagLength  = 128
)

// Reference is a parsed, normalized image reference.
type Reference struct {
	// Registry is the registry host, with port when given: "docker.io",
	// "ghcr.io", "127.0.0.1:5000".
	Registry string
	// Repository is the path inside the registry: "library/busybox".
	Repository string
	// Tag is the tag, "latest" when the reference names neither a tag nor
	// a digest; it may be empty when a digest is given.
	Tag string
	// Digest pins the content; when set it wins over Tag.
	Digest digest.Digest
}

// String returns the full normalized form, e.g.
// "docker.io/library/busybox:latest" or "host:5000/app@sha256:...".
func (r Reference) String() string {
	s := r.Name()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// Name returns registry/repository.
func (r Reference) Name() string { return r.Registry + "/" + r.Repository }

// Object returns what the manifest endpoint is asked for: the digest when
// set, else the tag.
func (r Reference) Object() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// ParseReference parses and normalizes an image reference:
//
//	busybox                  -> docker.io/library/busybox:latest
//	user/app:1.0             -> docker.io/user/app:1.0
//	host:5000/team/app       -> host:5000/team/app:latest
//	ghcr.io/o/app@sha256:... -> digest-pinned, no tag
//
// The first path component is a registry host when it contains '.' or ':'
// or is "localhost". Repository components must be lower case
// ([a-z0-9] separated by '.', '_', '__' or runs of '-'); tags match
// [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; only sha256 digests are accepted.
func ParseReference(s string) (Reference, error) {
	var r Reference
	orig := s
	if s == "" {
		return r, errdefs.InvalidArgument("reference", "must not be empty")
	}
	if len(s) > 2*maxNameLength+maxTagLength+80 {
		return r, errdefs.InvalidArgument("reference", "%d bytes is too long", len(s))
	}
	if i := strings.IndexByte(s, '@'); i >= 0 {
		d, err := digest.Parse(s[i+1:])
		if err != nil {
			return r, errdefs.InvalidArgument("reference", "%q: bad digest: %v", orig, err)
		}
		if d.Algorithm() != digest.SHA256 {
			return r, errdefs.InvalidArgument("reference", "%q: unsupported digest algorithm %s (only sha256)", orig, d.Algorithm())
		}
		r.Digest = d
		s = s[:i]
	}
	// A tag is after the last ':' that follows the last '/'.
	if i := strings.LastIndexByte(s, ':'); i >= 0 && i > strings.LastIndexByte(s, '/') {
		r.Tag = s[i+1:]
		s = s[:i]
		if !validTag(r.Tag) {
			return r, errdefs.InvalidArgument("reference", "%q: invalid tag %q", orig, r.Tag)
		}
	}
	name := s
	if i := strings.IndexByte(s, '/'); i >= 0 && isHostComponent(s[:i]) {
		r.Registry, name = s[:i], s[i+1:]
		if !ValidHost(r.Registry) {
			return r, errdefs.InvalidArgument("reference", "%q: invalid registry host %q", orig, r.Registry)
		}
	} else {
		r.Registry = DockerHub
	}
	if r.Registry == "index.docker.io" || r.Registry == DockerHubHost {
		r.Registry = DockerHub
	}
	if r.Registry == DockerHub && !strings.Contains(name, "/") {
		name = "library/" + name
	}
	if name == "" {
		return r, errdefs.InvalidArgument("reference", "%q: missing repository", orig)
	}
	for _, c := range strings.Split(name, "/") {
		if !validPathComponent(c) {
			return r, errdefs.InvalidArgument("reference", "%q: invalid repository component %q (lower case letters, digits and separators . _ __ - only)", orig, c)
		}
	}
	r.Repository = name
	if len(r.Name()) > maxNameLength {
		return r, errdefs.InvalidArgument("reference", "%q: name longer than %d bytes", orig, maxNameLength)
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}

func isHostComponent(s string) bool {
	return strings.ContainsAny(s, ".:") || s == "localhost" || strings.ToLower(s) != s
}

// ValidHost accepts host[:port] with DNS labels or a bracketed IPv6 address.
func ValidHost(s string) bool {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		i := strings.IndexByte(s, ']')
		if i < 0 {
			return false
		}
		host, port = s[1:i], strings.TrimPrefix(s[i+1:], ":")
		if s[i+1:] != "" && !strings.HasPrefix(s[i+1:], ":") {
			return false
		}
		if host == "" || strings.Trim(host, "0123456789abcdefABCDEF:.") != "" {
			return false
		}
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i+1:]
			if port == "" {
				return false
			}
		}
		for _, l := range strings.Split(host, ".") {
			if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
				return false
			}
			for i := 0; i < len(l); i++ {
				if !isAlnum(l[i]) && l[i] != '-' {
					return false
				}
			}
		}
	}
	if len(port) > 5 {
		return false
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// validPathComponent implements [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*.
func validPathComponent(s string) bool {
	if s == "" || !isLowerAlnum(s[0]) || !isLowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); {
		if isLowerAlnum(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && !isLowerAlnum(s[j]) {
			j++
		}
		sep := s[i:j]
		if sep != "." && sep != "_" && sep != "__" && strings.Trim(sep, "-") != "" {
			return false
		}
		i = j
	}
	return true
}

func validTag(s string) bool {
	if s == "" || len(s) > maxTagLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || c == '_' || (i > 0 && (c == '.' || c == '-')) {
			continue
		}
		return false
	}
	return true
}
