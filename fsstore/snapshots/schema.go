package snapshots

import (
	"context"
	"database/sql"
	"fmt"
)

// schema is the snapshotter's part of the daemon database. Times are Unix
// nanoseconds. parent_id references the committed parent; RESTRICT keeps a
// parent from being deleted under its children even if a bug skipped the
// explicit check.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS snapshots (
		id        INTEGER PRIMARY KEY AUTOINCREMENT,
		namespace TEXT    NOT NULL,
		key       TEXT    NOT NULL,
		parent_id INTEGER REFERENCES snapshots(id) ON DELETE RESTRICT,
		kind      TEXT    NOT NULL CHECK (kind IN ('view', 'active', 'committed')),
		created   INTEGER NOT NULL,
		updated   INTEGER NOT NULL,
		size      INTEGER NOT NULL DEFAULT 0,
		inodes    INTEGER NOT NULL DEFAULT 0,
		UNIQUE (namespace, key)
	)`,
	`CREATE INDEX IF NOT EXISTS snapshots_parent_id ON snapshots(parent_id)`,
	`CREATE TABLE IF NOT EXISTS snapshot_labels (
		snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
		key         TEXT    NOT NULL,
		value       TEXT    NOT NULL,
		PRIMARY KEY (snapshot_id, key)
	) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS snapshot_settings (
		name  TEXT PRIMARY KEY,
		value TEXT NOT NULL
	) WITHOUT ROWID`,
}

// InitSchema creates the snapshotter's tables (snapshots, snapshot_labels,
// snapshot_settings) if they do not exist. It is idempotent, and New calls
// it too.
func InitSchema(ctx context.Context, tx *sql.Tx) error {
	for _, stmt := range schema {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("snapshots schema: %w", err)
		}
	}
	return nil
}
