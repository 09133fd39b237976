package content

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/internal/atomicfile"
)

// WriterOpts are the optional expectations of a new ingest.
type WriterOpts struct {
	// Expected is the digest the content must have. When set and the blob
	// already exists, Writer fails with an *ExistsError (nothing to write),
	// and Commit refuses any other digest.
	Expected digest.Digest
	// Total is the expected size in bytes, 0 when unknown. Writes past it
	// and a Commit at any other size are refused.
	Total int64
}

// ExistsError is the error of Writer and Commit when the blob an ingest
// would become is already in the store. It names the blob because the caller
// may not know it: a Writer resuming an ingest without repeating the
// expected digest the ingest was started with learns it only here, and
// needs it to reference the blob. It wraps errdefs.ErrAlreadyExists.
type ExistsError struct {
	Digest digest.Digest
}

func (e *ExistsError) Error() string {
	return "content " + e.Digest.String() + ": " + errdefs.ErrAlreadyExists.Error()
}

// Unwrap makes errors.Is(err, errdefs.ErrAlreadyExists) hold.
func (e *ExistsError) Unwrap() error { return errdefs.ErrAlreadyExists }

// Writer writes one blob through the ingest area. Writes are not fsynced; the
// data is fsynced once on Commit. A Writer is not safe for concurrent use.
// Close without Commit keeps the ingest, to be resumed later by opening a
// Writer for the same ref.
type Writer struct {
	s        *Store
	ref      string
	dir      string
	f        *os.File
	h        hash.Hash
	offset   int64
	total    int64
	expected digest.Digest
	started  time.Time
	updated  time.Time
}

// hashChunk bounds the buffer used to re-hash existing ingest data.
const hashChunk = 256 << 10

