package metadata

import (
	"unicode"
	"unicode/utf8"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/metadata/labels"
	"github.com/opencontainers/go-digest"
)

// Limits on what one object may carry. The label limits are package
// labels', shared with the snapshotter.
const (
	MaxLabelKeySize    = labels.MaxKeySize   // bytes of one label key
	MaxLabelSize       = labels.MaxSize      // bytes of one key plus its value
	MaxLabels          = labels.MaxCount     // labels per object
	MaxLabelsTotalSize = labels.MaxTotalSize // bytes of all keys and values of one object

	MaxImageNameSize      = 512     // bytes of an image name (a reference)
	MaxSpecSize           = 1 << 20 // bytes of a container's spec
	MaxRuntimeOptionsSize = 1 << 20 // bytes of a container's runtime options
	MaxExtensionsSize     = 1 << 20 // bytes of all extensions of a container
	maxTextSize           = 1024    // runtime names, snapshot keys, media types, ...
)

// validateLabels checks the labels m of an object whose stored labels are
// old (nil for a new object): the limits, and the text rule for what the
// change adds or alters (labels.ValidateChange). field names the map
// ("labels", "target.annotations") in the error, which also names the
// offending key.
func validateLabels(field string, old, m map[string]string) error {
	return labels.ValidateChange(field, old, m)
}

// validateExtensions checks extension names like label keys and the total
// size.
func validateExtensions(ext map[string][]byte) error {
	total := 0
	for k, v := range ext {
		if len(k) == 0 || len(k) > MaxLabelKeySize {
			return errdefs.InvalidArgument("extensions", "name %s is %d bytes, must be 1 to %d", labels.Quote(k), len(k), MaxLabelKeySize)
		}
		total += len(k) + len(v)
	}
	if total > MaxExtensionsSize {
		return errdefs.InvalidArgument("extensions", "%d bytes is more than the maximum of %d", total, MaxExtensionsSize)
	}
	return nil
}

// validateImageName checks an image name, which is a reference such as
// docker.io/library/busybox:1.36 or example.com:5000/a/b@sha256:...; it is
// not parsed, only bounded: non-empty, at most MaxImageNameSize bytes,
// valid UTF-8 without whitespace or control characters.
func validateImageName(field, name string) error {
	if name == "" {
		return errdefs.InvalidArgument(field, "must not be empty")
	}
	if len(name) > MaxImageNameSize {
		return errdefs.InvalidArgument(field, "%d bytes is longer than the maximum of %d", len(name), MaxImageNameSize)
	}
	return checkText(field, name, true)
}

// validateText bounds a free-form single-line string such as a runtime name
// or a snapshot key.
func validateText(field, s string, required bool) error {
	if s == "" {
		if required {
			return errdefs.InvalidArgument(field, "must not be empty")
		}
		return nil
	}
	if len(s) > maxTextSize {
		return errdefs.InvalidArgument(field, "%d bytes is longer than the maximum of %d", len(s), maxTextSize)
	}
	return checkText(field, s, false)
}

func checkText(field, s string, noSpace bool) error {
	if !utf8.ValidString(s) {
		return errdefs.InvalidArgument(field, "%s is not valid UTF-8", labels.Quote(s))
	}
	for i, r := range s {
		if unicode.IsControl(r) || (noSpace && unicode.IsSpace(r)) {
			return errdefs.InvalidArgument(field, "%s has a whitespace or control character at byte %d", labels.Quote(s), i)
		}
	}
	return nil
}

// validateDigest checks a digest string such as sha256:<64 hex>.
func validateDigest(field, d string) error {
	if d == "" {
		return errdefs.InvalidArgument(field, "must not be empty")
	}
	if len(d) > maxTextSize {
		return errdefs.InvalidArgument(field, "%d bytes is longer than the maximum of %d", len(d), maxTextSize)
	}
	if err := digest.Digest(d).Validate(); err != nil {
		return errdefs.InvalidArgument(field, "%s: %v", labels.Quote(d), err)
	}
	return nil
}
