package archive

import (
	"archive/tar"
	"context"
	_ "crypto/sha256" // registers sha256 for go-digest
	_ "crypto/sha512" // registers sha384/sha512 for go-digest
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"sort"
	"strings"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/fsstore/compression"
	"github.com/opencontainers/go-digest"
)

// WhiteoutMode selects how whiteout entries are applied.
type WhiteoutMode uint8

const (
	// WhiteoutOverlay writes overlayfs whiteouts: ".wh.NAME" becomes a 0:0
	// character device and ".wh..wh..opq" sets trusted.overlay.opaque=y. Use
	// it when root is an (empty) overlay upper directory. This is the default.
	WhiteoutOverlay WhiteoutMode = iota
	// WhiteoutRemove deletes what whiteouts name. Use it when root is a copy
	// of the parent snapshot (native snapshotter).
	WhiteoutRemove
)

// String returns "overlay" or "remove".
func (m WhiteoutMode) String() string {
	switch m {
	case WhiteoutOverlay:
		return "overlay"
	case WhiteoutRemove:
		return "remove"
	}
	return fmt.Sprintf("WhiteoutMode(%d)", uint8(m))
}

// DefaultMaxEntries is the entry limit used when ApplyOptions.MaxEntries is 0.
const DefaultMaxEntries = 1 << 21

// MinFreeInterval is how much a layer may write between two free-space
// checks of ApplyOptions.MinFree: a statfs(2) per file would cost more than
// small files do, and one per few MiB is noise next to writing them. The
// free space can end up to this much below MinFree.
const MinFreeInterval = 4 << 20

// minFreeEntryCost is what each entry is counted as towards MinFreeInterval
// besides its content: an empty directory still takes a block on most
// filesystems, so a layer of a million of them is not free.
const minFreeEntryCost = 4096

// ApplyOptions tune Apply. The zero value is valid: overlay whiteouts, no size
// limit, DefaultMaxEntries, no free-space check, no sync.
type ApplyOptions struct {
	// Whiteouts selects overlay or remove whiteout handling.
	Whiteouts WhiteoutMode
	// MaxSize is the largest uncompressed tar stream accepted, in bytes;
	// 0 means unlimited. Exceeding it fails with a *LimitError.
	MaxSize int64
	// MaxEntries is the largest number of tar entries accepted; 0 means
	// DefaultMaxEntries. Exceeding it fails with a *LimitError.
	MaxEntries int64
	// MinFree is the free space, in bytes, that the filesystem holding root
	// must keep (statfs f_bavail, what df shows as available); 0 means no
	// check. It is checked before the first entry and then every
	// MinFreeInterval bytes written; falling below it fails with a
	// *LimitError, so a layer that would fill the disk stops first.
	MinFree int64
	// Sync calls syncfs on root's file system after a successful apply.
	Sync bool

	// pendingTimes overrides maxPendingTimes (tests only).
	pendingTimes int
}

// Limit names the option of ApplyOptions a layer exceeded.
type Limit string

// The limits of ApplyOptions.
const (
	LimitSize    Limit = "MaxSize"
	LimitEntries Limit = "MaxEntries"
	LimitFree    Limit = "MinFree"
)

// LimitError reports that a layer exceeded a limit of ApplyOptions. It wraps
// errdefs.ErrResourceExhausted; callers that know under which name the limit
// was configured find it with errors.As to say so.
type LimitError struct {
	Limit Limit
	// Value is the limit: bytes for LimitSize and LimitFree, entries for
	// LimitEntries.
	Value int64
	// Path is, for LimitFree, the mount point of the filesystem that ran low.
	Path string
}

func (e *LimitError) Error() string {
	switch e.Limit {
	case LimitSize:
		return fmt.Sprintf("layer is larger than the %d byte limit", e.Value)
	case LimitEntries:
		return fmt.Sprintf("layer has more than %d entries", e.Value)
	case LimitFree:
		return fmt.Sprintf("layer would leave less than %d bytes free on %s", e.Value, e.Path)
	}
	return fmt.Sprintf("layer exceeds %s %d", e.Limit, e.Value)
}

// Unwrap makes errors.Is(err, errdefs.ErrResourceExhausted) true.
func (e *LimitError) Unwrap() error { return errdefs.ErrResourceExhausted }

