package snapshots

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/metadata/labels"
	"github.com/edged/edged/fsstore/snapshots/fscopy"
	"github.com/edged/edged/fsstore/snapshots/mount"
	"github.com/edged/edged/internal/atomicfile"
)

// Options configure New.
type Options struct {
	// Backend selects the backend; BackendAuto (the default) uses overlayfs
	// when a test mount under the root works, and keeps using whatever
	// backend made the existing snapshots.
	Backend Backend
	// NoSync skips the syncfs on Commit. Only for tests and throw-away
	// storage: without it a power cut after Commit can lose layer data.
	NoSync bool
}

type snapshotter struct {
	db       *sql.DB
	root     string
	dir      string // <root>/snapshots
	backend  Backend
	indexOff bool // overlay accepts index=off
	noSync   bool

	// cleanupMu keeps Cleanup from seeing a snapshot directory whose row
	// is not yet committed: changes hold it shared, Cleanup exclusively.
	cleanupMu sync.RWMutex
}

var _ Snapshotter = (*snapshotter)(nil)

// New opens the snapshotter storing data under root (e.g.
// /var/lib/edged/snapshots) and metadata in db, whose tables it creates. The
// database should have foreign keys on and a busy timeout. Call Cleanup
// before use after a restart.
func New(ctx context.Context, db *sql.DB, root string, opts Options) (Snapshotter, error) {
	switch opts.Backend {
	case BackendAuto, BackendOverlay, BackendNative:
	default:
		return nil, errdefs.InvalidArgument("backend", "%q is not one of %q, %q", opts.Backend, BackendOverlay, BackendNative)
	}
	if root == "" {
		return nil, errdefs.InvalidArgument("snapshots root", "must not be empty")
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	s := &snapshotter{db: db, root: root, dir: filepath.Join(root, "snapshots"), noSync: opts.NoSync}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	defer tx.Rollback()
	if err := InitSchema(ctx, tx); err != nil {
		return nil, err
	}
	var stored string
	var count int64
	if err := tx.QueryRowContext(ctx, `SELECT value FROM snapshot_settings WHERE name = 'backend'`).Scan(&stored); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM snapshots`).Scan(&count); err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	want := opts.Backend
	if want == BackendAuto && count > 0 && stored != "" {
		want = Backend(stored) // existing snapshots only make sense to their backend
	}
	switch want {
	case BackendAuto:
		if s.indexOff, err = probeOverlay(s.dir); err != nil {
			slog.InfoContext(ctx, "snapshots: overlayfs is not usable, using the native (copying) backend", "root", root, "reason", err)
			s.backend = BackendNative
		} else {
			s.backend = BackendOverlay
		}
	case BackendOverlay:
		if s.indexOff, err = probeOverlay(s.dir); err != nil {
			return nil, fmt.Errorf("snapshots: overlayfs is not usable under %s: %v: %w", s.dir, err, errdefs.ErrNotImplemented)
		}
		s.backend = BackendOverlay
	default:
		s.backend = BackendNative
	}
	if count > 0 && stored != "" && Backend(stored) != s.backend {
		return nil, fmt.Errorf("snapshots: the %d existing snapshots were made by the %s backend and cannot be used with %s: %w",
			count, stored, s.backend, errdefs.ErrFailedPrecondition)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO snapshot_settings(name, value) VALUES ('backend', ?)
		ON CONFLICT(name) DO UPDATE SET value = excluded.value`, string(s.backend)); err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	return s, nil
}

