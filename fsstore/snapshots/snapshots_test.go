package snapshots

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/fsstore/snapshots/mount"
)

var backends = []Backend{BackendOverlay, BackendNative}

func TestAutoPicksOverlay(t *testing.T) {
	e := newEnv(t, BackendAuto)
	// The overlay module is available on the test machine and the backing
	// directory is not on overlay: the probe must succeed.
	if e.s.Backend() != BackendOverlay {
		t.Fatalf("auto picked %s", e.s.Backend())
	}
	ents, _ := os.ReadDir(filepath.Join(e.root, "snapshots"))
	if len(ents) != 0 {
		t.Fatalf("probe left %v behind", ents)
	}
}

func TestLayerChain(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b)
			const ns = "default"

			layer(t, e, ns, "sha256:layer1", "", func(root string) {
				writeFile(t, filepath.Join(root, "a"), "from layer 1")
				writeFile(t, filepath.Join(root, "dir/b"), "b1")
				must(t, os.Chmod(filepath.Join(root, "dir/b"), 0o755|os.ModeSetuid))
			})
			layer(t, e, ns, "sha256:layer2", "sha256:layer1", func(root string) {
				if got := readFile(t, filepath.Join(root, "a")); got != "from layer 1" {
					t.Fatalf("layer 1 not visible in layer 2: %q", got)
				}
				must(t, os.Remove(filepath.Join(root, "a")))
				writeFile(t, filepath.Join(root, "dir/c"), "c2")
				writeFile(t, filepath.Join(root, "dir/b"), "b2")
			})

			info, err := e.s.Stat(ctx, ns, "sha256:layer2")
			must(t, err)
			if info.Kind != KindCommitted || info.Parent != "sha256:layer1" || info.Name != "sha256:layer2" ||
				info.Created.IsZero() || info.Updated.Before(info.Created) {
				t.Fatalf("stat %+v", info)
			}
			if _, err := e.s.Stat(ctx, ns, "extract-sha256:layer2"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("active key still exists after commit: %v", err)
			}

			// A container's rootfs on top of the chain.
			ms, err := e.s.Prepare(ctx, ns, "container-1", "sha256:layer2", map[string]string{"x": "y"})
			must(t, err)
			wantType := "overlay"
			if b == BackendNative {
				wantType = "bind"
			}
			if len(ms) != 1 || ms[0].Type != wantType {
				t.Fatalf("mounts %+v", ms)
			}
			if b == BackendOverlay {
				lowers := strings.Split(option(ms[0], "lowerdir="), ":")
				if len(lowers) != 2 || option(ms[0], "upperdir=") == "" || option(ms[0], "workdir=") == "" {
					t.Fatalf("overlay options %v", ms[0].Options)
				}
			}
			again, err := e.s.Mounts(ctx, ns, "container-1")
			must(t, err)
			if fmt.Sprint(again) != fmt.Sprint(ms) {
				t.Fatalf("Mounts %v differs from Prepare's %v", again, ms)
			}
			root, unmount := mountAt(t, ms)
			if exists(filepath.Join(root, "a")) {
				t.Fatal("file deleted in layer 2 is visible")
			}
			if got := readFile(t, filepath.Join(root, "dir/b")); got != "b2" {
				t.Fatalf("dir/b = %q, want the layer 2 version", got)
			}
			if got := readFile(t, filepath.Join(root, "dir/c")); got != "c2" {
				t.Fatalf("dir/c = %q", got)
			}
			writeFile(t, filepath.Join(root, "new"), "container data")
			unmount()
			// Writes of the container stay in its snapshot.
			layer(t, e, ns, "sha256:layer3", "sha256:layer2", func(root string) {
				if exists(filepath.Join(root, "new")) {
					t.Fatal("container write leaked into a sibling")
				}
			})

			// A read-only view.
			vms, err := e.s.View(ctx, ns, "view-1", "sha256:layer2", nil)
			must(t, err)
			vroot, _ := mountAt(t, vms)
			if got := readFile(t, filepath.Join(vroot, "dir/c")); got != "c2" {
				t.Fatalf("view dir/c = %q", got)
			}
			if exists(filepath.Join(vroot, "a")) {
				t.Fatal("deleted file visible in view")
			}
			err = os.WriteFile(filepath.Join(vroot, "x"), nil, 0o644)
			if !errors.Is(err, unix.EROFS) {
				t.Fatalf("writing into a view: %v, want EROFS", err)
			}
			vinfo, err := e.s.Stat(ctx, ns, "view-1")
			must(t, err)
			if vinfo.Kind != KindView || vinfo.Parent != "sha256:layer2" {
				t.Fatalf("view stat %+v", vinfo)
			}

			// View of a single layer, and of nothing.
			v1, err := e.s.View(ctx, ns, "view-l1", "sha256:layer1", nil)
			must(t, err)
			if v1[0].Type != "bind" || fmt.Sprint(v1[0].Options) != "[ro rbind]" {
				t.Fatalf("single-layer view %+v", v1)
			}
			v1root, _ := mountAt(t, v1)
			if got := readFile(t, filepath.Join(v1root, "a")); got != "from layer 1" {
				t.Fatalf("single-layer view: %q", got)
			}
			fi, err := os.Stat(filepath.Join(v1root, "dir/b"))
			must(t, err)
			if fi.Mode()&os.ModeSetuid == 0 {
				t.Fatalf("setuid bit lost: %v", fi.Mode())
			}
			v0, err := e.s.View(ctx, ns, "view-empty", "", nil)
			must(t, err)
			v0root, _ := mountAt(t, v0)
			if ents, _ := os.ReadDir(v0root); len(ents) != 0 {
				t.Fatalf("empty view has %v", ents)
			}

			// Removal order: children first.
			wantErr(t, e.s.Remove(ctx, ns, "sha256:layer1"), errdefs.ErrFailedPrecondition, "children", "remove them first")
			for _, k := range []string{"view-1", "view-l1", "view-empty", "container-1", "sha256:layer3", "sha256:layer2", "sha256:layer1"} {
				if err := e.s.Remove(ctx, ns, k); err != nil {
					t.Fatalf("remove %s: %v", k, err)
				}
			}
			infos, err := e.s.List(ctx, ns)
			must(t, err)
			if len(infos) != 0 {
				t.Fatalf("left: %+v", infos)
			}
			ents, _ := os.ReadDir(filepath.Join(e.root, "snapshots"))
			if len(ents) != 0 {
				t.Fatalf("directories left: %v", ents)
			}
		})
	}
}

