package metadata

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

func TestLeases(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	past := time.Now().Add(-time.Hour)
	future := time.Now().Add(time.Hour)
	if err := db.Update(ctx, func(tx *Tx) error {
		l, err := tx.CreateLease(ctx, "ns1", "pull-1", map[string]string{"purpose": "pull"}, &future)
		if err != nil {
			return err
		}
		if l.ExpiresAt == nil || !l.ExpiresAt.Equal(future) || l.Labels["purpose"] != "pull" || l.CreatedAt.IsZero() {
			t.Errorf("created %+v", l)
		}
		if _, err := tx.CreateLease(ctx, "ns1", "forever", nil, nil); err != nil {
			return err
		}
		if _, err := tx.CreateLease(ctx, "ns2", "old", nil, &past); err != nil {
			return err
		}
		// Same ID in another namespace is another lease.
		if _, err := tx.CreateLease(ctx, "ns2", "pull-1", nil, nil); err != nil {
			return err
		}
		_, err = tx.CreateLease(ctx, "ns1", "pull-1", nil, nil)
		wantErr(t, err, errdefs.ErrAlreadyExists, `lease "pull-1" in namespace "ns1": already exists`)
		_, err = tx.CreateLease(ctx, "ns1", "a b", nil, nil)
		wantErr(t, err, errdefs.ErrInvalidArgument, "lease id")
		_, err = tx.CreateLease(ctx, "ns1", "x", map[string]string{"": ""}, nil)
		wantErr(t, err, errdefs.ErrInvalidArgument, "labels")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx *Tx) error {
		l, err := tx.GetLease(ctx, "ns1", "forever")
		if err != nil || l.ExpiresAt != nil {
			t.Errorf("get forever: %+v %v", l, err)
		}
		l, err = tx.GetLease(ctx, "ns1", "pull-1")
		if err != nil || l.ExpiresAt == nil || !l.ExpiresAt.Equal(future) {
			t.Errorf("get pull-1: %+v %v", l, err)
		}
		_, err = tx.GetLease(ctx, "ns1", "nope")
		wantErr(t, err, errdefs.ErrNotFound, `lease "nope" in namespace "ns1": not found`)

		ls, err := tx.ListLeases(ctx, "ns1")
		if err != nil || len(ls) != 2 || ls[0].ID != "forever" || ls[1].ID != "pull-1" {
			t.Errorf("list %+v %v", ls, err)
		}
		ls, _ = tx.ListLeases(ctx, "ns1", LeaseFilter{Labels: []LabelMatch{{Key: "purpose", Value: "pull"}}})
		if len(ls) != 1 || ls[0].ID != "pull-1" {
			t.Errorf("filtered %+v", ls)
		}
		ls, _ = tx.ListLeases(ctx, "ns1", LeaseFilter{ID: "forever"})
		if len(ls) != 1 || ls[0].ID != "forever" {
			t.Errorf("id-filtered %+v", ls)
		}
		exp, err := tx.ExpiredLeases(ctx, time.Now())
		if err != nil || !reflect.DeepEqual(exp, []LeaseRef{{Namespace: "ns2", ID: "old"}}) {
			t.Errorf("expired %+v %v", exp, err)
		}

		// Resources.
		res := []Resource{
			{Kind: ResourceContent, ID: testDigest(1)},
			{Kind: ResourceSnapshot, ID: "default/3/fs"},
			{Kind: ResourceIngest, ID: "layer-sha256:abc"},
			{Kind: ResourceImage, ID: "docker.io/library/busybox:1.36"},
		}
		for _, r := range res {
			if err := tx.AddLeaseResource(ctx, "ns1", "pull-1", r); err != nil {
				return err
			}
		}
		// Idempotent.
		if err := tx.AddLeaseResource(ctx, "ns1", "pull-1", res[0]); err != nil {
			return err
		}
		if err := tx.AddLeaseResource(ctx, "ns2", "pull-1", res[0]); err != nil {
			return err
		}
		got, err := tx.ListLeaseResources(ctx, "ns1", "pull-1")
		want := []Resource{res[0], res[3], res[2], res[1]} // by kind, then ID
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("resources %+v %v, want %+v", got, err, want)
		}
		ids, err := tx.LeasedResources(ctx, ResourceContent)
		if err != nil || !reflect.DeepEqual(ids, []string{testDigest(1)}) {
			t.Errorf("LeasedResources(content) = %v %v", ids, err)
		}
		_, err = tx.LeasedResources(ctx, "volume")
		wantErr(t, err, errdefs.ErrInvalidArgument, "resource kind", `"volume"`)

		wantErr(t, tx.AddLeaseResource(ctx, "ns1", "nope", res[0]), errdefs.ErrNotFound, `lease "nope" in namespace "ns1": not found`)
		wantErr(t, tx.AddLeaseResource(ctx, "ns1", "pull-1", Resource{Kind: "volume", ID: "x"}), errdefs.ErrInvalidArgument, "resource kind", `"volume"`)
		wantErr(t, tx.AddLeaseResource(ctx, "ns1", "pull-1", Resource{Kind: ResourceContent, ID: "nodigest"}), errdefs.ErrInvalidArgument, "resource id")
		wantErr(t, tx.AddLeaseResource(ctx, "ns1", "pull-1", Resource{Kind: ResourceSnapshot, ID: ""}), errdefs.ErrInvalidArgument, "resource id", "must not be empty")
		_, err = tx.ListLeaseResources(ctx, "ns1", "nope")
		wantErr(t, err, errdefs.ErrNotFound, `lease "nope"`)

		if err := tx.DeleteLeaseResource(ctx, "ns1", "pull-1", res[1]); err != nil {
			return err
		}
		// Removing it again is fine; a missing lease is not.
		if err := tx.DeleteLeaseResource(ctx, "ns1", "pull-1", res[1]); err != nil {
			return err
		}
		wantErr(t, tx.DeleteLeaseResource(ctx, "ns1", "nope", res[1]), errdefs.ErrNotFound, `lease "nope"`)
		got, _ = tx.ListLeaseResources(ctx, "ns1", "pull-1")
		if len(got) != 3 {
			t.Errorf("after delete: %+v", got)
		}

		// Deleting the lease deletes its resources in the same transaction,
		// not those of the same-named lease in ns2.
		if err := tx.DeleteLease(ctx, "ns1", "pull-1"); err != nil {
			return err
		}
		wantErr(t, tx.DeleteLease(ctx, "ns1", "pull-1"), errdefs.ErrNotFound, `lease "pull-1" in namespace "ns1": not found`)
		var n int
		if err := tx.SQL().QueryRowContext(ctx, `SELECT count(*) FROM lease_resources WHERE namespace = 'ns1'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%d resources left for the deleted lease (%v)", n, err)
		}
		got, _ = tx.ListLeaseResources(ctx, "ns2", "pull-1")
		if len(got) != 1 {
			t.Errorf("ns2 lease resources %+v", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
