package netns

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

// newManager returns a Manager in a fresh temp dir; the dir's self bind
// mount and any namespace left by a failing test are unmounted at cleanup.
func newManager(t testing.TB) *Manager {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	dir := filepath.Join(t.TempDir(), "netns")
	m, err := New(dir)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			_ = unmountAll(filepath.Join(dir, e.Name()))
		}
		_ = unmountAll(dir)
	})
	return m
}

// mountsUnder returns the mount points in /proc/self/mountinfo at or below dir.
func mountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func selfNetnsInode(t testing.TB) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// assertAllThreadsInHostNetns checks that no thread of the test process was
// left in another network namespace.
func assertAllThreadsInHostNetns(t *testing.T, host uint64) {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/task/"+task.Name()+"/ns/net", &st); err != nil {
			continue // thread exited meanwhile
		}
		if st.Ino != host {
			t.Errorf("thread %s is in netns inode %d, want host %d", task.Name(), st.Ino, host)
		}
	}
}

func TestCreateListGetDelete(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	host := selfNetnsInode(t)

	a, err := m.Create(ctx, "a")
	if err != nil {
		t.Fatalf("Create a: %v", err)
	}
	b, err := m.Create(ctx, "b.2_x-y")
	if err != nil {
		t.Fatalf("Create b: %v", err)
	}
	if a.Path != filepath.Join(m.Dir(), "a") || a.Name != "a" {
		t.Fatalf("Create a = %+v", a)
	}
	if a.Inode == b.Inode || a.Inode == host || b.Inode == host {
		t.Fatalf("inodes not distinct: a=%d b=%d host=%d", a.Inode, b.Inode, host)
	}
	if got := len(mountsUnder(t, a.Path)); got != 1 {
		t.Fatalf("%s mounted %d times, want 1", a.Path, got)
	}

	list, err := m.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0] != a || list[1] != b {
		t.Fatalf("List = %+v, want [%+v %+v]", list, a, b)
	}
	got, err := m.Get(ctx, "a")
	if err != nil || got != a {
		t.Fatalf("Get a = %+v, %v; want %+v", got, err, a)
	}

	// The namespace is a real, separate one: only lo, and lo is up.
	err = m.Do(ctx, "a", func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		if len(ifs) != 1 || ifs[0].Name != "lo" {
			t.Errorf("interfaces in new netns = %+v, want only lo", ifs)
		}
		if len(ifs) > 0 && ifs[0].Flags&net.FlagUp == 0 {
			t.Errorf("lo flags = %v, want up", ifs[0].Flags)
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		if st.Ino != a.Inode {
			t.Errorf("Do ran in netns %d, want %d", st.Ino, a.Inode)
		}
		// 127.0.0.1 inside works (loopback is up).
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	assertAllThreadsInHostNetns(t, host)

	if err := m.Delete(ctx, "a"); err != nil {
		t.Fatalf("Delete a: %v", err)
	}
	if _, err := os.Lstat(a.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file %s still there after Delete: %v", a.Path, err)
	}
	if mp := mountsUnder(t, a.Path); len(mp) != 0 {
		t.Fatalf("mounts left after Delete: %v", mp)
	}
	list, err = m.List(ctx)
	if err != nil || len(list) != 1 || list[0] != b {
		t.Fatalf("List after Delete = %+v, %v", list, err)
	}
	if err := m.Delete(ctx, "b.2_x-y"); err != nil {
		t.Fatalf("Delete b: %v", err)
	}
	if mp := mountsUnder(t, m.Dir()); len(mp) != 1 || mp[0] != m.Dir() {
		t.Fatalf("mounts under dir = %v, want only the dir itself", mp)
	}

	// New on an existing manager dir is harmless and sees the same state.
	if _, err := m.Create(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	m2, err := New(m.Dir())
	if err != nil {
		t.Fatalf("New again: %v", err)
	}
	if l, err := m2.List(ctx); err != nil || len(l) != 1 || l[0].Name != "c" {
		t.Fatalf("List via second manager = %+v, %v", l, err)
	}
	if mp := mountsUnder(t, m.Dir()); len(mp) != 2 {
		t.Fatalf("mounts under dir after second New = %v, want dir and c", mp)
	}
	if err := m2.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
}

func TestErrors(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()

	for _, tc := range []struct{ name, msg string }{
		{"", "must not be empty"},
		{"..", "must match"},
		{"../x", "must match"},
		{"a/b", "must match"},
		{".hidden", "must match"},
		{"a b", "must match"},
		{strings.Repeat("x", 77), "longer than the maximum"},
	} {
		_, err := m.Create(ctx, tc.name)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "netns name") {
			t.Errorf("Create(%q) = %v, want invalid argument containing %q", tc.name, err, tc.msg)
		}
		if err := m.Delete(ctx, tc.name); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Delete(%q) = %v, want invalid argument", tc.name, err)
		}
		if _, err := m.Get(ctx, tc.name); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Get(%q) = %v, want invalid argument", tc.name, err)
		}
		if err := m.Do(ctx, tc.name, func() error { return nil }); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Do(%q) = %v, want invalid argument", tc.name, err)
		}
	}
	if entries, _ := os.ReadDir(m.Dir()); len(entries) != 0 {
		t.Fatalf("invalid names left files: %v", entries)
	}

	if err := m.Delete(ctx, "missing"); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `netns "missing"`) {
		t.Errorf("Delete missing = %v, want not found naming it", err)
	}
	if _, err := m.Get(ctx, "missing"); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Get missing = %v, want not found", err)
	}
	called := false
	if err := m.Do(ctx, "missing", func() error { called = true; return nil }); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Do missing = %v, want not found", err)
	}
	if called {
		t.Error("Do ran fn for a missing namespace")
	}

	if _, err := m.Create(ctx, "dup"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, "dup"); !errors.Is(err, errdefs.ErrAlreadyExists) || !strings.Contains(err.Error(), `netns "dup"`) {
		t.Errorf("second Create = %v, want already exists", err)
	}
	if got := len(mountsUnder(t, filepath.Join(m.Dir(), "dup"))); got != 1 {
		t.Errorf("dup mounted %d times after failed second Create, want 1", got)
	}

	// Do on things that are not network namespaces.
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Do(ctx, plain, func() error { return nil }); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "not a namespace file") {
		t.Errorf("Do(plain file) = %v, want invalid argument", err)
	}
	if err := Do(ctx, "/proc/self/ns/mnt", func() error { return nil }); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "not a network namespace") {
		t.Errorf("Do(mnt ns) = %v, want invalid argument", err)
	}
	if err := Do(ctx, "", func() error { return nil }); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Do(\"\") = %v, want invalid argument", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.Do(cctx, "dup", func() error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Do with canceled ctx = %v", err)
	}

	// fn's error comes back unchanged (wrapped).
	sentinel := errors.New("boom")
	if err := m.Do(ctx, "dup", func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do fn error = %v, want %v", err, sentinel)
	}

	if _, err := New("relative/dir"); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("New(relative) = %v", err)
	}
	if _, err := CreateAt(ctx, "rel"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("CreateAt(relative) = %v", err)
	}
	if _, err := PidPath(0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("PidPath(0) = %v", err)
	}
	if _, err := PidPath(1 << 30); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "process") {
		t.Errorf("PidPath(huge) = %v, want not found", err)
	}
}