func TestOverlayWhiteouts(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, BackendOverlay)
	const ns = "ns"
	layer(t, e, ns, "base", "", func(root string) {
		writeFile(t, filepath.Join(root, "deleted-via-mount"), "x")
		writeFile(t, filepath.Join(root, "deleted-by-hand"), "y")
		writeFile(t, filepath.Join(root, "kept"), "z")
	})
	ms, err := e.s.Prepare(ctx, ns, "child", "base", nil)
	must(t, err)
	upper := option(ms[0], "upperdir=")
	root, unmount := mountAt(t, ms)
	must(t, os.Remove(filepath.Join(root, "deleted-via-mount")))
	unmount()
	// overlayfs recorded the deletion as a whiteout: a 0:0 char device.
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(upper, "deleted-via-mount"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Fatalf("no whiteout in upper: mode %o rdev %d", st.Mode, st.Rdev)
	}
	// A whiteout written directly into the layer, as a layer extractor
	// does for an OCI ".wh." entry.
	must(t, unix.Mknod(filepath.Join(upper, "deleted-by-hand"), unix.S_IFCHR|0, 0))
	must(t, e.s.Commit(ctx, ns, "child-c", "child", nil))
	vms, err := e.s.View(ctx, ns, "v", "child-c", nil)
	must(t, err)
	vroot, _ := mountAt(t, vms)
	for _, name := range []string{"deleted-via-mount", "deleted-by-hand"} {
		if exists(filepath.Join(vroot, name)) {
			t.Fatalf("%s visible through the view", name)
		}
	}
	if readFile(t, filepath.Join(vroot, "kept")) != "z" {
		t.Fatal("kept file missing")
	}
}