// probeOverlay mounts a tiny overlay (two lowers, an upper) in a temporary
// directory under dir and writes through it. This catches a missing module
// as well as a root on a filesystem that cannot be an upper layer (overlay
// itself, some FUSE). It reports whether "index=off" is accepted.
func probeOverlay(dir string) (indexOff bool, err error) {
	tmp, err := os.MkdirTemp(dir, "tmp-overlaycheck-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp)
	p := func(n string) string { return filepath.Join(tmp, n) }
	for _, d := range []string{"l1", "l2", "u", "w", "m"} {
		if err := os.Mkdir(p(d), 0o700); err != nil {
			return false, err
		}
	}
	if err := os.WriteFile(p("l1/f"), []byte("x"), 0o600); err != nil {
		return false, err
	}
	base := []string{"lowerdir=" + p("l2") + ":" + p("l1"), "upperdir=" + p("u"), "workdir=" + p("w")}
	m := mount.Mount{Type: "overlay", Source: "overlay", Options: append([]string{"index=off"}, base...)}
	indexOff = true
	if err := m.Mount(p("m")); err != nil {
		m.Options, indexOff = base, false
		if err2 := m.Mount(p("m")); err2 != nil {
			return false, err2
		}
	}
	defer mount.UnmountAll(p("m"))
	if _, err := os.Stat(p("m/f")); err != nil {
		return false, fmt.Errorf("lower layer not visible: %w", err)
	}
	if err := os.WriteFile(p("m/probe"), []byte("x"), 0o600); err != nil {
		return false, fmt.Errorf("writing through overlay: %w", err)
	}
	if _, err := os.Stat(p("u/probe")); err != nil {
		return false, fmt.Errorf("write did not reach the upper layer: %w", err)
	}
	return indexOff, mount.UnmountAll(p("m"))
}

func (s *snapshotter) Backend() Backend { return s.backend }

func (s *snapshotter) snapDir(id int64) string {
	return filepath.Join(s.dir, strconv.FormatInt(id, 10))
}
func (s *snapshotter) fsDir(id int64) string { return filepath.Join(s.snapDir(id), "fs") }

type row struct {
	id        int64
	parentID  sql.NullInt64
	parentKey sql.NullString
	key       string
	kind      Kind
	created   int64
	updated   int64
	size      int64
	inodes    int64
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *snapshotter) getRow(ctx context.Context, q querier, ns, key string) (row, error) {
	var r row
	var kind string
	err := q.QueryRowContext(ctx, `SELECT s.id, s.parent_id, p.key, s.key, s.kind, s.created, s.updated, s.size, s.inodes
		FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
		WHERE s.namespace = ? AND s.key = ?`, ns, key).
		Scan(&r.id, &r.parentID, &r.parentKey, &r.key, &kind, &r.created, &r.updated, &r.size, &r.inodes)
	if errors.Is(err, sql.ErrNoRows) {
		return r, notFound(ns, key)
	}
	if err != nil {
		return r, fmt.Errorf("snapshot %q: %w", short(key), err)
	}
	r.kind, err = ParseKind(kind)
	return r, err
}

// ancestors returns id and its ancestors' IDs, nearest first.
func (s *snapshotter) ancestors(ctx context.Context, q querier, id int64) ([]int64, error) {
	rows, err := q.QueryContext(ctx, `WITH RECURSIVE chain(id, parent_id, depth) AS (
			SELECT id, parent_id, 0 FROM snapshots WHERE id = ?
			UNION ALL
			SELECT s.id, s.parent_id, c.depth + 1 FROM snapshots s JOIN chain c ON s.id = c.parent_id
		) SELECT id FROM chain ORDER BY depth`, id)
	if err != nil {
		return nil, fmt.Errorf("snapshot parents: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		ids = append(ids, v)
	}
	return ids, rows.Err()
}

func (s *snapshotter) labels(ctx context.Context, q querier, id int64) (map[string]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT key, value FROM snapshot_labels WHERE snapshot_id = ?`, id)
	if err != nil {
		return nil, fmt.Errorf("snapshot labels: %w", err)
	}
	defer rows.Close()
	var out map[string]string
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		if out == nil {
			out = make(map[string]string)
		}
		out[k] = v
	}
	return out, rows.Err()
}

func setLabels(ctx context.Context, tx *sql.Tx, id int64, labels map[string]string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM snapshot_labels WHERE snapshot_id = ?`, id); err != nil {
		return fmt.Errorf("snapshot labels: %w", err)
	}
	for k, v := range labels {
		if _, err := tx.ExecContext(ctx, `INSERT INTO snapshot_labels(snapshot_id, key, value) VALUES (?, ?, ?)`, id, k, v); err != nil {
			return fmt.Errorf("snapshot labels: %w", err)
		}
	}
	return nil
}

// updateLabels changes a snapshot's stored labels from old to labels,
// writing only the rows that differ.
func updateLabels(ctx context.Context, tx *sql.Tx, id int64, old, labels map[string]string) error {
	for k := range old {
		if _, ok := labels[k]; ok {
			continue
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM snapshot_labels WHERE snapshot_id = ? AND key = ?`, id, k); err != nil {
			return fmt.Errorf("snapshot labels: %w", err)
		}
	}
	for k, v := range labels {
		if ov, ok := old[k]; ok && ov == v {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO snapshot_labels(snapshot_id, key, value) VALUES (?, ?, ?)
			ON CONFLICT(snapshot_id, key) DO UPDATE SET value = excluded.value`, id, k, v); err != nil {
			return fmt.Errorf("snapshot labels: %w", err)
		}
	}
	return nil
}

// onlyRemoves reports whether labels is old with some keys removed.
func onlyRemoves(old, labels map[string]string) bool {
	for k, v := range labels {
		if ov, ok := old[k]; !ok || ov != v {
			return false
		}
	}
	return true
}

// beginWrite starts a transaction and takes SQLite's write lock at once (by
// a no-op write), so that its reads and writes see one consistent state even
// with several connections.
func (s *snapshotter) beginWrite(ctx context.Context) (*sql.Tx, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE snapshot_settings SET value = value WHERE name = 'backend'`); err != nil {
		tx.Rollback()
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	return tx, nil
}

func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && (se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

func alreadyExists(ns, key string) error {
	return fmt.Errorf("snapshot %q in namespace %q: %w", short(key), ns, errdefs.ErrAlreadyExists)
}

// resolveParent returns the committed parent's row and its chain (the
// parent first), or nothing for parent "".
func (s *snapshotter) resolveParent(ctx context.Context, q querier, ns, parent string) (row, []int64, error) {
	if parent == "" {
		return row{}, nil, nil
	}
	pr, err := s.getRow(ctx, q, ns, parent)
	if errors.Is(err, errdefs.ErrNotFound) {
		return pr, nil, fmt.Errorf("parent snapshot %q in namespace %q: %w", short(parent), ns, errdefs.ErrNotFound)
	}
	if err != nil {
		return pr, nil, err
	}
	if pr.kind != KindCommitted {
		return pr, nil, fmt.Errorf("parent snapshot %q is %s, not committed: %w", short(parent), pr.kind, errdefs.ErrFailedPrecondition)
	}
	chain, err := s.ancestors(ctx, q, pr.id)
	return pr, chain, err
}

func (s *snapshotter) Prepare(ctx context.Context, ns, key, parent string, labels map[string]string) ([]mount.Mount, error) {
	return s.create(ctx, KindActive, ns, key, parent, labels)
}

func (s *snapshotter) View(ctx context.Context, ns, key, parent string, labels map[string]string) ([]mount.Mount, error) {
	return s.create(ctx, KindView, ns, key, parent, labels)
}

func (s *snapshotter) create(ctx context.Context, kind Kind, ns, key, parent string, labels map[string]string) (_ []mount.Mount, retErr error) {
	if err := validateNamespace(ns); err != nil {
		return nil, err
	}
	if err := validateKey("key", key); err != nil {
		return nil, err
	}
	if parent != "" {
		if err := validateKey("parent", parent); err != nil {
			return nil, err
		}
	}
	if err := validateLabels(labels); err != nil {
		return nil, err
	}
	s.cleanupMu.RLock()
	defer s.cleanupMu.RUnlock()

	// Check first, so that no copy is made for a request that must fail.
	pr, chain, err := s.resolveParent(ctx, s.db, ns, parent)
	if err != nil {
		return nil, err
	}
	if _, err := s.getRow(ctx, s.db, ns, key); err == nil {
		return nil, alreadyExists(ns, key)
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	// The deepest possible ID gives the longest options: check the limits
	// now rather than at mount time.
	for _, m := range s.mounts(kind, math.MaxInt64, chain) {
		if err := mount.CheckOptions(m); err != nil {
			return nil, fmt.Errorf("snapshot %q: parent chain of %d layers is too deep (at most %d): %w", short(key), len(chain), MaxDepth, err)
		}
	}

	tmp, err := s.makeTemp()
	if err != nil {
		return nil, err
	}
	defer func() {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Mkdir(filepath.Join(tmp, "fs"), 0o755); err != nil {
		return nil, fmt.Errorf("snapshot %q: %w", short(key), err)
	}
	if s.backend == BackendOverlay && kind == KindActive {
		if err := os.Mkdir(filepath.Join(tmp, "work"), 0o700); err != nil {
			return nil, fmt.Errorf("snapshot %q: %w", short(key), err)
		}
	}
	if s.backend == BackendNative && kind == KindActive && len(chain) > 0 {
		if err := fscopy.CopyDir(ctx, filepath.Join(tmp, "fs"), s.fsDir(chain[0])); err != nil {
			return nil, fmt.Errorf("snapshot %q: copying parent %q: %w", short(key), short(parent), err)
		}
	}

	tx, err := s.beginWrite(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	// Re-check under the write lock: the parent may have gone meanwhile.
	pr2, _, err := s.resolveParent(ctx, tx, ns, parent)
	if err != nil {
		return nil, err
	}
	if pr2.id != pr.id {
		return nil, fmt.Errorf("parent snapshot %q changed while preparing %q: %w", short(parent), short(key), errdefs.ErrAborted)
	}
	now := time.Now().UnixNano()
	var parentID sql.NullInt64
	if parent != "" {
		parentID = sql.NullInt64{Int64: pr.id, Valid: true}
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO snapshots(namespace, key, parent_id, kind, created, updated) VALUES (?, ?, ?, ?, ?, ?)`,
		ns, key, parentID, kind.String(), now, now)
	if isUniqueViolation(err) {
		return nil, alreadyExists(ns, key)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot %q: %w", short(key), err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return nil, err
	}
	if err := setLabels(ctx, tx, id, labels); err != nil {
		return nil, err
	}
	final := s.snapDir(id)
	if err := os.Rename(tmp, final); err != nil {
		// A directory left by a crash between rename and commit (IDs are
		// not reused, but a rolled-back insert does not consume one).
		if !errors.Is(err, fs.ErrExist) && !errors.Is(err, os.ErrExist) && !isNotEmpty(err) {
			return nil, fmt.Errorf("snapshot %q: %w", short(key), err)
		}
		slog.WarnContext(ctx, "snapshots: removing stale directory", "path", final)
		if err := os.RemoveAll(final); err != nil {
			return nil, fmt.Errorf("snapshot %q: removing stale %s: %w", short(key), final, err)
		}
		if err := os.Rename(tmp, final); err != nil {
			return nil, fmt.Errorf("snapshot %q: %w", short(key), err)
		}
	}
	tmp = ""
	if err := atomicfile.SyncDir(s.dir); err != nil {
		os.RemoveAll(final)
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		os.RemoveAll(final)
		return nil, fmt.Errorf("snapshot %q: %w", short(key), err)
	}
	return s.mounts(kind, id, chain), nil
}

