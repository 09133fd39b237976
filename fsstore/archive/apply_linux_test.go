//go:build linux

package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// capNetRaw is a VFS_CAP_REVISION_2 security.capability value granting
// CAP_NET_RAW (13) as permitted+effective.
func capNetRaw() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|1)
	binary.LittleEndian.PutUint32(b[4:], 1<<13)
	return string(b)
}

func TestApplyAllEntryTypes(t *testing.T) {
	e := newEnv(t)
	t1 := time.Date(2001, 2, 3, 4, 5, 6, 700, time.UTC)
	t2 := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)

	rootDir := dir("./")
	rootDir.hdr.Mode = 0o751
	rootDir.hdr.ModTime = t1
	etc := dir("etc/")
	etc.hdr.ModTime = t1
	etc.hdr.Mode = 0o750
	etc.hdr.Uid, etc.hdr.Gid = 7, 8
	hosts := file("etc/hosts", "127.0.0.1 localhost\n")
	hosts.hdr.Uid, hosts.hdr.Gid, hosts.hdr.ModTime = 1000, 2000, t2
	hosts.hdr.AccessTime = t1
	hosts.hdr.PAXRecords = map[string]string{
		"SCHILY.xattr.user.foo":         "bar",
		"SCHILY.xattr.security.selinux": "system_u:object_r:etc_t:s0",
		"SCHILY.xattr.trusted.other":    "x",
	}
	ping := file("bin/ping", "ELF...")
	ping.hdr.Mode = 0o4755
	ping.hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": capNetRaw()}
	tmp := dir("tmp/")
	tmp.hdr.Mode = 0o1777
	sg := file("usr/bin/sg", "sg")
	sg.hdr.Mode, sg.hdr.Gid = 0o2755, 50
	sh := symlink("bin/sh", "/usr/bin/dash")
	sh.hdr.Uid, sh.hdr.Gid, sh.hdr.ModTime = 5, 6, t2
	null := item{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: t2}}
	sda := item{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/sda", Mode: 0o660, Devmajor: 8, Devminor: 0, Gid: 6, ModTime: t2}}
	fifo := item{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "run/fifo", Mode: 0o600, ModTime: t2}}

	layer := tarOf(t, rootDir, etc, hosts, dir("bin/"), ping, tmp, sg, sh, hardlink("bin/ping2", "bin/ping"), null, sda, fifo)
	// Record padding after the end-of-archive marker is part of the diffID.
	layer = append(layer, make([]byte, 4096)...)

	res, err := Apply(context.Background(), e.root, bytes.NewReader(layer), ApplyOptions{})
	mustNoErr(t, err)
	sum := sha256.Sum256(layer)
	if want := digest.NewDigestFromBytes(digest.SHA256, sum[:]); res.DiffID != want {
		t.Errorf("DiffID = %s, want %s", res.DiffID, want)
	}
	if res.Size != int64(len(layer)) || res.Entries != 12 {
		t.Errorf("Size, Entries = %d, %d; want %d, 12", res.Size, res.Entries, len(layer))
	}

	r := e.root
	check := func(path string, mode uint32, uid, gid uint32) unix.Stat_t {
		t.Helper()
		st := lstatT(t, filepath.Join(r, path))
		if st.Mode != mode || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: mode %o uid %d gid %d; want %o %d %d", path, st.Mode, st.Uid, st.Gid, mode, uid, gid)
		}
		return st
	}
	st := check(".", unix.S_IFDIR|0o751, 0, 0)
	if int64(st.Mtim.Sec) != t1.Unix() || st.Mtim.Nsec != 700 {
		t.Errorf("root mtime %v", st.Mtim)
	}
	st = check("etc", unix.S_IFDIR|0o750, 7, 8)
	if int64(st.Mtim.Sec) != t1.Unix() {
		t.Errorf("etc mtime %d, want %d (directory times are set after their children)", st.Mtim.Sec, t1.Unix())
	}
	st = check("etc/hosts", unix.S_IFREG|0o644, 1000, 2000)
	if int64(st.Mtim.Sec) != t2.Unix() || int64(st.Atim.Sec) != t1.Unix() {
		t.Errorf("hosts times atime %d mtime %d", st.Atim.Sec, st.Mtim.Sec)
	}
	if got := readFile(t, filepath.Join(r, "etc/hosts")); got != "127.0.0.1 localhost\n" {
		t.Errorf("hosts content %q", got)
	}
	if v := getxattr(t, filepath.Join(r, "etc/hosts"), "user.foo"); v != "bar" {
		t.Errorf("user.foo = %q", v)
	}
	for _, dropped := range []string{"security.selinux", "trusted.other"} {
		if v := getxattr(t, filepath.Join(r, "etc/hosts"), dropped); v != "" {
			t.Errorf("%s was applied: %q", dropped, v)
		}
	}
	st = check("bin/ping", unix.S_IFREG|0o4755, 0, 0)
	if st.Nlink != 2 {
		t.Errorf("bin/ping nlink %d, want 2", st.Nlink)
	}
	if v := getxattr(t, filepath.Join(r, "bin/ping"), "security.capability"); v != capNetRaw() {
		t.Errorf("security.capability = %x", v)
	}
	st2 := check("bin/ping2", unix.S_IFREG|0o4755, 0, 0)
	if st2.Ino != st.Ino {
		t.Errorf("bin/ping2 is not a hardlink of bin/ping")
	}
	check("tmp", unix.S_IFDIR|0o1777, 0, 0)
	check("usr", unix.S_IFDIR|0o755, 0, 0) // implicit parent
	check("usr/bin/sg", unix.S_IFREG|0o2755, 0, 50)
	st = check("bin/sh", unix.S_IFLNK|0o777, 5, 6)
	if int64(st.Mtim.Sec) != t2.Unix() {
		t.Errorf("symlink mtime %d", st.Mtim.Sec)
	}
	if target, _ := os.Readlink(filepath.Join(r, "bin/sh")); target != "/usr/bin/dash" {
		t.Errorf("bin/sh -> %q", target)
	}
	st = check("dev/null", unix.S_IFCHR|0o666, 0, 0)
	if unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("dev/null rdev %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	st = check("dev/sda", unix.S_IFBLK|0o660, 0, 6)
	if unix.Major(st.Rdev) != 8 || unix.Minor(st.Rdev) != 0 {
		t.Errorf("dev/sda rdev %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	check("run/fifo", unix.S_IFIFO|0o600, 0, 0)
	e.checkOutside(t)
}

func getxattr(t testing.TB, path, name string) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(path, name, buf)
	if errors.Is(err, unix.ENODATA) {
		return ""
	}
	mustNoErr(t, err)
	return string(buf[:n])
}

// TestApplyReplaces checks tar replace semantics: later entries replace
// earlier ones, a directory entry keeps an existing directory.
func TestApplyReplaces(t *testing.T) {
	e := newEnv(t)
	d2 := dir("d/")
	d2.hdr.Mode = 0o700
	layer := tarOf(t,
		file("f", "one"), file("f", "two"),
		dir("d/"), file("d/child", "c"), d2,
		symlink("s", "f"), file("s", "regular now"),
		dir("x/"), file("x/deep", "gone"), file("x", "file replaces dir"),
	)
	_, err := Apply(context.Background(), e.root, bytes.NewReader(layer), ApplyOptions{})
	mustNoErr(t, err)
	if got := readFile(t, filepath.Join(e.root, "f")); got != "two" {
		t.Errorf("f = %q", got)
	}
	if st := lstatT(t, filepath.Join(e.root, "d")); st.Mode != unix.S_IFDIR|0o700 {
		t.Errorf("d mode %o", st.Mode)
	}
	if got := readFile(t, filepath.Join(e.root, "d/child")); got != "c" {
		t.Errorf("d/child = %q", got)
	}
	if st := lstatT(t, filepath.Join(e.root, "s")); st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("s is not a regular file: %o", st.Mode)
	}
	if got := readFile(t, filepath.Join(e.root, "x")); got != "file replaces dir" {
		t.Errorf("x = %q", got)
	}
	e.checkOutside(t)
}

