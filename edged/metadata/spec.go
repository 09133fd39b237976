package metadata

import (
	"bytes"
	"compress/flate"
	"io"
)

// Encodings of containers.spec (column spec_encoding).
const (
	specRaw     = 0 // as given
	specDeflate = 1 // raw deflate (RFC 1951) of the spec
)

// encodeSpec (with Options.CompressSpecs) deflates a spec when that makes it smaller, which a JSON spec
// always is (3 KB → 1 KB): fewer database pages per container create and
// delete, so fewer bytes written to flash.
func (db *DB) encodeSpec(spec []byte) (int, []byte) {
	if !db.compressSpecs {
		return specRaw, spec
	}
	var buf bytes.Buffer
	buf.Grow(len(spec) / 2)
	w, _ := db.specWriters.Get().(*flate.Writer)
	if w == nil {
		w, _ = flate.NewWriter(&buf, flate.BestSpeed) // cannot fail for a valid level
	} else {
		w.Reset(&buf)
	}
	_, err := w.Write(spec)
	if err == nil {
		err = w.Close()
	}
	w.Reset(io.Discard) // drop the reference to buf
	db.specWriters.Put(w)
	if err != nil || buf.Len() >= len(spec) {
		return specRaw, spec
	}
	return specDeflate, buf.Bytes()
}

// decodeSpec returns the spec stored with the given encoding. A deflated
// spec larger than MaxSpecSize or not decodable is reported as corrupt.
func decodeSpec(encoding int, stored []byte) ([]byte, error) {
	switch encoding {
	case specRaw:
		return stored, nil
	case specDeflate:
		r := flate.NewReader(bytes.NewReader(stored))
		defer r.Close()
		out := bytes.NewBuffer(make([]byte, 0, 3*len(stored)))
		n, err := io.Copy(out, io.LimitReader(r, MaxSpecSize+1))
		if err != nil {
			return nil, corrupt("containers.spec", "inflate: %v", err)
		}
		if n > MaxSpecSize {
			return nil, corrupt("containers.spec", "inflates to more than %d bytes", MaxSpecSize)
		}
		return out.Bytes(), nil
	default:
		return nil, corrupt("containers.spec", "unknown encoding %d", encoding)
	}
}
