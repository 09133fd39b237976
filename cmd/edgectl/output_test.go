package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/edged/edged/edged/filters"
	ptypesapi "github.com/edged/edged/proto/types"
)

// JSON output: zero values are written (a script reading a field of a
// zero value finds it); a followed stream writes one document per line;
// one-shot output is indented and parses the same.
func TestJSONOutput(t *testing.T) {
	ms := []*ptypesapi.Metrics{{Id: "a"}, {Id: "b"}}
	var line, indented bytes.Buffer
	if err := writeJSONLine(&line, ms, true); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(&indented, ms, true); err != nil {
		t.Fatal(err)
	}
	if s := line.String(); strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Fatalf("a stream sample is not one line: %q", s)
	}
	if strings.Count(indented.String(), "\n") < 3 {
		t.Fatalf("one-shot output is not indented: %q", indented.String())
	}
	for _, out := range []*bytes.Buffer{&line, &indented} {
		var got []map[string]any
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatalf("%q: %v", out.String(), err)
		}
		if len(got) != 2 || got[1]["id"] != "b" {
			t.Fatalf("decoded %v", got)
		}
		if _, ok := got[0]["timestamp"]; !ok {
			t.Fatalf("zero-valued field missing: %v", got[0])
		}
	}
	var empty bytes.Buffer
	if err := writeJSONLine(&empty, []*ptypesapi.Metrics{}, true); err != nil || empty.String() != "[]\n" {
		t.Fatalf("empty list: %q %v", empty.String(), err)
	}
}

// edgectl stats sends one id== filter per ID up to edged's limit on
// filters per request, and past it filters the metrics itself.
func TestStatsIDFilters(t *testing.T) {
	if maxIDFilters != filters.MaxFilters {
		t.Fatalf("maxIDFilters %d, edged's filters.MaxFilters %d", maxIDFilters, filters.MaxFilters)
	}
	few := []string{"a", "b"}
	if f := idFilters(few); len(f) != 2 || f[0] != "id==a" {
		t.Fatalf("idFilters(%v) = %v", few, f)
	}
	var many []string
	for i := 0; i <= maxIDFilters; i++ {
		many = append(many, fmt.Sprintf("c%d", i))
	}
	if f := idFilters(many); f != nil {
		t.Fatalf("%d IDs sent as %d filters, over edged's limit", len(many), len(f))
	}
	ms := []*ptypesapi.Metrics{{Id: "c0"}, {Id: "other"}, {Id: "c5"}}
	if got := keepIDs(ms, many); len(got) != 2 || got[0].Id != "c0" || got[1].Id != "c5" {
		t.Fatalf("keepIDs = %v", got)
	}
}
