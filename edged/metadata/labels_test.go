package metadata

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

func TestLabelLimits(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	many := func(n, valueSize int) map[string]string {
		m := make(map[string]string, n)
		for i := 0; i < n; i++ {
			m[fmt.Sprintf("key-%03d", i)] = strings.Repeat("v", valueSize)
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		subs   []string // nil: valid
	}{
		{"key at limit", map[string]string{strings.Repeat("k", MaxLabelKeySize): "v"}, nil},
		{"key too long", map[string]string{strings.Repeat("k", MaxLabelKeySize+1): "v"}, []string{"labels", `key "kkkk`, "257 bytes, must be 1 to 256"}},
		{"empty key", map[string]string{"": "v"}, []string{"labels", `key "" is 0 bytes`}},
		{"pair at limit", map[string]string{"k": strings.Repeat("v", MaxLabelSize-1)}, nil},
		{"pair too big", map[string]string{"k": strings.Repeat("v", MaxLabelSize)}, []string{"labels", `key "k"`, "4097 bytes"}},
		{"count at limit", many(MaxLabels, 1), nil},
		{"too many", many(MaxLabels+1, 1), []string{"labels", "257 labels"}},
		// 17 × (7+4000) bytes > 64 KiB: the 17th key (key-016) crosses it.
		{"total too big", many(17, 4000), []string{"labels", `key "key-016"`, "65536 bytes"}},
		{"total at limit", many(16, 4000), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testContainer(t, "labels")
			c.Labels = tc.labels
			var stored Container
			err := db.Update(ctx, func(tx *Tx) error {
				if _, err := tx.CreateContainer(ctx, "default", c); err != nil {
					return err
				}
				var err error
				stored, err = tx.GetContainer(ctx, "default", "labels")
				if err != nil {
					return err
				}
				return tx.DeleteContainer(ctx, "default", "labels")
			})
			if tc.subs == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(stored.Labels, tc.labels) {
					t.Fatal("labels did not round-trip")
				}
				return
			}
			wantErr(t, err, errdefs.ErrInvalidArgument, tc.subs...)
			// The same limits apply to every object's labels.
			err = db.Update(ctx, func(tx *Tx) error {
				_, err := tx.CreateLease(ctx, "default", "l", tc.labels, nil)
				return err
			})
			wantErr(t, err, errdefs.ErrInvalidArgument, tc.subs...)
		})
	}
}

func TestMapEncoding(t *testing.T) {
	for _, m := range []map[string]string{
		nil,
		{"a": "b"},
		{"": "", "k": ""},
		{"ünïcode": "värde", "bin\x00ary": "\xff\xfe", "x": strings.Repeat("y", 300)},
	} {
		b := encodeMap(m)
		got, err := decodeLabels("t", b)
		if err != nil {
			t.Fatal(err)
		}
		if len(m) == 0 {
			if got != nil || b != nil {
				t.Fatalf("empty map encoded to %v, decoded to %v", b, got)
			}
			continue
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip %q -> %q", m, got)
		}
		// Deterministic.
		if !bytes.Equal(b, encodeMap(m)) {
			t.Fatal("encoding not deterministic")
		}
	}
	ext := map[string][]byte{"a": []byte("1"), "b": {}, "c": bytes.Repeat([]byte{0}, 1000)}
	got, err := decodeBytesMap("t", encodeMap(ext))
	if err != nil || !reflect.DeepEqual(got, ext) {
		t.Fatalf("bytes map round trip: %v %v", got, err)
	}
	// Appending to a decoded value must not clobber the next one.
	got["a"] = append(got["a"], 'X')
	if !bytes.Equal(got["b"], []byte{}) {
		t.Fatal("decoded values alias each other")
	}

	good := encodeMap(map[string]string{"key": "value"})
	for name, b := range map[string][]byte{
		"format":    append([]byte{0x7f}, good[1:]...),
		"truncated": good[:len(good)-2],
		"trailing":  append(append([]byte{}, good...), 0),
		"count":     {mapFormat, 0xff, 0xff, 0xff, 0xff, 0x0f},
	} {
		_, err := decodeLabels("containers.labels", b)
		wantErr(t, err, errdefs.ErrDataLoss, "corrupt containers.labels column")
		_, err = decodeBytesMap("containers.extensions", b)
		wantErr(t, err, errdefs.ErrDataLoss, "corrupt containers.extensions column")
		_ = name
	}
}

