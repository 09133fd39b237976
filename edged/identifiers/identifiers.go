// Package identifiers holds the one rule for every ID and name that edged
// accepts from a request: namespaces, containers, snapshot keys' components,
// leases, tasks and execs.
//
// The rule: 1 to 76 characters, the first an ASCII letter or digit, the rest
// ASCII letters, digits, '_', '.' or '-'. This excludes path separators, "..",
// whitespace, control characters and the empty string, so an ID can always be
// used as a single path element.
package identifiers

import (
	"github.com/edged/edged/edged/errdefs"
)

// MaxLength is the longest ID accepted.
const MaxLength = 76

// Pattern is the rule as a regular expression, for messages and documents.
// Validate checks it by hand: the shim links this package, and a compiled
// regexp costs every shim its package-init allocations.
const Pattern = `^[A-Za-z0-9][A-Za-z0-9_.-]*$`

func alnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func matches(id string) bool {
	if id == "" || !alnum(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		if c := id[i]; !alnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// Validate returns nil when id follows the rule, and otherwise an
// errdefs.ErrInvalidArgument error whose message names field.
func Validate(field, id string) error {
	switch {
	case id == "":
		return errdefs.InvalidArgument(field, "must not be empty")
	case len(id) > MaxLength:
		return errdefs.InvalidArgument(field, "%d characters is longer than the maximum of %d", len(id), MaxLength)
	case !matches(id):
		return errdefs.InvalidArgument(field, "%q must match %s (letters, digits, '_', '.', '-'; starting with a letter or digit)", id, Pattern)
	}
	return nil
}
