package oci

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
)

// resolveBoth runs resolveUser through openat2 and through the os.Root
// fallback (used on kernels before 5.6).
func resolveBoth(t *testing.T, rootfs, spec string, extra []uint32, fn func(t *testing.T, u resolvedUser, err error)) {
	t.Helper()
	for _, fallback := range []bool{false, true} {
		t.Run(fmt.Sprintf("osroot=%v", fallback), func(t *testing.T) {
			r := newRootFS(rootfs)
			defer r.close()
			r.noOpenat2 = fallback
			u, err := resolveUser(r, "WithUser", spec, extra)
			if !fallback && r.noOpenat2 {
				t.Fatal("openat2 is not available on this kernel; the openat2 path went untested")
			}
			fn(t, u, err)
		})
	}
}

func TestResolveUser(t *testing.T) {
	rootfs := testRootfs(t)
	tests := []struct {
		spec  string
		extra []uint32
		uid   uint32
		gid   uint32
		sgids []uint32
		home  string
	}{
		{spec: "", uid: 0, gid: 0, home: "/root"},
		{spec: "0", uid: 0, gid: 0, home: "/root"},
		{spec: "root", uid: 0, gid: 0, home: "/root"},
		{spec: "app", uid: 1000, gid: 1000, sgids: []uint32{44, 29}, home: "/home/app"},
		{spec: "1000", uid: 1000, gid: 1000, sgids: []uint32{44, 29}, home: "/home/app"},
		{spec: "app:video", uid: 1000, gid: 44, home: "/home/app"},
		{spec: "app:7", uid: 1000, gid: 7, home: "/home/app"},
		{spec: "1000:1000", uid: 1000, gid: 1000, home: "/home/app"},
		{spec: "daemon", uid: 1, gid: 1, sgids: []uint32{44, 29}, home: "/usr/sbin"},
		{spec: "nohome", uid: 1001, gid: 1001, home: "/"},
		{spec: "5000", uid: 5000, gid: 0, home: "/"},
		{spec: "5000:5001", uid: 5000, gid: 5001, home: "/"},
		{spec: "5000:video", uid: 5000, gid: 44, home: "/"},
		{spec: "123", uid: 123, gid: 0, home: "/"}, // all digits is a uid, not the user named "123"
		{spec: "app", extra: []uint32{29, 9}, uid: 1000, gid: 1000, sgids: []uint32{44, 29, 9}, home: "/home/app"},
		{spec: "4294967294", uid: 4294967294, home: "/"},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			resolveBoth(t, rootfs, tc.spec, tc.extra, func(t *testing.T, u resolvedUser, err error) {
				if err != nil {
					t.Fatal(err)
				}
				if u.user.UID != tc.uid || u.user.GID != tc.gid || !reflect.DeepEqual(u.user.AdditionalGids, tc.sgids) || u.home != tc.home {
					t.Errorf("got uid %d gid %d sgids %v home %q, want %d %d %v %q", u.user.UID, u.user.GID, u.user.AdditionalGids, u.home, tc.uid, tc.gid, tc.sgids, tc.home)
				}
			})
		})
	}
}

func TestResolveUserNoPasswd(t *testing.T) {
	rootfs := t.TempDir() // no /etc at all
	resolveBoth(t, rootfs, "1000:1000", nil, func(t *testing.T, u resolvedUser, err error) {
		if err != nil || u.user.UID != 1000 || u.user.GID != 1000 || u.home != "/" {
			t.Errorf("user %+v home %q err %v", u.user, u.home, err)
		}
	})
	resolveBoth(t, rootfs, "app", nil, func(t *testing.T, u resolvedUser, err error) {
		if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `user "app" not found in the image's /etc/passwd`) {
			t.Errorf("err %v", err)
		}
	})
	resolveBoth(t, rootfs, "1:wheel", nil, func(t *testing.T, u resolvedUser, err error) {
		if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `group "wheel" not found`) {
			t.Errorf("err %v", err)
		}
	})
}