func TestDeepChain(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 150 layers")
	}
	ctx := context.Background()
	e := newEnv(t, BackendOverlay)
	const ns = "deep"
	const depth = 150
	parent := ""
	for i := 1; i <= depth; i++ {
		name := fmt.Sprintf("sha256:%064d", i)
		ms, err := e.s.Prepare(ctx, ns, "k", parent, nil)
		must(t, err)
		// Fill the upper directly (no need to mount each layer).
		var dir string
		if len(ms) == 1 && ms[0].Type == "bind" {
			dir = ms[0].Source
		} else {
			dir = option(ms[0], "upperdir=")
		}
		writeFile(t, filepath.Join(dir, fmt.Sprintf("f%d", i)), fmt.Sprint(i))
		must(t, e.s.Commit(ctx, ns, name, "k", nil))
		parent = name
	}
	ms, err := e.s.Prepare(ctx, ns, "top", parent, nil)
	must(t, err)
	data := strings.Join(ms[0].Options, ",")
	if len(data) < unix.Getpagesize() {
		t.Fatalf("test does not exercise long options: %d bytes", len(data))
	}
	root, _ := mountAt(t, ms)
	for _, i := range []int{1, depth / 2, depth} {
		if got := readFile(t, filepath.Join(root, fmt.Sprintf("f%d", i))); got != fmt.Sprint(i) {
			t.Fatalf("f%d = %q", i, got)
		}
	}
	ents, err := os.ReadDir(root)
	must(t, err)
	if len(ents) != depth {
		t.Fatalf("%d entries, want %d", len(ents), depth)
	}
}

func TestTooDeepChain(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 501 layers")
	}
	ctx := context.Background()
	e := newEnv(t, BackendOverlay)
	const ns = "deep"
	parent := ""
	for i := 1; i <= MaxDepth+1; i++ {
		name := fmt.Sprintf("l%d", i)
		_, err := e.s.Prepare(ctx, ns, "k", parent, nil)
		must(t, err)
		must(t, e.s.Commit(ctx, ns, name, "k", nil))
		parent = name
	}
	_, err := e.s.Prepare(ctx, ns, "top", parent, nil)
	wantErr(t, err, errdefs.ErrResourceExhausted, "501 layers is too deep", "at most 500")
	_, err = e.s.View(ctx, ns, "top", parent, nil)
	wantErr(t, err, errdefs.ErrResourceExhausted, "too deep")
	// Nothing was created by the failed calls.
	_, err = e.s.Stat(ctx, ns, "top")
	wantErr(t, err, errdefs.ErrNotFound)
	// One layer less still works.
	_, err = e.s.Prepare(ctx, ns, "top", fmt.Sprintf("l%d", MaxDepth), nil)
	must(t, err)
}

