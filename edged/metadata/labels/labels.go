// Package labels holds the limits on the labels of one object (a container,
// an image, a content reference, a namespace, a lease, a snapshot) and the
// one check of them. It is its own package, importing only errdefs, so that
// the metadata database and the snapshotter in fsstore, which keeps its
// labels in tables of its own, enforce the same rule.
package labels

import (
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/edged/edged/edged/errdefs"
)

// Limits on the labels of one object.
const (
	MaxKeySize   = 256      // bytes of one label key
	MaxSize      = 4096     // bytes of one key plus its value
	MaxCount     = 256      // labels per object
	MaxTotalSize = 64 << 10 // bytes of all keys and values of one object
)

// Validate checks the limits and the text (valid UTF-8, as protobuf's
// string fields must be, and no NUL byte); field names the map ("labels",
// "target.annotations") in the error, an errdefs.ErrInvalidArgument that
// also names the offending key and the limit.
func Validate(field string, m map[string]string) error {
	if len(m) == 0 {
		return nil
	}
	if len(m) > MaxCount {
		return errdefs.InvalidArgument(field, "%d labels is more than the maximum of %d", len(m), MaxCount)
	}
	// The common case, labels within the limits, is checked in map order
	// without sorting (this runs on every write that carries labels); the
	// keys are sorted only to report a failure, so that the same labels
	// always give the same message.
	total := 0
	for k, v := range m {
		if len(k) == 0 || len(k) > MaxKeySize || len(k)+len(v) > MaxSize || !validText(k) || !validText(v) {
			return check(field, m, true)
		}
		total += len(k) + len(v)
	}
	if total > MaxTotalSize {
		return check(field, m, true)
	}
	return nil
}

// ValidateText checks only the text of the labels (see Validate).
func ValidateText(field string, m map[string]string) error {
	for k, v := range m {
		if !validText(k) || !validText(v) {
			return check(field, m, true)
		}
	}
	return nil
}

// ValidateChange is Validate for an update of the stored labels old to m:
// the limits apply to m, the text rule only to the labels the update adds
// or changes. Labels stored before the text rule existed (bytes that are
// not UTF-8) then do not lock their object: it can still be updated, and
// they can be kept or removed.
func ValidateChange(field string, old, m map[string]string) error {
	err := Validate(field, m)
	if err == nil || len(old) == 0 || len(m) > MaxCount {
		return err
	}
	if err := check(field, m, false); err != nil {
		return err
	}
	changed := make(map[string]string)
	for k, v := range m {
		if ov, ok := old[k]; !ok || ov != v {
			changed[k] = v
		}
	}
	return ValidateText(field, changed)
}

func validText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// check finds the first label, in key order, over a limit or, with text,
// breaking the text rule.
func check(field string, m map[string]string, text bool) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	total := 0
	for _, k := range keys {
		v := m[k]
		if len(k) == 0 || len(k) > MaxKeySize {
			return errdefs.InvalidArgument(field, "key %s is %d bytes, must be 1 to %d", Quote(k), len(k), MaxKeySize)
		}
		switch {
		case !text:
		case strings.IndexByte(k, 0) >= 0:
			return errdefs.InvalidArgument(field, "key %s contains a NUL byte", Quote(k))
		case !utf8.ValidString(k):
			return errdefs.InvalidArgument(field, "key %s is not valid UTF-8", Quote(k))
		case strings.IndexByte(v, 0) >= 0:
			return errdefs.InvalidArgument(field, "value of key %s contains a NUL byte", Quote(k))
		case !utf8.ValidString(v):
			return errdefs.InvalidArgument(field, "value of key %s is not valid UTF-8", Quote(k))
		}
		if len(k)+len(v) > MaxSize {
			return errdefs.InvalidArgument(field, "key %s: key and value are %d bytes, more than the maximum of %d", Quote(k), len(k)+len(v), MaxSize)
		}
		total += len(k) + len(v)
		if total > MaxTotalSize {
			return errdefs.InvalidArgument(field, "key %s: labels total more than the maximum of %d bytes", Quote(k), MaxTotalSize)
		}
	}
	return nil
}

// Quote quotes s for an error message, cut to 64 bytes.
func Quote(s string) string {
	const max = 64
	if len(s) <= max {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:max]) + "..."
}