// hostileCase is a layer that tries to escape root. Either it fails with an
// InvalidArgument error whose message contains wantErr, or it succeeds and
// check verifies where things landed. Nothing outside root may change.
type hostileCase struct {
	name    string
	mode    WhiteoutMode
	layer   func(e *env) []item
	wantErr string
	check   func(t *testing.T, e *env)
}

func hostileCases() []hostileCase {
	return []hostileCase{
		{name: "dotdot file", layer: func(e *env) []item { return []item{file("../sentinel/file", "pwned")} }, wantErr: `".." component`},
		{name: "dotdot in the middle", layer: func(e *env) []item { return []item{file("a/../../sentinel/x", "pwned")} }, wantErr: `".." component`},
		{name: "dotdot dir", layer: func(e *env) []item { return []item{dir("../sentinel/newdir/")} }, wantErr: `".." component`},
		{
			name:  "absolute name is confined",
			layer: func(e *env) []item { return []item{file(e.sentinel+"/file", "pwned")} },
			check: func(t *testing.T, e *env) {
				if got := readFile(t, filepath.Join(e.root, e.sentinel, "file")); got != "pwned" {
					t.Errorf("confined file = %q", got)
				}
			},
		},
		{
			name:  "write through relative symlink out of root",
			layer: func(e *env) []item { return []item{symlink("link", "../sentinel"), file("link/file", "pwned")} },
			check: func(t *testing.T, e *env) {
				// chroot semantics: ../sentinel from root is /sentinel.
				if got := readFile(t, filepath.Join(e.root, "sentinel/file")); got != "pwned" {
					t.Errorf("confined file = %q", got)
				}
				if target, _ := os.Readlink(filepath.Join(e.root, "link")); target != "../sentinel" {
					t.Errorf("symlink stored as %q", target)
				}
			},
		},
		{
			name: "write through absolute symlink",
			layer: func(e *env) []item {
				return []item{symlink("abs", e.sentinel), file("abs/file", "pwned"), dir("abs/dir/")}
			},
			check: func(t *testing.T, e *env) {
				if got := readFile(t, filepath.Join(e.root, e.sentinel, "file")); got != "pwned" {
					t.Errorf("confined file = %q", got)
				}
			},
		},
		{
			name:  "symlink to /etc then passwd",
			layer: func(e *env) []item { return []item{symlink("a", "/etc"), file("a/passwd", "root::0:0::/:/bin/sh\n")} },
			check: func(t *testing.T, e *env) {
				if got := readFile(t, filepath.Join(e.root, "etc/passwd")); !strings.HasPrefix(got, "root::") {
					t.Errorf("confined passwd = %q", got)
				}
			},
		},
		{
			name: "chained symlinks",
			layer: func(e *env) []item {
				return []item{symlink("a", "b"), symlink("b", "c/d"), dir("c/"), symlink("c/d", "../../../"+e.sentinel), file("a/file", "pwned")}
			},
			check: func(t *testing.T, e *env) {
				if got := readFile(t, filepath.Join(e.root, e.sentinel, "file")); got != "pwned" {
					t.Errorf("confined file = %q", got)
				}
			},
		},
		{name: "symlink loop", layer: func(e *env) []item { return []item{symlink("a", "b"), symlink("b", "a"), file("a/x", "x")} }, wantErr: "too many levels of symbolic links"},
		{
			name: "symlink replaces a directory written next",
			layer: func(e *env) []item {
				return []item{dir("d/"), file("d/ok", "ok"), symlink("d", e.sentinel), file("d/file", "pwned")}
			},
			check: func(t *testing.T, e *env) {
				if got := readFile(t, filepath.Join(e.root, e.sentinel, "file")); got != "pwned" {
					t.Errorf("confined file = %q", got)
				}
			},
		},
		{
			name:  "regular file replaces a symlink pointing out",
			layer: func(e *env) []item { return []item{symlink("s", e.sentinel+"/file"), file("s", "pwned")} },
			check: func(t *testing.T, e *env) {
				if got := readFile(t, filepath.Join(e.root, "s")); got != "pwned" {
					t.Errorf("s = %q", got)
				}
			},
		},
		{
			name: "directory entry over a symlink pointing out",
			layer: func(e *env) []item {
				return []item{symlink("s", e.sentinel+"/dir"), dir("s/"), file("s/inner", "pwned")}
			},
			check: func(t *testing.T, e *env) {
				if st := lstatT(t, filepath.Join(e.root, "s")); st.Mode&unix.S_IFMT != unix.S_IFDIR {
					t.Errorf("s is not a directory")
				}
			},
		},
		{name: "hardlink dotdot", layer: func(e *env) []item { return []item{hardlink("h", "../sentinel/file")} }, wantErr: `".." component`},
		{name: "hardlink absolute host file", layer: func(e *env) []item { return []item{hardlink("h", e.sentinel+"/file")} }, wantErr: "does not exist"},
		{name: "hardlink to /etc/passwd", layer: func(e *env) []item { return []item{hardlink("h", "/etc/passwd")} }, wantErr: "does not exist"},
		{
			name:    "hardlink through symlink",
			layer:   func(e *env) []item { return []item{symlink("s", e.sentinel), hardlink("h", "s/file")} },
			wantErr: "does not exist",
		},
		{
			name:    "hardlink through relative symlink",
			layer:   func(e *env) []item { return []item{symlink("s", "../../sentinel"), hardlink("h", "s/file")} },
			wantErr: "does not exist",
		},
		{
			name: "hardlink to a symlink links the symlink itself",
			layer: func(e *env) []item {
				return []item{symlink("s", e.sentinel+"/file"), hardlink("h", "s"), file("h2", "x")}
			},
			check: func(t *testing.T, e *env) {
				if st := lstatT(t, filepath.Join(e.root, "h")); st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Nlink != 2 {
					t.Errorf("h mode %o nlink %d, want a symlink with 2 links", st.Mode, st.Nlink)
				}
			},
		},
		{name: "hardlink to a directory", layer: func(e *env) []item { return []item{dir("d/"), hardlink("h", "d")} }, wantErr: "is a directory"},
		{name: "hardlink to root", layer: func(e *env) []item { return []item{hardlink("h", "./")} }, wantErr: "hardlink to the layer root"},
		{name: "hardlink to a whiteout device", layer: func(e *env) []item { return []item{whiteout(".wh.x"), hardlink("y", "x")} }, wantErr: "is a whiteout"},
		{
			name: "hardlink to a device node",
			layer: func(e *env) []item {
				return []item{{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Mode: 0o666, Devmajor: 1, Devminor: 3}}, hardlink("null2", "null")}
			},
			check: func(t *testing.T, e *env) {
				if st := lstatT(t, filepath.Join(e.root, "null2")); st.Nlink != 2 || st.Mode&unix.S_IFMT != unix.S_IFCHR {
					t.Errorf("null2 mode %o nlink %d", st.Mode, st.Nlink)
				}
			},
		},
		{name: "whiteout dotdot", layer: func(e *env) []item { return []item{whiteout("../.wh.sentinel")} }, wantErr: `".." component`},
		{name: "whiteout naming dotdot", mode: WhiteoutRemove, layer: func(e *env) []item { return []item{whiteout(".wh..."), whiteout("a/.wh...")} }, wantErr: `whiteout names ".."`},
		{name: "empty whiteout", layer: func(e *env) []item { return []item{whiteout(".wh.")} }, wantErr: `whiteout names ""`},
		{
			name: "whiteout through absolute symlink (remove mode)",
			mode: WhiteoutRemove,
			layer: func(e *env) []item {
				return []item{symlink("s", e.sentinel), whiteout("s/.wh.file"), whiteout("s/.wh.dir")}
			},
		},
		{
			name: "whiteout through relative symlink (remove mode)",
			mode: WhiteoutRemove,
			layer: func(e *env) []item {
				return []item{symlink("s", "../sentinel"), whiteout("s/.wh.file"), file("s/../.wh.sentinel", "")}
			},
			wantErr: `".." component`,
		},
		{
			name:  "opaque through symlink (remove mode)",
			mode:  WhiteoutRemove,
			layer: func(e *env) []item { return []item{symlink("s", e.sentinel), whiteout("s/.wh..wh..opq")} },
		},
		{
			name:  "whiteout through symlink (overlay mode)",
			layer: func(e *env) []item { return []item{symlink("s", "/"), whiteout("s/.wh.etc")} },
			check: func(t *testing.T, e *env) {
				if st := lstatT(t, filepath.Join(e.root, "etc")); !isWhiteoutDev(&st) {
					t.Errorf("etc is not a whiteout: %o", st.Mode)
				}
			},
		},
		{name: "whiteout used as directory", layer: func(e *env) []item { return []item{file(".wh.x/y", "")} }, wantErr: "used as a directory"},
		{name: "file under a file", layer: func(e *env) []item { return []item{file("f", "x"), file("f/g", "y")} }, wantErr: "is not a directory"},
		{name: "huge name", layer: func(e *env) []item { return []item{file(strings.Repeat("a/", 2100)+"x", "x")} }, wantErr: "the limit is 4095"},
		{name: "huge component", layer: func(e *env) []item { return []item{file(strings.Repeat("b", 300), "x")} }, wantErr: "the limit is 255"},
		{name: "huge symlink target", layer: func(e *env) []item { return []item{symlink("s", strings.Repeat("c", 5000))} }, wantErr: "symlink target"},
		{
			name:    "symlink target component too long",
			layer:   func(e *env) []item { return []item{symlink("s", strings.Repeat("a", 300)), file("s/x", "x")} },
			wantErr: "file name too long",
		},
		{name: "empty symlink target", layer: func(e *env) []item { return []item{symlink("s", "")} }, wantErr: "symlink target"},
		{
			name: "overlay opaque xattr",
			layer: func(e *env) []item {
				d := dir("d/")
				d.hdr.PAXRecords = map[string]string{"SCHILY.xattr.trusted.overlay.opaque": "y"}
				return []item{d}
			},
			wantErr: `"trusted.overlay.opaque" is reserved for overlayfs`,
		},
		{
			name: "overlay redirect xattr",
			layer: func(e *env) []item {
				f := file("f", "x")
				f.hdr.PAXRecords = map[string]string{"SCHILY.xattr.trusted.overlay.redirect": "/etc"}
				return []item{f}
			},
			wantErr: "reserved for overlayfs",
		},
		{
			name: "user overlay xattr",
			layer: func(e *env) []item {
				f := file("f", "x")
				f.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.overlay.metacopy": ""}
				return []item{f}
			},
			wantErr: "reserved for overlayfs",
		},
		{
			name: "device number out of range",
			layer: func(e *env) []item {
				return []item{{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "sdz", Devmajor: 5000, Devminor: 1}}}
			},
			wantErr: "device number 5000:1 is out of range",
		},
		{name: "non-directory root", layer: func(e *env) []item { return []item{file(".", "x")} }, wantErr: "cannot replace the layer root"},
		{
			name:    "unsupported entry type",
			layer:   func(e *env) []item { return []item{{hdr: tar.Header{Typeflag: 'V', Name: "volume"}}} },
			wantErr: "unsupported tar entry type",
		},
	}
}