func TestNamespaces(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, BackendOverlay)
	layer(t, e, "ns1", "shared-key", "", func(root string) { writeFile(t, filepath.Join(root, "who"), "ns1") })
	layer(t, e, "ns2", "shared-key", "", func(root string) { writeFile(t, filepath.Join(root, "who"), "ns2") })
	for _, ns := range []string{"ns1", "ns2"} {
		ms, err := e.s.View(ctx, ns, "v", "shared-key", nil)
		must(t, err)
		root, _ := mountAt(t, ms)
		if got := readFile(t, filepath.Join(root, "who")); got != ns {
			t.Fatalf("namespace %s sees %q", ns, got)
		}
	}
	// A parent from another namespace is not visible.
	layer(t, e, "ns1", "only-in-ns1", "", func(string) {})
	_, err := e.s.Prepare(ctx, "ns2", "x", "only-in-ns1", nil)
	wantErr(t, err, errdefs.ErrNotFound, `parent snapshot "only-in-ns1" in namespace "ns2"`)
	infos, err := e.s.List(ctx, "ns2")
	must(t, err)
	if len(infos) != 2 {
		t.Fatalf("ns2 has %+v", infos)
	}
	must(t, e.s.Remove(ctx, "ns2", "v"))
	must(t, e.s.Remove(ctx, "ns2", "shared-key"))
	if _, err := e.s.Stat(ctx, "ns1", "shared-key"); err != nil {
		t.Fatalf("removing in ns2 affected ns1: %v", err)
	}
	_, err = e.s.Stat(ctx, "ns3", "shared-key")
	wantErr(t, err, errdefs.ErrNotFound, `namespace "ns3"`)
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, BackendOverlay)
	s := e.s
	const ns = "default"
	layer(t, e, ns, "committed", "", func(string) {})
	_, err := s.Prepare(ctx, ns, "active", "committed", nil)
	must(t, err)
	_, err = s.View(ctx, ns, "view", "committed", nil)
	must(t, err)

	_, err = s.Prepare(ctx, ns, "x", "missing", nil)
	wantErr(t, err, errdefs.ErrNotFound, `parent snapshot "missing"`)
	_, err = s.Prepare(ctx, ns, "active", "", nil)
	wantErr(t, err, errdefs.ErrAlreadyExists, `"active"`)
	_, err = s.View(ctx, ns, "committed", "", nil)
	wantErr(t, err, errdefs.ErrAlreadyExists, `"committed"`)
	_, err = s.Prepare(ctx, ns, "x", "active", nil)
	wantErr(t, err, errdefs.ErrFailedPrecondition, `parent snapshot "active" is active, not committed`)
	_, err = s.Prepare(ctx, ns, "x", "view", nil)
	wantErr(t, err, errdefs.ErrFailedPrecondition, "is view, not committed")

	wantErr(t, s.Commit(ctx, ns, "c2", "view", nil), errdefs.ErrFailedPrecondition, `"view" is a view; only active snapshots can be committed`)
	wantErr(t, s.Commit(ctx, ns, "c2", "committed", nil), errdefs.ErrFailedPrecondition, "is a committed")
	wantErr(t, s.Commit(ctx, ns, "committed", "active", nil), errdefs.ErrAlreadyExists, `"committed"`)
	wantErr(t, s.Commit(ctx, ns, "c2", "missing", nil), errdefs.ErrNotFound, `"missing"`)
	if info, err := s.Stat(ctx, ns, "active"); err != nil || info.Kind != KindActive {
		t.Fatalf("failed commits changed the active snapshot: %+v %v", info, err)
	}

	wantErr(t, s.Remove(ctx, ns, "committed"), errdefs.ErrFailedPrecondition, `"committed" has 2 children`)
	wantErr(t, s.Remove(ctx, ns, "missing"), errdefs.ErrNotFound, `"missing"`)
	_, err = s.Mounts(ctx, ns, "committed")
	wantErr(t, err, errdefs.ErrFailedPrecondition, "committed and has no mounts")
	_, err = s.Mounts(ctx, ns, "missing")
	wantErr(t, err, errdefs.ErrNotFound)
	_, err = s.Usage(ctx, ns, "missing")
	wantErr(t, err, errdefs.ErrNotFound)

	badKeys := []struct{ key, want string }{
		{"", "must not be empty"},
		{"a\x00b", "NUL"},
		{strings.Repeat("k", MaxKeyLength+1), "longer than the maximum of 1024"},
		{"\xff", "UTF-8"},
	}
	for _, bk := range badKeys {
		_, err := s.Prepare(ctx, ns, bk.key, "", nil)
		wantErr(t, err, errdefs.ErrInvalidArgument, "key", bk.want)
		_, err = s.View(ctx, ns, bk.key, "", nil)
		wantErr(t, err, errdefs.ErrInvalidArgument, bk.want)
		_, err = s.Stat(ctx, ns, bk.key)
		wantErr(t, err, errdefs.ErrInvalidArgument, bk.want)
		wantErr(t, s.Remove(ctx, ns, bk.key), errdefs.ErrInvalidArgument, bk.want)
		wantErr(t, s.Commit(ctx, ns, bk.key, "active", nil), errdefs.ErrInvalidArgument, "name", bk.want)
		if bk.key != "" {
			_, err = s.Prepare(ctx, ns, "ok", bk.key, nil)
			wantErr(t, err, errdefs.ErrInvalidArgument, "parent", bk.want)
		}
	}
	// Path-like keys are just keys.
	for _, k := range []string{"../../../etc", "/abs/path", "extract-1 sha256:abc", "."} {
		ms, err := s.Prepare(ctx, ns, k, "", nil)
		must(t, err)
		if !strings.HasPrefix(ms[0].Source, filepath.Join(e.root, "snapshots")+"/") {
			t.Fatalf("key %q escaped: %v", k, ms)
		}
	}
	for _, badNS := range []string{"", "a/b", "..", strings.Repeat("n", 77)} {
		_, err := s.Prepare(ctx, badNS, "k", "", nil)
		wantErr(t, err, errdefs.ErrInvalidArgument, "namespace")
	}
	_, err = s.Prepare(ctx, ns, "lbl", "", map[string]string{"": "v"})
	wantErr(t, err, errdefs.ErrInvalidArgument, "labels", `key "" is 0 bytes, must be 1 to 256`)
	_, err = s.Prepare(ctx, ns, "lbl", "", map[string]string{"k": strings.Repeat("v", MaxLabelSize)})
	wantErr(t, err, errdefs.ErrInvalidArgument, "more than the maximum of 4096")
	_, err = s.Update(ctx, ns, Info{Name: "active"}, "parent")
	wantErr(t, err, errdefs.ErrInvalidArgument, `"parent" cannot be updated`)
	_, err = s.Update(ctx, ns, Info{Name: "missing"}, "labels")
	wantErr(t, err, errdefs.ErrNotFound)
	_, err = s.List(ctx, ns, "bogus==1")
	wantErr(t, err, errdefs.ErrInvalidArgument, `unknown field "bogus"`)
	_, err = s.List(ctx, ns, "kind==sideways")
	wantErr(t, err, errdefs.ErrInvalidArgument, `"sideways" is not one of`)
	_, err = s.List(ctx, ns, `name=="unterminated`)
	wantErr(t, err, errdefs.ErrInvalidArgument, "unterminated quote")

	if _, err := New(ctx, e.db, e.root, Options{Backend: "zfs"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("bad backend: %v", err)
	}
}

