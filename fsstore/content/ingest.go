package content

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"

	"github.com/edged/edged/edged/errdefs"
)

// Files inside an ingest directory.
const (
	fileData      = "data"
	fileRef       = "ref"
	fileStartedAt = "startedat"
	fileTotal     = "total"
	fileExpected  = "expected"
	tmpPrefix     = ".tmp-"
)

// Status describes an ingest in progress.
type Status struct {
	Ref       string
	Offset    int64         // bytes written so far
	Total     int64         // expected total size, 0 when unknown
	Expected  digest.Digest // expected digest, "" when unknown
	StartedAt time.Time
	UpdatedAt time.Time // last write
}

// validateRef checks a client-chosen ingest ref. Refs are never used as paths
// (the ingest directory is named by their sha256), but they are stored and
// echoed, so they must be sane text of bounded size.
func validateRef(ref string) error {
	switch {
	case ref == "":
		return errdefs.InvalidArgument("ref", "must not be empty")
	case len(ref) > MaxRefLength:
		return errdefs.InvalidArgument("ref", "%d bytes is longer than the maximum of %d", len(ref), MaxRefLength)
	case strings.IndexByte(ref, 0) >= 0:
		return errdefs.InvalidArgument("ref", "%q contains a NUL byte", truncate(ref))
	case !utf8.ValidString(ref):
		return errdefs.InvalidArgument("ref", "%q is not valid UTF-8", truncate(ref))
	}
	return nil
}

// ingestName is the directory name of ref's ingest: the hex sha256 of ref.
func ingestName(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return hex.EncodeToString(sum[:])
}

func isIngestName(name string) bool {
	if len(name) != 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ingestNameOf maps an entry of the ingest directory to the ingest name it
// belongs to: temporary directories are named .tmp-<ingest name>-<random>.
func ingestNameOf(entry string) string {
	if rest, ok := strings.CutPrefix(entry, tmpPrefix); ok && len(rest) > 64 {
		return rest[:64]
	}
	return entry
}

func (s *Store) ingestPath(ref string) string {
	return filepath.Join(s.ingestDir, ingestName(ref))
}

// readRef reads the ref stored in an ingest directory and checks that it
// matches the directory's name.
func readRef(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, fileRef))
	if err != nil {
		return "", fmt.Errorf("ingest %s: broken: %w", name, err)
	}
	ref := string(b)
	if ingestName(ref) != name {
		return "", fmt.Errorf("ingest %s: broken: ref file does not match the directory name", name)
	}
	return ref, nil
}

// readStatus reads an ingest's status. A missing data file (crash after the
// blob was moved out) counts as offset 0.
func readStatus(dir, ref string) (Status, error) {
	st := Status{Ref: ref}
	b, err := os.ReadFile(filepath.Join(dir, fileStartedAt))
	if err != nil {
		return st, fmt.Errorf("ingest %q: broken: %w", truncate(ref), err)
	}
	if err := st.StartedAt.UnmarshalText(b); err != nil {
		return st, fmt.Errorf("ingest %q: broken startedat: %w", truncate(ref), err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, fileTotal)); err == nil {
		if st.Total, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err != nil || st.Total < 0 {
			return st, fmt.Errorf("ingest %q: broken total %q", truncate(ref), truncate(string(b)))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return st, fmt.Errorf("ingest %q: %w", truncate(ref), err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, fileExpected)); err == nil {
		if len(b) > 0 {
			st.Expected = digest.Digest(b)
			if err := validateDigest(st.Expected); err != nil {
				return st, fmt.Errorf("ingest %q: broken expected digest: %w", truncate(ref), err)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return st, fmt.Errorf("ingest %q: %w", truncate(ref), err)
	}
	fi, err := os.Stat(filepath.Join(dir, fileData))
	switch {
	case err == nil:
		st.Offset = fi.Size()
		st.UpdatedAt = fi.ModTime()
	case errors.Is(err, fs.ErrNotExist):
		st.UpdatedAt = st.StartedAt
	default:
		return st, fmt.Errorf("ingest %q: %w", truncate(ref), err)
	}
	return st, nil
}

// Status returns the status of the ingest for ref.
func (s *Store) Status(ctx context.Context, ref string) (Status, error) {
	if err := validateRef(ref); err != nil {
		return Status{}, err
	}
	dir := s.ingestPath(ref)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Status{}, fmt.Errorf("ingest %q: %w", truncate(ref), errdefs.ErrNotFound)
		}
		return Status{}, fmt.Errorf("ingest %q: %w", truncate(ref), err)
	}
	if _, err := readRef(dir, ingestName(ref)); err != nil {
		return Status{}, fmt.Errorf("%w: %w", err, errdefs.ErrDataLoss)
	}
	st, err := readStatus(dir, ref)
	if err != nil {
		return Status{}, fmt.Errorf("%w: %w", err, errdefs.ErrDataLoss)
	}
	return st, nil
}

// ListStatuses returns the status of every ingest. Broken ingest directories
// (left by a crash while one was being created) are skipped; Cleanup removes
// them.
func (s *Store) ListStatuses(ctx context.Context) ([]Status, error) {
	ents, err := os.ReadDir(s.ingestDir)
	if err != nil {
		return nil, fmt.Errorf("content list ingests: %w", err)
	}
	var out []Status
	for _, e := range ents {
		if !e.IsDir() || !isIngestName(e.Name()) {
			continue
		}
		dir := filepath.Join(s.ingestDir, e.Name())
		ref, err := readRef(dir, e.Name())
		if err != nil {
			continue
		}
		st, err := readStatus(dir, ref)
		if err != nil {
			continue
		}
		out = append(out, st)
	}
	return out, nil
}

// Abort removes the ingest for ref and its data. It fails with
// ErrUnavailable while a Writer for ref is open (in this process or
// another), and with ErrNotFound when
// there is no such ingest.
func (s *Store) Abort(ctx context.Context, ref string) error {
	if err := validateRef(ref); err != nil {
		return err
	}
	if err := s.lock(ref); err != nil {
		return err
	}
	defer s.unlock(ref)
	dir := s.ingestPath(ref)
	if _, err := os.Lstat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("ingest %q: %w", truncate(ref), errdefs.ErrNotFound)
		}
		return fmt.Errorf("ingest %q: %w", truncate(ref), err)
	}
	if lockedElsewhere(dir) {
		return fmt.Errorf("ingest %q: a writer in another process is active: %w", truncate(ref), errdefs.ErrUnavailable)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("ingest %q: abort: %w", truncate(ref), err)
	}
	return nil
}
