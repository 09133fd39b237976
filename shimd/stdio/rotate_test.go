package stdio

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

func TestRotatingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	l, err := OpenRotatingFile(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("x", 29) + "\n" // 30 bytes
	for i := 0; i < 10; i++ {
		if _, err := l.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	// A line longer than a file is split across files.
	if _, err := l.Write([]byte(strings.Repeat("y", 250))); err != nil {
		t.Fatal(err)
	}
	l.Close()
	for _, n := range []string{path, path + ".1"} {
		st, err := os.Stat(n)
		if err != nil || st.Size() > 100 || st.Size() == 0 {
			t.Fatalf("%s: %v %v", n, st, err)
		}
	}
	if _, err := os.Stat(path + ".2"); !os.IsNotExist(err) {
		t.Fatal("max files 2 kept a third file")
	}
	cur, _ := os.ReadFile(path)
	if string(cur) != strings.Repeat("y", 50) {
		t.Fatalf("active file %q", cur)
	}
	// Appends to an existing log, counting its size.
	l, _ = OpenRotatingFile(path, 100, 1)
	l.Write([]byte(strings.Repeat("z", 60)))
	l.Close()
	cur, _ = os.ReadFile(path)
	if string(cur) != strings.Repeat("z", 60) {
		t.Fatalf("after rotation with max files 1: %q", cur)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		in   string
		kind error
		msg  string
	}{
		{"relative/fifo", errdefs.ErrInvalidArgument, "unsupported scheme"},
		{"file://host/x", errdefs.ErrInvalidArgument, "absolute"},
		{"file:///x?max-files=0", errdefs.ErrInvalidArgument, "max-files"},
		{"binary:///bin/logger", errdefs.ErrNotImplemented, "binary://"},
	} {
		err := Validate("stdout", c.in)
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: %v, want %v mentioning %q", c.in, err, c.kind, c.msg)
		}
	}
	for _, ok := range []string{"", "/run/fifo", "file:///var/log/c.log?max-size=10&max-files=2", "fifo:///run/x"} {
		if err := Validate("stdout", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

// A rotation that fails (here: a directory where path.1 goes) must not end
// logging: later writes redo it and go on once it can be done.
func TestRotatingFileRetriesFailedRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	l, err := OpenRotatingFile(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	line := strings.Repeat("x", 59) + "\n" // 60 bytes: every second write rotates
	if _, err := l.Write([]byte(line)); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path+".1", "busy"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Write([]byte(line)); err == nil {
		t.Fatal("rotation onto a directory succeeded")
	}
	if _, err := l.Write([]byte(line)); err == nil {
		t.Fatal("rotation onto a directory succeeded")
	}
	if got := l.Dropped(); got != 120 {
		t.Fatalf("dropped %d bytes, want 120", got)
	}
	if err := os.RemoveAll(path + ".1"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Write([]byte("after\n")); err != nil {
		t.Fatalf("write once the rotation can be done: %v", err)
	}
	if cur, _ := os.ReadFile(path); string(cur) != "after\n" {
		t.Fatalf("active file %q, want the write after the recovery", cur)
	}
	if old, _ := os.ReadFile(path + ".1"); string(old) != line {
		t.Fatalf("rotated file %q, want the first line", old)
	}
	l.Close()
	if _, err := l.Write([]byte("x\n")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("write after Close: %v, want ErrClosed", err)
	}
}

// A rotation that failed part way resumes at the rename that failed: the
// renames already done are not done again, which would shift a file once
// more over the next one. The state left by a failure at the last rename
// (the active file to .1) is set up directly: a rename in the middle of a
// rotation fails only on a full or failing disk, not on demand.
func TestRotatingFileResumesRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	l, err := OpenRotatingFile(path, 100, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for name, data := range map[string]string{path: "cur\n", path + ".2": "one\n", path + ".3": "two\n"} {
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l.mu.Lock()
	l.f.Close()
	l.f, l.rotating, l.next = nil, true, 1
	l.mu.Unlock()
	if _, err := l.Write([]byte("new\n")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{path: "new\n", path + ".1": "cur\n", path + ".2": "one\n", path + ".3": "two\n"} {
		if got, _ := os.ReadFile(name); string(got) != want {
			t.Errorf("%s = %q, want %q", filepath.Base(name), got, want)
		}
	}
}
