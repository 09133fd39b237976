package metadata

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

// storedSpec reads a container's spec column as stored.
func storedSpec(t *testing.T, db *DB, id string) (int, []byte) {
	t.Helper()
	var enc int
	var b []byte
	if err := db.SQL().QueryRow(`SELECT spec_encoding, spec FROM containers WHERE namespace = 'default' AND id = ?`, id).Scan(&enc, &b); err != nil {
		t.Fatal(err)
	}
	return enc, b
}

func TestSpecStoredDeflated(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{CompressSpecs: true})
	c := testContainer(t, "c1")
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateContainer(ctx, "default", c)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	enc, b := storedSpec(t, db, "c1")
	if enc != specDeflate || len(b) >= len(c.Spec)/2 {
		t.Fatalf("spec of %d bytes stored with encoding %d in %d bytes; want deflated to less than half", len(c.Spec), enc, len(b))
	}
	// Get, List and Update give back the spec as given.
	newSpec := bytes.Replace(c.Spec, []byte(`"c1"`), []byte(`"c1-updated"`), 1)
	if err := db.Update(ctx, func(tx *Tx) error {
		got, err := tx.GetContainer(ctx, "default", "c1")
		if err != nil || !bytes.Equal(got.Spec, c.Spec) {
			t.Errorf("get: spec %q, error %v", got.Spec, err)
		}
		all, err := tx.ListContainers(ctx, "default")
		if err != nil || len(all) != 1 || !bytes.Equal(all[0].Spec, c.Spec) {
			t.Errorf("list: %d containers, error %v", len(all), err)
		}
		upd := c
		upd.Spec = newSpec
		_, err = tx.UpdateContainer(ctx, "default", upd, "spec")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.View(ctx, func(tx *Tx) error {
		got, err := tx.GetContainer(ctx, "default", "c1")
		if err != nil || !bytes.Equal(got.Spec, newSpec) {
			t.Errorf("after update: spec %q, error %v", got.Spec, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A spec deflate cannot shrink (random bytes) is stored as given.
func TestSpecIncompressibleStoredRaw(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{CompressSpecs: true})
	c := testContainer(t, "rnd")
	c.Spec = make([]byte, 2000)
	rand.Read(c.Spec)
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.CreateContainer(ctx, "default", c)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if enc, b := storedSpec(t, db, "rnd"); enc != specRaw || !bytes.Equal(b, c.Spec) {
		t.Fatalf("stored with encoding %d, %d bytes; want raw", enc, len(b))
	}
	if err := db.View(ctx, func(tx *Tx) error {
		got, err := tx.GetContainer(ctx, "default", "rnd")
		if err != nil || !bytes.Equal(got.Spec, c.Spec) {
			t.Errorf("get: error %v, spec equal %v", err, bytes.Equal(got.Spec, c.Spec))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A damaged spec column is reported as data loss, not returned as garbage.
func TestSpecCorruptIsDataLoss(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, set string
		args      []any
		want      string
	}{
		{"unknown encoding", `UPDATE containers SET spec_encoding = 7`, nil, "unknown encoding 7"},
		{"not deflate", `UPDATE containers SET spec = ?`, []any{[]byte{0xff, 0xfe, 0xfd, 0xfc}}, "inflate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, _ := openTest(t, Options{CompressSpecs: true})
			if err := db.Update(ctx, func(tx *Tx) error {
				_, err := tx.CreateContainer(ctx, "default", testContainer(t, "c"))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.SQL().Exec(tc.set, tc.args...); err != nil {
				t.Fatal(err)
			}
			err := db.View(ctx, func(tx *Tx) error {
				_, err := tx.GetContainer(ctx, "default", "c")
				return err
			})
			if !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), "containers.spec") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("get: %v; want data loss naming containers.spec and %q", err, tc.want)
			}
		})
	}
}

func TestSpecInflateBounded(t *testing.T) {
	var buf bytes.Buffer
	db := &DB{compressSpecs: true}
	big := bytes.Repeat([]byte("a"), MaxSpecSize+1)
	enc, z := db.encodeSpec(big)
	buf.Write(z)
	if enc != specDeflate {
		t.Fatalf("encoding %d", enc)
	}
	_, err := decodeSpec(enc, buf.Bytes())
	if !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("decode of an oversized spec: %v", err)
	}
}
