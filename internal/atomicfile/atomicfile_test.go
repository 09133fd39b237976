package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteAndReplace(t *testing.T) {
	dir := t.TempDir()
	for name, write := range map[string]func(string, []byte, os.FileMode) error{"WriteFile": WriteFile, "Replace": Replace} {
		p := filepath.Join(dir, name)
		if err := write(p, []byte("one"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := write(p, []byte("two"), 0o640); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if string(b) != "two" || fi.Mode().Perm() != 0o640 {
			t.Fatalf("%s: %q %v", name, b, fi.Mode())
		}
		// No temp files are left behind.
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp-") {
				t.Fatalf("%s left %s", name, e.Name())
			}
		}
		// A missing directory is an error naming the problem.
		if err := write(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil || !strings.Contains(err.Error(), "atomicfile") {
			t.Fatalf("%s into a missing dir: %v", name, err)
		}
	}
}

func TestWriteStreamKeepsOldContentOnError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "archive.tar")
	if err := WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("stream broke")
	err := WriteStream(p, 0o644, func(w io.Writer) error {
		w.Write([]byte("partial"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("WriteStream error %v, want the stream's own", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Fatalf("failed stream replaced the file: %q", b)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("temp file left: %v", entries)
	}
}