// hostileRootfs builds a rootfs whose /etc/passwd and /etc/group are
// symlinks out of it, to files outside that hold a distinctive user.
func hostileRootfs(t *testing.T, absolute bool) (rootfs string) {
	t.Helper()
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	mustWrite(t, filepath.Join(outside, "passwd"), "hostile:x:4242:4343:HOST SECRET:/host-secret:/bin/sh\n")
	mustWrite(t, filepath.Join(outside, "group"), "hostgrp:x:4444:hostile\n")
	rootfs = filepath.Join(base, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"passwd", "group"} {
		target := filepath.Join(outside, f) // absolute host path
		if !absolute {
			target = "../../../../../../../../" + strings.TrimPrefix(target, "/")
		}
		if err := os.Symlink(target, filepath.Join(rootfs, "etc", f)); err != nil {
			t.Fatal(err)
		}
	}
	return rootfs
}

func TestResolveUserHostileSymlinks(t *testing.T) {
	for _, absolute := range []bool{true, false} {
		t.Run(fmt.Sprintf("absolute=%v", absolute), func(t *testing.T) {
			rootfs := hostileRootfs(t, absolute)
			// Sanity: the files really are reachable from the host, so a
			// resolver that followed the links would find the user.
			if b, err := os.ReadFile(filepath.Join(rootfs, "etc", "passwd")); err != nil || !strings.Contains(string(b), "hostile") {
				t.Fatalf("test setup: host read of the link gives %q, %v", b, err)
			}
			resolveBoth(t, rootfs, "hostile", nil, func(t *testing.T, u resolvedUser, err error) {
				if err == nil {
					t.Fatalf("resolved the host's user: %+v home %q", u.user, u.home)
				}
				if strings.Contains(err.Error(), "4242") || strings.Contains(err.Error(), "SECRET") {
					t.Errorf("error leaks host data: %v", err)
				}
			})
			resolveBoth(t, rootfs, "4242", nil, func(t *testing.T, u resolvedUser, err error) {
				if u.user.GID == 4343 || u.home == "/host-secret" {
					t.Fatalf("numeric uid picked up the host's passwd entry: %+v home %q", u.user, u.home)
				}
			})
			resolveBoth(t, rootfs, "0:hostgrp", nil, func(t *testing.T, u resolvedUser, err error) {
				if err == nil {
					t.Fatalf("resolved the host's group: %+v", u.user)
				}
			})
		})
	}
	// Through Generate (openat2): the name is simply not in the image.
	_, err := Generate(context.Background(), "default", "c1", hostileRootfs(t, true), &ocispec.ImageConfig{Cmd: []string{"x"}}, WithUser("hostile"))
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `user "hostile" not found`) {
		t.Errorf("Generate: %v", err)
	}
}

// TestResolveUserSymlinksInsideRoot: absolute symlinks are resolved inside
// the rootfs with openat2 (as the container would see them); the os.Root
// fallback refuses them rather than risk an escape.
func TestResolveUserSymlinksInsideRoot(t *testing.T) {
	rootfs := t.TempDir()
	mustWrite(t, filepath.Join(rootfs, "usr", "lib", "passwd"), "inside:x:77:78::/in:/bin/sh\n")
	mustWrite(t, filepath.Join(rootfs, "usr", "lib", "group"), "g:x:79:inside\n")
	for _, f := range []string{"passwd", "group"} {
		if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/usr/lib/"+f, filepath.Join(rootfs, "etc", f)); err != nil {
			t.Fatal(err)
		}
	}
	r := newRootFS(rootfs)
	defer r.close()
	u, err := resolveUser(r, "WithUser", "inside", nil)
	if err != nil || u.user.UID != 77 || u.user.GID != 78 || !reflect.DeepEqual(u.user.AdditionalGids, []uint32{79}) || u.home != "/in" {
		t.Errorf("openat2: %+v %q %v", u.user, u.home, err)
	}
	r2 := newRootFS(rootfs)
	defer r2.close()
	r2.noOpenat2 = true
	if _, err := resolveUser(r2, "WithUser", "inside", nil); err == nil || !strings.Contains(err.Error(), "escapes") {
		t.Errorf("os.Root fallback: want an escape error, got %v", err)
	}
}

