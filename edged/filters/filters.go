// Package filters parses and evaluates the filter strings of list and
// subscribe requests, in containerd's syntax:
//
//	topic==/tasks/exit                 equality
//	image!=busybox                     inequality
//	topic~=^/tasks/                    regular expression match
//	labels."edged.io/group"==web       quoted field path components
//	labels.env                         field presence
//	id==a,labels.env==prod             comma: all conditions must hold
//
// A request's list of filters matches when any filter matches.
package filters

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"

	"github.com/edged/edged/edged/errdefs"
)

// MaxLength bounds one filter string.
const MaxLength = 4096

// MaxFilters bounds the filters of one request: a subscriber keeps its
// parsed filters, and each event is matched against all of them.
const MaxFilters = 32

// MaxRegexpInsts bounds the compiled size (regexp/syntax instructions) of
// the regular expressions of one request, all together: a 4 KiB filter
// such as `.{1000}` repeated 584 times compiles to 584,000 instructions,
// about 140 MiB to compile and 25 MiB to keep. Filters of everyday use
// compile to tens of instructions; a 4 KiB literal to about 4,100.
const MaxRegexpInsts = 10000

// Adaptor exposes an object's fields to a filter.
type Adaptor interface {
	// Field returns the value at path and whether it is present.
	Field(path []string) (string, bool)
}

// AdaptorFunc adapts a function to Adaptor.
type AdaptorFunc func(path []string) (string, bool)

// Field implements Adaptor.
func (f AdaptorFunc) Field(path []string) (string, bool) { return f(path) }

// Operator is the comparison of a condition.
type Operator int

// The operators.
const (
	OpPresent Operator = iota
	OpEqual
	OpNotEqual
	OpMatch
)

type condition struct {
	path  []string
	op    Operator
	value string
	re    *regexp.Regexp
}

// Condition is the exported view of one condition of a filter.
type Condition struct {
	Path  []string
	Op    Operator
	Value string
}

// Conditions lists the conditions of a filter, so that a store can
// evaluate simple filters itself.
func Conditions(f Filter) []Condition {
	out := make([]Condition, len(f))
	for i, c := range f {
		out[i] = Condition{Path: c.path, Op: c.op, Value: c.value}
	}
	return out
}

// Filter is one parsed filter: a conjunction of conditions.
type Filter []condition

// Set is an OR of filters. The empty set matches everything.
type Set []Filter

// Parse parses filter strings into a Set.
func Parse(filters ...string) (Set, error) {
	if len(filters) > MaxFilters {
		return nil, errdefs.InvalidArgument("filters", "%d filters are more than the maximum of %d per request", len(filters), MaxFilters)
	}
	var set Set
	budget := MaxRegexpInsts
	for _, s := range filters {
		f, err := parseOne(s, &budget)
		if err != nil {
			return nil, err
		}
		set = append(set, f)
	}
	return set, nil
}

// Match reports whether the adaptor matches any filter of the set.
func (s Set) Match(a Adaptor) bool {
	if len(s) == 0 {
		return true
	}
	for _, f := range s {
		if f.Match(a) {
			return true
		}
	}
	return false
}

// Match reports whether all conditions hold.
func (f Filter) Match(a Adaptor) bool {
	for _, c := range f {
		v, ok := a.Field(c.path)
		switch c.op {
		case OpPresent:
			if !ok {
				return false
			}
		case OpEqual:
			if !ok || v != c.value {
				return false
			}
		case OpNotEqual:
			if ok && v == c.value {
				return false
			}
		case OpMatch:
			if !ok || !c.re.MatchString(v) {
				return false
			}
		}
	}
	return true
}

// parseOne parses one filter; its regular expressions take their compiled
// size from *budget.
func parseOne(s string, budget *int) (Filter, error) {
	if len(s) > MaxLength {
		return nil, errdefs.InvalidArgument("filter", "%d bytes is longer than the maximum of %d", len(s), MaxLength)
	}
	if strings.TrimSpace(s) == "" {
		return nil, errdefs.InvalidArgument("filter", "empty filter")
	}
	var f Filter
	p := parser{s: s, budget: budget}
	for {
		c, err := p.condition()
		if errors.Is(err, errRegexpTooLarge) {
			return nil, errdefs.InvalidArgument("filter", "%v (the regular expressions of a request may compile to at most %d instructions)", err, MaxRegexpInsts)
		}
		if err != nil {
			return nil, errdefs.InvalidArgument("filter", "%q: %v", s, err)
		}
		f = append(f, c)
		if p.eof() {
			return f, nil
		}
		if p.s[p.i] != ',' {
			return nil, errdefs.InvalidArgument("filter", "%q: expected ',' at offset %d", s, p.i)
		}
		p.i++
	}
}

type parser struct {
	s      string
	i      int
	budget *int // instructions the request's regular expressions may still use
}

func (p *parser) eof() bool { return p.i >= len(p.s) }

