package remotes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/registry"
)

// serveLine runs Serve on one request line, with its input kept open as
// edged keeps it, and returns the message it ended with.
func serveLine(t *testing.T, line string) (registry.Message, error) {
	t.Helper()
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte(line))
	var out bytes.Buffer
	err := Serve(context.Background(), pr, &out, 0)
	var m registry.Message
	if out.Len() > 0 {
		if jerr := json.Unmarshal(out.Bytes(), &m); jerr != nil {
			t.Fatalf("helper wrote %q: %v", out.String(), jerr)
		}
	}
	return m, err
}

func TestServeBadRequests(t *testing.T) {
	if err := Serve(context.Background(), strings.NewReader(""), io.Discard, 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("no request: %v", err)
	}
	if err := Serve(context.Background(), strings.NewReader("{not json\n"), io.Discard, 0); err == nil || !strings.Contains(err.Error(), "malformed request") {
		t.Errorf("malformed request: %v", err)
	}
	store := t.TempDir()
	for _, tc := range []struct {
		req  registry.Request
		kind error
		msg  string
	}{
		{registry.Request{Op: "delete", Store: store, Ref: "r.io/a:1"}, errdefs.ErrInvalidArgument, `"delete" is not "pull" or "push"`},
		{registry.Request{Op: registry.OpPull, Ref: "r.io/a:1"}, errdefs.ErrInvalidArgument, "store: must not be empty"},
		{registry.Request{Op: registry.OpPush, Store: store, Ref: "r.io/a:1"}, errdefs.ErrInvalidArgument, "needs the root descriptor"},
		{registry.Request{Op: registry.OpPull, Store: store, Ref: "r.io/a:1", Platform: "a//b"}, errdefs.ErrInvalidArgument, "os/arch"},
		{registry.Request{Op: registry.OpPull, Store: store, Ref: "r.io/UPPER", Credentials: &registry.Credentials{Username: "u", Password: "p"}}, errdefs.ErrInvalidArgument, "reference"},
		{registry.Request{Op: registry.OpPull, Store: store, Ref: "r.io/a:1", Hosts: map[string]registry.HostConfig{"r.io": {Mirrors: []string{"ftp://x"}}}}, errdefs.ErrInvalidArgument, "scheme must be http or https"},
	} {
		b, _ := json.Marshal(tc.req)
		m, err := serveLine(t, string(b)+"\n")
		if err != nil {
			t.Errorf("%+v: Serve: %v", tc.req, err)
			continue
		}
		if m.Error == nil || m.Result != nil {
			t.Errorf("%+v: ended with %+v, want an error", tc.req, m)
			continue
		}
		if got := m.Error.Err(); !errors.Is(got, tc.kind) || !strings.Contains(got.Error(), tc.msg) {
			t.Errorf("%+v: error %v, want %v containing %q", tc.req, got, tc.kind, tc.msg)
		}
		if m.PeakRSSKiB <= 0 {
			t.Errorf("%+v: no peak RSS reported", tc.req)
		}
	}
}