func TestApplyHostileLayers(t *testing.T) {
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			layer := tarOf(t, tc.layer(e)...)
			_, err := Apply(context.Background(), e.root, bytes.NewReader(layer), ApplyOptions{Whiteouts: tc.mode})
			if tc.wantErr != "" {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v; want InvalidArgument containing %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if tc.check != nil {
				tc.check(t, e)
			}
			e.checkOutside(t)
		})
	}
}

func TestApplyErrorNamesEntry(t *testing.T) {
	e := newEnv(t)
	_, err := Apply(context.Background(), e.root, bytes.NewReader(tarOf(t, file("ok", "x"), file("a/../../evil", "x"))), ApplyOptions{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), `layer entry "a/../../evil"`) {
		t.Fatalf("err = %v", err)
	}
}

// TestApplyNULName crafts a PAX path record containing a NUL byte (Go's tar
// writer refuses to write one).
func TestApplyNULName(t *testing.T) {
	e := newEnv(t)
	name := strings.Repeat("n", 120) + "Q" + "tail"
	layer := tarOf(t, file(name, "x"))
	i := bytes.Index(layer, []byte("path="+strings.Repeat("n", 120)+"Q"))
	if i < 0 {
		t.Fatal("PAX path record not found")
	}
	layer[i+len("path=")+120] = 0
	_, err := Apply(context.Background(), e.root, bytes.NewReader(layer), ApplyOptions{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "not a valid tar stream") {
		t.Fatalf("err = %v", err)
	}
	e.checkOutside(t)
}

func TestApplyUnknownOwner(t *testing.T) {
	if strconv.IntSize < 64 {
		t.Skip("a tar header's uid cannot exceed 32 bits on this platform")
	}
	e := newEnv(t)
	f := file("f", "x")
	big := int64(1) << 40
	f.hdr.Uid = int(big)
	f.hdr.Format = tar.FormatPAX
	_, err := Apply(context.Background(), e.root, bytes.NewReader(tarOf(t, f)), ApplyOptions{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("err = %v", err)
	}
}

func TestApplyAufsMetadataSkipped(t *testing.T) {
	e := newEnv(t)
	layer := tarOf(t, dir(".wh..wh.plnk/"), file(".wh..wh.plnk/123.456", "x"), file(".wh..wh.aufs", ""), file("real", "r"))
	_, err := Apply(context.Background(), e.root, bytes.NewReader(layer), ApplyOptions{})
	mustNoErr(t, err)
	if got := tree(t, e.root); !reflect.DeepEqual(got, []string{"real:f"}) {
		t.Errorf("tree = %v", got)
	}
}

func TestApplyOverlayWhiteouts(t *testing.T) {
	e := newEnv(t)
	layer := tarOf(t,
		whiteout(".wh.gone"),
		dir("o/"), whiteout("o/.wh..wh..opq"), file("o/new", "n"),
		whiteout("deep/er/.wh.x"),
		file("mine", "m"), whiteout(".wh.mine"), // same layer: not hidden
		whiteout(".wh.later"), file("later", "l"), // entry after its whiteout replaces it
		whiteout("root-opq/.wh..wh..opq"),
	)
	_, err := Apply(context.Background(), e.root, bytes.NewReader(layer), ApplyOptions{Whiteouts: WhiteoutOverlay})
	mustNoErr(t, err)
	for _, p := range []string{"gone", "deep/er/x"} {
		st := lstatT(t, filepath.Join(e.root, p))
		if !isWhiteoutDev(&st) || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: mode %o rdev %d, want a 0:0 char device", p, st.Mode, st.Rdev)
		}
	}
	for _, d := range []string{"o", "root-opq"} {
		if v := getxattr(t, filepath.Join(e.root, d), "trusted.overlay.opaque"); v != "y" {
			t.Errorf("%s opaque xattr = %q", d, v)
		}
	}
	if got := readFile(t, filepath.Join(e.root, "mine")); got != "m" {
		t.Errorf("mine = %q", got)
	}
	if got := readFile(t, filepath.Join(e.root, "later")); got != "l" {
		t.Errorf("later = %q", got)
	}
	want := []string{"deep:d", "deep/er:d", "deep/er/x:c", "gone:c", "later:f", "mine:f", "o:d", "o/new:f", "root-opq:d"}
	if got := tree(t, e.root); !reflect.DeepEqual(got, want) {
		t.Errorf("tree = %v\nwant %v", got, want)
	}
	e.checkOutside(t)
}

// baseLayer and topLayer are used by the remove-mode and real-overlay tests.
func baseLayer(t testing.TB) []byte {
	return tarOf(t, file("a", "a"), file("b", "b"), dir("d/"), file("d/x", "x"), file("d/y", "y"),
		dir("o/"), file("o/p", "p"), dir("o/q/"), file("o/q/r", "r"), dir("gone/"), file("gone/f", "f"), symlink("lnk", "b"))
}

func topLayer(t testing.TB) []byte {
	return tarOf(t,
		whiteout(".wh.a"), whiteout("d/.wh.x"), whiteout(".wh.gone"), whiteout(".wh.lnk"), whiteout(".wh.never-existed"),
		dir("o/"), file("o/new", "n"), whiteout("o/.wh..wh..opq"), file("o/after", "after"),
		file("fresh", "f"), whiteout(".wh.fresh"),
	)
}

func TestApplyRemoveWhiteouts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := Apply(ctx, e.root, bytes.NewReader(baseLayer(t)), ApplyOptions{Whiteouts: WhiteoutRemove})
	mustNoErr(t, err)
	_, err = Apply(ctx, e.root, bytes.NewReader(topLayer(t)), ApplyOptions{Whiteouts: WhiteoutRemove})
	mustNoErr(t, err)
	// o/new was created before the opaque marker by the same layer: kept.
	want := []string{"b:f", "d:d", "d/y:f", "fresh:f", "o:d", "o/after:f", "o/new:f"}
	if got := tree(t, e.root); !reflect.DeepEqual(got, want) {
		t.Errorf("tree = %v\nwant %v", got, want)
	}
	e.checkOutside(t)
}

