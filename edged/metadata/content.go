package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

// ContentInfo is a namespace's reference to a blob of the shared content
// store. Blobs are stored once; each namespace that has one records it here
// with its own labels.
type ContentInfo struct {
	Digest    string
	Size      int64
	Labels    map[string]string // nil when empty
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ContentFilter selects content references; every non-empty field must
// match, ListContent returns references matching any filter.
type ContentFilter struct {
	Digest string
	Labels []LabelMatch
}

const (
	contentCols        = `digest, size, labels, created, updated`
	qContentInsert     = `INSERT INTO content (namespace, ` + contentCols + `) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, digest) DO NOTHING`
	qContentGet        = `SELECT ` + contentCols + ` FROM content WHERE namespace = ? AND digest = ?`
	qContentList       = `SELECT ` + contentCols + ` FROM content WHERE namespace = ? ORDER BY digest`
	qContentSetLabels  = `UPDATE content SET labels = ?, updated = ? WHERE namespace = ? AND digest = ?`
	qContentDelete     = `DELETE FROM content WHERE namespace = ? AND digest = ?`
	qContentNamespaces = `SELECT namespace FROM content WHERE digest = ? ORDER BY namespace`
	qContentDigests    = `SELECT DISTINCT digest FROM content ORDER BY digest`
)

func contentNotFound(ns, dgst string) error {
	return fmt.Errorf("content %s in namespace %q: %w", dgst, ns, errdefs.ErrNotFound)
}

// AddContent records that namespace ns references blob dgst of size bytes,
// creating the namespace if needed. It is idempotent: if ns already
// references dgst, the existing record is returned unchanged.
func (t *Tx) AddContent(ctx context.Context, ns, dgst string, size int64, labels map[string]string) (ContentInfo, error) {
	if err := t.checkWritable("add content"); err != nil {
		return ContentInfo{}, err
	}
	if err := checkNamespace(ns); err != nil {
		return ContentInfo{}, err
	}
	if err := validateDigest("digest", dgst); err != nil {
		return ContentInfo{}, err
	}
	if size < 0 {
		return ContentInfo{}, errdefs.InvalidArgument("size", "%d is negative", size)
	}
	if err := validateLabels("labels", nil, labels); err != nil {
		return ContentInfo{}, err
	}
	ts := now()
	nanos := ts.UnixNano()
	if err := t.ensureNamespace(ctx, ns, nanos); err != nil {
		return ContentInfo{}, err
	}
	n, err := t.execN(ctx, "add content", qContentInsert, ns, dgst, size, encodeMap(labels), nanos, nanos)
	if err != nil {
		return ContentInfo{}, err
	}
	if n == 0 {
		return t.GetContent(ctx, ns, dgst)
	}
	return ContentInfo{Digest: dgst, Size: size, Labels: copyLabels(labels), CreatedAt: ts, UpdatedAt: ts}, nil
}

func scanContent(sc interface{ Scan(...any) error }) (ContentInfo, error) {
	var (
		ci               ContentInfo
		labels           []byte
		created, updated int64
	)
	if err := sc.Scan(&ci.Digest, &ci.Size, &labels, &created, &updated); err != nil {
		return ContentInfo{}, err
	}
	var err error
	if ci.Labels, err = decodeLabels("content.labels", labels); err != nil {
		return ContentInfo{}, err
	}
	ci.CreatedAt, ci.UpdatedAt = fromNanos(created), fromNanos(updated)
	return ci, nil
}

// GetContent returns namespace ns's reference to dgst.
func (t *Tx) GetContent(ctx context.Context, ns, dgst string) (ContentInfo, error) {
	if err := checkNamespace(ns); err != nil {
		return ContentInfo{}, err
	}
	if err := validateDigest("digest", dgst); err != nil {
		return ContentInfo{}, err
	}
	ci, err := scanContent(t.queryRow(ctx, qContentGet, ns, dgst))
	if errors.Is(err, sql.ErrNoRows) {
		return ContentInfo{}, contentNotFound(ns, dgst)
	}
	if err != nil {
		return ContentInfo{}, dbError("get content", err)
	}
	return ci, nil
}

// ListContent returns namespace ns's content references matching any of
// filters (all without filters), ordered by digest.
func (t *Tx) ListContent(ctx context.Context, ns string, filters ...ContentFilter) ([]ContentInfo, error) {
	if err := checkNamespace(ns); err != nil {
		return nil, err
	}
	rows, err := t.query(ctx, "list content", qContentList, ns)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ContentInfo
	for rows.Next() {
		ci, err := scanContent(rows)
		if err != nil {
			return nil, dbError("list content", err)
		}
		ok := len(filters) == 0
		for _, f := range filters {
			if (f.Digest == "" || f.Digest == ci.Digest) && matchLabels(ci.Labels, f.Labels) {
				ok = true
				break
			}
		}
		if ok {
			out = append(out, ci)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("list content", err)
	}
	return out, nil
}

// UpdateContentLabels changes the labels of namespace ns's reference to
// dgst: with replace they become exactly labels, otherwise labels are
// merged in; a key with an empty value is removed.
func (t *Tx) UpdateContentLabels(ctx context.Context, ns, dgst string, labels map[string]string, replace bool) (ContentInfo, error) {
	if err := t.checkWritable("update content labels"); err != nil {
		return ContentInfo{}, err
	}
	ci, err := t.GetContent(ctx, ns, dgst)
	if err != nil {
		return ContentInfo{}, err
	}
	merged := mergeLabels(ci.Labels, labels, replace)
	if err := validateLabels("labels", ci.Labels, merged); err != nil {
		return ContentInfo{}, err
	}
	ts := now()
	if _, err := t.exec(ctx, "update content labels", qContentSetLabels, encodeMap(merged), ts.UnixNano(), ns, dgst); err != nil {
		return ContentInfo{}, err
	}
	ci.Labels = nilIfEmpty(merged)
	ci.UpdatedAt = ts
	return ci, nil
}

// DeleteContent removes namespace ns's reference to dgst. The blob itself
// stays until garbage collection finds no namespace referencing it.
func (t *Tx) DeleteContent(ctx context.Context, ns, dgst string) error {
	if err := t.checkWritable("delete content"); err != nil {
		return err
	}
	if err := checkNamespace(ns); err != nil {
		return err
	}
	if err := validateDigest("digest", dgst); err != nil {
		return err
	}
	n, err := t.execN(ctx, "delete content", qContentDelete, ns, dgst)
	if err != nil {
		return err
	}
	if n == 0 {
		return contentNotFound(ns, dgst)
	}
	return nil
}

// NamespacesReferencing returns the namespaces that reference blob dgst,
// ordered by name; none means the blob may be garbage collected.
func (t *Tx) NamespacesReferencing(ctx context.Context, dgst string) ([]string, error) {
	if err := validateDigest("digest", dgst); err != nil {
		return nil, err
	}
	return t.strings(ctx, "namespaces referencing content", qContentNamespaces, dgst)
}

// ReferencedDigests returns every digest referenced by any namespace,
// ordered: the blobs garbage collection must keep.
func (t *Tx) ReferencedDigests(ctx context.Context) ([]string, error) {
	return t.strings(ctx, "referenced digests", qContentDigests)
}

// strings runs a query returning one text column.
func (t *Tx) strings(ctx context.Context, op, query string, args ...any) ([]string, error) {
	rows, err := t.query(ctx, op, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, dbError(op, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError(op, err)
	}
	return out, nil
}
