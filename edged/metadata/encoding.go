package metadata

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/edged/edged/edged/errdefs"
)

// Maps (labels, annotations, extensions) are stored as one blob column:
//
//	0x01 uvarint(n) n × (uvarint(len(key)) key uvarint(len(value)) value)
//
// with keys in ascending byte order, so equal maps encode to equal bytes.
// An empty map is stored as NULL. Decoding copies the blob into one string
// (labels) or slices one buffer (extensions), so a decoded map costs a
// single allocation besides the map itself.
const mapFormat = 0x01

func encodeMap[V ~string | ~[]byte](m map[string]V) []byte {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	size := 1 + binary.MaxVarintLen64
	for k, v := range m {
		keys = append(keys, k)
		size += len(k) + len(v) + 2*binary.MaxVarintLen32
	}
	slices.Sort(keys)
	b := make([]byte, 0, size)
	b = append(b, mapFormat)
	b = binary.AppendUvarint(b, uint64(len(m)))
	for _, k := range keys {
		v := m[k]
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

// header checks the format byte and returns the entry count and the offset
// of the first entry.
func header(column string, b []byte) (n, off int, err error) {
	if len(b) == 0 {
		return 0, 0, nil
	}
	if b[0] != mapFormat {
		return 0, 0, corrupt(column, "unknown format byte %#x", b[0])
	}
	c, l := binary.Uvarint(b[1:])
	if l <= 0 || c > uint64(len(b)) {
		return 0, 0, corrupt(column, "bad entry count")
	}
	return int(c), 1 + l, nil
}

// field returns the bounds of the length-prefixed field at off.
func field(column string, b []byte, off int) (start, end int, err error) {
	n, l := binary.Uvarint(b[off:])
	if l <= 0 || n > uint64(len(b)-off-l) {
		return 0, 0, corrupt(column, "truncated entry")
	}
	start = off + l
	return start, start + int(n), nil
}

func decodeLabels(column string, b []byte) (map[string]string, error) {
	n, off, err := header(column, b)
	if err != nil || n == 0 {
		return nil, err
	}
	// One string holds every key and value; the map's strings are
	// substrings of it.
	s := string(b)
	m := make(map[string]string, n)
	for i := 0; i < n; i++ {
		ks, ke, err := field(column, b, off)
		if err != nil {
			return nil, err
		}
		vs, ve, err := field(column, b, ke)
		if err != nil {
			return nil, err
		}
		m[s[ks:ke]] = s[vs:ve]
		off = ve
	}
	if off != len(b) {
		return nil, corrupt(column, "%d trailing bytes", len(b)-off)
	}
	return m, nil
}

// decodeBytesMap decodes extensions; the values alias b, which the caller
// must own.
func decodeBytesMap(column string, b []byte) (map[string][]byte, error) {
	n, off, err := header(column, b)
	if err != nil || n == 0 {
		return nil, err
	}
	m := make(map[string][]byte, n)
	for i := 0; i < n; i++ {
		ks, ke, err := field(column, b, off)
		if err != nil {
			return nil, err
		}
		vs, ve, err := field(column, b, ke)
		if err != nil {
			return nil, err
		}
		m[string(b[ks:ke])] = b[vs:ve:ve]
		off = ve
	}
	if off != len(b) {
		return nil, corrupt(column, "%d trailing bytes", len(b)-off)
	}
	return m, nil
}

func corrupt(column, format string, args ...any) error {
	return fmt.Errorf("metadata: corrupt %s column: %s: %w", column, fmt.Sprintf(format, args...), errdefs.ErrDataLoss)
}