// ApplyResult describes an applied layer.
type ApplyResult struct {
	// DiffID is the digest of the uncompressed tar stream, including any
	// padding after the end-of-archive marker.
	DiffID digest.Digest
	// Size is the length of the uncompressed tar stream in bytes.
	Size int64
	// Entries is the number of tar entries processed (whiteouts included).
	Entries int64
}

// Apply streams the uncompressed tar r into the existing directory root and
// returns its diffID. See the package documentation for the security model.
// r is read to EOF. On error root is left half-written and the caller must
// remove it. Errors wrap errdefs.ErrInvalidArgument (hostile or malformed
// entry, named in the message), io.ErrUnexpectedEOF and errdefs.ErrDataLoss
// (truncated stream), errdefs.ErrResourceExhausted (limits),
// errdefs.ErrNotFound (root missing), or the context's error.
func Apply(ctx context.Context, root string, r io.Reader, opts ApplyOptions) (ApplyResult, error) {
	return apply(ctx, root, r, digest.Canonical, opts)
}

// ApplyVerified decompresses blob (see compression.NewReader for mediaType;
// "" detects the compression), applies it to root like Apply and checks the
// diffID against expectedDiffID. A mismatch returns an error wrapping
// errdefs.ErrDataLoss naming both digests; root then holds the unverified
// content and must be removed by the caller, as after any error. To verify the
// compressed digest too, wrap blob with VerifyReader.
func ApplyVerified(ctx context.Context, root string, blob io.Reader, mediaType string, expectedDiffID digest.Digest, opts ApplyOptions) (ApplyResult, error) {
	if err := expectedDiffID.Validate(); err != nil {
		return ApplyResult{}, errdefs.InvalidArgument("diffID", "%q: %v", expectedDiffID, err)
	}
	dr, _, err := compression.NewReader(blob, mediaType)
	if err != nil {
		return ApplyResult{}, err
	}
	defer dr.Close()
	res, err := apply(ctx, root, dr, expectedDiffID.Algorithm(), opts)
	if err != nil {
		return res, err
	}
	if res.DiffID != expectedDiffID {
		return res, fmt.Errorf("layer diffID mismatch: got %s, want %s: %w", res.DiffID, expectedDiffID, errdefs.ErrDataLoss)
	}
	return res, nil
}