func (s *snapshotter) makeTemp() (string, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	tmp := filepath.Join(s.dir, "tmp-"+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return "", fmt.Errorf("snapshots: %w", err)
	}
	return tmp, nil
}

// mounts builds the mounts of snapshot id of kind whose parent chain
// (nearest first) is parents.
func (s *snapshotter) mounts(kind Kind, id int64, parents []int64) []mount.Mount {
	bind := func(dir string, ro bool) []mount.Mount {
		opt := "rw"
		if ro {
			opt = "ro"
		}
		return []mount.Mount{{Type: "bind", Source: dir, Options: []string{opt, "rbind"}}}
	}
	if kind == KindActive && (s.backend == BackendNative || len(parents) == 0) {
		return bind(s.fsDir(id), false)
	}
	if kind != KindActive { // a view
		switch {
		case len(parents) == 0:
			return bind(s.fsDir(id), true)
		case s.backend == BackendNative || len(parents) == 1:
			return bind(s.fsDir(parents[0]), true)
		}
	}
	lowers := make([]string, len(parents))
	for i, p := range parents {
		lowers[i] = s.fsDir(p)
	}
	var opts []string
	if s.indexOff {
		opts = append(opts, "index=off")
	}
	if kind == KindActive {
		opts = append(opts, "workdir="+filepath.Join(s.snapDir(id), "work"), "upperdir="+s.fsDir(id))
	}
	opts = append(opts, "lowerdir="+strings.Join(lowers, ":"))
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: opts}}
}

