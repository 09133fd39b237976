package events

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/filters"
	"github.com/edged/edged/edged/namespaces"
)

// A subscriber keeps its compiled filters: four 4 KiB regular expressions
// once took 1.5 s and 564 MiB to compile and kept 105 MiB. Subscribe
// refuses them, and more than filters.MaxFilters filters, before that.
func TestSubscribeRefusesOversizedFilters(t *testing.T) {
	ex := New(0, nil)
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), "default"))
	defer cancel()

	huge := "topic~=" + strings.Repeat(`.{1000}`, 584) // 4095 bytes
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	_, _, err := ex.Subscribe(ctx, huge, huge, huge, huge)
	runtime.ReadMemStats(&m1)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "is too large") {
		t.Fatalf("Subscribe(4 huge regular expressions) = %.200v", err)
	}
	if total := (m1.TotalAlloc - m0.TotalAlloc) >> 20; total > 4 {
		t.Errorf("refusing the filters allocated %d MiB", total)
	}

	many := make([]string, filters.MaxFilters+1)
	for i := range many {
		many[i] = "topic==/tasks/exit"
	}
	if _, _, err := ex.Subscribe(ctx, many...); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "more than the maximum of 32") {
		t.Fatalf("Subscribe(%d filters) = %v", len(many), err)
	}
}