func apply(ctx context.Context, root string, r io.Reader, alg digest.Algorithm, opts ApplyOptions) (ApplyResult, error) {
	if opts.Whiteouts != WhiteoutOverlay && opts.Whiteouts != WhiteoutRemove {
		return ApplyResult{}, errdefs.InvalidArgument("whiteouts", "unknown mode %d", opts.Whiteouts)
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	lr := &layerReader{ctx: ctx, r: r, h: alg.Hash(), max: opts.MaxSize}
	buf := make([]byte, 32<<10)
	entries, err := applyTar(ctx, root, lr, buf, opts)
	res := ApplyResult{Size: lr.n, Entries: entries}
	if err != nil {
		return res, err
	}
	// Hash what follows the end-of-archive marker (record padding).
	for {
		_, err := lr.Read(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, readError(err)
		}
	}
	res.Size = lr.n
	res.DiffID = digest.NewDigest(alg, lr.h)
	return res, nil
}

// layerReader hashes and counts the tar stream, enforces MaxSize and the
// context, and remembers the size of the last read (see endOfArchiveSeen).
type layerReader struct {
	ctx   context.Context
	r     io.Reader
	h     hash.Hash
	n     int64
	max   int64
	lastN int
}

func (l *layerReader) Read(p []byte) (int, error) {
	if err := l.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := l.r.Read(p)
	l.lastN = n
	if n > 0 {
		l.h.Write(p[:n])
		l.n += int64(n)
		if l.max > 0 && l.n > l.max {
			return n, &LimitError{Limit: LimitSize, Value: l.max}
		}
	}
	return n, err
}

// endOfArchiveSeen reports, right after tar.Reader.Next returned io.EOF,
// whether that EOF came from the two zero blocks that end a tar. archive/tar
// also returns io.EOF when the stream simply stops between two entries; it
// then got there by a read that returned no bytes, while the end marker is
// always completed by a read that returned some.
func (l *layerReader) endOfArchiveSeen() bool { return l.lastN > 0 }

// readError classifies an error from the tar reader.
func readError(err error) error {
	switch {
	case errors.Is(err, errdefs.ErrDataLoss), errors.Is(err, errdefs.ErrResourceExhausted),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("layer is truncated: %w: %w", err, errdefs.ErrDataLoss)
	case errors.Is(err, tar.ErrHeader):
		return fmt.Errorf("layer is not a valid tar stream: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("read layer: %w", err)
}

const (
	maxPathLen   = 4096 // PATH_MAX, including the terminating NUL for links
	maxNameLen   = 255  // NAME_MAX
	maxXattrName = 255  // XATTR_NAME_MAX
	maxXattrVal  = 64 << 10

	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// splitName validates a layer path (entry name or hardlink target) and
// returns its components: no NUL, no "..", bounded lengths; "", "." and a
// leading "/" are dropped. An empty result means the root itself.
func splitName(name string) ([]string, error) {
	if len(name) >= maxPathLen {
		return nil, fmt.Errorf("name is %d bytes long, the limit is %d: %w", len(name), maxPathLen-1, errdefs.ErrInvalidArgument)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return nil, fmt.Errorf("name contains a NUL byte: %w", errdefs.ErrInvalidArgument)
	}
	comps := make([]string, 0, 8)
	for rest := name; rest != ""; {
		var c string
		c, rest, _ = strings.Cut(rest, "/")
		switch {
		case c == "" || c == ".":
			continue
		case c == "..":
			return nil, fmt.Errorf("name contains a \"..\" component: %w", errdefs.ErrInvalidArgument)
		case len(c) > maxNameLen:
			return nil, fmt.Errorf("name component is %d bytes long, the limit is %d: %w", len(c), maxNameLen, errdefs.ErrInvalidArgument)
		}
		comps = append(comps, c)
	}
	return comps, nil
}

type xattr struct {
	name  string
	value string
}

// xattrsOf returns the extended attributes of hdr that are applied, sorted by
// name, and refuses the ones that would change how overlayfs reads the
// layer. See the package documentation for the policy.
func xattrsOf(ctx context.Context, hdr *tar.Header) ([]xattr, error) {
	var out []xattr
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		switch {
		case name == "" || len(name) > maxXattrName:
			return nil, fmt.Errorf("xattr name %.40q is empty or longer than %d bytes: %w", name, maxXattrName, errdefs.ErrInvalidArgument)
		case len(v) > maxXattrVal:
			return nil, fmt.Errorf("xattr %q value is %d bytes, the limit is %d: %w", name, len(v), maxXattrVal, errdefs.ErrInvalidArgument)
		case strings.HasPrefix(name, "trusted.overlay"), strings.HasPrefix(name, "user.overlay"):
			return nil, fmt.Errorf("xattr %q is reserved for overlayfs and not allowed in a layer: %w", name, errdefs.ErrInvalidArgument)
		case strings.HasPrefix(name, "user."),
			name == "security.capability",
			name == "system.posix_acl_access", name == "system.posix_acl_default":
			out = append(out, xattr{name: name, value: v})
		default:
			slog.DebugContext(ctx, "layer: dropping xattr", "entry", hdr.Name, "xattr", name)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// VerifyReader returns a reader that passes r through and, when r reaches
// EOF, fails with an error wrapping errdefs.ErrDataLoss (naming both
// digests) instead of io.EOF if the bytes read do not hash to expected. An
// unsupported or malformed digest is an errdefs.ErrInvalidArgument error.
func VerifyReader(r io.Reader, expected digest.Digest) (io.Reader, error) {
	if err := expected.Validate(); err != nil {
		return nil, errdefs.InvalidArgument("digest", "%q: %v", expected, err)
	}
	return &verifyReader{r: r, expected: expected, h: expected.Algorithm().Hash()}, nil
}

type verifyReader struct {
	r        io.Reader
	expected digest.Digest
	h        hash.Hash
	n        int64
}

func (vr *verifyReader) Read(p []byte) (int, error) {
	n, err := vr.r.Read(p)
	if n > 0 {
		vr.h.Write(p[:n])
		vr.n += int64(n)
	}
	if err == io.EOF {
		if got := digest.NewDigest(vr.expected.Algorithm(), vr.h); got != vr.expected {
			return n, fmt.Errorf("blob digest mismatch after %d bytes: got %s, want %s: %w", vr.n, got, vr.expected, errdefs.ErrDataLoss)
		}
	}
	return n, err
}
