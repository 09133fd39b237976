package labels

import (
	"errors"
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
