// Package protoconv converts between API protobuf values and Go values.
package protoconv

import (
	"time"

	"github.com/gogo/protobuf/types"
)

// Timestamp converts t to a protobuf timestamp; the zero time becomes nil.
func Timestamp(t time.Time) *types.Timestamp {
	if t.IsZero() {
		return nil
	}
	return &types.Timestamp{Seconds: t.Unix(), Nanos: int32(t.Nanosecond())}
}

// Time converts a protobuf timestamp; nil becomes the zero time.
func Time(ts *types.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return time.Unix(ts.Seconds, int64(ts.Nanos)).UTC()
}

// FieldPaths returns the paths of a field mask, or nil.
func FieldPaths(m *types.FieldMask) []string {
	if m == nil {
		return nil
	}
	return m.Paths
}