func (p *parser) condition() (condition, error) {
	var c condition
	for {
		part, err := p.fieldPart()
		if err != nil {
			return c, err
		}
		c.path = append(c.path, part)
		if p.eof() || p.s[p.i] != '.' {
			break
		}
		p.i++
	}
	if p.eof() || p.s[p.i] == ',' {
		c.op = OpPresent
		return c, nil
	}
	rest := p.s[p.i:]
	switch {
	case strings.HasPrefix(rest, "=="):
		c.op = OpEqual
	case strings.HasPrefix(rest, "!="):
		c.op = OpNotEqual
	case strings.HasPrefix(rest, "~="):
		c.op = OpMatch
	default:
		return c, fmt.Errorf("expected an operator (==, != or ~=) at offset %d", p.i)
	}
	p.i += 2
	v, err := p.value()
	if err != nil {
		return c, err
	}
	c.value = v
	if c.op == OpMatch {
		re, err := compileBounded(v, p.budget)
		if err != nil {
			return c, err
		}
		c.re = re
	}
	return c, nil
}

// errRegexpTooLarge marks a regular expression over the request's budget.
var errRegexpTooLarge = errors.New("too large")

// compileBounded compiles the regular expression v if its compiled size
// fits in *budget, and takes that size from *budget. The size is
// estimated on the parsed expression (progSize) before regexp.Compile
// expands its repetitions: for `.{1000}` repeated 584 times that expansion
// alone (Simplify, syntax.Compile) allocates 140 MiB.
func compileBounded(v string, budget *int) (*regexp.Regexp, error) {
	tree, err := syntax.Parse(v, syntax.Perl) // regexp.Compile's flags
	if err != nil {
		return nil, fmt.Errorf("bad regular expression %q: %v", v, err)
	}
	size := progSize(tree, *budget)
	if size > *budget {
		return nil, fmt.Errorf("regular expression %q is %w", v, errRegexpTooLarge)
	}
	re, err := regexp.Compile(v)
	if err != nil {
		return nil, fmt.Errorf("bad regular expression %q: %v", v, err)
	}
	*budget -= size
	return re, nil
}

// progSize returns an upper bound of the number of instructions
// syntax.Compile makes of re after Simplify (as regexp.Compile does), or a
// number above limit once it is over limit. It follows syntax.Compile: one
// instruction per rune of a literal, per character class and per empty
// width assertion; a repetition x{n,m} becomes n copies of x and m-n
// optional ones (one more instruction each), x{n,} n copies and a loop.
// It is exact for most expressions, at most twice the size for any.
func progSize(re *syntax.Regexp, limit int) int {
	const progOverhead = 2 // the fail and match instructions
	return progOverhead + subSize(re, limit)
}

func subSize(re *syntax.Regexp, limit int) int {
	sum := func(subs []*syntax.Regexp) int {
		n := 0
		for _, sub := range subs {
			if n += subSize(sub, limit); n > limit {
				return limit + 1
			}
		}
		return n
	}
	switch re.Op {
	case syntax.OpLiteral:
		return max(len(re.Rune), 1)
	case syntax.OpCapture:
		return 2 + sum(re.Sub)
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		return 1 + sum(re.Sub)
	case syntax.OpConcat:
		return max(sum(re.Sub), 1)
	case syntax.OpAlternate:
		return len(re.Sub) + sum(re.Sub)
	case syntax.OpRepeat:
		// The parser keeps Min and Max at most 1000 and sum keeps s at
		// most limit+1, so these int64 products do not overflow, even
		// where int has 32 bits.
		s := int64(sum(re.Sub))
		n := int64(re.Min) * s
		if re.Max < 0 {
			n++ // the loop
		} else {
			n += int64(re.Max-re.Min) * (s + 1)
		}
		return int(min(max(n, 1), int64(limit)+1))
	default: // character classes, any character, empty width, no match
		return 1
	}
}

func (p *parser) fieldPart() (string, error) {
	if p.eof() {
		return "", fmt.Errorf("expected a field name at offset %d", p.i)
	}
	if p.s[p.i] == '"' {
		return p.quoted()
	}
	start := p.i
	for !p.eof() {
		ch := p.s[p.i]
		if ch == '_' || ch == '-' || ch == '/' || ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' {
			p.i++
			continue
		}
		break
	}
	if start == p.i {
		return "", fmt.Errorf("expected a field name at offset %d", p.i)
	}
	return p.s[start:p.i], nil
}

func (p *parser) value() (string, error) {
	if !p.eof() && p.s[p.i] == '"' {
		return p.quoted()
	}
	start := p.i
	for !p.eof() && p.s[p.i] != ',' {
		p.i++
	}
	return p.s[start:p.i], nil
}

func (p *parser) quoted() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.eof() {
		ch := p.s[p.i]
		switch ch {
		case '\\':
			if p.i+1 >= len(p.s) {
				return "", fmt.Errorf("unterminated escape at offset %d", p.i)
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case '"':
			p.i++
			return b.String(), nil
		default:
			b.WriteByte(ch)
			p.i++
		}
	}
	return "", fmt.Errorf("unterminated quoted string")
}

// Labels returns an adaptor lookup for a "labels.<key>" path.
func Labels(labels map[string]string, path []string) (string, bool) {
	if len(path) < 2 {
		return "", len(labels) > 0 && len(path) == 1
	}
	v, ok := labels[strings.Join(path[1:], ".")]
	return v, ok
}
