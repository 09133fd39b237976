package metadata

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
)

// Tx is one transaction, given to the function passed to DB.Update or
// DB.View. It must not be used after that function returns, nor from
// several goroutines at once.
type Tx struct {
	db       *DB
	tx       *sql.Tx
	stmts    *stmtCache
	writable bool
}

// SQL returns the underlying database/sql transaction, for stores sharing
// the file (snapshots) that must change their tables atomically with the
// metadata.
func (t *Tx) SQL() *sql.Tx { return t.tx }

// Writable reports whether the transaction comes from Update.
func (t *Tx) Writable() bool { return t.writable }

// queries lists every statement of the package, prepared at Open.
func queries() []string {
	return []string{
		qNamespaceEnsure, qNamespaceInsert, qNamespaceGet, qNamespaceList, qNamespaceSetLabels, qNamespaceDelete, qNamespaceCounts,
		qContainerInsert, qContainerGet, qContainerList, qContainerUpdate, qContainerDelete, qContainerTake, qContainerDeleteRow,
		qImageInsert, qImageGet, qImageList, qImageUpdate, qImageDelete,
		qContentInsert, qContentGet, qContentList, qContentSetLabels, qContentDelete, qContentNamespaces, qContentDigests,
		qLeaseInsert, qLeaseGet, qLeaseList, qLeaseDelete, qLeaseExpired,
		qLeaseResourceInsert, qLeaseResourceDelete, qLeaseResourceList, qLeaseResourceAll,
	}
}

// prepared returns the statement prepared at Open for query, bound to this
// transaction, or nil when it was not prepared (only while a test holds the
// schema at an old version); the helpers below then run query unprepared.
func (t *Tx) prepared(ctx context.Context, query string) *sql.Stmt {
	if t.stmts == nil {
		return nil
	}
	s, ok := t.stmts.m[query]
	if !ok {
		return nil
	}
	return t.tx.StmtContext(ctx, s)
}

// stmtCtx returns the context a statement of this transaction runs with.
// In a write transaction it is ctx without its cancellation, after checking
// that ctx is not done: a write transaction holds the single writer
// connection for a few short statements, a wait for another process's lock
// is bounded by the busy timeout, and Update checks ctx again before COMMIT.
// Without a done channel the driver runs a statement without starting a
// goroutine to watch it, which was a large part of the cost of a
// container create or delete.
func (t *Tx) stmtCtx(ctx context.Context) (context.Context, error) {
	if !t.writable {
		return ctx, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return context.WithoutCancel(ctx), nil
}

func (t *Tx) exec(ctx context.Context, op, query string, args ...any) (sql.Result, error) {
	var res sql.Result
	ctx, err := t.stmtCtx(ctx)
	if err != nil {
		return nil, dbError(op, err)
	}
	if s := t.prepared(ctx, query); s != nil {
		res, err = s.ExecContext(ctx, args...)
	} else {
		res, err = t.tx.ExecContext(ctx, query, args...)
	}
	if err != nil {
		return nil, dbError(op, err)
	}
	return res, nil
}

// execN runs a statement and returns the number of rows it changed.
func (t *Tx) execN(ctx context.Context, op, query string, args ...any) (int64, error) {
	res, err := t.exec(ctx, op, query, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, dbError(op, err)
	}
	return n, nil
}

// queryRow runs a query returning one row. In a write transaction a done
// ctx is noticed by the next statement or by Update's commit.
func (t *Tx) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if t.writable {
		ctx = context.WithoutCancel(ctx)
	}
	if s := t.prepared(ctx, query); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}

func (t *Tx) query(ctx context.Context, op, query string, args ...any) (*sql.Rows, error) {
	var rows *sql.Rows
	ctx, err := t.stmtCtx(ctx)
	if err != nil {
		return nil, dbError(op, err)
	}
	if s := t.prepared(ctx, query); s != nil {
		rows, err = s.QueryContext(ctx, args...)
	} else {
		rows, err = t.tx.QueryContext(ctx, query, args...)
	}
	if err != nil {
		return nil, dbError(op, err)
	}
	return rows, nil
}

// checkWritable fails write methods called in a View.
func (t *Tx) checkWritable(op string) error {
	if !t.writable {
		return fmt.Errorf("metadata: %s: read-only transaction (use Update): %w", op, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func checkNamespace(ns string) error {
	return identifiers.Validate("namespace", ns)
}

// now returns the current time as stored (nanosecond precision, UTC).
func now() time.Time { return time.Now().UTC().Round(0) }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// LabelMatch is one label condition of a filter: with Exists, the object
// must have the label Key (any value); otherwise the label Key must be
// present with exactly Value.
type LabelMatch struct {
	Key    string
	Value  string
	Exists bool
}

func matchLabels(labels map[string]string, conds []LabelMatch) bool {
	for _, c := range conds {
		v, ok := labels[c.Key]
		if !ok || (!c.Exists && v != c.Value) {
			return false
		}
	}
	return true
}

// whereBuilder builds the SQL prefilter for a list of OR'ed filters, each
// an AND of column equalities. If a filter has no SQL condition (it only
// tests labels, or nothing) it may match any row, so no prefilter is used.
type whereBuilder struct {
	groups []string
	args   []any
	all    bool
}

func (w *whereBuilder) add(conds map[string]string) {
	if w.all {
		return
	}
	var parts []string
	for _, col := range sortedKeys(conds) {
		if v := conds[col]; v != "" {
			parts = append(parts, col+" = ?")
			w.args = append(w.args, v)
		}
	}
	if len(parts) == 0 {
		w.all, w.groups, w.args = true, nil, nil
		return
	}
	w.groups = append(w.groups, "("+strings.Join(parts, " AND ")+")")
}

// sql returns the extra WHERE text (starting with " AND") and its args.
func (w *whereBuilder) sql() (string, []any) {
	if w.all || len(w.groups) == 0 {
		return "", nil
	}
	return " AND (" + strings.Join(w.groups, " OR ") + ")", w.args
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// applyLabelPath applies a "labels.<key>" style update: the key takes its
// value from upd, or is removed when upd lacks it or has it empty.
func applyLabelPath(orig map[string]string, upd map[string]string, key string) map[string]string {
	out := make(map[string]string, len(orig)+1)
	for k, v := range orig {
		out[k] = v
	}
	if v := upd[key]; v != "" {
		out[key] = v
	} else {
		delete(out, key)
	}
	return out
}

// mergeLabels applies labels onto orig: an empty value deletes the key.
// With replace, the result is labels without its empty values.
func mergeLabels(orig, labels map[string]string, replace bool) map[string]string {
	out := make(map[string]string, len(orig)+len(labels))
	if !replace {
		for k, v := range orig {
			out[k] = v
		}
	}
	for k, v := range labels {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}
