package metadata

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

// queryStrings returns the one string column of query's rows.
func queryStrings(t *testing.T, db *sql.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

func indexNames(t *testing.T, db *sql.DB) []string {
	t.Helper()
	return queryStrings(t, db, `SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name`)
}

// TestMigrateFromVersion1 creates a database with schema version 1 (as the
// first release would have), fills it, and opens it with the current code:
// migration 2 must run, and every object must survive.
func TestMigrateFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), FileName)
	quiet := slog.New(slog.DiscardHandler)

	old, err := open(ctx, path, Options{upto: 1, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := old.version(ctx); v != 1 {
		t.Fatalf("old database at version %d", v)
	}
	if idx := indexNames(t, old.SQL()); len(idx) != 0 {
		t.Fatalf("version 1 already has indexes %v", idx)
	}
	expires := time.Now().Add(-time.Minute)
	c := testContainer(t, "survivor")
	c.Extensions = map[string][]byte{"ext": []byte("data")}
	im := testImage("docker.io/library/busybox:1.36")
	if err := old.Update(ctx, func(tx *Tx) error {
		if _, err := tx.CreateNamespace(ctx, "prod", map[string]string{"owner": "ops"}); err != nil {
			return err
		}
		// A container row as version 1 code wrote it: no spec_encoding
		// column, the spec as given.
		if _, err := tx.SQL().ExecContext(ctx, `INSERT INTO containers (namespace, id, image, runtime, runtime_options, spec, spec_type,
			labels, snapshotter, snapshot_key, extensions, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			"prod", c.ID, c.Image, c.Runtime.Name, nilIfEmptyBytes(c.Runtime.Options), c.Spec, c.SpecType, encodeMap(c.Labels),
			c.Snapshotter, c.SnapshotKey, encodeMap(c.Extensions), int64(1), int64(1)); err != nil {
			return err
		}
		if _, err := tx.CreateImage(ctx, "prod", im); err != nil {
			return err
		}
		if _, err := tx.AddContent(ctx, "prod", testDigest(42), 1234, map[string]string{"l": "v"}); err != nil {
			return err
		}
		if _, err := tx.AddContent(ctx, "dev", testDigest(42), 1234, nil); err != nil {
			return err
		}
		if _, err := tx.CreateLease(ctx, "prod", "old-lease", nil, &expires); err != nil {
			return err
		}
		return tx.AddLeaseResource(ctx, "prod", "old-lease", Resource{Kind: ResourceContent, ID: testDigest(42)})
	}); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	// An upgrade that fails (here: the snapshot store's hook) leaves the
	// database at version 1, untouched.
	_, err = Open(ctx, path, Options{Logger: quiet, ExtraSchema: []func(context.Context, *sql.Tx) error{
		func(context.Context, *sql.Tx) error { return errors.New("snapshots: disk on fire") },
	}})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("failing upgrade: %v", err)
	}

	db, err := Open(ctx, path, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, _ := db.version(ctx); v != SchemaVersion() {
		t.Fatalf("after upgrade at version %d, want %d", v, SchemaVersion())
	}
	if got, want := indexNames(t, db.SQL()), []string{"content_digest", "images_target", "leases_expires"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("indexes %v, want %v", got, want)
	}
	var ok string
	if err := db.SQL().QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check: %q %v", ok, err)
	}
	// The GC query now uses the new index.
	var plan strings.Builder
	rows, err := db.SQL().Query(`EXPLAIN QUERY PLAN `+qContentNamespaces, testDigest(42))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan.WriteString(detail + "\n")
	}
	rows.Close()
	if !strings.Contains(plan.String(), "content_digest") {
		t.Fatalf("query plan does not use content_digest:\n%s", plan.String())
	}

	if err := db.View(ctx, func(tx *Tx) error {
		ns, err := tx.GetNamespace(ctx, "prod")
		if err != nil || ns.Labels["owner"] != "ops" {
			t.Errorf("namespace %+v %v", ns, err)
		}
		got, err := tx.GetContainer(ctx, "prod", "survivor")
		if err != nil {
			return err
		}
		want := c
		want.CreatedAt, want.UpdatedAt = got.CreatedAt, got.UpdatedAt
		if !reflect.DeepEqual(got, want) {
			t.Errorf("container after upgrade %+v", got)
		}
		gi, err := tx.GetImage(ctx, "prod", im.Name)
		if err != nil || !reflect.DeepEqual(gi.Target, im.Target) {
			t.Errorf("image after upgrade %+v %v", gi, err)
		}
		nss, err := tx.NamespacesReferencing(ctx, testDigest(42))
		if err != nil || !reflect.DeepEqual(nss, []string{"dev", "prod"}) {
			t.Errorf("content refs %v %v", nss, err)
		}
		exp, err := tx.ExpiredLeases(ctx, time.Now())
		if err != nil || len(exp) != 1 || exp[0].ID != "old-lease" {
			t.Errorf("expired leases %v %v", exp, err)
		}
		res, err := tx.ListLeaseResources(ctx, "prod", "old-lease")
		if err != nil || len(res) != 1 {
			t.Errorf("lease resources %v %v", res, err)
		}
		imgs, err := tx.ListImages(ctx, "prod", ImageFilter{TargetDigest: im.Target.Digest})
		if err != nil || len(imgs) != 1 {
			t.Errorf("images by target %v %v", imgs, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// And the upgraded database takes new writes.
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateContainer(ctx, "prod", testContainer(t, "new"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func columnNames(t *testing.T, db *sql.DB, table string) []string {
	t.Helper()
	return queryStrings(t, db, `SELECT name FROM pragma_table_info(?) ORDER BY cid`, table)
}

// TestMigrateContainersColumnOrder upgrades a version 3 database with
// containers (a spec stored deflated and one stored as given) to version 4,
// which rebuilds the table with the spec last: every field, rowid, the
// unique key and the namespace foreign key survive, and a delete still
// returns what describes the container.
func TestMigrateContainersColumnOrder(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), FileName)
	quiet := slog.New(slog.DiscardHandler)

	old, err := open(ctx, path, Options{upto: 3, Logger: quiet, CompressSpecs: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := columnNames(t, old.SQL(), "containers"); got[5] != "spec" {
		t.Fatalf("version 3 columns %v: spec is not the 6th", got)
	}
	deflated := testContainer(t, "deflated")
	deflated.Extensions = map[string][]byte{"ext": []byte("data")}
	plain := testContainer(t, "plain")
	plain.Runtime.Options = nil
	plain.Labels = map[string]string{"only": "one"}
	if err := old.Update(ctx, func(tx *Tx) error {
		if _, err := tx.CreateContainer(ctx, "prod", deflated); err != nil {
			return err
		}
		old.compressSpecs = false
		_, err := tx.CreateContainer(ctx, "prod", plain)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	rowids := func(db *DB) map[string]int64 {
		t.Helper()
		m := map[string]int64{}
		rows, err := db.SQL().Query(`SELECT id, rowid, spec_encoding FROM containers`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var rowid, enc int64
			if err := rows.Scan(&id, &rowid, &enc); err != nil {
				t.Fatal(err)
			}
			m[id] = rowid
			m[id+" encoding"] = enc
		}
		return m
	}
	before := rowids(old)
	if before["deflated encoding"] != specDeflate || before["plain encoding"] != specRaw {
		t.Fatalf("version 3 rows %v: want one deflated spec and one as given", before)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := Open(ctx, path, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, _ := db.version(ctx); v != SchemaVersion() {
		t.Fatalf("after upgrade at version %d, want %d", v, SchemaVersion())
	}
	want := []string{"namespace", "id", "image", "runtime", "snapshotter", "snapshot_key", "spec_type", "spec_encoding",
		"created", "updated", "labels", "extensions", "runtime_options", "spec"}
	if got := columnNames(t, db.SQL(), "containers"); !reflect.DeepEqual(got, want) {
		t.Fatalf("columns after upgrade %v, want %v", got, want)
	}
	if after := rowids(db); !reflect.DeepEqual(after, before) {
		t.Fatalf("rowids and encodings after upgrade %v, want %v", after, before)
	}
	var tables int
	if err := db.SQL().QueryRow(`SELECT count(*) FROM sqlite_master WHERE name LIKE 'containers%'`).Scan(&tables); err != nil || tables != 1 {
		t.Fatalf("tables named containers*: %d %v, want only containers", tables, err)
	}
	var fk string
	if err := db.SQL().QueryRow(`SELECT "table" FROM pragma_foreign_key_list('containers')`).Scan(&fk); err != nil || fk != "namespaces" {
		t.Fatalf("foreign key of containers: %q %v, want namespaces", fk, err)
	}
	var ok string
	if err := db.SQL().QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check: %q %v", ok, err)
	}
	if err := db.View(ctx, func(tx *Tx) error {
		for _, c := range []Container{deflated, plain} {
			got, err := tx.GetContainer(ctx, "prod", c.ID)
			if err != nil {
				return err
			}
			c.CreatedAt, c.UpdatedAt = got.CreatedAt, got.UpdatedAt
			if !reflect.DeepEqual(got, c) {
				t.Errorf("container after upgrade\n got %+v\nwant %+v", got, c)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	err = db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateContainer(ctx, "prod", testContainer(t, "plain"))
		return err
	})
	if !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("create of an existing container after upgrade: %v, want AlreadyExists", err)
	}
	var taken Container
	if err := db.Update(ctx, func(tx *Tx) (err error) {
		taken, err = tx.TakeContainer(ctx, "prod", "deflated")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if taken.ID != "deflated" || taken.SnapshotKey != deflated.SnapshotKey || taken.Snapshotter != "overlayfs" ||
		!reflect.DeepEqual(taken.Labels, deflated.Labels) || taken.Image != deflated.Image || taken.Runtime.Name != deflated.Runtime.Name ||
		taken.Spec != nil || taken.Extensions != nil || taken.CreatedAt.IsZero() {
		t.Fatalf("TakeContainer after upgrade: %+v", taken)
	}
	if err := db.View(ctx, func(tx *Tx) error {
		_, err := tx.GetContainer(ctx, "prod", "deflated")
		return err
	}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("taken container still there: %v", err)
	}
}
