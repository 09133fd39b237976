// Package snapshots is edged's snapshotter: containerd-like layered
// filesystem snapshots (Prepare, View, Commit, Remove, ...) with metadata in
// the daemon's SQLite database and data under <root>/snapshots/<id>/.
//
// Two backends implement the same Snapshotter interface: overlayfs (the
// default), where every snapshot holds only its own changes and mounts stack
// the parent chain as lower layers, and native, a fallback for kernels or
// filesystems without overlay support, where Prepare copies the parent's
// whole tree and mounts are bind mounts.
//
// Keys are arbitrary strings (chain IDs such as "sha256:...", or
// "extract-123 sha256:...") scoped by namespace; they never become paths: on
// disk every snapshot is a numeric ID.
//
// Crash safety: a snapshot's directory is built under a temporary name and
// renamed to its ID inside the database transaction that inserts its row, so
// a crash leaves at worst a directory without a row, which Cleanup removes.
// Removal deletes the row first, then the directory.
package snapshots

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/edged/metadata/labels"
	"github.com/edged/edged/fsstore/snapshots/mount"
)

// Kind is the kind of a snapshot.
type Kind int

// Snapshot kinds.
const (
	KindUnknown Kind = iota
	// KindView is a read-only snapshot of its parent.
	KindView
	// KindActive is a writable snapshot, to be committed or removed.
	KindActive
	// KindCommitted is an immutable snapshot that can be a parent.
	KindCommitted
)

// String returns "view", "active" or "committed".
func (k Kind) String() string {
	switch k {
	case KindView:
		return "view"
	case KindActive:
		return "active"
	case KindCommitted:
		return "committed"
	}
	return "unknown"
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, error) {
	switch s {
	case "view":
		return KindView, nil
	case "active":
		return KindActive, nil
	case "committed":
		return KindCommitted, nil
	}
	return KindUnknown, errdefs.InvalidArgument("kind", "%q is not one of view, active, committed", s)
}

// Info describes a snapshot.
type Info struct {
	Kind    Kind
	Name    string // the key (for committed snapshots, the name given to Commit)
	Parent  string // the parent's name, "" for none
	Labels  map[string]string
	Created time.Time
	Updated time.Time
}

// Usage is the disk usage of a snapshot's own data.
type Usage struct {
	Size   int64 // bytes allocated (hardlinked files counted once)
	Inodes int64
}

// Backend names a storage backend.
type Backend string

// Backends.
const (
	// BackendAuto picks overlayfs when a test mount under the root works,
	// native otherwise.
	BackendAuto Backend = ""
	// BackendOverlay stores each snapshot's changes and mounts overlayfs.
	BackendOverlay Backend = "overlayfs"
	// BackendNative copies the parent tree on Prepare and bind-mounts.
	BackendNative Backend = "native"
)

// Limits on user-supplied strings.
const (
	// MaxKeyLength is the longest snapshot key or name, in bytes.
	MaxKeyLength = 1024
	// MaxLabelSize is the largest label, key plus value, in bytes. The
	// other label limits (count, key size, total size) are package labels'
	// too: snapshots follow the rule of every object's labels.
	MaxLabelSize = labels.MaxSize
)

// MaxDepth is the longest parent chain an overlay snapshot can be mounted
// with: overlayfs' own limit of lower layers. The mount options must also
// fit in one 4096-byte page. mount.Mount shortens long lowerdir lists to
// paths relative to <root>/snapshots ("<id>/fs", len(id)+4 bytes a layer),
// so the page holds all 500 layers while snapshot IDs have at most 4 digits,
// about 440 with 5-digit IDs and about 400 with 6-digit IDs (IDs are never
// reused). Prepare and View check both limits before creating anything and
// fail with errdefs.ErrResourceExhausted. The native backend has no depth
// limit.
const MaxDepth = mount.MaxOverlayLayers

// Snapshotter manages snapshots. All methods take the namespace that scopes
// keys; a parent must be in the same namespace as its child.
type Snapshotter interface {
	// Backend reports which backend is in use.
	Backend() Backend
	// Prepare creates an active (writable) snapshot named key on top of the
	// committed snapshot parent ("" for an empty one) and returns the
	// mounts that make up its filesystem.
	Prepare(ctx context.Context, ns, key, parent string, labels map[string]string) ([]mount.Mount, error)
	// View creates a read-only view of parent (which may be "") and returns
	// its mounts. A view cannot be committed.
	View(ctx context.Context, ns, key, parent string, labels map[string]string) ([]mount.Mount, error)
	// Mounts returns the mounts of an active snapshot or view.
	Mounts(ctx context.Context, ns, key string) ([]mount.Mount, error)
	// Commit turns the active snapshot key into the committed snapshot
	// name, with labels; its usage is computed and stored, and its data
	// synced to disk. key no longer exists afterwards.
	Commit(ctx context.Context, ns, name, key string, labels map[string]string) error
	// Remove deletes a snapshot. It fails with ErrFailedPrecondition while
	// the snapshot has children.
	Remove(ctx context.Context, ns, key string) error
	// Stat returns a snapshot's Info.
	Stat(ctx context.Context, ns, key string) (Info, error)
	// Update changes labels of a snapshot: fieldpaths "labels" (or none)
	// replace them all, "labels.<key>" sets or (if absent from info)
	// deletes one. Other fields cannot be changed. The label set it
	// produces must be within the limits of package labels, as the labels
	// given to Prepare, View and Commit must (ErrInvalidArgument).
	Update(ctx context.Context, ns string, info Info, fieldpaths ...string) (Info, error)
	// Walk calls fn for each snapshot of the namespace matching any of the
	// filters (see ParseFilter); no filters means all.
	Walk(ctx context.Context, ns string, fn func(context.Context, Info) error, filters ...string) error
	// List returns the snapshots that Walk would visit, ordered by name.
	List(ctx context.Context, ns string, filters ...string) ([]Info, error)
	// Usage returns the disk usage of the snapshot's own data: walked for
	// active snapshots and views, stored at commit for committed ones.
	Usage(ctx context.Context, ns, key string) (Usage, error)
	// Cleanup repairs the state after a crash; call it at start-up before
	// any other use. It unmounts stale mounts under the root, removes
	// temporary and orphaned directories, and rows left without data.
	Cleanup(ctx context.Context) error
}

// validateKey checks a snapshot key or name.
func validateKey(field, key string) error {
	switch {
	case key == "":
		return errdefs.InvalidArgument(field, "must not be empty")
	case len(key) > MaxKeyLength:
		return errdefs.InvalidArgument(field, "%d bytes is longer than the maximum of %d", len(key), MaxKeyLength)
	case strings.IndexByte(key, 0) >= 0:
		return errdefs.InvalidArgument(field, "%q contains a NUL byte", short(key))
	case !utf8.ValidString(key):
		return errdefs.InvalidArgument(field, "%q is not valid UTF-8", short(key))
	}
	return nil
}

func validateNamespace(ns string) error {
	return identifiers.Validate("namespace", ns)
}

// validateLabels checks a snapshot's whole label set: the limits and text
// rule of every object's labels (package labels, as the metadata database
// applies them).
func validateLabels(m map[string]string) error {
	return labels.Validate("labels", m)
}

// validateLabelText checks only the text of the labels (valid UTF-8, no
// NUL byte).
func validateLabelText(m map[string]string) error {
	return labels.ValidateText("labels", m)
}

func short(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

func notFound(ns, key string) error {
	return fmt.Errorf("snapshot %q in namespace %q: %w", short(key), ns, errdefs.ErrNotFound)
}
