package identifiers

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

func TestValidate(t *testing.T) {
	for _, id := range []string{"a", "A", "0", "web-1", "a_b.c-d", strings.Repeat("x", MaxLength)} {
		if err := Validate("id", id); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", id, err)
		}
	}
	for id, msg := range map[string]string{
		"":                               "id: must not be empty",
		"../x":                           `"../x" must match`,
		"a/b":                            `"a/b" must match`,
		"..":                             `".." must match`,
		".hidden":                        `".hidden" must match`,
		"-a":                             `"-a" must match`,
		"_a":                             `"_a" must match`,
		"a b":                            `"a b" must match`,
		"a\x00":                          `must match`,
		"é":                              `must match`,
		strings.Repeat("x", 1000):        "1000 characters is longer than the maximum of 76",
		strings.Repeat("x", MaxLength+1): "77 characters",
	} {
		err := Validate("id", id)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), msg) {
			t.Errorf("Validate(%q) = %v, want InvalidArgument containing %q", id, err, msg)
		}
	}
}

// The hand-written check is the documented pattern.
func FuzzMatchesPattern(f *testing.F) {
	re := regexp.MustCompile(Pattern)
	for _, s := range []string{"a", "a-b", "-", "a/b", "..", "A9_.-", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := matches(s), re.MatchString(s); got != want {
			t.Fatalf("matches(%q) = %v, regexp says %v", s, got, want)
		}
	})
}
