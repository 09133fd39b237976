package platforms

import (
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
)

func TestParseNormalize(t *testing.T) {
	cases := map[string]string{
		"linux/amd64":      "linux/amd64",
		"linux/x86_64":     "linux/amd64",
		"Linux/AMD64/v1":   "linux/amd64",
		"linux/aarch64":    "linux/arm64",
		"linux/arm64/v8":   "linux/arm64",
		"linux/armhf":      "linux/arm/v7",
		"linux/armel":      "linux/arm/v6",
		"linux/arm":        "linux/arm/v7",
		"linux/armv6l":     "linux/arm/v6",
		"linux/arm/7":      "linux/arm/v7",
		"linux/i686":       "linux/386",
		"linux/riscv64":    "linux/riscv64",
		"windows/amd64/v3": "windows/amd64/v3",
	}
	for in, want := range cases {
		p, err := Parse(in)
		if err != nil || Format(p) != want {
			t.Errorf("Parse(%q) = %q, %v; want %q", in, Format(p), err, want)
		}
	}
	for _, bad := range []string{"", "linux/", "/amd64", "linux/amd64/v1/x", "linux/am d64", strings.Repeat("a", 200)} {
		if _, err := Parse(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Parse(%q) = %v, want invalid argument", bad, err)
		}
	}
	if p := MustParse("linux"); p.OS != "linux" || p.Architecture == "" {
		t.Errorf("Parse(linux) = %+v", p)
	}
}

func TestMatcherRank(t *testing.T) {
	rank := func(host, img string) int { return NewMatcher(MustParse(host)).Rank(MustParse(img)) }
	cases := []struct {
		host, img string
		want      int
	}{
		{"linux/arm64", "linux/arm64", 0},
		{"linux/arm64", "linux/arm64/v8", 0},
		{"linux/arm64", "linux/arm/v8", 1},
		{"linux/arm64", "linux/arm/v7", 2},
		{"linux/arm64", "linux/arm/v6", 3},
		{"linux/arm64", "linux/arm/v5", 4},
		{"linux/arm64", "linux/amd64", -1},
		{"linux/arm/v7", "linux/arm/v7", 0},
		{"linux/arm/v7", "linux/arm/v6", 1},
		{"linux/arm/v7", "linux/arm/v5", 2},
		{"linux/arm/v7", "linux/arm/v8", -1},
		{"linux/arm/v7", "linux/arm64", -1},
		{"linux/arm/v6", "linux/arm/v7", -1},
		{"linux/amd64", "linux/amd64", 0},
		{"linux/amd64", "linux/amd64/v2", 0},
		{"linux/amd64", "linux/386", 1},
		{"linux/amd64", "windows/amd64", -1},
		{"linux/386", "linux/amd64", -1},
		{"linux/riscv64", "linux/riscv64", 0},
		{"linux/ppc64le", "linux/ppc64", -1},
	}
	for _, c := range cases {
		if got := rank(c.host, c.img); got != c.want {
			t.Errorf("host %s, image %s: rank %d, want %d", c.host, c.img, got, c.want)
		}
	}
}

func TestBest(t *testing.T) {
	d := func(s string) ocispec.Descriptor {
		p := MustParse(s)
		return ocispec.Descriptor{Platform: &p}
	}
	list := []ocispec.Descriptor{d("linux/amd64"), d("linux/arm/v6"), {}, d("linux/arm/v7"), d("linux/arm64"), d("linux/386")}
	for host, want := range map[string]int{"linux/arm64": 4, "linux/arm/v7": 3, "linux/arm/v6": 1, "linux/amd64": 0, "linux/arm/v5": -1, "linux/386": 5} {
		if got := NewMatcher(MustParse(host)).Best(list); got != want {
			t.Errorf("Best for %s = %d, want %d", host, got, want)
		}
	}
	m := NewMatcher(MustParse("linux/arm64"))
	err := m.NoMatchError("index sha256:abc")
	if !errdefs.IsNotFound(err) || err.Error() != "no manifest for platform linux/arm64 in index sha256:abc: not found" {
		t.Errorf("NoMatchError = %v", err)
	}
}

func TestArmVariantFromCPUInfo(t *testing.T) {
	for in, want := range map[string]string{
		"processor\t: 0\nCPU architecture: 7\n": "v7",
		"CPU architecture: 8\n":                 "v8",
		"CPU architecture: AArch64\n":           "v8",
		"CPU architecture: 5TEJ\n":              "v5",
		"CPU architecture: 6\n":                 "v6",
		"model name: x86\n":                     "",
	} {
		if got := armVariantFromCPUInfo(strings.NewReader(in)); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestDefault(t *testing.T) {
	p := Default()
	if p.OS == "" || p.Architecture == "" || !NewMatcher(p).Match(p) {
		t.Fatalf("Default() = %+v", p)
	}
}
