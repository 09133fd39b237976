package filters

import (
	"errors"
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
