package cgroups

import (
	"errors"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

func TestContainerPath(t *testing.T) {
	for _, c := range []struct {
		cfg      PathConfig
		ns, id   string
		want     string
		errField string
	}{
		{PathConfig{}, "default", "c1", "/edged/default/c1", ""},
		{PathConfig{Parent: "/my/parent"}, "ns", "web.1", "/my/parent/ns/web.1", ""},
		{PathConfig{Systemd: true}, "default", "c1", "/edged.slice/edged-default.slice/edged-c1.scope", ""},
		{PathConfig{}, "../x", "c1", "", "namespace"},
		{PathConfig{}, "default", "a/b", "", "id"},
		{PathConfig{}, "default", "", "", "id"},
		{PathConfig{Parent: "relative"}, "default", "c1", "", "not absolute"},
		{PathConfig{Parent: "/a/../b"}, "default", "c1", "", "not clean"},
		// A '-' in a namespace would open a parent slice: refused by
		// systemd naming only when it makes "--".
		{PathConfig{Systemd: true}, "a-b", "c1", "/edged.slice/edged-a.slice/edged-a-b.slice/edged-c1.scope", ""},
	} {
		got, err := c.cfg.ContainerPath(c.ns, c.id)
		if c.errField != "" {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), c.errField) {
				t.Errorf("%+v %q %q: err %v, want invalid argument about %q", c.cfg, c.ns, c.id, err, c.errField)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%+v %q %q: %q, %v; want %q", c.cfg, c.ns, c.id, got, err, c.want)
		}
	}
}

func TestSystemdPath(t *testing.T) {
	for in, want := range map[string]string{
		"edged-default.slice:edged:c1": "/edged.slice/edged-default.slice/edged-c1.scope",
		"system.slice:docker:abc":      "/system.slice/docker-abc.scope",
		":edged:c1":                    "/system.slice/edged-c1.scope",
		"edged.slice::c1":              "/edged.slice/c1.scope",
		"a-b-c.slice:p:n":              "/a.slice/a-b.slice/a-b-c.slice/p-n.scope",
		"edged.slice:p:sub.slice":      "/edged.slice/sub.slice",
	} {
		got, err := SystemdPath(in)
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"edged.slice:c1":        "slice:prefix:name",
		"edged:p:c1":            "bad slice name",
		"-a.slice:p:c1":         "bad slice name",
		"a--b.slice:p:c1":       "bad slice name",
		"a/b.slice:p:c1":        "bad slice name",
		"edged.slice:p:x/../..": "bad unit name",
		"edged.slice::":         "bad unit name",
	} {
		_, err := SystemdPath(in)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: %v; want invalid argument %q", in, err, msg)
		}
	}
}

func TestConversions(t *testing.T) {
	for shares, w := range map[uint64]uint64{0: 0, 1: 1, 2: 1, 1024: 39, 262144: 10000, 1 << 30: 10000} {
		if got := SharesToWeight(shares); got != w {
			t.Errorf("SharesToWeight(%d) = %d, want %d", shares, got, w)
		}
	}
	for bw, w := range map[uint64]uint64{0: 0, 10: 1, 500: 4950, 1000: 10000} {
		if got := BlkioWeightToIOWeight(bw); got != w {
			t.Errorf("BlkioWeightToIOWeight(%d) = %d, want %d", bw, got, w)
		}
	}
	type res struct {
		v   int64
		set bool
	}
	for _, c := range []struct {
		swap, limit int64
		want        res
		err         string
	}{
		{0, 0, res{0, false}, ""},
		{0, -1, res{-1, true}, ""},
		{0, 100, res{0, false}, ""},
		{-1, 100, res{-1, true}, ""},
		{300, 100, res{200, true}, ""},
		{100, 100, res{0, true}, ""},
		{50, 100, res{}, "below the memory limit"},
		{300, 0, res{}, "needs a memory limit"},
		{300, -1, res{}, "needs a memory limit"},
		{-5, 100, res{}, "negative"},
	} {
		v, set, err := SwapMax(c.swap, c.limit)
		if c.err != "" {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), c.err) {
				t.Errorf("SwapMax(%d, %d): %v, want %q", c.swap, c.limit, err, c.err)
			}
			continue
		}
		if err != nil || (res{v, set}) != c.want {
			t.Errorf("SwapMax(%d, %d) = %d, %v, %v; want %+v", c.swap, c.limit, v, set, err, c.want)
		}
	}
}