func TestUpdateListFilters(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, BackendOverlay)
	const ns = "default"
	layer(t, e, ns, "base", "", func(string) {})
	_, err := e.s.Prepare(ctx, ns, "a", "base", map[string]string{"role": "rootfs", "gc.root": "1"})
	must(t, err)
	_, err = e.s.View(ctx, ns, "b", "base", map[string]string{"role": "view"})
	must(t, err)

	before, err := e.s.Stat(ctx, ns, "a")
	must(t, err)
	if before.Labels["role"] != "rootfs" || before.Labels["gc.root"] != "1" {
		t.Fatalf("labels %v", before.Labels)
	}
	time.Sleep(2 * time.Millisecond)
	// Set one label, delete another, leave the rest.
	info, err := e.s.Update(ctx, ns, Info{Name: "a", Labels: map[string]string{"new": "x,y"}}, "labels.new", "labels.gc.root")
	must(t, err)
	if len(info.Labels) != 2 || info.Labels["new"] != "x,y" || info.Labels["role"] != "rootfs" {
		t.Fatalf("after partial update: %v", info.Labels)
	}
	if !info.Updated.After(before.Updated) {
		t.Fatal("updated time not advanced")
	}
	got, err := e.s.Stat(ctx, ns, "a")
	must(t, err)
	if fmt.Sprint(got.Labels) != fmt.Sprint(info.Labels) {
		t.Fatalf("stored %v, returned %v", got.Labels, info.Labels)
	}

	names := func(filters ...string) string {
		t.Helper()
		var out []string
		must(t, e.s.Walk(ctx, ns, func(_ context.Context, i Info) error {
			out = append(out, i.Name)
			return nil
		}, filters...))
		sort.Strings(out)
		return strings.Join(out, " ")
	}
	cases := []struct {
		want    string
		filters []string
	}{
		{"a b base", nil},
		{"base", []string{"kind==committed"}},
		{"a", []string{"kind==active"}},
		{"a b", []string{"parent==base"}},
		{"b base", []string{"kind!=active"}},
		{"b", []string{"labels.role==view"}},
		{"a b", []string{"labels.role"}},
		{"a", []string{`labels.new=="x,y"`, "name==nothing"}},
		{"a base", []string{`labels.new=="x,y"`, "name==base"}},
		{"b", []string{"labels.role,parent==base,kind==view"}},
		{"", []string{"labels.missing"}},
	}
	for _, tc := range cases {
		if got := names(tc.filters...); got != tc.want {
			t.Errorf("filters %q: got %q, want %q", tc.filters, got, tc.want)
		}
	}
	stop := errors.New("stop")
	if err := e.s.Walk(ctx, ns, func(context.Context, Info) error { return stop }); err != stop {
		t.Fatalf("walk error %v", err)
	}
	// Replacing all labels.
	info, err = e.s.Update(ctx, ns, Info{Name: "a", Labels: map[string]string{"only": "1"}})
	must(t, err)
	if len(info.Labels) != 1 || info.Labels["only"] != "1" {
		t.Fatalf("replace: %v", info.Labels)
	}
	// Commit labels replace the active snapshot's.
	must(t, e.s.Commit(ctx, ns, "a-c", "a", map[string]string{"committed": "yes"}))
	info, err = e.s.Stat(ctx, ns, "a-c")
	must(t, err)
	if len(info.Labels) != 1 || info.Labels["committed"] != "yes" {
		t.Fatalf("committed labels %v", info.Labels)
	}
}

