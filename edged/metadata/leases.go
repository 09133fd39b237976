package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
)

// Lease protects resources from garbage collection while a client works
// with them (e.g. during a pull), until it is deleted or expires.
type Lease struct {
	ID        string
	Labels    map[string]string // nil when empty
	CreatedAt time.Time
	ExpiresAt *time.Time // nil: never expires
}

// Resource kinds a lease can hold.
const (
	ResourceContent  = "content"  // ID is a digest
	ResourceSnapshot = "snapshot" // ID is a snapshot key
	ResourceIngest   = "ingest"   // ID is an ingest (upload) ref
	ResourceImage    = "image"    // ID is an image name
)

// Resource is one object held by a lease.
type Resource struct {
	Kind string
	ID   string
}

// LeaseRef names a lease across namespaces.
type LeaseRef struct {
	Namespace string
	ID        string
}

// LeaseFilter selects leases; every non-empty field must match, ListLeases
// returns leases matching any filter.
type LeaseFilter struct {
	ID     string
	Labels []LabelMatch
}

const (
	leaseCols            = `id, labels, created, expires`
	qLeaseInsert         = `INSERT INTO leases (namespace, ` + leaseCols + `) VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, id) DO NOTHING`
	qLeaseGet            = `SELECT ` + leaseCols + ` FROM leases WHERE namespace = ? AND id = ?`
	qLeaseList           = `SELECT ` + leaseCols + ` FROM leases WHERE namespace = ? ORDER BY id`
	qLeaseDelete         = `DELETE FROM leases WHERE namespace = ? AND id = ?`
	qLeaseExpired        = `SELECT namespace, id FROM leases WHERE expires IS NOT NULL AND expires <= ? ORDER BY namespace, id`
	qLeaseResourceInsert = `INSERT INTO lease_resources (namespace, lease, kind, id) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`
	qLeaseResourceDelete = `DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND kind = ? AND id = ?`
	qLeaseResourceList   = `SELECT kind, id FROM lease_resources WHERE namespace = ? AND lease = ? ORDER BY kind, id`
	qLeaseResourceAll    = `SELECT DISTINCT id FROM lease_resources WHERE kind = ? ORDER BY id`
)

func leaseNotFound(ns, id string) error {
	return fmt.Errorf("lease %q in namespace %q: %w", id, ns, errdefs.ErrNotFound)
}

func checkLease(ns, id string) error {
	if err := checkNamespace(ns); err != nil {
		return err
	}
	return identifiers.Validate("lease id", id)
}

// CreateLease creates lease id in namespace ns, creating the namespace if
// needed. expires nil means the lease lasts until deleted.
func (t *Tx) CreateLease(ctx context.Context, ns, id string, labels map[string]string, expires *time.Time) (Lease, error) {
	if err := t.checkWritable("create lease"); err != nil {
		return Lease{}, err
	}
	if err := checkLease(ns, id); err != nil {
		return Lease{}, err
	}
	if err := validateLabels("labels", nil, labels); err != nil {
		return Lease{}, err
	}
	ts := now()
	var exp sql.NullInt64
	l := Lease{ID: id, Labels: copyLabels(labels), CreatedAt: ts}
	if expires != nil {
		e := expires.UTC().Round(0)
		exp = sql.NullInt64{Int64: e.UnixNano(), Valid: true}
		l.ExpiresAt = &e
	}
	if err := t.ensureNamespace(ctx, ns, ts.UnixNano()); err != nil {
		return Lease{}, err
	}
	n, err := t.execN(ctx, "create lease", qLeaseInsert, ns, id, encodeMap(labels), ts.UnixNano(), exp)
	if err != nil {
		return Lease{}, err
	}
	if n == 0 {
		return Lease{}, fmt.Errorf("lease %q in namespace %q: %w", id, ns, errdefs.ErrAlreadyExists)
	}
	return l, nil
}

func scanLease(sc interface{ Scan(...any) error }) (Lease, error) {
	var (
		l       Lease
		labels  []byte
		created int64
		expires sql.NullInt64
	)
	if err := sc.Scan(&l.ID, &labels, &created, &expires); err != nil {
		return Lease{}, err
	}
	var err error
	if l.Labels, err = decodeLabels("leases.labels", labels); err != nil {
		return Lease{}, err
	}
	l.CreatedAt = fromNanos(created)
	if expires.Valid {
		e := fromNanos(expires.Int64)
		l.ExpiresAt = &e
	}
	return l, nil
}