// TestApplyOverlayMount mounts two layers applied in overlay mode with the
// real kernel overlayfs and checks the merged view equals remove mode.
func TestApplyOverlayMount(t *testing.T) {
	if !hasOverlay() {
		t.Skip("overlayfs is not available in this kernel")
	}
	e := newEnv(t)
	ctx := context.Background()
	l1, l2, mnt, native := filepath.Join(e.root, "l1"), filepath.Join(e.root, "l2"), filepath.Join(e.root, "mnt"), filepath.Join(e.root, "native")
	for _, d := range []string{l1, l2, mnt, native} {
		mustNoErr(t, os.Mkdir(d, 0o755))
	}
	_, err := Apply(ctx, l1, bytes.NewReader(baseLayer(t)), ApplyOptions{})
	mustNoErr(t, err)
	_, err = Apply(ctx, l2, bytes.NewReader(topLayer(t)), ApplyOptions{})
	mustNoErr(t, err)
	mustNoErr(t, unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+l2+":"+l1))
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })

	_, err = Apply(ctx, native, bytes.NewReader(baseLayer(t)), ApplyOptions{Whiteouts: WhiteoutRemove})
	mustNoErr(t, err)
	_, err = Apply(ctx, native, bytes.NewReader(topLayer(t)), ApplyOptions{Whiteouts: WhiteoutRemove})
	mustNoErr(t, err)

	merged, want := tree(t, mnt), tree(t, native)
	if !reflect.DeepEqual(merged, want) {
		t.Errorf("overlay view %v\nremove mode  %v", merged, want)
	}
	if got := readFile(t, filepath.Join(mnt, "o/after")); got != "after" {
		t.Errorf("o/after = %q", got)
	}
}

