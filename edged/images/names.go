package images

import (
	"regexp"
	"strings"

	"github.com/edged/edged/edged/errdefs"
)

var (
	tagRe       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	pathCompRe  = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	domainRe    = regexp.MustCompile(`^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$`)
	digestRefRe = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

// NormalizeName turns a Docker-style reference into the full form edged
// stores: "busybox" → "docker.io/library/busybox:latest",
// "user/app:1" → "docker.io/user/app:1", "example.com:5000/a/b" →
// "example.com:5000/a/b:latest"; "name@sha256:..." keeps its digest and
// gets no tag. The first component is a registry when it contains "." or
// ":" or is "localhost". Invalid references fail with ErrInvalidArgument.
func NormalizeName(ref string) (string, error) {
	if ref == "" {
		return "", errdefs.InvalidArgument("image name", "must not be empty")
	}
	if len(ref) > 255+128+72 {
		return "", errdefs.InvalidArgument("image name", "%d bytes is too long", len(ref))
	}
	name, dgst, hasDigest := strings.Cut(ref, "@")
	if hasDigest && !digestRefRe.MatchString(dgst) {
		return "", errdefs.InvalidArgument("image name", "%q: digest %q is not sha256:<64 hex>", ref, dgst)
	}
	tag := ""
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name, tag = name[:i], name[i+1:]
		if !tagRe.MatchString(tag) {
			return "", errdefs.InvalidArgument("image name", "%q: tag %q is invalid", ref, tag)
		}
	}
	comps := strings.Split(name, "/")
	domain := "docker.io"
	if len(comps) > 1 && (strings.ContainsAny(comps[0], ".:") || comps[0] == "localhost" || strings.HasPrefix(comps[0], "[")) {
		domain, comps = comps[0], comps[1:]
		if !domainRe.MatchString(domain) {
			return "", errdefs.InvalidArgument("image name", "%q: registry %q is invalid", ref, domain)
		}
		if domain == "index.docker.io" {
			domain = "docker.io"
		}
	}
	if domain == "docker.io" && len(comps) == 1 {
		comps = []string{"library", comps[0]}
	}
	for _, c := range comps {
		if !pathCompRe.MatchString(c) {
			return "", errdefs.InvalidArgument("image name", "%q: repository component %q is invalid (lowercase letters, digits, separators)", ref, c)
		}
	}
	out := domain + "/" + strings.Join(comps, "/")
	if tag == "" && !hasDigest {
		tag = "latest"
	}
	if tag != "" {
		out += ":" + tag
	}
	if hasDigest {
		out += "@" + dgst
	}
	return out, nil
}

// isTagOnly reports whether an OCI ref.name annotation is just a tag
// ("1.36", "latest"), as many tools write, rather than a reference.
func isTagOnly(s string) bool {
	return !strings.ContainsAny(s, "/:@") && tagRe.MatchString(s)
}

// repository returns a normalized name without its tag or digest.
func repository(name string) string {
	name, _, _ = strings.Cut(name, "@")
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name = name[:i]
	}
	return name
}
