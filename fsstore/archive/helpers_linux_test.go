//go:build linux

package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// item is one tar entry of a test layer.
type item struct {
	hdr  tar.Header
	body string
}

var testTime = time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)

func file(name, body string) item {
	return item{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: testTime}, body: body}
}

func dir(name string) item {
	return item{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: testTime}}
}

func symlink(name, target string) item {
	return item{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: testTime}}
}

func hardlink(name, target string) item {
	return item{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: testTime}}
}

func whiteout(name string) item { return file(name, "") }

// tarOf writes the items as a PAX tar.
func tarOf(t testing.TB, items ...item) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, it := range items {
		h := it.hdr
		h.Format = tar.FormatPAX
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(it.body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %q: %v", h.Name, err)
		}
		if it.body != "" {
			if _, err := tw.Write([]byte(it.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// env is a root directory with a sentinel directory next to it, plus a
// snapshot of everything that must not change.
type env struct {
	base, root, sentinel string
	before               map[string]string
	passwd               string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	base := t.TempDir()
	e := &env{base: base, root: filepath.Join(base, "root"), sentinel: filepath.Join(base, "sentinel")}
	mustNoErr(t, os.Mkdir(e.root, 0o755))
	mustNoErr(t, os.MkdirAll(filepath.Join(e.sentinel, "dir"), 0o755))
	mustNoErr(t, os.WriteFile(filepath.Join(e.sentinel, "file"), []byte("secret"), 0o644))
	mustNoErr(t, os.WriteFile(filepath.Join(e.sentinel, "dir", "inner"), []byte("inner"), 0o600))
	mustNoErr(t, os.Symlink("file", filepath.Join(e.sentinel, "link")))
	e.before = snapshot(t, e.sentinel)
	e.passwd = statLine(t, "/etc/passwd")
	return e
}

// checkOutside fails the test if anything outside root changed.
func (e *env) checkOutside(t testing.TB) {
	t.Helper()
	after := snapshot(t, e.sentinel)
	if d := diffSnap(e.before, after); d != "" {
		t.Fatalf("sentinel outside root changed:\n%s", d)
	}
	ents, err := os.ReadDir(e.base)
	mustNoErr(t, err)
	var names []string
	for _, de := range ents {
		names = append(names, de.Name())
	}
	if strings.Join(names, ",") != "root,sentinel" {
		t.Fatalf("new entries next to root: %v", names)
	}
	if got := statLine(t, "/etc/passwd"); got != e.passwd {
		t.Fatalf("/etc/passwd changed: %s -> %s", e.passwd, got)
	}
}

func statLine(t testing.TB, path string) string {
	t.Helper()
	var st unix.Stat_t
	mustNoErr(t, unix.Lstat(path, &st))
	data, err := os.ReadFile(path)
	mustNoErr(t, err)
	sum := sha256.Sum256(data)
	return fmt.Sprintf("mode=%o nlink=%d uid=%d size=%d mtime=%d.%d sha=%s",
		st.Mode, st.Nlink, st.Uid, st.Size, st.Mtim.Sec, st.Mtim.Nsec, hex.EncodeToString(sum[:8]))
}

// snapshot describes every file under dir (mode, owner, size, times, links,
// content hash, symlink target).
func snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("mode=%o uid=%d gid=%d nlink=%d size=%d mtime=%d.%d rdev=%d",
			st.Mode, st.Uid, st.Gid, st.Nlink, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Rdev)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			line += " sha=" + hex.EncodeToString(sum[:8])
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		}
		out[rel] = line
		return nil
	})
	mustNoErr(t, err)
	return out
}

func diffSnap(a, b map[string]string) string {
	var lines []string
	for k, v := range a {
		if b[k] != v {
			lines = append(lines, fmt.Sprintf("%s: %q -> %q", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			lines = append(lines, fmt.Sprintf("%s: new %q", k, v))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// tree lists the names under dir, with a type letter, in walk order.
func tree(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		kind := "f"
		switch {
		case d.IsDir():
			kind = "d"
		case d.Type()&fs.ModeSymlink != 0:
			kind = "l"
		case d.Type()&fs.ModeCharDevice != 0:
			kind = "c"
		}
		out = append(out, rel+":"+kind)
		return nil
	})
	mustNoErr(t, err)
	return out // WalkDir visits in lexical order
}

func mustNoErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func lstatT(t testing.TB, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return st
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
