package metadata

import (
	"context"
	"fmt"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

// A migration brings the schema from version-1 to version. Migrations are
// append-only: a released migration is never edited, a change is a new one.
type migration struct {
	version     int
	description string
	stmts       []string
}

// migrations returns the schema history, oldest first.
//
// Storage choices (measured with the benchmarks in bench_linux_test.go):
//   - Object tables are rowid tables with UNIQUE (namespace, key). WITHOUT
//     ROWID would save the separate index (one leaf page per commit: 8.5
//     instead of 9.6 KB written per container create+delete), but its rows
//     live in the key B-tree, and once a row spills into overflow pages
//     (a container's spec always does with 1 KiB pages; images and content
//     with many labels do too) every key comparison on the way down reads
//     the whole overflow chain: with 10,000 containers a create+delete cost
//     150-175 µs of CPU instead of 117-121 µs. The rowid layout keeps the
//     lookup cost independent of row size. Namespaces (few, small rows)
//     and lease_resources (all key, no payload) are WITHOUT ROWID.
//   - Labels, annotations and extensions are one encoded blob column per
//     object (see encoding.go) rather than a child table: a create or delete
//     then touches one row, not 1+N rows, which is what the create+delete
//     rate and the bytes written per commit depend on. Label filters run in
//     Go on the rows SQL preselected by the indexed columns.
//   - In containers the small columns come first and the blobs last, the
//     spec at the end (version 4): a row that spills keeps its tail in
//     overflow pages, so a column after the spec costs a walk of its chain.
//   - Times are INTEGER Unix nanoseconds (UTC).
//   - Every object table references namespaces(name); DeleteNamespace checks
//     emptiness first and reports counts, the foreign key is the backstop.
func migrations() []migration {
	return []migration{
		{
			version:     1,
			description: "namespaces, containers, images, content, leases",
			stmts: []string{
				`CREATE TABLE namespaces (
					name    TEXT PRIMARY KEY NOT NULL,
					labels  BLOB,
					created INTEGER NOT NULL,
					updated INTEGER NOT NULL
				) WITHOUT ROWID`,
				`CREATE TABLE containers (
					namespace       TEXT NOT NULL REFERENCES namespaces(name),
					id              TEXT NOT NULL,
					image           TEXT NOT NULL,
					runtime         TEXT NOT NULL,
					runtime_options BLOB,
					spec            BLOB NOT NULL,
					spec_type       TEXT NOT NULL,
					labels          BLOB,
					snapshotter     TEXT NOT NULL,
					snapshot_key    TEXT NOT NULL,
					extensions      BLOB,
					created         INTEGER NOT NULL,
					updated         INTEGER NOT NULL,
					UNIQUE (namespace, id)
				)`,
				`CREATE TABLE images (
					namespace          TEXT NOT NULL REFERENCES namespaces(name),
					name               TEXT NOT NULL,
					target_media_type  TEXT NOT NULL,
					target_digest      TEXT NOT NULL,
					target_size        INTEGER NOT NULL,
					target_annotations BLOB,
					labels             BLOB,
					created            INTEGER NOT NULL,
					updated            INTEGER NOT NULL,
					UNIQUE (namespace, name)
				)`,
				// Blobs are stored once for all namespaces; this table records
				// which namespace references which digest.
				`CREATE TABLE content (
					namespace TEXT NOT NULL REFERENCES namespaces(name),
					digest    TEXT NOT NULL,
					size      INTEGER NOT NULL,
					labels    BLOB,
					created   INTEGER NOT NULL,
					updated   INTEGER NOT NULL,
					UNIQUE (namespace, digest)
				)`,
				`CREATE TABLE leases (
					namespace TEXT NOT NULL REFERENCES namespaces(name),
					id        TEXT NOT NULL,
					labels    BLOB,
					created   INTEGER NOT NULL,
					expires   INTEGER,
					UNIQUE (namespace, id)
				)`,
				`CREATE TABLE lease_resources (
					namespace TEXT NOT NULL,
					lease     TEXT NOT NULL,
					kind      TEXT NOT NULL CHECK (kind IN ('content', 'snapshot', 'ingest', 'image')),
					id        TEXT NOT NULL,
					PRIMARY KEY (namespace, lease, kind, id),
					FOREIGN KEY (namespace, lease) REFERENCES leases(namespace, id) ON DELETE CASCADE
				) WITHOUT ROWID`,
			},
		},
		{
			// Garbage collection asks "which namespaces reference this
			// digest", "which images point at this digest" and "which leases
			// have expired"; version 1 answered them by scanning tables.
			version:     2,
			description: "indexes for garbage collection: content by digest, images by target, leases by expiry",
			stmts: []string{
				`CREATE INDEX content_digest ON content (digest, namespace)`,
				`CREATE INDEX images_target ON images (namespace, target_digest)`,
				`CREATE INDEX leases_expires ON leases (expires) WHERE expires IS NOT NULL`,
			},
		},
		{
			// A container's spec (3 KB of JSON for a plain container) spans
			// four 1 KiB pages; deflated (about 1 KB) it spans one or two,
			// which is what a container create and delete write to the WAL
			// and, at checkpoint, to the database. Rows of version 2 keep
			// encoding 0 (as given).
			version:     3,
			description: "containers.spec_encoding: specs stored deflated",
			stmts: []string{
				`ALTER TABLE containers ADD COLUMN spec_encoding INTEGER NOT NULL DEFAULT 0`,
			},
		},
		{
			// SQLite stores a row's columns in table order and a row that
			// spills into overflow pages keeps its tail there, so reading
			// a column that comes after the spec walks the spec's overflow
			// chain. A container delete reads the labels, snapshotter and
			// snapshot key (TakeContainer): with the spec in the middle of
			// the row that was about 30-40 µs of a 140 µs create+delete
			// (BenchmarkContainerCreateDelete). The small columns now come
			// first and the blobs last, the spec at the very end.
			version:     4,
			description: "containers: small columns first, the spec last",
			stmts: []string{
				`CREATE TABLE containers_v4 (
					namespace       TEXT NOT NULL REFERENCES namespaces(name),
					id              TEXT NOT NULL,
					image           TEXT NOT NULL,
					runtime         TEXT NOT NULL,
					snapshotter     TEXT NOT NULL,
					snapshot_key    TEXT NOT NULL,
					spec_type       TEXT NOT NULL,
					spec_encoding   INTEGER NOT NULL DEFAULT 0,
					created         INTEGER NOT NULL,
					updated         INTEGER NOT NULL,
					labels          BLOB,
					extensions      BLOB,
					runtime_options BLOB,
					spec            BLOB NOT NULL,
					UNIQUE (namespace, id)
				)`,
				`INSERT INTO containers_v4 (rowid, namespace, id, image, runtime, snapshotter, snapshot_key, spec_type, spec_encoding,
						created, updated, labels, extensions, runtime_options, spec)
					SELECT rowid, namespace, id, image, runtime, snapshotter, snapshot_key, spec_type, spec_encoding,
						created, updated, labels, extensions, runtime_options, spec
					FROM containers ORDER BY rowid`,
				`DROP TABLE containers`,
				`ALTER TABLE containers_v4 RENAME TO containers`,
			},
		},
	}
}

// SchemaVersion is the schema version this package creates and upgrades to.
func SchemaVersion() int {
	m := migrations()
	return m[len(m)-1].version
}

// migrate applies the missing migrations (up to version upto, 0 = all) and
// the ExtraSchema hooks in one write transaction.
func (db *DB) migrate(ctx context.Context, upto int) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return dbError("begin migration", err)
	}
	defer tx.Rollback()

	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version     INTEGER PRIMARY KEY NOT NULL,
		description TEXT NOT NULL,
		applied     INTEGER NOT NULL
	)`); err != nil {
		return dbError("create schema_version", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&current); err != nil {
		return dbError("read schema version", err)
	}
	latest := SchemaVersion()
	if current > latest {
		return fmt.Errorf("metadata: database %s has schema version %d, newer than the %d this edged supports: %w",
			db.path, current, latest, errdefs.ErrFailedPrecondition)
	}
	from := current
	for _, m := range migrations() {
		if m.version <= current || (upto > 0 && m.version > upto) {
			continue
		}
		for _, s := range m.stmts {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return dbError(fmt.Sprintf("migration %d (%s)", m.version, m.description), err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, description, applied) VALUES (?, ?, ?)`,
			m.version, m.description, time.Now().UnixNano()); err != nil {
			return dbError("record schema version", err)
		}
		if from > 0 {
			db.log.InfoContext(ctx, "metadata schema migrated", "path", db.path, "from", current, "to", m.version, "migration", m.description)
		}
		current = m.version
	}
	if from == 0 {
		db.log.InfoContext(ctx, "metadata database created", "path", db.path, "schema", current)
	}
	for i, fn := range db.opts.ExtraSchema {
		if err := fn(ctx, tx); err != nil {
			return fmt.Errorf("metadata: extra schema %d: %w", i, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return dbError("commit migration", err)
	}
	return nil
}

// version returns the current schema version recorded in the database.
func (db *DB) version(ctx context.Context) (int, error) {
	var v int
	err := db.r.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&v)
	return v, err
}
