// Package content is edged's content-addressed blob store: plain files under
// <root>/blobs/sha256/<hex>, written through a resumable ingest area
// <root>/ingest/<sha256(ref)>/ and made visible only after their size and
// digest have been verified and the data has been fsynced.
//
// A blob file is never written in place: it appears under blobs/ by an atomic
// rename of a complete, verified, fsynced ingest file, so a crash at any point
// leaves either no blob or a complete one. Interrupted ingests are resumed by
// opening a Writer for the same ref, or removed by Abort or Cleanup.
//
// This package only deals with files; labels and namespace ownership of
// content are kept in the daemon's metadata database.
package content

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/edged/edged/edged/errdefs"
)

// MaxRefLength is the longest ingest ref accepted, in bytes.
const MaxRefLength = 1024

// Store is a content store rooted at one directory. It is safe for
// concurrent use.
type Store struct {
	root      string
	blobsDir  string // <root>/blobs/sha256
	ingestDir string // <root>/ingest

	mu     sync.Mutex
	locked map[string]struct{} // ingest names (sha256 of ref) with an active Writer or Abort
}

// Info describes a committed blob.
type Info struct {
	Digest    digest.Digest
	Size      int64
	CreatedAt time.Time
}

// New opens (creating if needed) the content store at root.
func New(root string) (*Store, error) {
	if root == "" {
		return nil, errdefs.InvalidArgument("content root", "must not be empty")
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("content root %q: %w", root, err)
	}
	s := &Store{
		root:      root,
		blobsDir:  filepath.Join(root, "blobs", string(digest.SHA256)),
		ingestDir: filepath.Join(root, "ingest"),
		locked:    make(map[string]struct{}),
	}
	for _, d := range []string{s.blobsDir, s.ingestDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("content store: %w", err)
		}
	}
	return s, nil
}

// Root returns the store's root directory.
func (s *Store) Root() string { return s.root }

// validateDigest accepts only well-formed sha256 digests, the only thing a
// blob path is ever built from.
func validateDigest(dgst digest.Digest) error {
	if dgst == "" {
		return errdefs.InvalidArgument("digest", "must not be empty")
	}
	if i := strings.IndexByte(string(dgst), ':'); i <= 0 || digest.Algorithm(dgst[:i]) != digest.SHA256 {
		return errdefs.InvalidArgument("digest", "%q: unsupported algorithm (only sha256)", truncate(string(dgst)))
	}
	if err := dgst.Validate(); err != nil {
		return errdefs.InvalidArgument("digest", "%q: %v", truncate(string(dgst)), err)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

func (s *Store) blobPath(dgst digest.Digest) string {
	return filepath.Join(s.blobsDir, dgst.Encoded())
}

// Info returns the size and creation time of a committed blob.
func (s *Store) Info(ctx context.Context, dgst digest.Digest) (Info, error) {
	if err := validateDigest(dgst); err != nil {
		return Info{}, err
	}
	fi, err := os.Lstat(s.blobPath(dgst))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Info{}, fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
		}
		return Info{}, fmt.Errorf("content %s: %w", dgst, err)
	}
	return Info{Digest: dgst, Size: fi.Size(), CreatedAt: fi.ModTime()}, nil
}

// Reader reads a committed blob. It is an io.ReaderAt, safe for concurrent
// ReadAt calls.
type Reader struct {
	f    *os.File
	size int64
}

// ReadAt implements io.ReaderAt.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }

// Size returns the blob's size in bytes.
func (r *Reader) Size() int64 { return r.size }

// Close releases the file.
func (r *Reader) Close() error { return r.f.Close() }

// ReaderAt opens a committed blob for reading. Use io.NewSectionReader for a
// sequential reader.
func (s *Store) ReaderAt(ctx context.Context, dgst digest.Digest) (*Reader, error) {
	if err := validateDigest(dgst); err != nil {
		return nil, err
	}
	f, err := os.Open(s.blobPath(dgst))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("content %s: %w", dgst, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("content %s: %w", dgst, err)
	}
	return &Reader{f: f, size: fi.Size()}, nil
}

// Walk calls fn for every committed blob, in directory order. It stops at the
// first error fn returns and returns it. Files under blobs/ whose names are
// not valid digests are skipped with a warning.
func (s *Store) Walk(ctx context.Context, fn func(Info) error) error {
	d, err := os.Open(s.blobsDir)
	if err != nil {
		return fmt.Errorf("content walk: %w", err)
	}
	defer d.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, rerr := d.ReadDir(256)
		for _, e := range ents {
			dgst := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
			if validateDigest(dgst) != nil || !e.Type().IsRegular() {
				slog.WarnContext(ctx, "content: skipping unexpected file in blob directory", "path", filepath.Join(s.blobsDir, e.Name()))
				continue
			}
			fi, err := e.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue // deleted meanwhile
				}
				return fmt.Errorf("content walk: %w", err)
			}
			if err := fn(Info{Digest: dgst, Size: fi.Size(), CreatedAt: fi.ModTime()}); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("content walk: %w", rerr)
		}
	}
}

// Delete removes a committed blob.
func (s *Store) Delete(ctx context.Context, dgst digest.Digest) error {
	if err := validateDigest(dgst); err != nil {
		return err
	}
	if err := os.Remove(s.blobPath(dgst)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
		}
		return fmt.Errorf("content %s: delete: %w", dgst, err)
	}
	return nil
}

// lock marks ref (by its ingest name) as in use by this process.
func (s *Store) lock(ref string) error {
	name := ingestName(ref)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.locked[name]; ok {
		return fmt.Errorf("ref %q locked: another writer is active: %w", truncate(ref), errdefs.ErrUnavailable)
	}
	s.locked[name] = struct{}{}
	return nil
}

func (s *Store) unlock(ref string) {
	s.mu.Lock()
	delete(s.locked, ingestName(ref))
	s.mu.Unlock()
}

func (s *Store) isLocked(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.locked[name]
	return ok
}

// Cleanup removes ingests that have not been written to for olderThan, ingest
// directories left incomplete by a crash, and temporary directories. Ingests
// with an active Writer in this process are kept. Call it at start-up (with a
// small olderThan, e.g. 0, to drop everything) or periodically.
func (s *Store) Cleanup(ctx context.Context, olderThan time.Duration) error {
	ents, err := os.ReadDir(s.ingestDir)
	if err != nil {
		return fmt.Errorf("content cleanup: %w", err)
	}
	var errs []error
	now := time.Now()
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		dir := filepath.Join(s.ingestDir, e.Name())
		if s.isLocked(ingestNameOf(e.Name())) {
			continue // active writer (or one being created) in this process
		}
		reason := ""
		if !e.IsDir() || !isIngestName(e.Name()) {
			reason = "not an ingest directory"
		} else {
			ref, err := readRef(dir, e.Name())
			switch {
			case err != nil:
				reason = err.Error()
			default:
				st, err := readStatus(dir, ref)
				if err != nil {
					reason = err.Error()
				} else if now.Sub(st.UpdatedAt) >= olderThan {
					reason = fmt.Sprintf("stale: last written %s", st.UpdatedAt.Format(time.RFC3339))
				}
			}
		}
		if reason == "" || lockedElsewhere(dir) {
			continue
		}
		slog.InfoContext(ctx, "content: removing ingest", "path", dir, "reason", reason)
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("content cleanup: %w", err))
		}
	}
	return errors.Join(errs...)
}
