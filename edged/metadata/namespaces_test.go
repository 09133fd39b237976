package metadata

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

func TestNamespaces(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	err := db.Update(ctx, func(tx *Tx) error {
		n, err := tx.CreateNamespace(ctx, "prod", map[string]string{"owner": "ops", "tier": "1"})
		if err != nil {
			return err
		}
		if n.Name != "prod" || n.Labels["owner"] != "ops" || n.CreatedAt.IsZero() {
			t.Errorf("created %+v", n)
		}
		_, err = tx.CreateNamespace(ctx, "prod", nil)
		wantErr(t, err, errdefs.ErrAlreadyExists, `namespace "prod": already exists`)
		_, err = tx.CreateNamespace(ctx, "../etc", nil)
		wantErr(t, err, errdefs.ErrInvalidArgument, "namespace", `"../etc"`)
		_, err = tx.CreateNamespace(ctx, "", nil)
		wantErr(t, err, errdefs.ErrInvalidArgument, "namespace", "must not be empty")
		_, err = tx.CreateNamespace(ctx, "bad", map[string]string{"": "x"})
		wantErr(t, err, errdefs.ErrInvalidArgument, "labels", `key ""`)
		if _, err := tx.CreateNamespace(ctx, "dev", nil); err != nil {
			return err
		}

		got, err := tx.GetNamespace(ctx, "prod")
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(got.Labels, map[string]string{"owner": "ops", "tier": "1"}) {
			t.Errorf("labels %v", got.Labels)
		}
		_, err = tx.GetNamespace(ctx, "nope")
		wantErr(t, err, errdefs.ErrNotFound, `namespace "nope": not found`)
		_, err = tx.GetNamespace(ctx, "a/b")
		wantErr(t, err, errdefs.ErrInvalidArgument, "namespace")

		all, err := tx.ListNamespaces(ctx)
		if err != nil {
			return err
		}
		if len(all) != 2 || all[0].Name != "dev" || all[1].Name != "prod" {
			t.Errorf("list %+v", all)
		}

		// Merge: set one, delete one (empty value), keep the rest.
		n, err = tx.SetNamespaceLabels(ctx, "prod", map[string]string{"tier": "", "zone": "eu"}, false)
		if err != nil {
			return err
		}
		if want := map[string]string{"owner": "ops", "zone": "eu"}; !reflect.DeepEqual(n.Labels, want) {
			t.Errorf("merged labels %v, want %v", n.Labels, want)
		}
		if !n.UpdatedAt.After(n.CreatedAt) && !n.UpdatedAt.Equal(n.CreatedAt) {
			t.Errorf("updated %v before created %v", n.UpdatedAt, n.CreatedAt)
		}
		// Replace.
		if _, err := tx.SetNamespaceLabels(ctx, "prod", map[string]string{"only": "this"}, true); err != nil {
			return err
		}
		got, _ = tx.GetNamespace(ctx, "prod")
		if !reflect.DeepEqual(got.Labels, map[string]string{"only": "this"}) {
			t.Errorf("replaced labels %v", got.Labels)
		}
		// Replace with nothing clears.
		if _, err := tx.SetNamespaceLabels(ctx, "prod", nil, true); err != nil {
			return err
		}
		got, _ = tx.GetNamespace(ctx, "prod")
		if got.Labels != nil {
			t.Errorf("cleared labels %v", got.Labels)
		}
		_, err = tx.SetNamespaceLabels(ctx, "nope", map[string]string{"a": "b"}, false)
		wantErr(t, err, errdefs.ErrNotFound, `namespace "nope": not found`)
		_, err = tx.SetNamespaceLabels(ctx, "prod", map[string]string{strings.Repeat("k", 300): "v"}, false)
		wantErr(t, err, errdefs.ErrInvalidArgument, "labels", "300 bytes")

		if err := tx.DeleteNamespace(ctx, "dev"); err != nil {
			return err
		}
		wantErr(t, tx.DeleteNamespace(ctx, "dev"), errdefs.ErrNotFound, `namespace "dev": not found`)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDeleteNonEmptyNamespace(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	if err := db.Update(ctx, func(tx *Tx) error {
		for _, id := range []string{"c1", "c2"} {
			if _, err := tx.CreateContainer(ctx, "busy", testContainer(t, id)); err != nil {
				return err
			}
		}
		if _, err := tx.CreateImage(ctx, "busy", testImage("docker.io/library/alpine:3")); err != nil {
			return err
		}
		if _, err := tx.AddContent(ctx, "busy", testDigest(1), 10, nil); err != nil {
			return err
		}
		if _, err := tx.AddContent(ctx, "busy", testDigest(2), 10, nil); err != nil {
			return err
		}
		if _, err := tx.AddContent(ctx, "busy", testDigest(3), 10, nil); err != nil {
			return err
		}
		_, err := tx.CreateLease(ctx, "busy", "pull", nil, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err := db.Update(ctx, func(tx *Tx) error { return tx.DeleteNamespace(ctx, "busy") })
	wantErr(t, err, errdefs.ErrFailedPrecondition,
		`namespace "busy" must be empty, but has 2 containers, 1 image, 3 content blobs, 1 lease`)

	// Emptied step by step, the message shrinks, and finally it goes.
	if err := db.Update(ctx, func(tx *Tx) error {
		for _, id := range []string{"c1", "c2"} {
			if err := tx.DeleteContainer(ctx, "busy", id); err != nil {
				return err
			}
		}
		if err := tx.DeleteImage(ctx, "busy", "docker.io/library/alpine:3"); err != nil {
			return err
		}
		for i := 1; i <= 3; i++ {
			if err := tx.DeleteContent(ctx, "busy", testDigest(i)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	err = db.Update(ctx, func(tx *Tx) error { return tx.DeleteNamespace(ctx, "busy") })
	wantErr(t, err, errdefs.ErrFailedPrecondition, `namespace "busy" must be empty, but has 1 lease`)
	if err := db.Update(ctx, func(tx *Tx) error {
		if err := tx.DeleteLease(ctx, "busy", "pull"); err != nil {
			return err
		}
		return tx.DeleteNamespace(ctx, "busy")
	}); err != nil {
		t.Fatal(err)
	}
}

// TestForeignKeyBackstop: the foreign keys are on, so even a raw SQL delete
// of a namespace that still has containers is refused by SQLite.
func TestForeignKeyBackstop(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateContainer(ctx, "fk", testContainer(t, "c"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_, err := db.SQL().Exec(`DELETE FROM namespaces WHERE name = 'fk'`)
	if err == nil || !strings.Contains(err.Error(), "FOREIGN KEY") {
		t.Fatalf("raw namespace delete: %v, want a FOREIGN KEY constraint error", err)
	}
}
