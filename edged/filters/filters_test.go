package filters

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"runtime"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

type obj struct {
	id, image string
	labels    map[string]string
}

func (o obj) Field(path []string) (string, bool) {
	switch path[0] {
	case "id":
		return o.id, true
	case "image":
		return o.image, o.image != ""
	case "labels":
		return Labels(o.labels, path)
	}
	return "", false
}

func TestMatch(t *testing.T) {
	o := obj{id: "web", image: "busybox", labels: map[string]string{"env": "prod", "edged.io/group": "g1"}}
	cases := []struct {
		filters []string
		want    bool
	}{
		{nil, true},
		{[]string{"id==web"}, true},
		{[]string{"id==db"}, false},
		{[]string{"id==db", "image==busybox"}, true},
		{[]string{"id==web,image==alpine"}, false},
		{[]string{"id!=db,labels.env==prod"}, true},
		{[]string{`labels."edged.io/group"==g1`}, true},
		{[]string{`labels."edged.io/group"==g2`}, false},
		{[]string{"labels.env"}, true},
		{[]string{"labels.missing"}, false},
		{[]string{"image~=^busy"}, true},
		{[]string{"image~=^alp"}, false},
		{[]string{`id=="web"`}, true},
	}
	for _, c := range cases {
		set, err := Parse(c.filters...)
		if err != nil {
			t.Fatalf("%v: %v", c.filters, err)
		}
		if got := set.Match(o); got != c.want {
			t.Errorf("%v: got %v, want %v", c.filters, got, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := map[string]string{
		"":                        "empty filter",
		"id=web":                  "expected an operator",
		"id~=(":                   "bad regular expression",
		`labels."x==1`:            "unterminated quoted string",
		"id==a,":                  "expected a field name",
		strings.Repeat("a", 5000): "longer than the maximum",
	}
	for in, want := range cases {
		_, err := Parse(in)
		if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%.20q) = %v, want InvalidArgument containing %q", in, err, want)
		}
	}
}

// A request may carry at most MaxFilters filters.
func TestParseLimitsFilterCount(t *testing.T) {
	fs := make([]string, MaxFilters+1)
	for i := range fs {
		fs[i] = "id==a"
	}
	if _, err := Parse(fs[:MaxFilters]...); err != nil {
		t.Fatalf("%d filters: %v", MaxFilters, err)
	}
	_, err := Parse(fs...)
	const want = "filters: 33 filters are more than the maximum of 32 per request: invalid argument"
	if !errors.Is(err, errdefs.ErrInvalidArgument) || err.Error() != want {
		t.Fatalf("%d filters: %v, want %q", len(fs), err, want)
	}
}

// A 4 KiB regular expression can compile to hundreds of thousands of
// instructions (hundreds of MiB to compile, 25 MiB to keep, per filter):
// Parse refuses it before compiling it.
func TestParseLimitsRegexpSize(t *testing.T) {
	huge := strings.Repeat(`.{1000}`, 584) // 4088 bytes, 584,002 instructions
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	_, err := Parse("topic~=" + huge)
	runtime.ReadMemStats(&m1)
	want := fmt.Sprintf("filter: regular expression %q is too large (the regular expressions of a request may compile to at most 10000 instructions): invalid argument", huge)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || err == nil || err.Error() != want {
		t.Fatalf("Parse(huge) = %.300v", err)
	}
	if total := (m1.TotalAlloc - m0.TotalAlloc) >> 20; total > 4 {
		t.Errorf("refusing the expression allocated %d MiB", total)
	}

	// The limit holds for the request: expressions under it one by one
	// are refused together once their sum is over it.
	half := `x~=[a-z]{1000}[a-z]{1000}[a-z]{1000}[a-z]{1000}` // 4,002 instructions
	if _, err := Parse(half, half); err != nil {
		t.Fatalf("two expressions in the budget: %v", err)
	}
	if _, err := Parse(half, half, half); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), `regular expression "[a-z]{1000}[a-z]{1000}[a-z]{1000}[a-z]{1000}" is too large`) {
		t.Fatalf("three expressions over the budget: %v", err)
	}
	if _, err := Parse(half + "," + half + "," + half); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "is too large") {
		t.Fatalf("three conditions over the budget: %v", err)
	}
}

// progSize is an upper bound of what regexp.Compile makes, and close to it.
func TestProgSizeBoundsCompiledSize(t *testing.T) {
	for _, expr := range []string{
		``, `^/tasks/`, `^/tasks/(exit|oom)$`, `(?i)héllo`, `a*b+c?`, `[a-z]{1,1000}`, `x{3,}`,
		`(?:ab){0}`, `(a|b|cd|e)*`, `(?:(?:a{2,5}){3}){1,2}`, `\bword\b.*$`, `[^/]+/?`,
		"(?:" + strings.Repeat("a|", 100) + "b){10}", strings.Repeat("x", 4000), `.{1000}`,
		`(?s).{10,20}|(?m)^$`,
	} {
		tree, err := syntax.Parse(expr, syntax.Perl)
		if err != nil {
			t.Fatal(err)
		}
		prog, err := syntax.Compile(tree.Simplify())
		if err != nil {
			t.Fatal(err)
		}
		got := progSize(tree, 1<<30)
		if got < len(prog.Inst) || got > 2*len(prog.Inst)+2 {
			t.Errorf("progSize(%.40q) = %d, compiled %d instructions", expr, got, len(prog.Inst))
		}
	}
}
