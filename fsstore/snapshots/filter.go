package snapshots

import (
	"strconv"
	"strings"

	"github.com/edged/edged/edged/errdefs"
)

// Filter selects snapshots. Build one with ParseFilter.
type Filter struct {
	conds []cond
}

type cond struct {
	field string // "kind", "name", "parent" or "labels.<key>"
	op    string // "==", "!=" or "" (the field is present and not empty)
	value string
}

// ParseFilter parses a filter: conditions separated by commas, all of which
// must hold. A condition is field==value, field!=value, or field alone
// (present and not empty). Fields are kind, name, parent and labels.<key>.
// Values and label keys containing ',', '=', '!' or '"' are written as
// Go-quoted strings: labels."a,b"=="x,y". Examples:
//
//	kind==committed
//	parent==sha256:abc,labels.gc.root
//	name!=tmp
func ParseFilter(s string) (Filter, error) {
	var f Filter
	parts, err := splitUnquoted(s, ',')
	if err != nil {
		return f, err
	}
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return f, errdefs.InvalidArgument("filter", "%q has an empty condition", short(s))
		}
		c, err := parseCond(p)
		if err != nil {
			return f, err
		}
		f.conds = append(f.conds, c)
	}
	return f, nil
}

func parseCond(p string) (cond, error) {
	var c cond
	// Find the operator outside quotes.
	opAt := -1
	inQuote := false
	for i := 0; i < len(p); i++ {
		switch {
		case p[i] == '\\' && inQuote:
			i++
		case p[i] == '"':
			inQuote = !inQuote
		case !inQuote && i+1 < len(p) && (p[i:i+2] == "==" || p[i:i+2] == "!="):
			opAt = i
		}
		if opAt >= 0 {
			break
		}
	}
	field := p
	if opAt >= 0 {
		field, c.op = p[:opAt], p[opAt:opAt+2]
		v, err := unquote(strings.TrimSpace(p[opAt+2:]))
		if err != nil {
			return c, err
		}
		c.value = v
	}
	field = strings.TrimSpace(field)
	switch {
	case field == "kind":
		if c.op != "" {
			if _, err := ParseKind(c.value); err != nil {
				return c, err
			}
		}
	case field == "name", field == "parent":
	case strings.HasPrefix(field, "labels."):
		k, err := unquote(field[len("labels."):])
		if err != nil {
			return c, err
		}
		if k == "" {
			return c, errdefs.InvalidArgument("filter", "%q: empty label key", short(p))
		}
		field = "labels." + k
	default:
		return c, errdefs.InvalidArgument("filter", "%q: unknown field %q (want kind, name, parent or labels.<key>)", short(p), short(field))
	}
	c.field = field
	return c, nil
}

func unquote(s string) (string, error) {
	if strings.HasPrefix(s, `"`) {
		v, err := strconv.Unquote(s)
		if err != nil {
			return "", errdefs.InvalidArgument("filter", "bad quoted string %s: %v", short(s), err)
		}
		return v, nil
	}
	if strings.ContainsAny(s, `"=!`) {
		return "", errdefs.InvalidArgument("filter", "%q must be quoted", short(s))
	}
	return s, nil
}

func splitUnquoted(s string, sep byte) ([]string, error) {
	var out []string
	start, inQuote := 0, false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && inQuote:
			i++
		case s[i] == '"':
			inQuote = !inQuote
		case s[i] == sep && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if inQuote {
		return nil, errdefs.InvalidArgument("filter", "%q has an unterminated quote", short(s))
	}
	return append(out, s[start:]), nil
}

// Match reports whether info satisfies every condition of f.
func (f Filter) Match(info Info) bool {
	for _, c := range f.conds {
		var v string
		var present bool
		switch {
		case c.field == "kind":
			v, present = info.Kind.String(), true
		case c.field == "name":
			v, present = info.Name, info.Name != ""
		case c.field == "parent":
			v, present = info.Parent, info.Parent != ""
		default:
			v, present = info.Labels[strings.TrimPrefix(c.field, "labels.")]
		}
		switch c.op {
		case "":
			if !present || v == "" {
				return false
			}
		case "==":
			if !present || v != c.value {
				return false
			}
		case "!=":
			if present && v == c.value {
				return false
			}
		}
	}
	return true
}

func parseFilters(filters []string) ([]Filter, error) {
	out := make([]Filter, 0, len(filters))
	for _, s := range filters {
		f, err := ParseFilter(s)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func matchAny(fs []Filter, info Info) bool {
	if len(fs) == 0 {
		return true
	}
	for _, f := range fs {
		if f.Match(info) {
			return true
		}
	}
	return false
}