func hasOverlay() bool {
	data, err := os.ReadFile("/proc/filesystems")
	return err == nil && bytes.Contains(data, []byte("\toverlay\n"))
}

func TestApplyTruncated(t *testing.T) {
	full := tarOf(t, file("a", strings.Repeat("A", 3000)), file("b", "bbb"))
	endOfB := len(full) - 1024 // without the end-of-archive marker
	cases := []struct {
		name  string
		input []byte
	}{
		{"empty", nil},
		{"inside a header", full[:100]},
		{"inside file content", full[:512+1000]},
		{"at an entry boundary", full[:endOfB]},
		{"after one zero block", full[:endOfB+512]},
		{"inside the end marker", full[:endOfB+700]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			_, err := Apply(context.Background(), e.root, bytes.NewReader(tc.input), ApplyOptions{})
			if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), "truncated") {
				t.Fatalf("err = %v; want ErrUnexpectedEOF and ErrDataLoss", err)
			}
			e.checkOutside(t)
		})
	}
}

func TestApplyNotATar(t *testing.T) {
	e := newEnv(t)
	junk := bytes.Repeat([]byte("this is not a tar archive "), 100)
	_, err := Apply(context.Background(), e.root, bytes.NewReader(junk), ApplyOptions{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "not a valid tar stream") {
		t.Fatalf("err = %v", err)
	}
}

func TestApplyLimits(t *testing.T) {
	layer := tarOf(t, file("a", strings.Repeat("x", 10000)), file("b", "y"), file("c", "z"))
	for _, tc := range []struct {
		name string
		opts ApplyOptions
		msg  string
	}{
		{"size", ApplyOptions{MaxSize: 5000}, "larger than the 5000 byte limit"},
		{"entries", ApplyOptions{MaxEntries: 2}, "more than 2 entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			_, err := Apply(context.Background(), e.root, bytes.NewReader(layer), tc.opts)
			if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestApplyBadArguments(t *testing.T) {
	e := newEnv(t)
	layer := tarOf(t, file("a", "a"))
	_, err := Apply(context.Background(), filepath.Join(e.base, "missing"), bytes.NewReader(layer), ApplyOptions{})
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing root: err = %v", err)
	}
	_, err = Apply(context.Background(), e.root, bytes.NewReader(layer), ApplyOptions{Whiteouts: 7})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "unknown mode 7") {
		t.Errorf("bad mode: err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Apply(ctx, e.root, bytes.NewReader(layer), ApplyOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
}

func TestApplySync(t *testing.T) {
	e := newEnv(t)
	_, err := Apply(context.Background(), e.root, bytes.NewReader(tarOf(t, file("a", "a"))), ApplyOptions{Sync: true})
	mustNoErr(t, err)
	if got := readFile(t, filepath.Join(e.root, "a")); got != "a" {
		t.Errorf("a = %q", got)
	}
}

// TestApplyManyDirectories crosses the pending directory-times flush.
func TestApplyManyDirectories(t *testing.T) {
	e := newEnv(t)
	var items []item
	// The test file system may be slow at mkdir: use a small flush limit.
	const limit = 50
	for i := 0; i < limit*3+10; i++ {
		items = append(items, dir("d"+strings.Repeat("x", i%7)+"/"+strconv.Itoa(i)+"/"))
	}
	items = append(items, dir("d/"), file("d/last", "x"))
	_, err := Apply(context.Background(), e.root, bytes.NewReader(tarOf(t, items...)), ApplyOptions{pendingTimes: limit})
	mustNoErr(t, err)
	if st := lstatT(t, filepath.Join(e.root, "d")); int64(st.Mtim.Sec) != testTime.Unix() {
		t.Errorf("d mtime %d, want %d", st.Mtim.Sec, testTime.Unix())
	}
	if st := lstatT(t, filepath.Join(e.root, "dx", "1")); int64(st.Mtim.Sec) != testTime.Unix() {
		t.Errorf("dx/1 mtime %d, want %d", st.Mtim.Sec, testTime.Unix())
	}
}

func gz(t testing.TB, data []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(data)
	mustNoErr(t, err)
	mustNoErr(t, zw.Close())
	return buf.Bytes()
}

func zst(t testing.TB, data []byte) []byte {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	mustNoErr(t, err)
	_, err = zw.Write(data)
	mustNoErr(t, err)
	mustNoErr(t, zw.Close())
	return buf.Bytes()
}

func TestApplyVerified(t *testing.T) {
	layer := tarOf(t, dir("etc/"), file("etc/os-release", "ID=edged\n"))
	sum := sha256.Sum256(layer)
	diffID := digest.NewDigestFromBytes(digest.SHA256, sum[:])
	cases := []struct {
		mediaType string
		blob      []byte
	}{
		{"application/vnd.oci.image.layer.v1.tar", layer},
		{"application/vnd.oci.image.layer.v1.tar+gzip", gz(t, layer)},
		{"application/vnd.oci.image.layer.v1.tar+zstd", zst(t, layer)},
		{"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", gz(t, layer)},
		{"application/vnd.docker.image.rootfs.diff.tar.gzip", gz(t, layer)},
		{"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", gz(t, layer)},
		{"", zst(t, layer)},
		{"", gz(t, layer)},
		{"", layer},
		{"application/vnd.docker.image.rootfs.diff.tar.gzip", layer}, // mislabelled: detected as plain tar
	}
	for _, tc := range cases {
		t.Run(tc.mediaType, func(t *testing.T) {
			e := newEnv(t)
			res, err := ApplyVerified(context.Background(), e.root, bytes.NewReader(tc.blob), tc.mediaType, diffID, ApplyOptions{})
			mustNoErr(t, err)
			if res.DiffID != diffID || res.Size != int64(len(layer)) || res.Entries != 2 {
				t.Errorf("result %+v", res)
			}
			if got := readFile(t, filepath.Join(e.root, "etc/os-release")); got != "ID=edged\n" {
				t.Errorf("content %q", got)
			}
		})
	}
}

func TestApplyVerifiedErrors(t *testing.T) {
	layer := tarOf(t, file("a", strings.Repeat("payload ", 2000)))
	sum := sha256.Sum256(layer)
	diffID := digest.NewDigestFromBytes(digest.SHA256, sum[:])
	other := digest.FromString("something else")
	gzBlob, zsBlob := gz(t, layer), zst(t, layer)

	t.Run("diffID mismatch", func(t *testing.T) {
		e := newEnv(t)
		_, err := ApplyVerified(context.Background(), e.root, bytes.NewReader(gzBlob), "", other, ApplyOptions{})
		if !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), diffID.String()) || !strings.Contains(err.Error(), other.String()) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("malformed diffID", func(t *testing.T) {
		e := newEnv(t)
		_, err := ApplyVerified(context.Background(), e.root, bytes.NewReader(gzBlob), "", "sha256:xyz", ApplyOptions{})
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "diffID") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unknown media type", func(t *testing.T) {
		e := newEnv(t)
		_, err := ApplyVerified(context.Background(), e.root, bytes.NewReader(gzBlob), "application/vnd.oci.image.layer.v1.tar+gzip+encrypted", diffID, ApplyOptions{})
		if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "+encrypted") {
			t.Fatalf("err = %v", err)
		}
	})
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"truncated gzip", gzBlob[:len(gzBlob)/2]},
		{"gzip without trailer", gzBlob[:len(gzBlob)-4]},
		{"truncated zstd", zsBlob[:len(zsBlob)/2]},
		{"zstd without last bytes", zsBlob[:len(zsBlob)-3]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			_, err := ApplyVerified(context.Background(), e.root, bytes.NewReader(tc.blob), "", diffID, ApplyOptions{})
			if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.Is(err, errdefs.ErrDataLoss) {
				t.Fatalf("err = %v; want ErrUnexpectedEOF and ErrDataLoss", err)
			}
			e.checkOutside(t)
		})
	}
	t.Run("corrupt gzip", func(t *testing.T) {
		e := newEnv(t)
		bad := bytes.Clone(gzBlob)
		bad[len(bad)-6] ^= 0xff // CRC
		_, err := ApplyVerified(context.Background(), e.root, bytes.NewReader(bad), "", diffID, ApplyOptions{})
		if !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), "gzip") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestVerifyReader(t *testing.T) {
	data := []byte("blob bytes")
	good := digest.FromBytes(data)
	r, err := VerifyReader(bytes.NewReader(data), good)
	mustNoErr(t, err)
	got, err := io.ReadAll(r)
	if err != nil || string(got) != string(data) {
		t.Fatalf("good: %q %v", got, err)
	}
	bad := digest.FromString("other")
	r, err = VerifyReader(bytes.NewReader(data), bad)
	mustNoErr(t, err)
	_, err = io.ReadAll(r)
	if !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), good.String()) || !strings.Contains(err.Error(), bad.String()) {
		t.Fatalf("bad: err = %v", err)
	}
	if _, err := VerifyReader(bytes.NewReader(data), "md5:abc"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("unsupported: err = %v", err)
	}
}