func TestCreateFailureLeavesNothing(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	// A failure after the bind mount cannot be caused for real (the mount is
	// the last step that touches the kernel), so a test hook fails it.
	injected := errors.New("injected failure after mount")
	var sawMount bool
	m.afterMount = func(path string) error {
		sawMount = len(mountsUnder(t, path)) == 1
		return injected
	}
	if _, err := m.Create(ctx, "x"); !errors.Is(err, injected) {
		t.Fatalf("Create = %v, want injected error", err)
	}
	if !sawMount {
		t.Fatal("hook did not see the namespace mounted")
	}
	if mp := mountsUnder(t, m.Dir()); len(mp) != 1 {
		t.Fatalf("mounts left after failed Create: %v", mp)
	}
	if entries, _ := os.ReadDir(m.Dir()); len(entries) != 0 {
		t.Fatalf("files left after failed Create: %v", entries)
	}
	m.afterMount = nil

	// A real failure: the manager dir is not writable for the file create
	// because it was replaced by a read-only bind mount.
	if err := unix.Mount(m.Dir(), m.Dir(), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", m.Dir(), "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		unix.Unmount(m.Dir(), unix.MNT_DETACH)
		t.Fatal(err)
	}
	_, err := m.Create(ctx, "ro")
	unix.Unmount(m.Dir(), unix.MNT_DETACH)
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("Create on read-only dir = %v, want read-only error", err)
	}
	if mp := mountsUnder(t, m.Dir()); len(mp) != 1 {
		t.Fatalf("mounts left: %v", mp)
	}
}