func (s *snapshotter) Mounts(ctx context.Context, ns, key string) ([]mount.Mount, error) {
	if err := validateNamespace(ns); err != nil {
		return nil, err
	}
	if err := validateKey("key", key); err != nil {
		return nil, err
	}
	r, err := s.getRow(ctx, s.db, ns, key)
	if err != nil {
		return nil, err
	}
	if r.kind == KindCommitted {
		return nil, fmt.Errorf("snapshot %q is committed and has no mounts; Prepare or View on top of it: %w", short(key), errdefs.ErrFailedPrecondition)
	}
	var chain []int64
	if r.parentID.Valid {
		if chain, err = s.ancestors(ctx, s.db, r.parentID.Int64); err != nil {
			return nil, err
		}
	}
	return s.mounts(r.kind, r.id, chain), nil
}

func (s *snapshotter) Commit(ctx context.Context, ns, name, key string, labels map[string]string) error {
	if err := validateNamespace(ns); err != nil {
		return err
	}
	if err := validateKey("name", name); err != nil {
		return err
	}
	if err := validateKey("key", key); err != nil {
		return err
	}
	if err := validateLabels(labels); err != nil {
		return err
	}
	s.cleanupMu.RLock()
	defer s.cleanupMu.RUnlock()
	r, err := s.getRow(ctx, s.db, ns, key)
	if err != nil {
		return err
	}
	if r.kind != KindActive {
		return fmt.Errorf("snapshot %q is a %s; only active snapshots can be committed: %w", short(key), r.kind, errdefs.ErrFailedPrecondition)
	}
	if _, err := s.getRow(ctx, s.db, ns, name); err == nil {
		return alreadyExists(ns, name)
	}
	// Walk and sync outside the transaction: they can take a while.
	u, err := diskUsage(ctx, s.fsDir(r.id))
	if err != nil {
		return fmt.Errorf("snapshot %q: usage: %w", short(key), err)
	}
	if !s.noSync {
		if err := syncFS(s.fsDir(r.id)); err != nil {
			return fmt.Errorf("snapshot %q: %w", short(key), err)
		}
	}
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	r2, err := s.getRow(ctx, tx, ns, key)
	if err != nil {
		return err
	}
	if r2.id != r.id || r2.kind != KindActive {
		return fmt.Errorf("snapshot %q changed during commit: %w", short(key), errdefs.ErrAborted)
	}
	_, err = tx.ExecContext(ctx, `UPDATE snapshots SET key = ?, kind = 'committed', size = ?, inodes = ?, updated = ? WHERE id = ?`,
		name, u.Size, u.Inodes, time.Now().UnixNano(), r.id)
	if isUniqueViolation(err) {
		return alreadyExists(ns, name)
	}
	if err != nil {
		return fmt.Errorf("snapshot %q: commit: %w", short(key), err)
	}
	if err := setLabels(ctx, tx, r.id, labels); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("snapshot %q: commit: %w", short(key), err)
	}
	return nil
}

