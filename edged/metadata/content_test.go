package metadata

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

func TestContent(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	d1, d2, d3 := testDigest(1), testDigest(2), testDigest(3)
	if err := db.Update(ctx, func(tx *Tx) error {
		ci, err := tx.AddContent(ctx, "ns1", d1, 100, map[string]string{"containerd.io/gc.root": "x"})
		if err != nil {
			return err
		}
		if ci.Digest != d1 || ci.Size != 100 || ci.Labels["containerd.io/gc.root"] != "x" || ci.CreatedAt.IsZero() {
			t.Errorf("added %+v", ci)
		}
		// Idempotent: the existing record comes back unchanged.
		again, err := tx.AddContent(ctx, "ns1", d1, 999, map[string]string{"other": "y"})
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(again, ci) {
			t.Errorf("second add %+v, want %+v", again, ci)
		}
		for _, a := range []struct {
			ns string
			d  string
		}{{"ns1", d2}, {"ns2", d1}, {"ns2", d3}} {
			if _, err := tx.AddContent(ctx, a.ns, a.d, 5, nil); err != nil {
				return err
			}
		}

		_, err = tx.AddContent(ctx, "ns1", "md5:abc", 1, nil)
		wantErr(t, err, errdefs.ErrInvalidArgument, "digest", `"md5:abc"`)
		_, err = tx.AddContent(ctx, "ns1", "", 1, nil)
		wantErr(t, err, errdefs.ErrInvalidArgument, "digest", "must not be empty")
		_, err = tx.AddContent(ctx, "ns1", d3, -1, nil)
		wantErr(t, err, errdefs.ErrInvalidArgument, "size", "negative")
		_, err = tx.AddContent(ctx, "ns/1", d3, 1, nil)
		wantErr(t, err, errdefs.ErrInvalidArgument, "namespace")
		_, err = tx.AddContent(ctx, "ns1", d3, 1, map[string]string{"": "v"})
		wantErr(t, err, errdefs.ErrInvalidArgument, "labels")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx *Tx) error {
		got, err := tx.GetContent(ctx, "ns2", d3)
		if err != nil || got.Size != 5 {
			t.Errorf("get %+v %v", got, err)
		}
		_, err = tx.GetContent(ctx, "ns1", d3)
		wantErr(t, err, errdefs.ErrNotFound, "content "+d3+` in namespace "ns1": not found`)

		list, err := tx.ListContent(ctx, "ns1")
		if err != nil {
			return err
		}
		if len(list) != 2 || list[0].Digest != d1 || list[1].Digest != d2 {
			t.Errorf("list ns1 %+v", list)
		}
		list, _ = tx.ListContent(ctx, "ns1", ContentFilter{Labels: []LabelMatch{{Key: "containerd.io/gc.root", Exists: true}}})
		if len(list) != 1 || list[0].Digest != d1 {
			t.Errorf("filtered list %+v", list)
		}
		list, _ = tx.ListContent(ctx, "ns1", ContentFilter{Digest: d2})
		if len(list) != 1 || list[0].Digest != d2 {
			t.Errorf("digest-filtered list %+v", list)
		}

		nss, err := tx.NamespacesReferencing(ctx, d1)
		if err != nil || !reflect.DeepEqual(nss, []string{"ns1", "ns2"}) {
			t.Errorf("NamespacesReferencing(d1) = %v, %v", nss, err)
		}
		nss, err = tx.NamespacesReferencing(ctx, testDigest(99))
		if err != nil || len(nss) != 0 {
			t.Errorf("NamespacesReferencing(unknown) = %v, %v", nss, err)
		}
		_, err = tx.NamespacesReferencing(ctx, "nope")
		wantErr(t, err, errdefs.ErrInvalidArgument, "digest")
		all, err := tx.ReferencedDigests(ctx)
		if err != nil || !reflect.DeepEqual(all, []string{d1, d2, d3}) {
			t.Errorf("ReferencedDigests = %v, %v", all, err)
		}

		// Labels: merge, then replace.
		time.Sleep(time.Millisecond)
		ci, err := tx.UpdateContentLabels(ctx, "ns1", d1, map[string]string{"containerd.io/gc.root": "", "a": "b"}, false)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(ci.Labels, map[string]string{"a": "b"}) || !ci.UpdatedAt.After(ci.CreatedAt) {
			t.Errorf("merged %+v", ci)
		}
		ci, err = tx.UpdateContentLabels(ctx, "ns1", d1, map[string]string{"c": "d"}, true)
		if err != nil || !reflect.DeepEqual(ci.Labels, map[string]string{"c": "d"}) {
			t.Errorf("replaced %+v %v", ci, err)
		}
		stored, _ := tx.GetContent(ctx, "ns1", d1)
		if !reflect.DeepEqual(stored, ci) {
			t.Errorf("stored %+v, returned %+v", stored, ci)
		}
		_, err = tx.UpdateContentLabels(ctx, "ns1", d3, nil, false)
		wantErr(t, err, errdefs.ErrNotFound, "content "+d3)

		// Delete one namespace's reference: the other remains.
		if err := tx.DeleteContent(ctx, "ns1", d1); err != nil {
			return err
		}
		wantErr(t, tx.DeleteContent(ctx, "ns1", d1), errdefs.ErrNotFound, "content "+d1+` in namespace "ns1": not found`)
		wantErr(t, tx.DeleteContent(ctx, "ns1", "sha256:short"), errdefs.ErrInvalidArgument, "digest")
		nss, _ = tx.NamespacesReferencing(ctx, d1)
		if !reflect.DeepEqual(nss, []string{"ns2"}) {
			t.Errorf("after delete: %v", nss)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