func TestStaleFileIsReclaimed(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	stale := filepath.Join(m.Dir(), "stale")
	if err := os.WriteFile(stale, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if l, err := m.List(ctx); err != nil || len(l) != 0 {
		t.Fatalf("List with a stale file = %+v, %v; want empty", l, err)
	}
	if _, err := m.Get(ctx, "stale"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get stale = %v, want not found", err)
	}
	ns, err := m.Create(ctx, "stale")
	if err != nil {
		t.Fatalf("Create over stale file: %v", err)
	}
	if _, err := m.Get(ctx, "stale"); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ctx, ns.Name); err != nil {
		t.Fatal(err)
	}
	// Delete of a plain leftover file removes it.
	if err := os.WriteFile(stale, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ctx, "stale"); err != nil {
		t.Fatalf("Delete stale file: %v", err)
	}
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale file still there: %v", err)
	}
}

func TestCreateAtAndPidPath(t *testing.T) {
	m := newManager(t) // for the root check and cleanup of stray mounts
	ctx := context.Background()
	path := filepath.Join(m.Dir(), "custom")
	ino, err := CreateAt(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateAt(ctx, path); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second CreateAt = %v, want already exists", err)
	}
	var inside uint64
	if err := Do(ctx, path, func() error {
		var st unix.Stat_t
		err := unix.Stat("/proc/thread-self/ns/net", &st)
		inside = st.Ino
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside != ino {
		t.Fatalf("Do ran in %d, want %d", inside, ino)
	}
	p, err := PidPath(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p != "/proc/"+strconv.Itoa(os.Getpid())+"/ns/net" {
		t.Fatalf("PidPath = %s", p)
	}
	var self uint64
	if err := Do(ctx, p, func() error {
		var st unix.Stat_t
		err := unix.Stat("/proc/thread-self/ns/net", &st)
		self = st.Ino
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if self != selfNetnsInode(t) {
		t.Fatalf("Do(PidPath(self)) ran in %d, want host %d", self, selfNetnsInode(t))
	}
	if err := DeleteAt(ctx, path); err != nil {
		t.Fatal(err)
	}
	if err := DeleteAt(ctx, path); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second DeleteAt = %v, want not found", err)
	}
}

// TestIsNamespace: a bind mounted namespace and /proc/<pid>/ns/net (a
// symbolic link, which Teardown of a container:ID joiner passes to CNI) are
// namespaces; a plain file left where a mount was, and a missing path, are
// not.
func TestIsNamespace(t *testing.T) {
	m := newManager(t)
	ns, err := m.Create(context.Background(), "probe")
	if err != nil {
		t.Fatal(err)
	}
	self, err := PidPath(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(m.Dir(), "plain")
	if err := os.WriteFile(plain, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want bool
	}{
		{ns.Path, true},
		{self, true},
		{plain, false},
		{filepath.Join(m.Dir(), "missing"), false},
	} {
		if got := IsNamespace(tc.path); got != tc.want {
			t.Errorf("IsNamespace(%s) = %v, want %v", tc.path, got, tc.want)
		}
	}
	if err := m.Delete(context.Background(), "probe"); err != nil {
		t.Fatal(err)
	}
	if IsNamespace(ns.Path) {
		t.Errorf("IsNamespace(%s) after Delete = true", ns.Path)
	}
}

func TestConcurrentDoKeepsThreadsClean(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	host := selfNetnsInode(t)
	var nss []Namespace
	for _, name := range []string{"p0", "p1", "p2", "p3"} {
		ns, err := m.Create(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		nss = append(nss, ns)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 400)
	for i := 0; i < 400; i++ {
		ns := nss[i%len(nss)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- m.Do(ctx, ns.Name, func() error {
				var st unix.Stat_t
				if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
					return err
				}
				if st.Ino != ns.Inode {
					return errors.New("wrong namespace inside Do")
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	assertAllThreadsInHostNetns(t, host)
	for _, ns := range nss {
		if err := m.Delete(ctx, ns.Name); err != nil {
			t.Fatal(err)
		}
	}
}

func BenchmarkCreateDelete(b *testing.B) {
	m := newManager(b)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		name := "bench" + strconv.Itoa(i)
		if _, err := m.Create(ctx, name); err != nil {
			b.Fatal(err)
		}
		if err := m.Delete(ctx, name); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDo(b *testing.B) {
	m := newManager(b)
	ctx := context.Background()
	if _, err := m.Create(ctx, "do"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Delete(ctx, "do") })
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Do(ctx, "do", func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
