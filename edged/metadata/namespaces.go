package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edged/edged/edged/errdefs"
)

// Namespace isolates every other object: the same container ID, image name
// or lease ID may exist in two namespaces.
type Namespace struct {
	Name      string
	Labels    map[string]string // nil when empty
	CreatedAt time.Time
	UpdatedAt time.Time
}

const (
	// qNamespaceEnsure creates a namespace on first use by another object
	// (like containerd); it writes nothing when the namespace exists.
	qNamespaceEnsure    = `INSERT INTO namespaces (name, labels, created, updated) VALUES (?1, NULL, ?2, ?2) ON CONFLICT (name) DO NOTHING`
	qNamespaceInsert    = `INSERT INTO namespaces (name, labels, created, updated) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`
	qNamespaceGet       = `SELECT name, labels, created, updated FROM namespaces WHERE name = ?`
	qNamespaceList      = `SELECT name, labels, created, updated FROM namespaces ORDER BY name`
	qNamespaceSetLabels = `UPDATE namespaces SET labels = ?, updated = ? WHERE name = ?`
	qNamespaceDelete    = `DELETE FROM namespaces WHERE name = ?`
	qNamespaceCounts    = `SELECT
		(SELECT count(*) FROM containers WHERE namespace = ?1),
		(SELECT count(*) FROM images WHERE namespace = ?1),
		(SELECT count(*) FROM content WHERE namespace = ?1),
		(SELECT count(*) FROM leases WHERE namespace = ?1)`
)

func nsNotFound(name string) error {
	return fmt.Errorf("namespace %q: %w", name, errdefs.ErrNotFound)
}

// ensureNamespace creates namespace ns if it does not exist.
func (t *Tx) ensureNamespace(ctx context.Context, ns string, ts int64) error {
	_, err := t.exec(ctx, "create namespace", qNamespaceEnsure, ns, ts)
	return err
}

// CreateNamespace creates namespace name. It fails with ErrAlreadyExists if
// it exists.
func (t *Tx) CreateNamespace(ctx context.Context, name string, labels map[string]string) (Namespace, error) {
	if err := t.checkWritable("create namespace"); err != nil {
		return Namespace{}, err
	}
	if err := checkNamespace(name); err != nil {
		return Namespace{}, err
	}
	if err := validateLabels("labels", nil, labels); err != nil {
		return Namespace{}, err
	}
	ts := now()
	n, err := t.execN(ctx, "create namespace", qNamespaceInsert, name, encodeMap(labels), ts.UnixNano(), ts.UnixNano())
	if err != nil {
		return Namespace{}, err
	}
	if n == 0 {
		return Namespace{}, fmt.Errorf("namespace %q: %w", name, errdefs.ErrAlreadyExists)
	}
	return Namespace{Name: name, Labels: copyLabels(labels), CreatedAt: ts, UpdatedAt: ts}, nil
}

func scanNamespace(sc interface{ Scan(...any) error }) (Namespace, error) {
	var (
		n                Namespace
		labels           []byte
		created, updated int64
	)
	if err := sc.Scan(&n.Name, &labels, &created, &updated); err != nil {
		return Namespace{}, err
	}
	var err error
	if n.Labels, err = decodeLabels("namespaces.labels", labels); err != nil {
		return Namespace{}, err
	}
	n.CreatedAt, n.UpdatedAt = fromNanos(created), fromNanos(updated)
	return n, nil
}

// GetNamespace returns namespace name.
func (t *Tx) GetNamespace(ctx context.Context, name string) (Namespace, error) {
	if err := checkNamespace(name); err != nil {
		return Namespace{}, err
	}
	n, err := scanNamespace(t.queryRow(ctx, qNamespaceGet, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Namespace{}, nsNotFound(name)
	}
	if err != nil {
		return Namespace{}, dbError("get namespace", err)
	}
	return n, nil
}

// ListNamespaces returns every namespace, ordered by name.
func (t *Tx) ListNamespaces(ctx context.Context) ([]Namespace, error) {
	rows, err := t.query(ctx, "list namespaces", qNamespaceList)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Namespace
	for rows.Next() {
		n, err := scanNamespace(rows)
		if err != nil {
			return nil, dbError("list namespaces", err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("list namespaces", err)
	}
	return out, nil
}

// SetNamespaceLabels changes the labels of namespace name. With replace,
// the labels become exactly labels; otherwise labels are merged into the
// existing ones. Either way, a key with an empty value is removed.
func (t *Tx) SetNamespaceLabels(ctx context.Context, name string, labels map[string]string, replace bool) (Namespace, error) {
	if err := t.checkWritable("set namespace labels"); err != nil {
		return Namespace{}, err
	}
	n, err := t.GetNamespace(ctx, name)
	if err != nil {
		return Namespace{}, err
	}
	merged := mergeLabels(n.Labels, labels, replace)
	if err := validateLabels("labels", n.Labels, merged); err != nil {
		return Namespace{}, err
	}
	ts := now()
	if _, err := t.exec(ctx, "set namespace labels", qNamespaceSetLabels, encodeMap(merged), ts.UnixNano(), name); err != nil {
		return Namespace{}, err
	}
	n.Labels = nilIfEmpty(merged)
	n.UpdatedAt = ts
	return n, nil
}

// DeleteNamespace deletes namespace name, which must be empty: it fails
// with ErrFailedPrecondition, naming what is left, while the namespace
// holds containers, images, content, leases or snapshots.
func (t *Tx) DeleteNamespace(ctx context.Context, name string) error {
	if err := t.checkWritable("delete namespace"); err != nil {
		return err
	}
	if _, err := t.GetNamespace(ctx, name); err != nil {
		return err
	}
	var containers, images, content, leases, snapshots int
	if err := t.queryRow(ctx, qNamespaceCounts, name).Scan(&containers, &images, &content, &leases); err != nil {
		return dbError("count namespace objects", err)
	}
	if count := t.db.opts.CountSnapshots; count != nil {
		n, err := count(ctx, t.tx, name)
		if err != nil {
			return fmt.Errorf("namespace %q: count snapshots: %w", name, err)
		}
		snapshots = n
	}
	var left []string
	for _, c := range []struct {
		n    int
		what string
	}{{containers, "container"}, {images, "image"}, {content, "content blob"}, {leases, "lease"}, {snapshots, "snapshot"}} {
		switch {
		case c.n == 1:
			left = append(left, "1 "+c.what)
		case c.n > 1:
			left = append(left, fmt.Sprintf("%d %ss", c.n, c.what))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("namespace %q must be empty, but has %s: %w", name, strings.Join(left, ", "), errdefs.ErrFailedPrecondition)
	}
	if _, err := t.exec(ctx, "delete namespace", qNamespaceDelete, name); err != nil {
		return err
	}
	return nil
}

func copyLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}
