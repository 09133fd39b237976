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

// Image is a named reference to a manifest or index in the content store.
type Image struct {
	// Name is a reference such as docker.io/library/busybox:1.36.
	Name      string
	Labels    map[string]string // nil when empty
	Target    Descriptor
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Descriptor points at a blob of the content store.
type Descriptor struct {
	MediaType   string
	Digest      string
	Size        int64
	Annotations map[string]string // nil when empty
}

// ImageFilter selects images. Every non-empty field must match (AND);
// ListImages returns images matching any of its filters (OR).
type ImageFilter struct {
	Name         string
	TargetDigest string
	Labels       []LabelMatch
}

func (f *ImageFilter) match(im *Image) bool {
	return (f.Name == "" || f.Name == im.Name) &&
		(f.TargetDigest == "" || f.TargetDigest == im.Target.Digest) &&
		matchLabels(im.Labels, f.Labels)
}

const (
	imageCols     = `name, target_media_type, target_digest, target_size, target_annotations, labels, created, updated`
	qImageInsert  = `INSERT INTO images (namespace, ` + imageCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, name) DO NOTHING`
	qImageGet     = `SELECT ` + imageCols + ` FROM images WHERE namespace = ? AND name = ?`
	qImageList    = `SELECT ` + imageCols + ` FROM images WHERE namespace = ? ORDER BY name`
	qImageListPre = `SELECT ` + imageCols + ` FROM images WHERE namespace = ?`
	qImageUpdate  = `UPDATE images SET target_media_type = ?, target_digest = ?, target_size = ?, target_annotations = ?, labels = ?, updated = ? WHERE namespace = ? AND name = ?`
	qImageDelete  = `DELETE FROM images WHERE namespace = ? AND name = ?`
)

func imageNotFound(ns, name string) error {
	return fmt.Errorf("image %q in namespace %q: %w", name, ns, errdefs.ErrNotFound)
}

// validateImage checks im, an update of old when old is not nil.
func validateImage(im, old *Image) error {
	if err := validateImageName("image name", im.Name); err != nil {
		return err
	}
	var oldLabels, oldAnnotations map[string]string
	if old != nil {
		oldLabels, oldAnnotations = old.Labels, old.Target.Annotations
	}
	if err := validateLabels("labels", oldLabels, im.Labels); err != nil {
		return err
	}
	return validateDescriptor("target", &im.Target, oldAnnotations)
}

// validateDescriptor checks d; oldAnnotations are the stored annotations
// it replaces (nil when new).
func validateDescriptor(field string, d *Descriptor, oldAnnotations map[string]string) error {
	if err := validateText(field+".media_type", d.MediaType, true); err != nil {
		return err
	}
	if err := validateDigest(field+".digest", d.Digest); err != nil {
		return err
	}
	if d.Size < 0 {
		return errdefs.InvalidArgument(field+".size", "%d is negative", d.Size)
	}
	return validateLabels(field+".annotations", oldAnnotations, d.Annotations)
}

// CreateImage stores image im in namespace ns, creating the namespace if
// needed. It fails with ErrAlreadyExists if the name is taken in ns.
func (t *Tx) CreateImage(ctx context.Context, ns string, im Image) (Image, error) {
	if err := t.checkWritable("create image"); err != nil {
		return Image{}, err
	}
	if err := checkNamespace(ns); err != nil {
		return Image{}, err
	}
	if err := validateImage(&im, nil); err != nil {
		return Image{}, err
	}
	ts := now()
	nanos := ts.UnixNano()
	if err := t.ensureNamespace(ctx, ns, nanos); err != nil {
		return Image{}, err
	}
	n, err := t.execN(ctx, "create image", qImageInsert, ns, im.Name, im.Target.MediaType, im.Target.Digest, im.Target.Size,
		encodeMap(im.Target.Annotations), encodeMap(im.Labels), nanos, nanos)
	if err != nil {
		return Image{}, err
	}
	if n == 0 {
		return Image{}, fmt.Errorf("image %q in namespace %q: %w", im.Name, ns, errdefs.ErrAlreadyExists)
	}
	im.CreatedAt, im.UpdatedAt = ts, ts
	return im, nil
}

func scanImage(sc interface{ Scan(...any) error }) (Image, error) {
	var (
		im                  Image
		annotations, labels []byte
		created, updated    int64
	)
	if err := sc.Scan(&im.Name, &im.Target.MediaType, &im.Target.Digest, &im.Target.Size, &annotations, &labels, &created, &updated); err != nil {
		return Image{}, err
	}
	var err error
	if im.Target.Annotations, err = decodeLabels("images.target_annotations", annotations); err != nil {
		return Image{}, err
	}
	if im.Labels, err = decodeLabels("images.labels", labels); err != nil {
		return Image{}, err
	}
	im.CreatedAt, im.UpdatedAt = fromNanos(created), fromNanos(updated)
	return im, nil
}

// GetImage returns image name of namespace ns.
func (t *Tx) GetImage(ctx context.Context, ns, name string) (Image, error) {
	if err := checkNamespace(ns); err != nil {
		return Image{}, err
	}
	if err := validateImageName("image name", name); err != nil {
		return Image{}, err
	}
	im, err := scanImage(t.queryRow(ctx, qImageGet, ns, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, imageNotFound(ns, name)
	}
	if err != nil {
		return Image{}, dbError("get image", err)
	}
	return im, nil
}

// ListImages returns the images of namespace ns that match any of filters
// (all images without filters), ordered by name.
func (t *Tx) ListImages(ctx context.Context, ns string, filters ...ImageFilter) ([]Image, error) {
	if err := checkNamespace(ns); err != nil {
		return nil, err
	}
	var w whereBuilder
	for _, f := range filters {
		w.add(map[string]string{"name": f.Name, "target_digest": f.TargetDigest})
	}
	where, args := w.sql()
	var rows *sql.Rows
	var err error
	if where == "" {
		rows, err = t.query(ctx, "list images", qImageList, ns)
	} else {
		rows, err = t.tx.QueryContext(ctx, qImageListPre+where+" ORDER BY name", append([]any{ns}, args...)...)
		err = dbError("list images", err)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Image
	for rows.Next() {
		im, err := scanImage(rows)
		if err != nil {
			return nil, dbError("list images", err)
		}
		if len(filters) > 0 {
			ok := false
			for i := range filters {
				if filters[i].match(&im) {
					ok = true
					break
				}
			}
			if !ok {
				continue
			}
		}
		out = append(out, im)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("list images", err)
	}
	return out, nil
}

// UpdateImage changes image im.Name of namespace ns. fieldpaths: "labels",
// "labels.<key>" (removed when im.Labels lacks it or has it empty),
// "target" (the whole descriptor), "annotations" (target annotations only).
// Without fieldpaths, labels and target are replaced. The name is the key
// and cannot change.
func (t *Tx) UpdateImage(ctx context.Context, ns string, im Image, fieldpaths ...string) (Image, error) {
	if err := t.checkWritable("update image"); err != nil {
		return Image{}, err
	}
	cur, err := t.GetImage(ctx, ns, im.Name)
	if err != nil {
		return Image{}, err
	}
	if len(fieldpaths) == 0 {
		fieldpaths = []string{"labels", "target"}
	}
	upd := cur
	for _, p := range fieldpaths {
		switch {
		case p == "labels":
			upd.Labels = im.Labels
		case strings.HasPrefix(p, "labels."):
			upd.Labels = applyLabelPath(upd.Labels, im.Labels, strings.TrimPrefix(p, "labels."))
		case p == "target":
			upd.Target = im.Target
		case p == "annotations":
			upd.Target.Annotations = im.Target.Annotations
		default:
			return Image{}, errdefs.InvalidArgument("fieldpath", "%q cannot be updated on image %q", p, im.Name)
		}
	}
	if err := validateImage(&upd, &cur); err != nil {
		return Image{}, err
	}
	ts := now()
	if _, err := t.exec(ctx, "update image", qImageUpdate, upd.Target.MediaType, upd.Target.Digest, upd.Target.Size,
		encodeMap(upd.Target.Annotations), encodeMap(upd.Labels), ts.UnixNano(), ns, im.Name); err != nil {
		return Image{}, err
	}
	upd.Labels = nilIfEmpty(upd.Labels)
	upd.Target.Annotations = nilIfEmpty(upd.Target.Annotations)
	upd.UpdatedAt = ts
	return upd, nil
}

// DeleteImage deletes image name of namespace ns.
func (t *Tx) DeleteImage(ctx context.Context, ns, name string) error {
	if err := t.checkWritable("delete image"); err != nil {
		return err
	}
	if err := checkNamespace(ns); err != nil {
		return err
	}
	if err := validateImageName("image name", name); err != nil {
		return err
	}
	n, err := t.execN(ctx, "delete image", qImageDelete, ns, name)
	if err != nil {
		return err
	}
	if n == 0 {
		return imageNotFound(ns, name)
	}
	return nil
}