func (s *snapshotter) Remove(ctx context.Context, ns, key string) error {
	if err := validateNamespace(ns); err != nil {
		return err
	}
	if err := validateKey("key", key); err != nil {
		return err
	}
	s.cleanupMu.RLock()
	defer s.cleanupMu.RUnlock()
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	r, err := s.getRow(ctx, tx, ns, key)
	if err != nil {
		return err
	}
	var n int64
	var example string
	if err := tx.QueryRowContext(ctx, `SELECT count(*), coalesce(min(key), '') FROM snapshots WHERE parent_id = ?`, r.id).Scan(&n, &example); err != nil {
		return fmt.Errorf("snapshot %q: %w", short(key), err)
	}
	if n > 0 {
		return fmt.Errorf("snapshot %q has %d children (such as %q); remove them first: %w", short(key), n, short(example), errdefs.ErrFailedPrecondition)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM snapshot_labels WHERE snapshot_id = ?`, r.id); err != nil {
		return fmt.Errorf("snapshot %q: %w", short(key), err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, r.id); err != nil {
		return fmt.Errorf("snapshot %q: %w", short(key), err)
	}
	// Move the data out of the ID's place before the row is gone: SQLite
	// reuses the highest rowid once it is deleted, so a snapshot prepared
	// right after the commit may get this ID and its directory. A crash
	// between the rename and the commit leaves a row without data, which
	// Cleanup removes.
	trash, moved := s.trashDir(ctx, s.snapDir(r.id))
	if err := tx.Commit(); err != nil {
		if moved {
			if rerr := os.Rename(trash, s.snapDir(r.id)); rerr != nil {
				slog.WarnContext(ctx, "snapshots: cannot restore snapshot data after a failed remove", "path", trash, "error", rerr)
			}
		}
		return fmt.Errorf("snapshot %q: %w", short(key), err)
	}
	if moved {
		if err := os.RemoveAll(trash); err != nil {
			slog.WarnContext(ctx, "snapshots: cannot remove snapshot data; Cleanup will retry", "path", trash, "error", err)
		}
	}
	return nil
}

// trashDir renames dir to a tmp-rm-* name that Cleanup removes, so that a
// half-deleted tree never carries a snapshot ID.
func (s *snapshotter) trashDir(ctx context.Context, dir string) (string, bool) {
	var rnd [8]byte
	rand.Read(rnd[:])
	trash := filepath.Join(s.dir, "tmp-rm-"+hex.EncodeToString(rnd[:]))
	if err := os.Rename(dir, trash); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			slog.WarnContext(ctx, "snapshots: cannot remove snapshot data; Cleanup will retry", "path", dir, "error", err)
		}
		return "", false
	}
	return trash, true
}

func (s *snapshotter) removeDir(ctx context.Context, dir string) {
	trash, ok := s.trashDir(ctx, dir)
	if !ok {
		return
	}
	if err := os.RemoveAll(trash); err != nil {
		slog.WarnContext(ctx, "snapshots: cannot remove snapshot data; Cleanup will retry", "path", trash, "error", err)
	}
}

func (s *snapshotter) info(ctx context.Context, q querier, r row) (Info, error) {
	labels, err := s.labels(ctx, q, r.id)
	if err != nil {
		return Info{}, err
	}
	return Info{
		Kind:    r.kind,
		Name:    r.key,
		Parent:  r.parentKey.String,
		Labels:  labels,
		Created: time.Unix(0, r.created),
		Updated: time.Unix(0, r.updated),
	}, nil
}

func (s *snapshotter) Stat(ctx context.Context, ns, key string) (Info, error) {
	if err := validateNamespace(ns); err != nil {
		return Info{}, err
	}
	if err := validateKey("key", key); err != nil {
		return Info{}, err
	}
	r, err := s.getRow(ctx, s.db, ns, key)
	if err != nil {
		return Info{}, err
	}
	return s.info(ctx, s.db, r)
}

func (s *snapshotter) Update(ctx context.Context, ns string, info Info, fieldpaths ...string) (Info, error) {
	if err := validateNamespace(ns); err != nil {
		return Info{}, err
	}
	if err := validateKey("name", info.Name); err != nil {
		return Info{}, err
	}
	// Only the text is checked here: the limits apply to the label set
	// the update produces, known inside the transaction.
	if err := validateLabelText(info.Labels); err != nil {
		return Info{}, err
	}
	if len(fieldpaths) == 0 {
		fieldpaths = []string{"labels"}
	}
	for _, fp := range fieldpaths {
		if fp != "labels" && (!strings.HasPrefix(fp, "labels.") || fp == "labels.") {
			return Info{}, errdefs.InvalidArgument("fieldpath", "%q cannot be updated (only labels and labels.<key>)", short(fp))
		}
	}
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return Info{}, err
	}
	defer tx.Rollback()
	r, err := s.getRow(ctx, tx, ns, info.Name)
	if err != nil {
		return Info{}, err
	}
	// Merge, then check the result: checking only the labels of the
	// request would let "labels.<key>" updates grow the set without end.
	old, err := s.labels(ctx, tx, r.id)
	if err != nil {
		return Info{}, err
	}
	merged := maps.Clone(old)
	for _, fp := range fieldpaths {
		if fp == "labels" {
			merged = maps.Clone(info.Labels)
			continue
		}
		k := strings.TrimPrefix(fp, "labels.")
		if v, ok := info.Labels[k]; ok {
			if merged == nil {
				merged = make(map[string]string)
			}
			merged[k] = v
		} else {
			delete(merged, k)
		}
	}
	// A set over the limits (stored before snapshots had them) may still
	// shed labels, one key at a time: an update that only removes is
	// never refused. Labels kept as stored are not held to the text rule
	// (labels.ValidateChange).
	if err := labels.ValidateChange("labels", old, merged); err != nil && !onlyRemoves(old, merged) {
		return Info{}, err
	}
	if err := updateLabels(ctx, tx, r.id, old, merged); err != nil {
		return Info{}, fmt.Errorf("snapshot %q: %w", short(info.Name), err)
	}
	now := time.Now().UnixNano()
	if _, err := tx.ExecContext(ctx, `UPDATE snapshots SET updated = ? WHERE id = ?`, now, r.id); err != nil {
		return Info{}, fmt.Errorf("snapshot %q: %w", short(info.Name), err)
	}
	r.updated = now
	out, err := s.info(ctx, tx, r)
	if err != nil {
		return Info{}, err
	}
	if err := tx.Commit(); err != nil {
		return Info{}, fmt.Errorf("snapshot %q: %w", short(info.Name), err)
	}
	return out, nil
}

func (s *snapshotter) List(ctx context.Context, ns string, filters ...string) ([]Info, error) {
	if err := validateNamespace(ns); err != nil {
		return nil, err
	}
	fs, err := parseFilters(filters)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT s.id, s.key, s.kind, s.created, s.updated, coalesce(p.key, '')
		FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
		WHERE s.namespace = ? ORDER BY s.key`, ns)
	if err != nil {
		return nil, fmt.Errorf("snapshots: list: %w", err)
	}
	var infos []Info
	byID := map[int64]int{}
	for rows.Next() {
		var id, created, updated int64
		var info Info
		var kind string
		if err := rows.Scan(&id, &info.Name, &kind, &created, &updated, &info.Parent); err != nil {
			rows.Close()
			return nil, err
		}
		info.Kind, _ = ParseKind(kind)
		info.Created, info.Updated = time.Unix(0, created), time.Unix(0, updated)
		byID[id] = len(infos)
		infos = append(infos, info)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("snapshots: list: %w", err)
	}
	lrows, err := s.db.QueryContext(ctx, `SELECT l.snapshot_id, l.key, l.value FROM snapshot_labels l
		JOIN snapshots s ON s.id = l.snapshot_id WHERE s.namespace = ?`, ns)
	if err != nil {
		return nil, fmt.Errorf("snapshots: list: %w", err)
	}
	for lrows.Next() {
		var id int64
		var k, v string
		if err := lrows.Scan(&id, &k, &v); err != nil {
			lrows.Close()
			return nil, err
		}
		if i, ok := byID[id]; ok {
			if infos[i].Labels == nil {
				infos[i].Labels = map[string]string{}
			}
			infos[i].Labels[k] = v
		}
	}
	lrows.Close()
	if err := lrows.Err(); err != nil {
		return nil, fmt.Errorf("snapshots: list: %w", err)
	}
	out := infos[:0]
	for _, info := range infos {
		if matchAny(fs, info) {
			out = append(out, info)
		}
	}
	return out, nil
}

