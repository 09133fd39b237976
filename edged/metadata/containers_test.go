package metadata

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

func ids(cs []Container) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func TestContainerCRUD(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	c := testContainer(t, "web1")
	c.Extensions = map[string][]byte{"net": []byte("10.0.0.2"), "empty": {}}
	err := db.Update(ctx, func(tx *Tx) error {
		got, err := tx.CreateContainer(ctx, "default", c)
		if err != nil {
			return err
		}
		if got.CreatedAt.IsZero() || !got.CreatedAt.Equal(got.UpdatedAt) {
			t.Errorf("timestamps %v %v", got.CreatedAt, got.UpdatedAt)
		}
		// The namespace was created on the way.
		if _, err := tx.GetNamespace(ctx, "default"); err != nil {
			return err
		}
		_, err = tx.CreateContainer(ctx, "default", c)
		wantErr(t, err, errdefs.ErrAlreadyExists, `container "web1" in namespace "default": already exists`)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.View(ctx, func(tx *Tx) error {
		got, err := tx.GetContainer(ctx, "default", "web1")
		if err != nil {
			return err
		}
		want := c
		want.CreatedAt, want.UpdatedAt = got.CreatedAt, got.UpdatedAt
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
		_, err = tx.GetContainer(ctx, "default", "nope")
		wantErr(t, err, errdefs.ErrNotFound, `container "nope" in namespace "default": not found`)
		_, err = tx.GetContainer(ctx, "other", "web1")
		wantErr(t, err, errdefs.ErrNotFound, `container "web1" in namespace "other": not found`)
		_, err = tx.GetContainer(ctx, "default", "a/../b")
		wantErr(t, err, errdefs.ErrInvalidArgument, "container id")
		_, err = tx.GetContainer(ctx, "de fault", "a")
		wantErr(t, err, errdefs.ErrInvalidArgument, "namespace")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx *Tx) error {
		if err := tx.DeleteContainer(ctx, "default", "web1"); err != nil {
			return err
		}
		wantErr(t, tx.DeleteContainer(ctx, "default", "web1"), errdefs.ErrNotFound, `container "web1" in namespace "default": not found`)
		wantErr(t, tx.DeleteContainer(ctx, "default", ""), errdefs.ErrInvalidArgument, "container id", "must not be empty")
		wantErr(t, tx.DeleteContainer(ctx, "", "x"), errdefs.ErrInvalidArgument, "namespace")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestContainerValidation(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	mod := func(f func(*Container)) Container {
		c := testContainer(t, "v")
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		c    Container
		subs []string
	}{
		{"empty id", mod(func(c *Container) { c.ID = "" }), []string{"container id", "must not be empty"}},
		{"path id", mod(func(c *Container) { c.ID = "../x" }), []string{"container id", `"../x"`}},
		{"long id", mod(func(c *Container) { c.ID = strings.Repeat("a", 77) }), []string{"container id", "77 characters"}},
		{"no runtime", mod(func(c *Container) { c.Runtime.Name = "" }), []string{"runtime name", "must not be empty"}},
		{"control runtime", mod(func(c *Container) { c.Runtime.Name = "runc\n" }), []string{"runtime name", "control character"}},
		{"no spec", mod(func(c *Container) { c.Spec = nil }), []string{"spec", "must not be empty"}},
		{"huge spec", mod(func(c *Container) { c.Spec = make([]byte, MaxSpecSize+1) }), []string{"spec", "more than the maximum"}},
		{"huge options", mod(func(c *Container) { c.Runtime.Options = make([]byte, MaxRuntimeOptionsSize+1) }), []string{"runtime options"}},
		{"bad image", mod(func(c *Container) { c.Image = "busybox latest" }), []string{"image", "whitespace"}},
		{"key without snapshotter", mod(func(c *Container) { c.Snapshotter = "" }), []string{"snapshotter", "must be set"}},
		{"bad label", mod(func(c *Container) { c.Labels = map[string]string{strings.Repeat("k", 257): "v"} }), []string{"labels", "257 bytes"}},
		{"bad extension", mod(func(c *Container) { c.Extensions = map[string][]byte{"": nil} }), []string{"extensions", "name"}},
		{"huge extensions", mod(func(c *Container) { c.Extensions = map[string][]byte{"x": make([]byte, MaxExtensionsSize)} }), []string{"extensions", "more than the maximum"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := db.Update(ctx, func(tx *Tx) error {
				_, err := tx.CreateContainer(ctx, "default", tc.c)
				return err
			})
			wantErr(t, err, errdefs.ErrInvalidArgument, tc.subs...)
		})
	}
	// Nothing was stored, not even the namespace.
	if err := db.View(ctx, func(tx *Tx) error {
		_, err := tx.GetNamespace(ctx, "default")
		wantErr(t, err, errdefs.ErrNotFound)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestContainerNamespaceIsolation(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	if err := db.Update(ctx, func(tx *Tx) error {
		a := testContainer(t, "same")
		a.Image = "example.com/a:1"
		b := testContainer(t, "same")
		b.Image = "example.com/b:1"
		if _, err := tx.CreateContainer(ctx, "team-a", a); err != nil {
			return err
		}
		_, err := tx.CreateContainer(ctx, "team-b", b)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx *Tx) error {
		ga, err := tx.GetContainer(ctx, "team-a", "same")
		if err != nil {
			return err
		}
		gb, err := tx.GetContainer(ctx, "team-b", "same")
		if err != nil {
			return err
		}
		if ga.Image != "example.com/a:1" || gb.Image != "example.com/b:1" {
			t.Errorf("images %q %q", ga.Image, gb.Image)
		}
		la, _ := tx.ListContainers(ctx, "team-a")
		if len(la) != 1 {
			t.Errorf("team-a lists %v", ids(la))
		}
		// Deleting in one namespace leaves the other.
		if err := tx.DeleteContainer(ctx, "team-a", "same"); err != nil {
			return err
		}
		_, err = tx.GetContainer(ctx, "team-b", "same")
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestContainerFilters(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	mk := func(id, image, runtime string, labels map[string]string) Container {
		c := testContainer(t, id)
		c.Image, c.Runtime.Name, c.Labels = image, runtime, labels
		return c
	}
	all := []Container{
		mk("a", "example.com/web:1", "io.containerd.runc.v2", map[string]string{"app": "web", "env": "prod"}),
		mk("b", "example.com/web:1", "io.containerd.runc.v2", map[string]string{"app": "web", "env": "dev"}),
		mk("c", "example.com/db:1", "io.containerd.runc.v2", map[string]string{"app": "db", "env": "prod", "backup": ""}),
		mk("d", "example.com/db:1", "io.edged.crun.v1", nil),
	}
	if err := db.Update(ctx, func(tx *Tx) error {
		for _, c := range all {
			if _, err := tx.CreateContainer(ctx, "default", c); err != nil {
				return err
			}
		}
		// Same IDs elsewhere must not leak into the results.
		_, err := tx.CreateContainer(ctx, "other", all[0])
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		filters []ContainerFilter
		want    []string
	}{
		{"none", nil, []string{"a", "b", "c", "d"}},
		{"empty filter", []ContainerFilter{{}}, []string{"a", "b", "c", "d"}},
		{"id", []ContainerFilter{{ID: "b"}}, []string{"b"}},
		{"image", []ContainerFilter{{Image: "example.com/db:1"}}, []string{"c", "d"}},
		{"runtime", []ContainerFilter{{Runtime: "io.edged.crun.v1"}}, []string{"d"}},
		{"label", []ContainerFilter{{Labels: []LabelMatch{{Key: "app", Value: "web"}}}}, []string{"a", "b"}},
		{"labels AND", []ContainerFilter{{Labels: []LabelMatch{{Key: "app", Value: "web"}, {Key: "env", Value: "prod"}}}}, []string{"a"}},
		{"label exists", []ContainerFilter{{Labels: []LabelMatch{{Key: "env", Exists: true}}}}, []string{"a", "b", "c"}},
		{"label exists empty value", []ContainerFilter{{Labels: []LabelMatch{{Key: "backup", Exists: true}}}}, []string{"c"}},
		{"label value empty", []ContainerFilter{{Labels: []LabelMatch{{Key: "backup", Value: ""}}}}, []string{"c"}},
		{"image AND label", []ContainerFilter{{Image: "example.com/web:1", Labels: []LabelMatch{{Key: "env", Value: "dev"}}}}, []string{"b"}},
		{"OR", []ContainerFilter{{ID: "a"}, {Runtime: "io.edged.crun.v1"}}, []string{"a", "d"}},
		{"OR with label-only", []ContainerFilter{{ID: "d"}, {Labels: []LabelMatch{{Key: "app", Value: "db"}}}}, []string{"c", "d"}},
		{"no match", []ContainerFilter{{ID: "zz"}}, []string{}},
		{"conflict", []ContainerFilter{{ID: "a", Image: "example.com/db:1"}}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := db.View(ctx, func(tx *Tx) error {
				got, err := tx.ListContainers(ctx, "default", tc.filters...)
				if err != nil {
					return err
				}
				if !reflect.DeepEqual(ids(got), tc.want) {
					t.Errorf("got %v, want %v", ids(got), tc.want)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
	// WalkContainers stops at fn's error.
	stop := errdefs.ErrAborted
	n := 0
	err := db.View(ctx, func(tx *Tx) error {
		return tx.WalkContainers(ctx, "default", func(Container) error { n++; return stop })
	})
	if err != stop || n != 1 {
		t.Fatalf("walk: %v after %d", err, n)
	}
	err = db.View(ctx, func(tx *Tx) error { _, err := tx.ListContainers(ctx, "bad/ns"); return err })
	wantErr(t, err, errdefs.ErrInvalidArgument, "namespace")
}

func TestContainerUpdate(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	orig := testContainer(t, "u")
	orig.Extensions = map[string][]byte{"keep": []byte("1"), "drop": []byte("2")}
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateContainer(ctx, "default", orig)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	update := func(c Container, paths ...string) (Container, error) {
		var out Container
		err := db.Update(ctx, func(tx *Tx) error {
			var err error
			out, err = tx.UpdateContainer(ctx, "default", c, paths...)
			return err
		})
		return out, err
	}
	get := func() Container {
		var c Container
		if err := db.View(ctx, func(tx *Tx) (err error) { c, err = tx.GetContainer(ctx, "default", "u"); return err }); err != nil {
			t.Fatal(err)
		}
		return c
	}

	// One label: set, then remove by absence.
	got, err := update(Container{ID: "u", Labels: map[string]string{"tier": "backend", "ignored": "x"}}, "labels.tier")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"app": "web", "tier": "backend"}; !reflect.DeepEqual(got.Labels, want) || !reflect.DeepEqual(get().Labels, want) {
		t.Fatalf("labels %v", got.Labels)
	}
	if !got.UpdatedAt.After(got.CreatedAt) {
		t.Errorf("UpdatedAt %v not after CreatedAt %v", got.UpdatedAt, got.CreatedAt)
	}
	if _, err := update(Container{ID: "u"}, "labels.app"); err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"tier": "backend"}; !reflect.DeepEqual(get().Labels, want) {
		t.Fatalf("labels %v", get().Labels)
	}
	// Image and spec; the rest unchanged.
	newSpec := []byte(`{"ociVersion":"1.2.0"}`)
	if _, err := update(Container{ID: "u", Image: "example.com/new:2", Spec: newSpec, SpecType: "t2", Runtime: RuntimeInfo{Name: "ignored"}}, "image", "spec"); err != nil {
		t.Fatal(err)
	}
	c := get()
	if c.Image != "example.com/new:2" || !bytes.Equal(c.Spec, newSpec) || c.SpecType != "t2" || c.Runtime.Name != orig.Runtime.Name || c.SnapshotKey != "u" {
		t.Fatalf("after image+spec: %+v", c)
	}
	// Runtime, snapshot key, one extension.
	if _, err := update(Container{ID: "u", Runtime: RuntimeInfo{Name: "io.edged.v1", Options: []byte("o")}, SnapshotKey: "u2",
		Extensions: map[string][]byte{"new": []byte("n")}}, "runtime", "snapshotkey", "extensions.new", "extensions.drop"); err != nil {
		t.Fatal(err)
	}
	c = get()
	if c.Runtime.Name != "io.edged.v1" || string(c.Runtime.Options) != "o" || c.SnapshotKey != "u2" ||
		!reflect.DeepEqual(c.Extensions, map[string][]byte{"keep": []byte("1"), "new": []byte("n")}) {
		t.Fatalf("after runtime etc: %+v", c)
	}
	// No fieldpaths: every mutable field replaced; created and snapshotter kept.
	full := testContainer(t, "u")
	full.Labels = nil
	full.Image = ""
	full.Snapshotter = ""
	full.SnapshotKey = ""
	if _, err := update(full); err != nil {
		t.Fatal(err)
	}
	c = get()
	if c.Labels != nil || c.Image != "" || c.Extensions != nil || c.Snapshotter != "overlayfs" || c.SnapshotKey != "" || !c.CreatedAt.Equal(got.CreatedAt) {
		t.Fatalf("after full update: %+v", c)
	}

	// Errors.
	_, err = update(Container{ID: "u", Snapshotter: "btrfs"})
	wantErr(t, err, errdefs.ErrInvalidArgument, "snapshotter", "immutable")
	_, err = update(Container{ID: "u"}, "id")
	wantErr(t, err, errdefs.ErrInvalidArgument, "fieldpath", `"id" cannot be updated`)
	_, err = update(Container{ID: "u"}, "spec")
	wantErr(t, err, errdefs.ErrInvalidArgument, "spec", "must not be empty")
	_, err = update(Container{ID: "u", Runtime: RuntimeInfo{}}, "runtime")
	wantErr(t, err, errdefs.ErrInvalidArgument, "runtime name")
	_, err = update(Container{ID: "missing"}, "labels")
	wantErr(t, err, errdefs.ErrNotFound, `container "missing" in namespace "default": not found`)
	_, err = update(Container{ID: "u", Labels: map[string]string{"k": strings.Repeat("v", MaxLabelSize)}}, "labels")
	wantErr(t, err, errdefs.ErrInvalidArgument, "labels", `key "k"`)
	// A failed update changed nothing.
	if c2 := get(); !reflect.DeepEqual(c2, c) {
		t.Fatalf("failed updates changed the container:\n%+v\n%+v", c2, c)
	}
}