func TestResolveUserHostileFiles(t *testing.T) {
	t.Run("fifo", func(t *testing.T) {
		rootfs := t.TempDir()
		if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mkfifo(filepath.Join(rootfs, "etc", "passwd"), 0o644); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			resolveBoth(t, rootfs, "app", nil, func(t *testing.T, _ resolvedUser, err error) {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "image file /etc/passwd is not a regular file") {
					t.Errorf("err %v", err)
				}
			})
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("resolving through a FIFO /etc/passwd blocked")
		}
	})
	t.Run("directory", func(t *testing.T) {
		rootfs := t.TempDir()
		if err := os.MkdirAll(filepath.Join(rootfs, "etc", "passwd"), 0o755); err != nil {
			t.Fatal(err)
		}
		resolveBoth(t, rootfs, "1000", nil, func(t *testing.T, _ resolvedUser, err error) {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "WithUser: resolving user \"1000\": image file /etc/passwd is not a regular file") {
				t.Errorf("err %v", err)
			}
		})
	})
	t.Run("symlink to device", func(t *testing.T) {
		rootfs := t.TempDir()
		mustWrite(t, filepath.Join(rootfs, "etc", "group"), "")
		if err := os.Symlink("/dev/zero", filepath.Join(rootfs, "etc", "passwd")); err != nil {
			t.Fatal(err)
		}
		// /dev/zero inside the rootfs does not exist: no passwd, so a
		// name is not found (and the host's /dev/zero is never read).
		resolveBoth(t, rootfs, "app", nil, func(t *testing.T, _ resolvedUser, err error) {
			if err == nil {
				t.Fatal("resolved")
			}
		})
	})
	t.Run("symlink loop", func(t *testing.T) {
		rootfs := t.TempDir()
		if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("passwd", filepath.Join(rootfs, "etc", "passwd")); err != nil {
			t.Fatal(err)
		}
		resolveBoth(t, rootfs, "app", nil, func(t *testing.T, _ resolvedUser, err error) {
			if err == nil || !strings.Contains(err.Error(), "WithUser: resolving user \"app\"") {
				t.Errorf("err %v", err)
			}
		})
	})
	t.Run("oversized", func(t *testing.T) {
		rootfs := t.TempDir()
		line := "filler:x:9:9::/:/bin/sh\n"
		big := strings.Repeat(line, MaxIDFileSize/len(line)+1) + "late:x:5:5::/late:/bin/sh\n"
		mustWrite(t, filepath.Join(rootfs, "etc", "passwd"), "early:x:3:3::/early:/bin/sh\n"+big)
		resolveBoth(t, rootfs, "late", nil, func(t *testing.T, _ resolvedUser, err error) {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "image file /etc/passwd is larger than 1048576 bytes") {
				t.Errorf("err %v", err)
			}
		})
		// An entry found within the limit resolves.
		resolveBoth(t, rootfs, "early", nil, func(t *testing.T, u resolvedUser, err error) {
			if err != nil || u.user.UID != 3 {
				t.Errorf("user %+v err %v", u.user, err)
			}
		})
	})
	t.Run("exactly the limit", func(t *testing.T) {
		rootfs := t.TempDir()
		last := "last:x:6:6::/l:/bin/sh\n"
		comment := "#" + strings.Repeat("c", 1022) + "\n"
		pad := strings.Repeat(comment, (MaxIDFileSize-len(last))/len(comment))
		pad += strings.Repeat("#", MaxIDFileSize-len(last)-len(pad)-1) + "\n"
		mustWrite(t, filepath.Join(rootfs, "etc", "passwd"), pad+last)
		resolveBoth(t, rootfs, "last", nil, func(t *testing.T, u resolvedUser, err error) {
			if err != nil || u.user.UID != 6 {
				t.Errorf("user %+v err %v", u.user, err)
			}
		})
	})
	t.Run("long line", func(t *testing.T) {
		rootfs := t.TempDir()
		mustWrite(t, filepath.Join(rootfs, "etc", "passwd"), "x:x:1:1:"+strings.Repeat("g", 70000)+":/:/bin/sh\n")
		resolveBoth(t, rootfs, "app", nil, func(t *testing.T, _ resolvedUser, err error) {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "has a line longer than 65536 bytes") {
				t.Errorf("err %v", err)
			}
		})
	})
	t.Run("too many groups", func(t *testing.T) {
		rootfs := t.TempDir()
		mustWrite(t, filepath.Join(rootfs, "etc", "passwd"), "u:x:1:1::/:/bin/sh\n")
		var b strings.Builder
		for i := 0; i <= maxGroups; i++ {
			fmt.Fprintf(&b, "g:x:%d:u\n", i+10)
		}
		mustWrite(t, filepath.Join(rootfs, "etc", "group"), b.String())
		resolveBoth(t, rootfs, "u", nil, func(t *testing.T, _ resolvedUser, err error) {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), `user "u" is in more than 65536 groups`) {
				t.Errorf("err %v", err)
			}
		})
	})
}
