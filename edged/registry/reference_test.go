package registry

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/edged/edged/edged/errdefs"
)

func TestParseReference(t *testing.T) {
	d := digest.SHA256.FromString("x")
	for _, tc := range []struct{ in, want string }{
		{"busybox", "docker.io/library/busybox:latest"},
		{"busybox:1.36", "docker.io/library/busybox:1.36"},
		{"user/app", "docker.io/user/app:latest"},
		{"docker.io/busybox", "docker.io/library/busybox:latest"},
		{"index.docker.io/library/busybox:1", "docker.io/library/busybox:1"},
		{"localhost/app", "localhost/app:latest"},
		{"localhost:5000/a/b/c:v1.2-rc_3", "localhost:5000/a/b/c:v1.2-rc_3"},
		{"127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app:latest"},
		{"ghcr.io/o/app@" + d.String(), "ghcr.io/o/app@" + d.String()},
		{"ghcr.io/o/app:v1@" + d.String(), "ghcr.io/o/app:v1@" + d.String()},
		{"[::1]:5000/app", "[::1]:5000/app:latest"},
		{"a/b__c/d-e--f.g", "docker.io/a/b__c/d-e--f.g:latest"},
	} {
		r, err := ParseReference(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if r.String() != tc.want {
			t.Errorf("%q -> %q, want %q", tc.in, r.String(), tc.want)
		}
	}
	r, _ := ParseReference("ghcr.io/o/app:v1@" + d.String())
	if r.Object() != d.String() || r.Registry != "ghcr.io" || r.Repository != "o/app" {
		t.Fatalf("%+v", r)
	}
	for _, tc := range []struct{ in, msg string }{
		{"", "must not be empty"},
		{"Busybox", "invalid repository component"},
		{"app:", "invalid tag"},
		{"app:-x", "invalid tag"},
		{"app@sha256:1234", "bad digest"},
		{"app@sha512:" + strings.Repeat("a", 128), "unsupported digest algorithm"},
		{"host:5000/", "missing repository"},
		{"a//b", "invalid repository component"},
		{"a/../b", "invalid repository component"},
		{"ho_st.io/app", "invalid registry host"},
		{"host:99x/app", "invalid registry host"},
		{"a/b_-c", "invalid repository component"},
		{"app:" + strings.Repeat("t", 129), "invalid tag"},
		{"x.io/" + strings.Repeat("a", 300), "longer than"},
		{strings.Repeat("a", 1000), "too long"},
	} {
		_, err := ParseReference(tc.in)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: err = %v, want %q", tc.in, err, tc.msg)
		}
	}
}
