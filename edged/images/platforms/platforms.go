// Package platforms parses, normalizes and matches image platforms
// ("os/arch[/variant]") and picks the best manifest of an OCI index or
// Docker manifest list for a host.
//
// Matching policy (lower rank is better, see Matcher.Rank):
//
//   - arm64 hosts accept arm64 (any variant), then 32-bit arm v8, v7, v6, v5:
//     every arm64 CPU that runs a 32-bit userland runs those.
//   - arm hosts of variant vN accept arm/vN, then every lower variant down to
//     v5, never a higher one.
//   - amd64 hosts accept amd64 (any micro-architecture variant), then 386 as
//     a last resort: amd64 kernels run 386 binaries unless built without
//     IA32 emulation, which Debian, Ubuntu, Alpine and Yocto defaults all
//     keep. A 386 image is only picked when the index has no amd64 one.
//   - Any other architecture matches itself only, with an equal variant.
//
// The operating system must always match exactly.
package platforms

import (
	"fmt"
	"runtime"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
)

// Platform is an OCI platform (OS, architecture, variant). Only those three
// fields take part in matching.
type Platform = ocispec.Platform

// Parse parses "os/arch[/variant]" (also "os" alone, meaning the host's
// architecture) and returns it normalized. Aliases such as aarch64, x86_64
// or armhf are accepted.
func Parse(s string) (Platform, error) {
	if s == "" {
		return Platform{}, errdefs.InvalidArgument("platform", "must not be empty")
	}
	if len(s) > 128 {
		return Platform{}, errdefs.InvalidArgument("platform", "%d bytes is too long", len(s))
	}
	parts := strings.Split(strings.ToLower(s), "/")
	for _, p := range parts {
		if p == "" || strings.ContainsFunc(p, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')
		}) {
			return Platform{}, errdefs.InvalidArgument("platform", "%q is not of the form os/arch[/variant]", s)
		}
	}
	var p Platform
	switch len(parts) {
	case 1:
		h := hostArch()
		p = Platform{OS: parts[0], Architecture: h.Architecture, Variant: h.Variant}
	case 2:
		p = Platform{OS: parts[0], Architecture: parts[1]}
	case 3:
		p = Platform{OS: parts[0], Architecture: parts[1], Variant: parts[2]}
	default:
		return Platform{}, errdefs.InvalidArgument("platform", "%q is not of the form os/arch[/variant]", s)
	}
	return Normalize(p), nil
}

// MustParse is Parse for constants; it panics on error.
func MustParse(s string) Platform {
	p, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return p
}

// Normalize returns p with OS and architecture aliases resolved
// (aarch64→arm64, armhf→arm/v7, armel→arm/v6, x86_64→amd64, i686→386),
// arm without a variant as arm/v7, the default variants dropped (arm64/v8,
// amd64/v1) and only OS, architecture and variant kept.
func Normalize(p Platform) Platform {
	os := strings.ToLower(p.OS)
	if os == "macos" {
		os = "darwin"
	}
	arch, variant := strings.ToLower(p.Architecture), strings.ToLower(p.Variant)
	switch arch {
	case "aarch64", "arm64":
		arch = "arm64"
		if variant == "8" || variant == "v8" {
			variant = ""
		}
	case "armhf":
		arch, variant = "arm", "v7"
	case "armel":
		arch, variant = "arm", "v6"
	case "arm", "armv5", "armv5l", "armv6", "armv6l", "armv7", "armv7l", "armv8", "armv8l":
		if v := strings.TrimSuffix(strings.TrimPrefix(arch, "arm"), "l"); v != "" && variant == "" {
			variant = v
		}
		arch = "arm"
		switch variant {
		case "", "7":
			variant = "v7"
		case "5", "6", "8":
			variant = "v" + variant
		}
	case "x86_64", "x86-64", "amd64":
		arch = "amd64"
		if variant == "v1" {
			variant = ""
		}
	case "i386", "i486", "i586", "i686", "386":
		arch, variant = "386", ""
	}
	return Platform{OS: os, Architecture: arch, Variant: variant}
}

// Format returns "os/arch" or "os/arch/variant".
func Format(p Platform) string {
	if p.OS == "" {
		return "unknown"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// DefaultSpec returns the host's platform as a string.
func DefaultSpec() string { return Format(Default()) }

// Default returns the host's platform: runtime.GOOS and runtime.GOARCH, with
// the arm variant read from the CPU (see hostArmVariant).
func Default() Platform {
	h := hostArch()
	return Platform{OS: runtime.GOOS, Architecture: h.Architecture, Variant: h.Variant}
}

func hostArch() Platform {
	p := Platform{Architecture: runtime.GOARCH}
	if runtime.GOARCH == "arm" {
		p.Variant = hostArmVariant()
	}
	return Normalize(p)
}

// Matcher ranks platforms against a wanted one. Build it with NewMatcher.
type Matcher struct {
	want Platform
}

// NewMatcher returns a matcher for want (normalized first).
func NewMatcher(want Platform) Matcher { return Matcher{want: Normalize(want)} }

// Platform returns the wanted platform.
func (m Matcher) Platform() Platform { return m.want }

// String returns the wanted platform as "os/arch[/variant]".
func (m Matcher) String() string { return Format(m.want) }

// Match reports whether p can run on the wanted platform.
func (m Matcher) Match(p Platform) bool { return m.Rank(p) >= 0 }

// Rank returns how good p is for the wanted platform: 0 is an exact match,
// higher numbers are worse fallbacks, -1 means p cannot run there.
func (m Matcher) Rank(p Platform) int {
	p = Normalize(p)
	w := m.want
	if p.OS != w.OS {
		return -1
	}
	switch w.Architecture {
	case "arm64":
		switch p.Architecture {
		case "arm64":
			return 0
		case "arm":
			if r := armRank("v8", p.Variant); r >= 0 {
				return 1 + r
			}
		}
		return -1
	case "arm":
		if p.Architecture != "arm" {
			return -1
		}
		return armRank(w.Variant, p.Variant)
	case "amd64":
		switch p.Architecture {
		case "amd64":
			return 0
		case "386":
			return 1
		}
		return -1
	}
	if p.Architecture == w.Architecture && p.Variant == w.Variant {
		return 0
	}
	return -1
}

// armRank ranks arm variant have for a host of variant host: 0 for the
// same, 1 for one lower, ..., -1 for a higher or unknown variant.
func armRank(host, have string) int {
	h, ok1 := armLevel(host)
	v, ok2 := armLevel(have)
	if !ok1 || !ok2 || v > h {
		return -1
	}
	return h - v
}

func armLevel(v string) (int, bool) {
	switch v {
	case "v5":
		return 5, true
	case "v6":
		return 6, true
	case "v7", "":
		return 7, true
	case "v8":
		return 8, true
	}
	return 0, false
}

// Best returns the index of the best-ranked descriptor in descs whose
// Platform matches, -1 if none does. Descriptors without a platform never
// match; ties go to the first.
func (m Matcher) Best(descs []ocispec.Descriptor) int {
	best, bestRank := -1, -1
	for i, d := range descs {
		if d.Platform == nil {
			continue
		}
		r := m.Rank(*d.Platform)
		if r >= 0 && (best < 0 || r < bestRank) {
			best, bestRank = i, r
		}
	}
	return best
}

// NoMatchError returns the ErrNotFound error for an index or archive (named
// by where) that has no manifest for the matcher's platform.
func (m Matcher) NoMatchError(where string) error {
	return fmt.Errorf("no manifest for platform %s in %s: %w", m, where, errdefs.ErrNotFound)
}