// Walk loads the matching snapshots before calling fn, so fn may call back
// into the snapshotter.
func (s *snapshotter) Walk(ctx context.Context, ns string, fn func(context.Context, Info) error, filters ...string) error {
	infos, err := s.List(ctx, ns, filters...)
	if err != nil {
		return err
	}
	for _, info := range infos {
		if err := fn(ctx, info); err != nil {
			return err
		}
	}
	return nil
}

func (s *snapshotter) Usage(ctx context.Context, ns, key string) (Usage, error) {
	if err := validateNamespace(ns); err != nil {
		return Usage{}, err
	}
	if err := validateKey("key", key); err != nil {
		return Usage{}, err
	}
	r, err := s.getRow(ctx, s.db, ns, key)
	if err != nil {
		return Usage{}, err
	}
	if r.kind == KindCommitted {
		return Usage{Size: r.size, Inodes: r.inodes}, nil
	}
	u, err := diskUsage(ctx, s.fsDir(r.id))
	if err != nil {
		return Usage{}, fmt.Errorf("snapshot %q: usage: %w", short(key), err)
	}
	return u, nil
}

// Cleanup implements Snapshotter.
func (s *snapshotter) Cleanup(ctx context.Context) error {
	s.cleanupMu.Lock()
	defer s.cleanupMu.Unlock()
	var errs []error

	// Stale mounts (a probe or a test interrupted by a crash): nothing of
	// ours should be mounted under the root while the daemon starts.
	mps, err := mount.MountPoints(s.dir)
	if err != nil {
		errs = append(errs, fmt.Errorf("snapshots cleanup: %w", err))
	}
	for _, mp := range mps {
		slog.InfoContext(ctx, "snapshots: unmounting stale mount", "path", mp)
		if err := mount.UnmountAll(mp); err != nil {
			errs = append(errs, fmt.Errorf("snapshots cleanup: %w", err))
		}
	}

	type known struct {
		kind     Kind
		children int64
		ns, key  string
	}
	rows, err := s.db.QueryContext(ctx, `SELECT s.id, s.namespace, s.key, s.kind,
		(SELECT count(*) FROM snapshots c WHERE c.parent_id = s.id) FROM snapshots s`)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("snapshots cleanup: %w", err))...)
	}
	ids := map[int64]known{}
	for rows.Next() {
		var id int64
		var k known
		var kind string
		if err := rows.Scan(&id, &k.ns, &k.key, &kind, &k.children); err != nil {
			rows.Close()
			return errors.Join(append(errs, err)...)
		}
		k.kind, _ = ParseKind(kind)
		ids[id] = k
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}

	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("snapshots cleanup: %w", err))...)
	}
	present := map[int64]bool{}
	for _, e := range ents {
		path := filepath.Join(s.dir, e.Name())
		var reason string
		if id, err := strconv.ParseInt(e.Name(), 10, 64); err == nil && strconv.FormatInt(id, 10) == e.Name() {
			if _, ok := ids[id]; ok {
				present[id] = true
				continue
			}
			reason = "no snapshot has this ID (crash during prepare or remove)"
		} else if strings.HasPrefix(e.Name(), "tmp-") {
			reason = "temporary directory"
		} else {
			slog.WarnContext(ctx, "snapshots: leaving unexpected entry alone", "path", path)
			continue
		}
		if inner, err := mount.MountPoints(path); err != nil || len(inner) > 0 {
			errs = append(errs, fmt.Errorf("snapshots cleanup: %s still has mounts under it, not removing it", path))
			continue
		}
		slog.InfoContext(ctx, "snapshots: removing", "path", path, "reason", reason)
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, fmt.Errorf("snapshots cleanup: %w", err))
		}
	}

	for id, k := range ids {
		if present[id] {
			continue
		}
		if k.children > 0 {
			errs = append(errs, fmt.Errorf("snapshots cleanup: snapshot %q in namespace %q (id %d) has lost its data but has %d children: %w",
				short(k.key), k.ns, id, k.children, errdefs.ErrDataLoss))
			continue
		}
		slog.WarnContext(ctx, "snapshots: removing snapshot whose data is missing", "namespace", k.ns, "key", k.key, "id", id, "kind", k.kind)
		tx, err := s.beginWrite(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_, err1 := tx.ExecContext(ctx, `DELETE FROM snapshot_labels WHERE snapshot_id = ?`, id)
		_, err2 := tx.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, id)
		if err := errors.Join(err1, err2); err != nil {
			tx.Rollback()
			errs = append(errs, fmt.Errorf("snapshots cleanup: %w", err))
			continue
		}
		if err := tx.Commit(); err != nil {
			errs = append(errs, fmt.Errorf("snapshots cleanup: %w", err))
		}
	}
	return errors.Join(errs...)
}