func TestUsage(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, b)
			const ns = "default"
			ms, err := e.s.Prepare(ctx, ns, "k", "", nil)
			must(t, err)
			root, unmount := mountAt(t, ms)
			empty, err := e.s.Usage(ctx, ns, "k")
			must(t, err)
			if empty.Inodes != 1 {
				t.Fatalf("empty usage %+v", empty)
			}
			data := make([]byte, 256<<10)
			for i := range data {
				data[i] = byte(i)
			}
			must(t, os.WriteFile(filepath.Join(root, "big"), data, 0o644))
			must(t, os.Link(filepath.Join(root, "big"), filepath.Join(root, "big-link")))
			must(t, os.Mkdir(filepath.Join(root, "d"), 0o755))
			u, err := e.s.Usage(ctx, ns, "k")
			must(t, err)
			// root, big (once, despite the hardlink), d.
			if u.Inodes != 3 || u.Size < int64(len(data)) || u.Size > int64(len(data))+64<<10 {
				t.Fatalf("usage %+v", u)
			}
			unmount()
			must(t, e.s.Commit(ctx, ns, "c", "k", nil))
			cu, err := e.s.Usage(ctx, ns, "c")
			must(t, err)
			if cu != u {
				t.Fatalf("committed usage %+v, active was %+v", cu, u)
			}
			// Cached: changing the files does not change the answer.
			var id int64
			must(t, e.db.QueryRow(`SELECT id FROM snapshots WHERE key = 'c'`).Scan(&id))
			must(t, os.Remove(filepath.Join(e.root, "snapshots", fmt.Sprint(id), "fs", "big-link")))
			must(t, os.Remove(filepath.Join(e.root, "snapshots", fmt.Sprint(id), "fs", "big")))
			cu2, _ := e.s.Usage(ctx, ns, "c")
			if cu2 != cu {
				t.Fatalf("committed usage was recomputed: %+v", cu2)
			}
		})
	}
}

func TestBackendIsRemembered(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, BackendNative)
	layer(t, e, "default", "l", "", func(string) {})
	_, err := New(ctx, e.db, e.root, Options{Backend: BackendOverlay})
	wantErr(t, err, errdefs.ErrFailedPrecondition, "made by the native backend")
	s2, err := New(ctx, e.db, e.root, Options{})
	must(t, err)
	if s2.Backend() != BackendNative {
		t.Fatalf("auto picked %s for native snapshots", s2.Backend())
	}
	// InitSchema is idempotent.
	tx, err := e.db.Begin()
	must(t, err)
	must(t, InitSchema(ctx, tx))
	must(t, tx.Commit())
}

func TestForeignKeyRestrict(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, BackendOverlay)
	layer(t, e, "default", "p", "", func(string) {})
	_, err := e.s.Prepare(ctx, "default", "c", "p", nil)
	must(t, err)
	// Even a raw delete cannot orphan a child.
	_, err = e.db.Exec(`DELETE FROM snapshots WHERE key = 'p'`)
	if err == nil || !strings.Contains(err.Error(), "FOREIGN KEY") {
		t.Fatalf("raw delete of a parent: %v", err)
	}
}

func TestMountsNotOverPage(t *testing.T) {
	// Root paths are long in tests; make sure a realistic chain still fits
	// without the relative-path fallback.
	e := newEnv(t, BackendOverlay)
	s := e.s.(*snapshotter)
	ms := s.mounts(KindActive, 123, []int64{1, 2, 3})
	if err := mount.CheckOptions(ms[0]); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(ms[0].Options, ","), "lowerdir="+s.fsDir(1)+":"+s.fsDir(2)+":"+s.fsDir(3)) {
		t.Fatalf("lowerdir order: %v", ms[0].Options)
	}
}

func TestConcurrentPrepareSameKey(t *testing.T) {
	for _, conns := range []int{1, 4} {
		t.Run(fmt.Sprintf("conns=%d", conns), func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, BackendOverlay)
			e.db.SetMaxOpenConns(conns)
			layer(t, e, "default", "base", "", func(string) {})
			const n = 8
			errs := make(chan error, n)
			for range n {
				go func() {
					_, err := e.s.Prepare(ctx, "default", "same", "base", nil)
					errs <- err
				}()
			}
			ok := 0
			for range n {
				err := <-errs
				switch {
				case err == nil:
					ok++
				case errors.Is(err, errdefs.ErrAlreadyExists):
				default:
					t.Errorf("unexpected error: %v", err)
				}
			}
			if ok != 1 {
				t.Fatalf("%d goroutines created the same key", ok)
			}
			// Exactly one directory per row: losers cleaned up after themselves.
			ents, _ := os.ReadDir(filepath.Join(e.root, "snapshots"))
			if len(ents) != 2 {
				t.Fatalf("directories: %v", ents)
			}
		})
	}
}