// TestApplyGNUTarCompat applies a layer made by the system's GNU tar, when
// present, to check interoperability beyond Go's writer.
func TestApplyGNUTarCompat(t *testing.T) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("tar binary not installed")
	}
	src := t.TempDir()
	mustNoErr(t, os.MkdirAll(filepath.Join(src, "a/b"), 0o755))
	mustNoErr(t, os.WriteFile(filepath.Join(src, "a/b/f"), []byte("gnu"), 0o640))
	mustNoErr(t, os.Symlink("b/f", filepath.Join(src, "a/l")))
	mustNoErr(t, os.Link(filepath.Join(src, "a/b/f"), filepath.Join(src, "a/h")))
	out, err := exec.Command(tarBin, "-C", src, "-cf", "-", ".").Output()
	mustNoErr(t, err)
	e := newEnv(t)
	res, err := ApplyVerified(context.Background(), e.root, bytes.NewReader(gz(t, out)), "", digest.FromBytes(out), ApplyOptions{})
	mustNoErr(t, err)
	if res.Size != int64(len(out)) {
		t.Errorf("size %d, want %d (GNU tar pads to 10240-byte records)", res.Size, len(out))
	}
	want := []string{"a:d", "a/b:d", "a/b/f:f", "a/h:f", "a/l:l"}
	if got := tree(t, e.root); !reflect.DeepEqual(got, want) {
		t.Errorf("tree = %v", got)
	}
}

