package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// The refusal warning comes at most once per period, and the next one
// counts the refusals not logged.
func TestRefuseLogger(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	const every = 200 * time.Millisecond
	f := refuseLogger(log, 4, every)
	start := time.Now()
	for range 5 {
		f(4)
	}
	if time.Since(start) >= every {
		t.Skip("the machine is too slow for a 200ms window")
	}
	if n := strings.Count(buf.String(), "connection refused"); n != 1 || !strings.Contains(buf.String(), "open=4 limit=4 refused_unlogged=0") {
		t.Fatalf("5 refusals within %v: want one warning with the counts, got:\n%s", every, buf.String())
	}
	time.Sleep(every)
	f(3)
	if n := strings.Count(buf.String(), "connection refused"); n != 2 || !strings.Contains(buf.String(), "open=3 limit=4 refused_unlogged=4") {
		t.Fatalf("a refusal after the period: want a second warning counting the 4 not logged, got:\n%s", buf.String())
	}
}