// GetLease returns lease id of namespace ns.
func (t *Tx) GetLease(ctx context.Context, ns, id string) (Lease, error) {
	if err := checkLease(ns, id); err != nil {
		return Lease{}, err
	}
	l, err := scanLease(t.queryRow(ctx, qLeaseGet, ns, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, leaseNotFound(ns, id)
	}
	if err != nil {
		return Lease{}, dbError("get lease", err)
	}
	return l, nil
}

// ListLeases returns the leases of namespace ns matching any of filters
// (all without filters), ordered by ID.
func (t *Tx) ListLeases(ctx context.Context, ns string, filters ...LeaseFilter) ([]Lease, error) {
	if err := checkNamespace(ns); err != nil {
		return nil, err
	}
	rows, err := t.query(ctx, "list leases", qLeaseList, ns)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, dbError("list leases", err)
		}
		ok := len(filters) == 0
		for _, f := range filters {
			if (f.ID == "" || f.ID == l.ID) && matchLabels(l.Labels, f.Labels) {
				ok = true
				break
			}
		}
		if ok {
			out = append(out, l)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("list leases", err)
	}
	return out, nil
}

// DeleteLease deletes lease id of namespace ns and, in the same
// transaction, every resource it holds (the resources themselves are left
// to garbage collection).
func (t *Tx) DeleteLease(ctx context.Context, ns, id string) error {
	if err := t.checkWritable("delete lease"); err != nil {
		return err
	}
	if err := checkLease(ns, id); err != nil {
		return err
	}
	// lease_resources rows go by ON DELETE CASCADE.
	n, err := t.execN(ctx, "delete lease", qLeaseDelete, ns, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return leaseNotFound(ns, id)
	}
	return nil
}

// ExpiredLeases returns the leases of every namespace whose expiry is at
// or before now, for garbage collection to delete.
func (t *Tx) ExpiredLeases(ctx context.Context, now time.Time) ([]LeaseRef, error) {
	rows, err := t.query(ctx, "expired leases", qLeaseExpired, now.UnixNano())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []LeaseRef
	for rows.Next() {
		var r LeaseRef
		if err := rows.Scan(&r.Namespace, &r.ID); err != nil {
			return nil, dbError("expired leases", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("expired leases", err)
	}
	return out, nil
}

func validateResource(r Resource) error {
	switch r.Kind {
	case ResourceContent:
		return validateDigest("resource id", r.ID)
	case ResourceImage:
		return validateImageName("resource id", r.ID)
	case ResourceSnapshot, ResourceIngest:
		return validateText("resource id", r.ID, true)
	default:
		return errdefs.InvalidArgument("resource kind", "%q is not one of content, snapshot, ingest, image", r.Kind)
	}
}

// AddLeaseResource adds resource r to lease leaseID of namespace ns. Adding
// a resource the lease already holds is not an error.
func (t *Tx) AddLeaseResource(ctx context.Context, ns, leaseID string, r Resource) error {
	if err := t.checkWritable("add lease resource"); err != nil {
		return err
	}
	if err := checkLease(ns, leaseID); err != nil {
		return err
	}
	if err := validateResource(r); err != nil {
		return err
	}
	if _, err := t.GetLease(ctx, ns, leaseID); err != nil {
		return err
	}
	_, err := t.exec(ctx, "add lease resource", qLeaseResourceInsert, ns, leaseID, r.Kind, r.ID)
	return err
}

// DeleteLeaseResource removes resource r from lease leaseID of namespace
// ns. Removing a resource the lease does not hold is not an error; a
// missing lease is ErrNotFound.
func (t *Tx) DeleteLeaseResource(ctx context.Context, ns, leaseID string, r Resource) error {
	if err := t.checkWritable("delete lease resource"); err != nil {
		return err
	}
	if err := checkLease(ns, leaseID); err != nil {
		return err
	}
	if err := validateResource(r); err != nil {
		return err
	}
	if _, err := t.GetLease(ctx, ns, leaseID); err != nil {
		return err
	}
	_, err := t.exec(ctx, "delete lease resource", qLeaseResourceDelete, ns, leaseID, r.Kind, r.ID)
	return err
}

// ListLeaseResources returns the resources held by lease leaseID of
// namespace ns, ordered by kind and ID.
func (t *Tx) ListLeaseResources(ctx context.Context, ns, leaseID string) ([]Resource, error) {
	if _, err := t.GetLease(ctx, ns, leaseID); err != nil {
		return nil, err
	}
	rows, err := t.query(ctx, "list lease resources", qLeaseResourceList, ns, leaseID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Resource
	for rows.Next() {
		var r Resource
		if err := rows.Scan(&r.Kind, &r.ID); err != nil {
			return nil, dbError("list lease resources", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("list lease resources", err)
	}
	return out, nil
}

// LeasedResources returns the IDs of every resource of kind held by any
// lease of any namespace: what garbage collection must keep (delete the
// expired leases first).
func (t *Tx) LeasedResources(ctx context.Context, kind string) ([]string, error) {
	if !isKnownKind(kind) {
		return nil, errdefs.InvalidArgument("resource kind", "%q is not one of content, snapshot, ingest, image", kind)
	}
	return t.strings(ctx, "leased resources", qLeaseResourceAll, kind)
}

func isKnownKind(kind string) bool {
	switch kind {
	case ResourceContent, ResourceSnapshot, ResourceIngest, ResourceImage:
		return true
	}
	return false
}
