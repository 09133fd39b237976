package metadata

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

func testDigest(i int) string {
	return fmt.Sprintf("sha256:%064x", i)
}

func testImage(name string) Image {
	return Image{
		Name:   name,
		Labels: map[string]string{"source": "pull"},
		Target: Descriptor{
			MediaType:   "application/vnd.oci.image.index.v1+json",
			Digest:      testDigest(42),
			Size:        1234,
			Annotations: map[string]string{"org.opencontainers.image.ref.name": "1.36"},
		},
	}
}

func imageNames(ims []Image) []string {
	out := []string{}
	for _, im := range ims {
		out = append(out, im.Name)
	}
	return out
}

func TestImageCRUD(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	names := []string{
		"docker.io/library/busybox:1.36",
		"example.com:5000/a/b@" + testDigest(7),
		"localhost/app:latest",
	}
	if err := db.Update(ctx, func(tx *Tx) error {
		for _, n := range names {
			im, err := tx.CreateImage(ctx, "default", testImage(n))
			if err != nil {
				return err
			}
			if im.CreatedAt.IsZero() {
				t.Errorf("no CreatedAt")
			}
		}
		_, err := tx.CreateImage(ctx, "default", testImage(names[0]))
		wantErr(t, err, errdefs.ErrAlreadyExists, `image "docker.io/library/busybox:1.36" in namespace "default": already exists`)
		// Same name in another namespace is another image.
		other := testImage(names[0])
		other.Target.Digest = testDigest(43)
		_, err = tx.CreateImage(ctx, "other", other)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.View(ctx, func(tx *Tx) error {
		got, err := tx.GetImage(ctx, "default", names[1])
		if err != nil {
			return err
		}
		want := testImage(names[1])
		want.CreatedAt, want.UpdatedAt = got.CreatedAt, got.UpdatedAt
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
		o, err := tx.GetImage(ctx, "other", names[0])
		if err != nil || o.Target.Digest != testDigest(43) {
			t.Errorf("other namespace image %+v %v", o, err)
		}
		_, err = tx.GetImage(ctx, "default", "nope:1")
		wantErr(t, err, errdefs.ErrNotFound, `image "nope:1" in namespace "default": not found`)
		_, err = tx.GetImage(ctx, "default", "")
		wantErr(t, err, errdefs.ErrInvalidArgument, "image name", "must not be empty")
		all, err := tx.ListImages(ctx, "default")
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(imageNames(all), []string{names[0], names[1], names[2]}) {
			t.Errorf("list %v", imageNames(all))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx *Tx) error {
		if err := tx.DeleteImage(ctx, "default", names[0]); err != nil {
			return err
		}
		wantErr(t, tx.DeleteImage(ctx, "default", names[0]), errdefs.ErrNotFound, `image "docker.io/library/busybox:1.36" in namespace "default": not found`)
		wantErr(t, tx.DeleteImage(ctx, "default", "a\x00b"), errdefs.ErrInvalidArgument, "image name", "control character")
		// The other namespace's image of the same name is still there.
		_, err := tx.GetImage(ctx, "other", names[0])
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestImageValidation(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	mod := func(f func(*Image)) Image {
		im := testImage("example.com/x:1")
		f(&im)
		return im
	}
	for _, tc := range []struct {
		name string
		im   Image
		subs []string
	}{
		{"empty name", mod(func(im *Image) { im.Name = "" }), []string{"image name", "must not be empty"}},
		{"space", mod(func(im *Image) { im.Name = "busy box" }), []string{"image name", "whitespace"}},
		{"tab", mod(func(im *Image) { im.Name = "busy\tbox" }), []string{"image name", "whitespace"}},
		{"nul", mod(func(im *Image) { im.Name = "busy\x00box" }), []string{"image name", "control"}},
		{"long", mod(func(im *Image) { im.Name = strings.Repeat("a", MaxImageNameSize+1) }), []string{"image name", "513 bytes"}},
		{"bad utf8", mod(func(im *Image) { im.Name = "a\xffb" }), []string{"image name", "UTF-8"}},
		{"no media type", mod(func(im *Image) { im.Target.MediaType = "" }), []string{"target.media_type", "must not be empty"}},
		{"bad digest", mod(func(im *Image) { im.Target.Digest = "sha256:xyz" }), []string{"target.digest", `"sha256:xyz"`}},
		{"no digest", mod(func(im *Image) { im.Target.Digest = "" }), []string{"target.digest", "must not be empty"}},
		{"negative size", mod(func(im *Image) { im.Target.Size = -1 }), []string{"target.size", "negative"}},
		{"bad annotation", mod(func(im *Image) { im.Target.Annotations = map[string]string{"": "x"} }), []string{"target.annotations", `key ""`}},
		{"bad label", mod(func(im *Image) { im.Labels = map[string]string{"big": strings.Repeat("v", MaxLabelSize)} }), []string{"labels", `key "big"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := db.Update(ctx, func(tx *Tx) error { _, err := tx.CreateImage(ctx, "default", tc.im); return err })
			wantErr(t, err, errdefs.ErrInvalidArgument, tc.subs...)
		})
	}
	// A name at the limit is fine.
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateImage(ctx, "default", mod(func(im *Image) { im.Name = strings.Repeat("a", MaxImageNameSize) }))
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestImageFiltersAndUpdate(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	if err := db.Update(ctx, func(tx *Tx) error {
		for i, n := range []string{"a:1", "b:1", "c:1"} {
			im := testImage(n)
			im.Target.Digest = testDigest(i % 2)
			im.Labels = map[string]string{"n": fmt.Sprint(i)}
			if _, err := tx.CreateImage(ctx, "default", im); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    []ImageFilter
		want []string
	}{
		{nil, []string{"a:1", "b:1", "c:1"}},
		{[]ImageFilter{{Name: "b:1"}}, []string{"b:1"}},
		{[]ImageFilter{{TargetDigest: testDigest(0)}}, []string{"a:1", "c:1"}},
		{[]ImageFilter{{TargetDigest: testDigest(0), Labels: []LabelMatch{{Key: "n", Value: "2"}}}}, []string{"c:1"}},
		{[]ImageFilter{{Name: "a:1"}, {Labels: []LabelMatch{{Key: "n", Value: "1"}}}}, []string{"a:1", "b:1"}},
		{[]ImageFilter{{Labels: []LabelMatch{{Key: "missing", Exists: true}}}}, []string{}},
	} {
		if err := db.View(ctx, func(tx *Tx) error {
			got, err := tx.ListImages(ctx, "default", tc.f...)
			if !reflect.DeepEqual(imageNames(got), tc.want) {
				t.Errorf("filters %+v: got %v, want %v", tc.f, imageNames(got), tc.want)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}

	var upd Image
	if err := db.Update(ctx, func(tx *Tx) error {
		var err error
		upd, err = tx.UpdateImage(ctx, "default", Image{Name: "a:1", Labels: map[string]string{"x": "y"}}, "labels.x")
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(upd.Labels, map[string]string{"n": "0", "x": "y"}) || upd.Target.Digest != testDigest(0) {
			t.Errorf("after labels.x: %+v", upd)
		}
		nt := Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: testDigest(9), Size: 9}
		upd, err = tx.UpdateImage(ctx, "default", Image{Name: "a:1", Target: nt}, "target")
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(upd.Target, nt) || upd.Labels["x"] != "y" {
			t.Errorf("after target: %+v", upd)
		}
		upd, err = tx.UpdateImage(ctx, "default", Image{Name: "a:1", Target: Descriptor{Annotations: map[string]string{"k": "v"}}}, "annotations")
		if err != nil {
			return err
		}
		if upd.Target.Digest != testDigest(9) || upd.Target.Annotations["k"] != "v" {
			t.Errorf("after annotations: %+v", upd)
		}
		// No fieldpaths: labels and target replaced.
		full := testImage("a:1")
		upd, err = tx.UpdateImage(ctx, "default", full)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(upd.Labels, full.Labels) || !reflect.DeepEqual(upd.Target, full.Target) {
			t.Errorf("after full update: %+v", upd)
		}
		got, err := tx.GetImage(ctx, "default", "a:1")
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(got, upd) {
			t.Errorf("stored %+v\nreturned %+v", got, upd)
		}

		_, err = tx.UpdateImage(ctx, "default", Image{Name: "a:1"}, "name")
		wantErr(t, err, errdefs.ErrInvalidArgument, "fieldpath", `"name" cannot be updated on image "a:1"`)
		_, err = tx.UpdateImage(ctx, "default", Image{Name: "a:1"}, "target")
		wantErr(t, err, errdefs.ErrInvalidArgument, "target.media_type")
		_, err = tx.UpdateImage(ctx, "default", Image{Name: "zz:1"}, "labels")
		wantErr(t, err, errdefs.ErrNotFound, `image "zz:1" in namespace "default": not found`)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