// TestCorruptLabelsColumn: a damaged labels blob in the file surfaces as
// ErrDataLoss naming the column, not as garbage labels.
func TestCorruptLabelsColumn(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateContainer(ctx, "default", testContainer(t, "c"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SQL().Exec(`UPDATE containers SET labels = x'01050161' WHERE id = 'c'`); err != nil {
		t.Fatal(err)
	}
	err := db.View(ctx, func(tx *Tx) error { _, err := tx.GetContainer(ctx, "default", "c"); return err })
	wantErr(t, err, errdefs.ErrDataLoss, "corrupt containers.labels")
}

// Labels stored before the text rule (bytes that are not UTF-8, a NUL:
// written here straight into the table, as an older edged stored them) do
// not lock their object: a container and an image can still be updated,
// and such a label kept or removed; a label the update adds or changes
// must follow the rule. Namespace labels likewise.
func TestLabelTextRuleGrandfathersStoredLabels(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	legacy := encodeMap(map[string]string{"app": "web", "bad": "\xff", "nul": "a\x00b"})
	err := db.Update(ctx, func(tx *Tx) error {
		if _, err := tx.CreateContainer(ctx, "default", testContainer(t, "old")); err != nil {
			return err
		}
		if _, err := tx.CreateImage(ctx, "default", Image{Name: "docker.io/library/old:1", Target: Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: "sha256:" + strings.Repeat("a", 64), Size: 1}}); err != nil {
			return err
		}
		if _, err := tx.CreateNamespace(ctx, "oldns", nil); err != nil {
			return err
		}
		for _, q := range []string{
			`UPDATE containers SET labels = ? WHERE namespace = 'default' AND id = 'old'`,
			`UPDATE images SET labels = ? WHERE namespace = 'default' AND name = 'docker.io/library/old:1'`,
			`UPDATE namespaces SET labels = ? WHERE name = 'oldns'`,
		} {
			if _, err := tx.exec(ctx, "legacy labels", q, legacy); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(ctx, func(tx *Tx) error {
		c, err := tx.GetContainer(ctx, "default", "old")
		if err != nil {
			return err
		}
		c.Image = "docker.io/library/new:1"
		if _, err := tx.UpdateContainer(ctx, "default", c, "image"); err != nil {
			return fmt.Errorf("update the image of a container with legacy labels: %w", err)
		}
		c.Labels = map[string]string{"more": "ok"}
		if _, err := tx.UpdateContainer(ctx, "default", c, "labels.more", "labels.nul"); err != nil {
			return fmt.Errorf("add a label and remove a legacy one: %w", err)
		}
		c.Labels = map[string]string{"more": "b\xffd"}
		_, err = tx.UpdateContainer(ctx, "default", c, "labels.more")
		if !errdefs.IsInvalidArgument(err) || err.Error() != `labels: value of key "more" is not valid UTF-8: invalid argument` {
			return fmt.Errorf("add a label that is not UTF-8: %v", err)
		}
		got, err := tx.GetContainer(ctx, "default", "old")
		if err != nil {
			return err
		}
		if want := map[string]string{"app": "web", "bad": "\xff", "more": "ok"}; !reflect.DeepEqual(got.Labels, want) || got.Image != "docker.io/library/new:1" {
			return fmt.Errorf("container after the updates: image %q labels %q; want %q", got.Image, got.Labels, want)
		}
		im, err := tx.GetImage(ctx, "default", "docker.io/library/old:1")
		if err != nil {
			return err
		}
		im.Target.Size = 2
		if _, err := tx.UpdateImage(ctx, "default", im, "target"); err != nil {
			return fmt.Errorf("update the target of an image with legacy labels: %w", err)
		}
		if _, err := tx.SetNamespaceLabels(ctx, "oldns", map[string]string{"x": "y"}, false); err != nil {
			return fmt.Errorf("add a label to a namespace with legacy labels: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
