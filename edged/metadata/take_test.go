package metadata

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

func TestTakeContainer(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	c := testContainer(t, "web1")
	c.Extensions = map[string][]byte{"net": []byte("10.0.0.2")}
	var created Container
	if err := db.Update(ctx, func(tx *Tx) (err error) {
		created, err = tx.CreateContainer(ctx, "default", c)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var got Container
	if err := db.Update(ctx, func(tx *Tx) (err error) {
		got, err = tx.TakeContainer(ctx, "default", "web1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want := Container{
		ID: "web1", Labels: c.Labels, Image: c.Image, Runtime: RuntimeInfo{Name: c.Runtime.Name},
		Snapshotter: c.Snapshotter, SnapshotKey: c.SnapshotKey, CreatedAt: created.CreatedAt, UpdatedAt: created.UpdatedAt,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("TakeContainer returned\n %+v\nwant\n %+v", got, want)
	}
	if err := db.View(ctx, func(tx *Tx) error {
		_, err := tx.GetContainer(ctx, "default", "web1")
		return err
	}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("container still there after TakeContainer: %v", err)
	}

	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.TakeContainer(ctx, "default", "web1")
		wantErr(t, err, errdefs.ErrNotFound, `container "web1" in namespace "default": not found`)
		_, err = tx.TakeContainer(ctx, "default", "a/../b")
		wantErr(t, err, errdefs.ErrInvalidArgument, "container id")
		_, err = tx.TakeContainer(ctx, "de fault", "x")
		wantErr(t, err, errdefs.ErrInvalidArgument, "namespace")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.View(ctx, func(tx *Tx) error {
		_, err := tx.TakeContainer(ctx, "default", "x")
		wantErr(t, err, errdefs.ErrFailedPrecondition, "delete container", "read-only transaction")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestCreateContainerNewNamespace: the insert is tried first and the
// namespace created only when the foreign key fails; both orders must leave
// the namespace and the container, and a second namespace must not see it.
func TestCreateContainerNewNamespace(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	for _, ns := range []string{"fresh", "fresh", "other"} {
		id := "c-" + ns
		if err := db.Update(ctx, func(tx *Tx) error {
			_, err := tx.CreateContainer(ctx, ns, testContainer(t, id))
			if ns == "fresh" && err != nil {
				// The second round finds the first container: the ID is taken.
				wantErr(t, err, errdefs.ErrAlreadyExists, `container "c-fresh" in namespace "fresh": already exists`)
				return nil
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.View(ctx, func(tx *Tx) error {
		for _, ns := range []string{"fresh", "other"} {
			if _, err := tx.GetNamespace(ctx, ns); err != nil {
				return err
			}
			cs, err := tx.ListContainers(ctx, ns)
			if err != nil {
				return err
			}
			if got := ids(cs); !reflect.DeepEqual(got, []string{"c-" + ns}) {
				t.Errorf("namespace %s holds %v", ns, got)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateCanceledCommitsNothing: a write transaction runs its statements
// detached from ctx's cancellation, so a request canceled half way must be
// caught before the next statement and before COMMIT.
func TestUpdateCanceledCommitsNothing(t *testing.T) {
	db, _ := openTest(t, Options{})
	for _, tc := range []struct {
		name string
		fn   func(ctx context.Context, cancel context.CancelFunc, tx *Tx) error
		msg  string
	}{
		{"before commit", func(ctx context.Context, cancel context.CancelFunc, tx *Tx) error {
			if _, err := tx.CreateContainer(ctx, "default", testContainer(t, "a")); err != nil {
				return err
			}
			cancel()
			return nil
		}, "metadata: commit: context canceled"},
		{"before a statement", func(ctx context.Context, cancel context.CancelFunc, tx *Tx) error {
			if _, err := tx.CreateContainer(ctx, "default", testContainer(t, "a")); err != nil {
				return err
			}
			cancel()
			_, err := tx.CreateContainer(ctx, "default", testContainer(t, "b"))
			return err
		}, "metadata: create container: context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			err := db.Update(ctx, func(tx *Tx) error { return tc.fn(ctx, cancel, tx) })
			wantErr(t, err, context.Canceled, tc.msg)
			if err := db.View(context.Background(), func(tx *Tx) error {
				cs, err := tx.ListContainers(context.Background(), "default")
				if len(cs) != 0 {
					t.Errorf("canceled transaction committed %v", ids(cs))
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
