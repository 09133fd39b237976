package labels

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

// The unsorted first pass finds a failure; the message always names the
// first bad key in key order, whatever the map's order.
func TestValidateMessageIsDeterministic(t *testing.T) {
	long := strings.Repeat("k", MaxKeySize+1)
	m := map[string]string{"b": strings.Repeat("v", MaxSize), long: "x", "a": "ok"}
	want := `labels: key "b": key and value are 4097 bytes, more than the maximum of 4096`
	for i := 0; i < 50; i++ {
		err := Validate("labels", m)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
			t.Fatalf("try %d: %v, want %q", i, err, want)
		}
	}
	total := map[string]string{}
	for i := 0; i < 20; i++ {
		total[string(rune('a'+i))] = strings.Repeat("v", MaxSize-1)
	}
	if err := Validate("labels", total); err == nil || !strings.Contains(err.Error(), "labels total more than the maximum of 65536 bytes") {
		t.Fatalf("over the total: %v", err)
	}
	if err := Validate("labels", map[string]string{"a": "b"}); err != nil {
		t.Fatal(err)
	}
}

// Keys and values must be valid UTF-8 (protobuf string fields; a consumer
// built on google.golang.org/protobuf rejects a message with invalid ones)
// without NUL bytes.
func TestValidateText(t *testing.T) {
	for _, c := range []struct {
		m    map[string]string
		want string
	}{
		{map[string]string{"a\x00b": "v"}, `labels: key "a\x00b" contains a NUL byte: invalid argument`},
		{map[string]string{"a\xffb": "v"}, `labels: key "a\xffb" is not valid UTF-8: invalid argument`},
		{map[string]string{"k": "v\x00"}, `labels: value of key "k" contains a NUL byte: invalid argument`},
		{map[string]string{"k": "\xc3"}, `labels: value of key "k" is not valid UTF-8: invalid argument`},
	} {
		for name, err := range map[string]error{"Validate": Validate("labels", c.m), "ValidateText": ValidateText("labels", c.m)} {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || err.Error() != c.want {
				t.Errorf("%s(%q): %v, want %q", name, c.m, err, c.want)
			}
		}
	}
	if err := Validate("labels", map[string]string{"ключ": "värde ✓"}); err != nil {
		t.Fatalf("UTF-8 labels: %v", err)
	}
}

// ValidateChange holds only what an update adds or changes to the text
// rule; the limits apply to the whole set.
func TestValidateChange(t *testing.T) {
	old := map[string]string{"app": "web", "bad": "\xff"}
	for _, c := range []struct {
		m    map[string]string
		want string
	}{
		{map[string]string{"app": "web", "bad": "\xff", "new": "ok"}, ""},
		{map[string]string{"bad": "\xff"}, ""},
		{map[string]string{"app": "web", "bad": "\xfe"}, `labels: value of key "bad" is not valid UTF-8: invalid argument`},
		{map[string]string{"bad": "\xff", "n\x00": "v"}, `labels: key "n\x00" contains a NUL byte: invalid argument`},
		{map[string]string{"bad": "\xff", "k": strings.Repeat("v", MaxSize)}, `labels: key "k": key and value are 4097 bytes, more than the maximum of 4096: invalid argument`},
	} {
		err := ValidateChange("labels", old, c.m)
		if got := fmt.Sprint(err); (c.want == "" && err != nil) || (c.want != "" && got != c.want) {
			t.Errorf("ValidateChange(%q): %v, want %q", c.m, err, c.want)
		}
	}
	many := map[string]string{"bad": "\xff"}
	for i := 0; i < MaxCount; i++ {
		many[fmt.Sprint("k", i)] = "v"
	}
	if err := ValidateChange("labels", old, many); err == nil || err.Error() != "labels: 257 labels is more than the maximum of 256: invalid argument" {
		t.Errorf("257 labels: %v", err)
	}
}
