package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

func wantErr(t *testing.T, err, kind error, substrs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected %v error, got nil", kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("expected errors.Is(%v), got %v", kind, err)
	}
	for _, s := range substrs {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not contain %q", err, s)
		}
	}
}

func isMount(t *testing.T, p string) bool {
	t.Helper()
	ok, err := IsMountPoint(p)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestBindReadOnly(t *testing.T) {
	src, target := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := MountAll([]Mount{{Type: "bind", Source: src, Options: []string{"ro", "rbind"}}}, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { UnmountAll(target) })
	if !isMount(t, target) {
		t.Fatal("not mounted")
	}
	if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "hello" {
		t.Fatalf("read through bind: %q %v", b, err)
	}
	// "ro" needs the remount to take effect on a bind mount.
	if err := os.WriteFile(filepath.Join(target, "g"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("write into ro bind: %v", err)
	}
	if err := os.WriteFile(filepath.Join(src, "g"), nil, 0o644); err != nil {
		t.Fatalf("source became read-only: %v", err)
	}
	if err := UnmountAll(target); err != nil {
		t.Fatal(err)
	}
	if isMount(t, target) {
		t.Fatal("still mounted")
	}
}

func TestUnmountAllStackedAndMissing(t *testing.T) {
	target := t.TempDir()
	for range 3 {
		if err := MountAll([]Mount{{Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m", "nosuid"}}}, target); err != nil {
			t.Fatal(err)
		}
	}
	mps, err := MountPoints(target)
	if err != nil || len(mps) != 3 {
		t.Fatalf("mount points %v %v", mps, err)
	}
	if err := UnmountAll(target); err != nil {
		t.Fatal(err)
	}
	if isMount(t, target) {
		t.Fatal("stack not fully unmounted")
	}
	if err := UnmountAll(target); err != nil {
		t.Fatalf("unmounting a plain directory: %v", err)
	}
	if err := UnmountAll(filepath.Join(target, "nonexistent")); err != nil {
		t.Fatalf("unmounting a missing path: %v", err)
	}
}

func TestUnmountBusyFallsBackToLazy(t *testing.T) {
	target := t.TempDir()
	if err := MountAll([]Mount{{Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}}}, target); err != nil {
		t.Fatal(err)
	}
	// An open file keeps the mount busy.
	f, err := os.Create(filepath.Join(target, "busy"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := UnmountAll(target); err != nil {
		t.Fatalf("busy unmount: %v", err)
	}
	if isMount(t, target) {
		t.Fatal("busy mount not detached")
	}
	// The open file still works: lazy unmount frees the mount later.
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
}

func TestMountAllTargetsAndRollback(t *testing.T) {
	src, target := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	ms := []Mount{
		{Type: "bind", Source: src, Options: []string{"rbind"}},
		{Type: "tmpfs", Source: "tmpfs", Target: "sub", Options: []string{"size=1m"}},
	}
	if err := MountAll(ms, target); err != nil {
		t.Fatal(err)
	}
	if !isMount(t, filepath.Join(target, "sub")) {
		t.Fatal("sub mount missing")
	}
	if err := UnmountAll(filepath.Join(target, "sub")); err != nil {
		t.Fatal(err)
	}
	if err := UnmountAll(target); err != nil {
		t.Fatal(err)
	}

	// The second mount fails: the first is undone.
	bad := []Mount{
		{Type: "bind", Source: src, Options: []string{"rbind"}},
		{Type: "bind", Source: filepath.Join(src, "missing"), Target: "sub", Options: []string{"rbind"}},
	}
	err := MountAll(bad, target)
	if err == nil || !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("expected ENOENT naming the source, got %v", err)
	}
	if isMount(t, target) {
		t.Fatal("first mount not rolled back")
	}

	for _, tgt := range []string{"../escape", "a/../../b", "/"} {
		err := MountAll([]Mount{{Type: "tmpfs", Source: "tmpfs", Target: tgt}}, target)
		wantErr(t, err, errdefs.ErrInvalidArgument, "mount target")
	}
	if isMount(t, target) {
		t.Fatal("mounted despite bad target")
	}
}

func TestCheckOptions(t *testing.T) {
	lowers := make([]string, MaxOverlayLayers+1)
	for i := range lowers {
		lowers[i] = "/var/lib/edged/snapshots/snapshots/" + strings.Repeat("1", 3) + "/fs"
	}
	m := Mount{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + strings.Join(lowers, ":")}}
	wantErr(t, CheckOptions(m), errdefs.ErrResourceExhausted, "501 lower layers", "at most 500")
	m.Options = []string{"lowerdir=" + strings.Join(lowers[:MaxOverlayLayers], ":")}
	if err := CheckOptions(m); err != nil {
		t.Fatalf("500 short relative layers must fit: %v", err)
	}
	// Paths with no useful common parent cannot be shortened.
	long := make([]string, 200)
	for i := range long {
		long[i] = "/" + strings.Repeat("d", 30) + string(rune('a'+i%26)) + "/fs"
	}
	m.Options = []string{"lowerdir=" + strings.Join(long, ":")}
	wantErr(t, CheckOptions(m), errdefs.ErrResourceExhausted, "more than the kernel's limit of 4095")
	tm := Mount{Type: "tmpfs", Options: []string{strings.Repeat("x", 5000)}}
	wantErr(t, CheckOptions(tm), errdefs.ErrResourceExhausted, "tmpfs mount options are 5000 bytes")
	wantErr(t, tm.Mount(t.TempDir()), errdefs.ErrResourceExhausted)
}

func TestRelativize(t *testing.T) {
	dir, rel, ok := relativize([]string{"index=off", "workdir=/r/s/9/work", "upperdir=/r/s/9/fs", "lowerdir=/r/s/8/fs:/r/s/7/fs"})
	if !ok || dir != "/r/s" || rel != "index=off,workdir=9/work,upperdir=9/fs,lowerdir=8/fs:7/fs" {
		t.Fatalf("%q %q %v", dir, rel, ok)
	}
	if _, _, ok := relativize([]string{"lowerdir=relative/a:/abs/b"}); ok {
		t.Fatal("relative input accepted")
	}
	if _, _, ok := relativize([]string{"lowerdir=/a/x:/b/y"}); ok {
		t.Fatal("no common parent but accepted")
	}
}

func TestOverlayLongOptionsMount(t *testing.T) {
	// 120 lower layers with long absolute paths: more than a page, mounted
	// through the relative-path thread.
	base := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(base, &st); err == nil && st.Type == 0x794c7630 {
		base, _ = os.MkdirTemp("/var/tmp", "edged-mount-test-")
		t.Cleanup(func() { os.RemoveAll(base) })
	}
	deep := filepath.Join(base, strings.Repeat("long-directory-name-", 3))
	var lowers []string
	for i := range 120 {
		d := filepath.Join(deep, "layer", fmt.Sprintf("%04d", i), "fs")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		lowers = append(lowers, d)
	}
	upper, work := filepath.Join(deep, "layer", "up", "fs"), filepath.Join(deep, "layer", "up", "work")
	os.MkdirAll(upper, 0o755)
	os.MkdirAll(work, 0o755)
	m := Mount{Type: "overlay", Source: "overlay", Options: []string{
		"workdir=" + work, "upperdir=" + upper, "lowerdir=" + strings.Join(lowers, ":")}}
	if n := len(strings.Join(m.Options, ",")); n < unix.Getpagesize() {
		t.Fatalf("options only %d bytes", n)
	}
	target := t.TempDir()
	if err := MountAll([]Mount{m}, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { UnmountAll(target) })
	ents, err := os.ReadDir(target)
	if err != nil || len(ents) != 120 {
		t.Fatalf("%d entries through the overlay: %v", len(ents), err)
	}
	// The process's working directory was not touched.
	wd, _ := os.Getwd()
	if strings.HasPrefix(wd, deep) {
		t.Fatalf("cwd changed to %s", wd)
	}
	if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(upper, "new")); err != nil {
		t.Fatal("write did not reach the upper dir")
	}
}

func TestUnescapeOctal(t *testing.T) {
	if got := unescapeOctal(`/a\040b\134c\011`); got != "/a b\\c\t" {
		t.Fatalf("%q", got)
	}
	if got := unescapeOctal(`/plain`); got != "/plain" {
		t.Fatal(got)
	}
}

func TestMountPointsWithSpaces(t *testing.T) {
	target := filepath.Join(t.TempDir(), "with space")
	os.Mkdir(target, 0o755)
	if err := MountAll([]Mount{{Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}}}, target); err != nil {
		t.Fatal(err)
	}
	defer UnmountAll(target)
	if !isMount(t, target) {
		t.Fatal("mount point with a space not found")
	}
}