// Writer opens a writer for ref. If an ingest for ref exists (an earlier
// writer was closed or the process died), its data is re-hashed and writing
// continues at its end: see Offset. Only one Writer per ref may be open at a
// time; a second gets ErrUnavailable.
func (s *Store) Writer(ctx context.Context, ref string, opts WriterOpts) (*Writer, error) {
	if err := validateRef(ref); err != nil {
		return nil, err
	}
	if opts.Total < 0 {
		return nil, errdefs.InvalidArgument("total", "%d is negative", opts.Total)
	}
	if opts.Expected != "" {
		if err := validateDigest(opts.Expected); err != nil {
			return nil, err
		}
		if _, err := os.Lstat(s.blobPath(opts.Expected)); err == nil {
			s.dropDone(ctx, ref, opts.Expected)
			return nil, &ExistsError{Digest: opts.Expected}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.lock(ref); err != nil {
		return nil, err
	}
	w, err := s.openWriter(ctx, ref, opts)
	if err != nil {
		s.unlock(ref)
		if errors.Is(err, fs.ErrNotExist) && !errors.Is(err, errdefs.ErrUnavailable) {
			// The ingest directory went away while it was opened: a
			// writer in another process committed or aborted it. Worth
			// a retry, which finds the blob or starts afresh.
			return nil, fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
		}
		return nil, err
	}
	return w, nil
}

// dropDone removes the ingest of ref, if there is one that no writer has
// open, once the blob it was to become (expected) exists: a writer that
// stopped (a crash, a lost connection) after the same content was committed
// by another ref left it, and it can only ever produce that blob again.
// Without this it would stay until Cleanup finds it stale. An ingest that
// expects another digest is not this content and stays.
func (s *Store) dropDone(ctx context.Context, ref string, expected digest.Digest) {
	st, err := s.Status(ctx, ref)
	if err != nil || st.Expected != "" && st.Expected != expected {
		return
	}
	if err := s.Abort(ctx, ref); err == nil {
		slog.InfoContext(ctx, "content: removed an ingest whose blob exists", "ref", truncate(ref), "digest", expected, "offset", st.Offset)
	}
}

func (s *Store) openWriter(ctx context.Context, ref string, opts WriterOpts) (*Writer, error) {
	name := ingestName(ref)
	dir := filepath.Join(s.ingestDir, name)
	w := &Writer{s: s, ref: ref, dir: dir, h: digest.SHA256.Hash()}

	st, err := s.existingIngest(dir, ref)
	if err != nil {
		return nil, err
	}
	if st == nil {
		err := s.createIngest(dir, name, ref, opts)
		if errors.Is(err, errIngestExists) {
			// Another process (edged and a registry helper share the
			// store) created it in the meantime: use theirs; the flock
			// below decides who writes.
			if st, err = s.existingIngest(dir, ref); err == nil && st == nil {
				err = fmt.Errorf("ingest %q vanished while opening it: %w", truncate(ref), errdefs.ErrUnavailable)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if st == nil {
		w.started = time.Now()
		w.total, w.expected = opts.Total, opts.Expected
	} else {
		w.started, w.total, w.expected = st.StartedAt, st.Total, st.Expected
		if opts.Expected != "" && st.Expected != "" && opts.Expected != st.Expected {
			return nil, fmt.Errorf("ingest %q was started expecting %s, not %s; abort it first: %w",
				truncate(ref), st.Expected, opts.Expected, errdefs.ErrFailedPrecondition)
		}
		if opts.Total != 0 && st.Total != 0 && opts.Total != st.Total {
			return nil, fmt.Errorf("ingest %q was started with total %d, not %d; abort it first: %w",
				truncate(ref), st.Total, opts.Total, errdefs.ErrFailedPrecondition)
		}
		if opts.Expected != "" && st.Expected == "" {
			if err := atomicfile.WriteFile(filepath.Join(dir, fileExpected), []byte(opts.Expected), 0o600); err != nil {
				return nil, fmt.Errorf("ingest %q: %w", truncate(ref), err)
			}
			w.expected = opts.Expected
		}
		if opts.Total != 0 && st.Total == 0 {
			if err := atomicfile.WriteFile(filepath.Join(dir, fileTotal), []byte(strconv.FormatInt(opts.Total, 10)), 0o600); err != nil {
				return nil, fmt.Errorf("ingest %q: %w", truncate(ref), err)
			}
			w.total = opts.Total
		}
	}

	f, err := os.OpenFile(filepath.Join(dir, fileData), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ingest %q: %w", truncate(ref), err)
	}
	if err := flockExclusive(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("ingest %q: %w", truncate(ref), err)
	}
	// Another process's writer may have committed this ingest between our
	// look at it and the lock: then the blob is there, or the data file we
	// locked is no longer the one in the ingest directory.
	if w.expected != "" {
		if _, err := os.Lstat(s.blobPath(w.expected)); err == nil {
			// The blob is complete, so the ingest is of no use, whoever
			// made it: ours, made for nothing, or what is left of the
			// committed one, where the data file we created after the
			// commit moved the old one away may have kept its writer's
			// removal from finishing (see Commit).
			os.RemoveAll(dir)
			f.Close()
			return nil, &ExistsError{Digest: w.expected}
		}
	}
	if !sameFile(f, filepath.Join(dir, fileData)) {
		f.Close()
		return nil, fmt.Errorf("ingest %q changed while opening it (another writer finished): %w", truncate(ref), errdefs.ErrUnavailable)
	}
	w.f = f
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ingest %q: %w", truncate(ref), err)
	}
	// Resume: re-hash what is already there, streaming.
	var n int64
	if fi.Size() > 0 {
		n, err = hashPrefix(ctx, w.h, f, -1)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ingest %q: resume: %w", truncate(ref), err)
	}
	w.offset = n
	if w.total > 0 && w.offset > w.total {
		f.Close()
		return nil, fmt.Errorf("ingest %q holds %d bytes, more than its total %d; abort it: %w",
			truncate(ref), w.offset, w.total, errdefs.ErrFailedPrecondition)
	}
	w.updated = w.started
	if n > 0 {
		w.updated = fi.ModTime()
	}
	return w, nil
}

// existingIngest returns the status of a usable ingest in dir, nil when there
// is none. A broken ingest (crash during creation) is removed.
func (s *Store) existingIngest(dir, ref string) (*Status, error) {
	if _, err := os.Lstat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("ingest %q: %w", truncate(ref), err)
	}
	if _, err := readRef(dir, filepath.Base(dir)); err == nil {
		st, err := readStatus(dir, ref)
		if err == nil {
			return &st, nil
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("ingest %q: removing broken ingest: %w", truncate(ref), err)
	}
	return nil, nil
}

// createIngest makes the ingest directory complete in a temporary place and
// renames it into place, so an ingest directory is never half-made.
//
// The small files are not fsynced (containerd does not either): they only
// let an ingest resume. If a power loss leaves them empty or missing, the
// ingest is found broken when it is next opened and starts over
// (existingIngest), which loses a partial download, never a blob: blobs are
// fsynced before they are renamed into blobs/. Five fsyncs per blob matter
// on SD cards, where one takes milliseconds.
func (s *Store) createIngest(dir, name, ref string, opts WriterOpts) error {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := filepath.Join(s.ingestDir, tmpPrefix+name+"-"+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("ingest %q: %w", truncate(ref), err)
	}
	started, _ := time.Now().MarshalText()
	files := []struct {
		name string
		data []byte
	}{
		{fileRef, []byte(ref)},
		{fileStartedAt, started},
		{fileTotal, []byte(strconv.FormatInt(opts.Total, 10))},
		{fileExpected, []byte(opts.Expected)},
	}
	for _, fl := range files {
		if err := writeNew(filepath.Join(tmp, fl.name), fl.data); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("ingest %q: %w", truncate(ref), err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if errors.Is(err, fs.ErrExist) || errors.Is(err, unix.ENOTEMPTY) {
			return errIngestExists
		}
		return fmt.Errorf("ingest %q: %w", truncate(ref), err)
	}
	return nil
}

// sameFile reports whether path still names the file open as f.
func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Lstat(path)
	return err == nil && os.SameFile(a, b)
}

// errIngestExists: createIngest lost the race to another process.
var errIngestExists = errors.New("ingest created concurrently")

func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// hashPrefix feeds the first n bytes of f (all of it when n < 0) to h and
// returns how many bytes it read.
func hashPrefix(ctx context.Context, h hash.Hash, f *os.File, n int64) (int64, error) {
	var r io.Reader = io.NewSectionReader(f, 0, 1<<62)
	if n >= 0 {
		r = io.NewSectionReader(f, 0, n)
	}
	buf := make([]byte, hashChunk)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		m, err := r.Read(buf)
		h.Write(buf[:m])
		total += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return total, err
		}
	}
	if n >= 0 && total != n {
		return total, fmt.Errorf("short read: %d of %d bytes", total, n)
	}
	return total, nil
}

func (w *Writer) checkOpen() error {
	if w.f == nil {
		return fmt.Errorf("ingest %q: writer is closed: %w", truncate(w.ref), errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Write appends p to the ingest.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.checkOpen(); err != nil {
		return 0, err
	}
	if w.total > 0 && w.offset+int64(len(p)) > w.total {
		return 0, fmt.Errorf("ingest %q: write of %d bytes at offset %d exceeds the total of %d: %w",
			truncate(w.ref), len(p), w.offset, w.total, errdefs.ErrInvalidArgument)
	}
	n, err := w.f.WriteAt(p, w.offset)
	w.h.Write(p[:n])
	w.offset += int64(n)
	w.updated = time.Now()
	if err != nil {
		return n, fmt.Errorf("ingest %q: %w", truncate(w.ref), err)
	}
	return n, nil
}

// Ref returns the writer's ref.
func (w *Writer) Ref() string { return w.ref }

// Digest returns the digest of the bytes written so far.
func (w *Writer) Digest() digest.Digest {
	return digest.NewDigest(digest.SHA256, w.h)
}

// Offset returns the number of bytes written so far, including those found
// when an interrupted ingest was resumed.
func (w *Writer) Offset() int64 { return w.offset }

// Status returns the ingest's status.
func (w *Writer) Status() (Status, error) {
	if err := w.checkOpen(); err != nil {
		return Status{}, err
	}
	return Status{
		Ref:       w.ref,
		Offset:    w.offset,
		Total:     w.total,
		Expected:  w.expected,
		StartedAt: w.started,
		UpdatedAt: w.updated,
	}, nil
}

// Truncate discards everything after the first size bytes and continues
// writing there. The kept prefix is re-hashed.
func (w *Writer) Truncate(size int64) error {
	if err := w.checkOpen(); err != nil {
		return err
	}
	if size < 0 || size > w.offset {
		return errdefs.InvalidArgument("size", "cannot truncate ingest %q of %d bytes to %d", truncate(w.ref), w.offset, size)
	}
	if err := w.f.Truncate(size); err != nil {
		return fmt.Errorf("ingest %q: truncate: %w", truncate(w.ref), err)
	}
	w.h.Reset()
	if _, err := hashPrefix(context.Background(), w.h, w.f, size); err != nil {
		return fmt.Errorf("ingest %q: truncate: %w", truncate(w.ref), err)
	}
	w.offset = size
	w.updated = time.Now()
	return nil
}

// Commit verifies the written data and makes it a blob. size (when > 0) and
// expected (when not empty) are checked, as are the writer's WriterOpts. On a
// mismatch nothing becomes visible, the error (ErrFailedPrecondition) names
// the expected and the actual value, and the writer stays open so that the
// caller can Truncate and rewrite, or Close and Abort. When the blob already
// exists Commit returns an *ExistsError and removes the ingest. After any
// other outcome the writer is closed.
func (w *Writer) Commit(ctx context.Context, size int64, expected digest.Digest) error {
	if err := w.checkOpen(); err != nil {
		return err
	}
	if expected != "" {
		if err := validateDigest(expected); err != nil {
			return err
		}
	}
	if size < 0 {
		return errdefs.InvalidArgument("size", "%d is negative", size)
	}
	if size > 0 && size != w.offset {
		return fmt.Errorf("ingest %q: unexpected commit size %d, expected %d: %w",
			truncate(w.ref), w.offset, size, errdefs.ErrFailedPrecondition)
	}
	if w.total > 0 && w.total != w.offset {
		return fmt.Errorf("ingest %q: unexpected commit size %d, expected total %d: %w",
			truncate(w.ref), w.offset, w.total, errdefs.ErrFailedPrecondition)
	}
	actual := w.Digest()
	for _, want := range []digest.Digest{expected, w.expected} {
		if want != "" && want != actual {
			return fmt.Errorf("ingest %q: unexpected commit digest %s, expected %s: %w",
				truncate(w.ref), actual, want, errdefs.ErrFailedPrecondition)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	defer w.Close()

	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("ingest %q: fsync: %w", truncate(w.ref), err)
	}
	if err := w.f.Chmod(0o444); err != nil {
		return fmt.Errorf("ingest %q: %w", truncate(w.ref), err)
	}
	target := w.s.blobPath(actual)
	err := renameNoReplace(filepath.Join(w.dir, fileData), target)
	if errors.Is(err, fs.ErrExist) {
		if rerr := os.RemoveAll(w.dir); rerr != nil {
			return fmt.Errorf("%w (removing ingest: %v)", &ExistsError{Digest: actual}, rerr)
		}
		return &ExistsError{Digest: actual}
	}
	if err != nil {
		return fmt.Errorf("ingest %q: commit: %w", truncate(w.ref), err)
	}
	if err := atomicfile.SyncDir(w.s.blobsDir); err != nil {
		return fmt.Errorf("ingest %q: commit: %w", truncate(w.ref), err)
	}
	if err := os.RemoveAll(w.dir); err != nil && !errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("ingest %q: committed, but removing the ingest failed: %w", truncate(w.ref), err)
	}
	// ENOTEMPTY: a writer in another process opening the same ingest
	// created a data file in it after the commit moved ours away. That
	// writer finds the blob complete once it holds its lock and removes
	// the ingest (see openWriter).
	return nil
}

// Close releases the writer. The ingest is kept (see Store.Abort). Closing
// twice is harmless.
func (w *Writer) Close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	w.s.unlock(w.ref)
	if err != nil {
		return fmt.Errorf("ingest %q: %w", truncate(w.ref), err)
	}
	return nil
}
