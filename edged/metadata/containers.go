package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
)

// Container is the metadata of a container (not its running task).
type Container struct {
	ID     string
	Labels map[string]string // nil when empty
	// Image is the name of the image the container was created from; may
	// be empty.
	Image   string
	Runtime RuntimeInfo
	// Spec is the encoded runtime spec and SpecType its type URL (the
	// protobuf Any of containerd's API, split in two).
	Spec        []byte
	SpecType    string
	Snapshotter string
	SnapshotKey string
	Extensions  map[string][]byte // nil when empty
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// RuntimeInfo names the runtime (shim) that runs the container.
type RuntimeInfo struct {
	Name    string
	Options []byte // encoded runtime options, opaque here
}

// ContainerFilter selects containers. Every non-empty field must match
// (AND); ListContainers returns containers matching any of its filters
// (OR). A filter with no conditions matches every container.
type ContainerFilter struct {
	ID      string
	Image   string
	Runtime string
	Labels  []LabelMatch
}

func (f *ContainerFilter) match(c *Container) bool {
	return (f.ID == "" || f.ID == c.ID) &&
		(f.Image == "" || f.Image == c.Image) &&
		(f.Runtime == "" || f.Runtime == c.Runtime.Name) &&
		matchLabels(c.Labels, f.Labels)
}

const (
	containerCols     = `id, image, runtime, runtime_options, spec, spec_encoding, spec_type, labels, snapshotter, snapshot_key, extensions, created, updated`
	qContainerInsert  = `INSERT INTO containers (namespace, ` + containerCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, id) DO NOTHING`
	qContainerGet     = `SELECT ` + containerCols + ` FROM containers WHERE namespace = ? AND id = ?`
	qContainerList    = `SELECT ` + containerCols + ` FROM containers WHERE namespace = ? ORDER BY id`
	qContainerListPre = `SELECT ` + containerCols + ` FROM containers WHERE namespace = ?`
	qContainerUpdate  = `UPDATE containers SET image = ?, runtime = ?, runtime_options = ?, spec = ?, spec_encoding = ?, spec_type = ?, labels = ?, snapshot_key = ?, extensions = ?, updated = ? WHERE namespace = ? AND id = ?`
	qContainerDelete  = `DELETE FROM containers WHERE namespace = ? AND id = ?`
	// qContainerTake reads what describes a container for TakeContainer,
	// which then deletes its row with qContainerDeleteRow. Not one DELETE
	// ... RETURNING: SQLite loads every column of a row it deletes for
	// RETURNING, the spec's overflow pages included, where this SELECT
	// reads only the columns before the blobs (schema version 4):
	// BenchmarkContainerCreateDelete 140-160 -> 100-115 µs per pair.
	qContainerTake      = `SELECT rowid, id, image, runtime, labels, snapshotter, snapshot_key, created, updated FROM containers WHERE namespace = ? AND id = ?`
	qContainerDeleteRow = `DELETE FROM containers WHERE rowid = ?`
)

func containerNotFound(ns, id string) error {
	return fmt.Errorf("container %q in namespace %q: %w", id, ns, errdefs.ErrNotFound)
}

// validateContainer checks c, an update of old when old is not nil.
func validateContainer(c, old *Container) error {
	if err := identifiers.Validate("container id", c.ID); err != nil {
		return err
	}
	var oldLabels map[string]string
	if old != nil {
		oldLabels = old.Labels
	}
	if err := validateLabels("labels", oldLabels, c.Labels); err != nil {
		return err
	}
	if c.Image != "" {
		if err := validateImageName("image", c.Image); err != nil {
			return err
		}
	}
	if err := validateText("runtime name", c.Runtime.Name, true); err != nil {
		return err
	}
	if len(c.Runtime.Options) > MaxRuntimeOptionsSize {
		return errdefs.InvalidArgument("runtime options", "%d bytes is more than the maximum of %d", len(c.Runtime.Options), MaxRuntimeOptionsSize)
	}
	if len(c.Spec) == 0 {
		return errdefs.InvalidArgument("spec", "must not be empty")
	}
	if len(c.Spec) > MaxSpecSize {
		return errdefs.InvalidArgument("spec", "%d bytes is more than the maximum of %d", len(c.Spec), MaxSpecSize)
	}
	if err := validateText("spec type", c.SpecType, false); err != nil {
		return err
	}
	if err := validateText("snapshotter", c.Snapshotter, false); err != nil {
		return err
	}
	if err := validateText("snapshot key", c.SnapshotKey, false); err != nil {
		return err
	}
	if c.SnapshotKey != "" && c.Snapshotter == "" {
		return errdefs.InvalidArgument("snapshotter", "must be set when snapshot key %q is", c.SnapshotKey)
	}
	return validateExtensions(c.Extensions)
}

// CreateContainer stores container c in namespace ns, creating the
// namespace if needed, and returns it with its timestamps set. It fails
// with ErrAlreadyExists if the ID is taken in ns.
func (t *Tx) CreateContainer(ctx context.Context, ns string, c Container) (Container, error) {
	if err := t.checkWritable("create container"); err != nil {
		return Container{}, err
	}
	if err := checkNamespace(ns); err != nil {
		return Container{}, err
	}
	if err := validateContainer(&c, nil); err != nil {
		return Container{}, err
	}
	ts := now()
	nanos := ts.UnixNano()
	enc, spec := t.db.encodeSpec(c.Spec)
	args := []any{ns, c.ID, c.Image, c.Runtime.Name, nilIfEmptyBytes(c.Runtime.Options),
		spec, enc, c.SpecType, encodeMap(c.Labels), c.Snapshotter, c.SnapshotKey, encodeMap(c.Extensions), nanos, nanos}
	n, err := t.execN(ctx, "create container", qContainerInsert, args...)
	if isForeignKeyError(err) {
		// The namespace does not exist yet (the insert failed alone; the
		// transaction goes on): create it and insert again. Trying the
		// insert first saves a statement per create in the usual case.
		if err := t.ensureNamespace(ctx, ns, nanos); err != nil {
			return Container{}, err
		}
		n, err = t.execN(ctx, "create container", qContainerInsert, args...)
	}
	if err != nil {
		return Container{}, err
	}
	if n == 0 {
		return Container{}, fmt.Errorf("container %q in namespace %q: %w", c.ID, ns, errdefs.ErrAlreadyExists)
	}
	c.CreatedAt, c.UpdatedAt = ts, ts
	return c, nil
}

func scanContainer(sc interface{ Scan(...any) error }) (Container, error) {
	var (
		c                  Container
		labels, extensions []byte
		created, updated   int64
		specEncoding       int
	)
	if err := sc.Scan(&c.ID, &c.Image, &c.Runtime.Name, &c.Runtime.Options, &c.Spec, &specEncoding, &c.SpecType, &labels,
		&c.Snapshotter, &c.SnapshotKey, &extensions, &created, &updated); err != nil {
		return Container{}, err
	}
	var err error
	if c.Spec, err = decodeSpec(specEncoding, c.Spec); err != nil {
		return Container{}, err
	}
	if c.Labels, err = decodeLabels("containers.labels", labels); err != nil {
		return Container{}, err
	}
	if c.Extensions, err = decodeBytesMap("containers.extensions", extensions); err != nil {
		return Container{}, err
	}
	c.CreatedAt, c.UpdatedAt = fromNanos(created), fromNanos(updated)
	return c, nil
}

// GetContainer returns container id of namespace ns.
func (t *Tx) GetContainer(ctx context.Context, ns, id string) (Container, error) {
	if err := checkNamespace(ns); err != nil {
		return Container{}, err
	}
	if err := identifiers.Validate("container id", id); err != nil {
		return Container{}, err
	}
	c, err := scanContainer(t.queryRow(ctx, qContainerGet, ns, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Container{}, containerNotFound(ns, id)
	}
	if err != nil {
		return Container{}, dbError("get container", err)
	}
	return c, nil
}

// ListContainers returns the containers of namespace ns that match any of
// filters (all containers without filters), ordered by ID.
func (t *Tx) ListContainers(ctx context.Context, ns string, filters ...ContainerFilter) ([]Container, error) {
	var out []Container
	err := t.WalkContainers(ctx, ns, func(c Container) error {
		out = append(out, c)
		return nil
	}, filters...)
	return out, err
}

// WalkContainers calls fn for each container of namespace ns that matches
// any of filters, ordered by ID, holding one container in memory at a
// time. An error from fn stops the walk and is returned.
func (t *Tx) WalkContainers(ctx context.Context, ns string, fn func(Container) error, filters ...ContainerFilter) error {
	if err := checkNamespace(ns); err != nil {
		return err
	}
	var rows *sql.Rows
	var err error
	where, args := containerWhere(filters)
	if where == "" {
		rows, err = t.query(ctx, "list containers", qContainerList, ns)
	} else {
		rows, err = t.tx.QueryContext(ctx, qContainerListPre+where+" ORDER BY id", append([]any{ns}, args...)...)
		err = dbError("list containers", err)
	}
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		c, err := scanContainer(rows)
		if err != nil {
			return dbError("list containers", err)
		}
		if !matchAny(filters, &c) {
			continue
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return dbError("list containers", rows.Err())
}

func containerWhere(filters []ContainerFilter) (string, []any) {
	var w whereBuilder
	for _, f := range filters {
		w.add(map[string]string{"id": f.ID, "image": f.Image, "runtime": f.Runtime})
	}
	return w.sql()
}

func matchAny(filters []ContainerFilter, c *Container) bool {
	if len(filters) == 0 {
		return true
	}
	for i := range filters {
		if filters[i].match(c) {
			return true
		}
	}
	return false
}

// UpdateContainer changes container c.ID of namespace ns. fieldpaths name
// what to change: "labels" (all labels), "labels.<key>" (one label; removed
// when c.Labels lacks it or has it empty), "image", "runtime" (name and
// options), "spec" (spec and spec type), "snapshotkey", "extensions",
// "extensions.<name>". Without fieldpaths every mutable field is replaced.
// The ID, namespace, snapshotter and creation time are immutable: a
// different non-empty Snapshotter fails with ErrInvalidArgument.
func (t *Tx) UpdateContainer(ctx context.Context, ns string, c Container, fieldpaths ...string) (Container, error) {
	if err := t.checkWritable("update container"); err != nil {
		return Container{}, err
	}
	cur, err := t.GetContainer(ctx, ns, c.ID)
	if err != nil {
		return Container{}, err
	}
	if c.Snapshotter != "" && c.Snapshotter != cur.Snapshotter {
		return Container{}, errdefs.InvalidArgument("snapshotter", "container %q: is immutable (%q, not %q)", c.ID, cur.Snapshotter, c.Snapshotter)
	}
	if len(fieldpaths) == 0 {
		fieldpaths = []string{"labels", "image", "runtime", "spec", "snapshotkey", "extensions"}
	}
	upd := cur
	for _, p := range fieldpaths {
		switch {
		case p == "labels":
			upd.Labels = c.Labels
		case strings.HasPrefix(p, "labels."):
			upd.Labels = applyLabelPath(upd.Labels, c.Labels, strings.TrimPrefix(p, "labels."))
		case p == "image":
			upd.Image = c.Image
		case p == "runtime":
			upd.Runtime = c.Runtime
		case p == "spec":
			upd.Spec, upd.SpecType = c.Spec, c.SpecType
		case p == "snapshotkey":
			upd.SnapshotKey = c.SnapshotKey
		case p == "extensions":
			upd.Extensions = c.Extensions
		case strings.HasPrefix(p, "extensions."):
			name := strings.TrimPrefix(p, "extensions.")
			ext := make(map[string][]byte, len(upd.Extensions)+1)
			for k, v := range upd.Extensions {
				ext[k] = v
			}
			if v, ok := c.Extensions[name]; ok {
				ext[name] = v
			} else {
				delete(ext, name)
			}
			upd.Extensions = ext
		default:
			return Container{}, errdefs.InvalidArgument("fieldpath", "%q cannot be updated on container %q", p, c.ID)
		}
	}
	if err := validateContainer(&upd, &cur); err != nil {
		return Container{}, err
	}
	ts := now()
	enc, spec := t.db.encodeSpec(upd.Spec)
	if _, err := t.exec(ctx, "update container", qContainerUpdate, upd.Image, upd.Runtime.Name, nilIfEmptyBytes(upd.Runtime.Options),
		spec, enc, upd.SpecType, encodeMap(upd.Labels), upd.SnapshotKey, encodeMap(upd.Extensions), ts.UnixNano(), ns, c.ID); err != nil {
		return Container{}, err
	}
	upd.Labels = nilIfEmpty(upd.Labels)
	if len(upd.Extensions) == 0 {
		upd.Extensions = nil
	}
	upd.UpdatedAt = ts
	return upd, nil
}

// TakeContainer deletes container id of namespace ns, reading and
// deleting it in one statement, and returns what describes the deleted
// container: its ID, labels, image, runtime name, snapshotter, snapshot key
// and timestamps. Spec, runtime options and extensions are left empty: a
// deleted container has no use for them and they are the bulk of a row.
func (t *Tx) TakeContainer(ctx context.Context, ns, id string) (Container, error) {
	if err := t.checkWritable("delete container"); err != nil {
		return Container{}, err
	}
	if err := checkNamespace(ns); err != nil {
		return Container{}, err
	}
	if err := identifiers.Validate("container id", id); err != nil {
		return Container{}, err
	}
	var (
		c                Container
		rowid            int64
		labels           []byte
		created, updated int64
	)
	err := t.queryRow(ctx, qContainerTake, ns, id).Scan(&rowid, &c.ID, &c.Image, &c.Runtime.Name, &labels, &c.Snapshotter, &c.SnapshotKey, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return Container{}, containerNotFound(ns, id)
	}
	if err != nil {
		return Container{}, dbError("delete container", err)
	}
	if _, err := t.exec(ctx, "delete container", qContainerDeleteRow, rowid); err != nil {
		return Container{}, err
	}
	if c.Labels, err = decodeLabels("containers.labels", labels); err != nil {
		return Container{}, err
	}
	c.CreatedAt, c.UpdatedAt = fromNanos(created), fromNanos(updated)
	return c, nil
}

// DeleteContainer deletes container id of namespace ns.
func (t *Tx) DeleteContainer(ctx context.Context, ns, id string) error {
	if err := t.checkWritable("delete container"); err != nil {
		return err
	}
	if err := checkNamespace(ns); err != nil {
		return err
	}
	if err := identifiers.Validate("container id", id); err != nil {
		return err
	}
	n, err := t.execN(ctx, "delete container", qContainerDelete, ns, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return containerNotFound(ns, id)
	}
	return nil
}

func nilIfEmptyBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