// TestApplySparseRefused: a PAX 0.1 GNU sparse entry whose map declares a
// 1 TB file from one data byte.
func TestApplySparseRefused(t *testing.T) {
	e := newEnv(t)
	f := file("big", "x")
	// archive/tar's writer drops GNU.sparse.* records: write them under
	// another key and patch the bytes.
	f.hdr.PAXRecords = map[string]string{"XNU.sparse.numblocks": "1", "XNU.sparse.map": "0,1", "XNU.sparse.size": "1000000000000", "XNU.sparse.name": "big"}
	layer := bytes.ReplaceAll(tarOf(t, f), []byte("XNU.sparse."), []byte("GNU.sparse."))
	_, err := Apply(context.Background(), e.root, bytes.NewReader(layer), ApplyOptions{})
	if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "sparse") {
		t.Fatalf("err = %v", err)
	}
	if exists(filepath.Join(e.root, "big")) {
		t.Error("sparse file was created")
	}
	e.checkOutside(t)
}

// TestApplySameLayerWhiteouts checks the OCI rule that a whiteout hides only
// lower layers, never what its own layer creates, before or after it in the
// tar. Each case applies base then top twice: in overlay mode, mounted with
// the kernel's overlayfs, and in remove mode onto one directory. Both views
// must show want.
func TestApplySameLayerWhiteouts(t *testing.T) {
	if !hasOverlay() {
		t.Skip("overlayfs is not available in this kernel")
	}
	for _, tc := range []struct {
		name      string
		base, top []item
		want      []string
		contents  map[string]string // file contents checked in both views
	}{
		{
			name: "directory recreated after its whiteout",
			base: []item{dir("d/"), file("d/old", "o")},
			top:  []item{whiteout(".wh.d"), dir("d/"), file("d/new", "n")},
			want: []string{"d:d", "d/new:f"},
		},
		{
			name: "whiteout after the directory it names",
			base: []item{dir("d/"), file("d/old", "o")},
			top:  []item{dir("d/"), file("d/new", "n"), whiteout(".wh.d")},
			want: []string{"d:d", "d/new:f"},
		},
		{
			name: "whiteout after a directory created implicitly",
			base: []item{dir("d/"), file("d/old", "o"), dir("d/sub/"), file("d/sub/old", "o")},
			top:  []item{file("d/sub/new", "n"), whiteout(".wh.d")},
			want: []string{"d:d", "d/sub:d", "d/sub/new:f"},
		},
		{
			name:     "whiteout after a regular file",
			base:     []item{file("f", "old"), dir("d/"), file("d/old", "o")},
			top:      []item{file("f", "new"), whiteout(".wh.f"), file("d", "file"), whiteout(".wh.d")},
			want:     []string{"d:f", "f:f"},
			contents: map[string]string{"f": "new", "d": "file"},
		},
		{
			name: "directory replacing a file of the same layer",
			base: []item{dir("d/"), file("d/old", "o")},
			top:  []item{file("d", "file"), dir("d/"), file("d/new", "n")},
			want: []string{"d:d", "d/new:f"},
		},
		{
			name: "opaque marker after a nested child",
			base: []item{dir("d/"), dir("d/sub/"), file("d/sub/old", "o"), file("d/old", "o")},
			top:  []item{dir("d/"), dir("d/sub/"), file("d/sub/new", "n"), whiteout("d/.wh..wh..opq")},
			want: []string{"d:d", "d/sub:d", "d/sub/new:f"},
		},
		{
			name: "opaque marker before a nested child",
			base: []item{dir("d/"), dir("d/sub/"), file("d/sub/old", "o"), file("d/old", "o")},
			top:  []item{dir("d/"), whiteout("d/.wh..wh..opq"), dir("d/sub/"), file("d/sub/new", "n")},
			want: []string{"d:d", "d/sub:d", "d/sub/new:f"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			base, top := tarOf(t, tc.base...), tarOf(t, tc.top...)
			l1, l2, mnt, native := filepath.Join(e.root, "l1"), filepath.Join(e.root, "l2"), filepath.Join(e.root, "mnt"), filepath.Join(e.root, "native")
			for _, d := range []string{l1, l2, mnt, native} {
				mustNoErr(t, os.Mkdir(d, 0o755))
			}
			_, err := Apply(ctx, l1, bytes.NewReader(base), ApplyOptions{})
			mustNoErr(t, err)
			_, err = Apply(ctx, l2, bytes.NewReader(top), ApplyOptions{})
			mustNoErr(t, err)
			mustNoErr(t, unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+l2+":"+l1))
			t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
			_, err = Apply(ctx, native, bytes.NewReader(base), ApplyOptions{Whiteouts: WhiteoutRemove})
			mustNoErr(t, err)
			_, err = Apply(ctx, native, bytes.NewReader(top), ApplyOptions{Whiteouts: WhiteoutRemove})
			mustNoErr(t, err)

			for _, v := range []struct{ mode, dir string }{{"overlay", mnt}, {"remove", native}} {
				view, dir := v.mode, v.dir
				if got := tree(t, dir); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("%s mode: tree = %v\nwant %v", view, got, tc.want)
				}
				for p, want := range tc.contents {
					if got := readFile(t, filepath.Join(dir, p)); got != want {
						t.Errorf("%s mode: %s = %q, want %q", view, p, got, want)
					}
				}
			}
		})
	}
}
