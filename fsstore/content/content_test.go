package content

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/edged/edged/edged/errdefs"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func wantErr(t *testing.T, err, kind error, substrs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected %v error, got nil", kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("expected errors.Is(%v), got %v", kind, err)
	}
	for _, s := range substrs {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not contain %q", err, s)
		}
	}
}

func ingestEntries(t *testing.T, s *Store) []string {
	t.Helper()
	ents, err := os.ReadDir(s.ingestDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func blobFiles(t *testing.T, s *Store) []string {
	t.Helper()
	ents, err := os.ReadDir(s.blobsDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func writeBlob(t *testing.T, s *Store, ref string, data []byte) digest.Digest {
	t.Helper()
	ctx := context.Background()
	dgst := digest.FromBytes(data)
	w, err := s.Writer(ctx, ref, WriterOpts{Expected: dgst, Total: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, int64(len(data)), dgst); err != nil {
		t.Fatal(err)
	}
	return dgst
}

func TestWriteCommitReadWalkDelete(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := randBytes(300_000, 1)
	dgst := digest.FromBytes(data)

	w, err := s.Writer(ctx, "layer-1", WriterOpts{Total: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	// In chunks, as a puller would.
	for off := 0; off < len(data); off += 7000 {
		end := min(off+7000, len(data))
		if _, err := w.Write(data[off:end]); err != nil {
			t.Fatal(err)
		}
	}
	if w.Offset() != int64(len(data)) || w.Digest() != dgst {
		t.Fatalf("offset %d digest %s, want %d %s", w.Offset(), w.Digest(), len(data), dgst)
	}
	st, err := s.Status(ctx, "layer-1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Ref != "layer-1" || st.Offset != int64(len(data)) || st.Total != int64(len(data)) || st.StartedAt.IsZero() {
		t.Fatalf("status %+v", st)
	}
	// Not visible before commit.
	if _, err := s.Info(ctx, dgst); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("blob visible before commit: %v", err)
	}
	if err := w.Commit(ctx, int64(len(data)), dgst); err != nil {
		t.Fatal(err)
	}
	if got := ingestEntries(t, s); len(got) != 0 {
		t.Fatalf("ingest left after commit: %v", got)
	}
	if _, err := s.Status(ctx, "layer-1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("status after commit: %v", err)
	}
	// The writer is closed after commit; the ref is free again.
	if _, err := w.Write([]byte("x")); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("write after commit: %v", err)
	}

	info, err := s.Info(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(data)) || info.Digest != dgst || time.Since(info.CreatedAt) > time.Minute {
		t.Fatalf("info %+v", info)
	}
	fi, err := os.Stat(filepath.Join(s.Root(), "blobs", "sha256", dgst.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 {
		t.Fatalf("blob mode %v, want read-only", fi.Mode())
	}

	r, err := s.ReaderAt(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	if r.Size() != int64(len(data)) {
		t.Fatalf("reader size %d", r.Size())
	}
	got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	part := make([]byte, 10)
	if _, err := r.ReadAt(part, 1000); err != nil || !bytes.Equal(part, data[1000:1010]) {
		t.Fatalf("ReadAt: %v", err)
	}
	r.Close()

	d2 := writeBlob(t, s, "other", []byte("hello"))
	var walked []string
	if err := s.Walk(ctx, func(i Info) error { walked = append(walked, i.Digest.String()); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Strings(walked)
	want := []string{dgst.String(), d2.String()}
	sort.Strings(want)
	if strings.Join(walked, ",") != strings.Join(want, ",") {
		t.Fatalf("walk %v, want %v", walked, want)
	}
	stop := errors.New("stop")
	if err := s.Walk(ctx, func(Info) error { return stop }); err != stop {
		t.Fatalf("walk error %v", err)
	}

	if err := s.Delete(ctx, dgst); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Delete(ctx, dgst), errdefs.ErrNotFound, dgst.String())
	_, err = s.ReaderAt(ctx, dgst)
	wantErr(t, err, errdefs.ErrNotFound, dgst.String())
	_, err = s.Info(ctx, dgst)
	wantErr(t, err, errdefs.ErrNotFound, dgst.String())
}

func TestEmptyBlob(t *testing.T) {
	s := newStore(t)
	dgst := writeBlob(t, s, "empty", nil)
	if dgst != digest.FromBytes(nil) {
		t.Fatal(dgst)
	}
	info, err := s.Info(context.Background(), dgst)
	if err != nil || info.Size != 0 {
		t.Fatalf("%+v %v", info, err)
	}
}

func TestCommitDigestMismatchKeepsBlobInvisible(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := []byte("the real content")
	good := digest.FromBytes(data)
	bad := digest.FromString("something else")

	w, err := s.Writer(ctx, "ref-bad", WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	err = w.Commit(ctx, int64(len(data)), bad)
	wantErr(t, err, errdefs.ErrFailedPrecondition, "unexpected commit digest", good.String(), bad.String())
	if got := blobFiles(t, s); len(got) != 0 {
		t.Fatalf("bad ingest became a blob: %v", got)
	}
	if _, err := s.Info(ctx, bad); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := s.Info(ctx, good); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatal(err)
	}
	// The ingest is kept and the writer still usable.
	st, err := s.Status(ctx, "ref-bad")
	if err != nil || st.Offset != int64(len(data)) {
		t.Fatalf("status %+v %v", st, err)
	}
	if err := w.Commit(ctx, int64(len(data)), good); err != nil {
		t.Fatal(err)
	}
	if got := blobFiles(t, s); len(got) != 1 || got[0] != good.Encoded() {
		t.Fatalf("blobs %v", got)
	}
}

func TestCommitExpectedFromOpts(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	want := digest.FromString("abc")
	w, err := s.Writer(ctx, "r", WriterOpts{Expected: want})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("abd"))
	err = w.Commit(ctx, 0, "")
	wantErr(t, err, errdefs.ErrFailedPrecondition, want.String(), digest.FromString("abd").String())
	if len(blobFiles(t, s)) != 0 {
		t.Fatal("blob visible")
	}
}

func TestCommitSizeMismatch(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	w, err := s.Writer(ctx, "r", WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("12345"))
	err = w.Commit(ctx, 6, "")
	wantErr(t, err, errdefs.ErrFailedPrecondition, "unexpected commit size 5, expected 6")
	if len(blobFiles(t, s)) != 0 {
		t.Fatal("blob visible")
	}

	w2, err := s.Writer(ctx, "r2", WriterOpts{Total: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	w2.Write([]byte("12345"))
	err = w2.Commit(ctx, 0, "")
	wantErr(t, err, errdefs.ErrFailedPrecondition, "unexpected commit size 5, expected total 10")
	_, err = w2.Write([]byte("123456"))
	wantErr(t, err, errdefs.ErrInvalidArgument, "exceeds the total of 10")
	if w2.Offset() != 5 {
		t.Fatalf("rejected write changed offset to %d", w2.Offset())
	}
	if len(blobFiles(t, s)) != 0 {
		t.Fatal("blob visible")
	}
}

func TestCommitAlreadyExists(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := []byte("dup")
	dgst := writeBlob(t, s, "a", data)

	// Without Expected the writer opens; the commit finds the blob.
	w, err := s.Writer(ctx, "b", WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	wantErr(t, w.Commit(ctx, 3, dgst), errdefs.ErrAlreadyExists, dgst.String())
	if got := ingestEntries(t, s); len(got) != 0 {
		t.Fatalf("ingest kept after already-exists commit: %v", got)
	}
	// With Expected, opening the writer already says so.
	_, err = s.Writer(ctx, "c", WriterOpts{Expected: dgst})
	wantErr(t, err, errdefs.ErrAlreadyExists, dgst.String())
	// The committed blob is intact.
	r, err := s.ReaderAt(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, _ := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if string(got) != "dup" {
		t.Fatalf("%q", got)
	}
}

func TestRefLocked(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	w, err := s.Writer(ctx, "busy", WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Writer(ctx, "busy", WriterOpts{})
	wantErr(t, err, errdefs.ErrUnavailable, `ref "busy" locked`)
	wantErr(t, s.Abort(ctx, "busy"), errdefs.ErrUnavailable, "locked")
	// Cleanup keeps the active ingest however old it is.
	if err := s.Cleanup(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Status(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal("second close:", err)
	}
	w2, err := s.Writer(ctx, "busy", WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	w2.Close()
}

func TestAbortAndListStatuses(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for _, ref := range []string{"one", "two"} {
		w, err := s.Writer(ctx, ref, WriterOpts{Total: 100})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(ref))
		w.Close()
	}
	sts, err := s.ListStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, st := range sts {
		got[st.Ref] = st.Offset
	}
	if len(got) != 2 || got["one"] != 3 || got["two"] != 3 {
		t.Fatalf("statuses %+v", sts)
	}
	if err := s.Abort(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Abort(ctx, "one"), errdefs.ErrNotFound, `"one"`)
	_, err = s.Status(ctx, "one")
	wantErr(t, err, errdefs.ErrNotFound)
	sts, _ = s.ListStatuses(ctx)
	if len(sts) != 1 || sts[0].Ref != "two" {
		t.Fatalf("statuses after abort %+v", sts)
	}
}

func TestResumeAfterClose(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := randBytes(1<<20+123, 7)
	dgst := digest.FromBytes(data)
	half := len(data) / 2

	w, err := s.Writer(ctx, "resume", WriterOpts{Expected: dgst, Total: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data[:half])
	w.Close()

	// Reopen without opts: expected and total are remembered.
	w, err = s.Writer(ctx, "resume", WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Offset() != int64(half) {
		t.Fatalf("resumed at %d, want %d", w.Offset(), half)
	}
	st, _ := w.Status()
	if st.Expected != dgst || st.Total != int64(len(data)) {
		t.Fatalf("status %+v", st)
	}
	if _, err := w.Write(data[half:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, 0, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Info(ctx, dgst); err != nil {
		t.Fatal(err)
	}
}

func TestResumeConflictingOpts(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d1 := digest.FromString("one")
	d2 := digest.FromString("two")
	w, err := s.Writer(ctx, "r", WriterOpts{Expected: d1, Total: 3})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	_, err = s.Writer(ctx, "r", WriterOpts{Expected: d2})
	wantErr(t, err, errdefs.ErrFailedPrecondition, d1.String(), d2.String(), "abort it first")
	_, err = s.Writer(ctx, "r", WriterOpts{Total: 4})
	wantErr(t, err, errdefs.ErrFailedPrecondition, "total 3, not 4")
	// The failed opens released the lock.
	if err := s.Abort(ctx, "r"); err != nil {
		t.Fatal(err)
	}
}

func TestTruncate(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	w, err := s.Writer(ctx, "t", WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("hello world"))
	wantErr(t, w.Truncate(20), errdefs.ErrInvalidArgument, "to 20")
	if err := w.Truncate(5); err != nil {
		t.Fatal(err)
	}
	if w.Digest() != digest.FromString("hello") {
		t.Fatal("digest not rewound")
	}
	w.Write([]byte(" there"))
	want := digest.FromString("hello there")
	if err := w.Commit(ctx, 11, want); err != nil {
		t.Fatal(err)
	}
	r, err := s.ReaderAt(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if string(b) != "hello there" {
		t.Fatalf("%q", b)
	}
}

func TestInvalidInput(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	badDigests := []struct {
		d    digest.Digest
		want string
	}{
		{"", "must not be empty"},
		{"sha256:../../../etc/passwd", "invalid checksum digest length"},
		{"sha256:" + digest.Digest(strings.Repeat("../", 20)+"etca"), "invalid checksum digest format"},
		{"sha256:" + digest.Digest(strings.Repeat("A", 64)), "invalid checksum digest format"},
		{"sha256:abc", "invalid checksum digest length"},
		{"sha512:" + digest.Digest(strings.Repeat("ab", 64)), "unsupported algorithm"},
		{"md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported algorithm"},
		{"../../x", "unsupported algorithm"},
	}
	for _, tc := range badDigests {
		_, err := s.Info(ctx, tc.d)
		wantErr(t, err, errdefs.ErrInvalidArgument, "digest", tc.want)
		_, err = s.ReaderAt(ctx, tc.d)
		wantErr(t, err, errdefs.ErrInvalidArgument, tc.want)
		wantErr(t, s.Delete(ctx, tc.d), errdefs.ErrInvalidArgument, tc.want)
		if tc.d != "" {
			_, err = s.Writer(ctx, "x", WriterOpts{Expected: tc.d})
			wantErr(t, err, errdefs.ErrInvalidArgument, tc.want)
		}
	}
	badRefs := []struct {
		ref, want string
	}{
		{"", "must not be empty"},
		{strings.Repeat("r", MaxRefLength+1), "longer than the maximum of 1024"},
		{"a\x00b", "NUL"},
		{"\xff\xfe", "UTF-8"},
	}
	for _, tc := range badRefs {
		_, err := s.Writer(ctx, tc.ref, WriterOpts{})
		wantErr(t, err, errdefs.ErrInvalidArgument, "ref", tc.want)
		_, err = s.Status(ctx, tc.ref)
		wantErr(t, err, errdefs.ErrInvalidArgument, tc.want)
		wantErr(t, s.Abort(ctx, tc.ref), errdefs.ErrInvalidArgument, tc.want)
	}
	_, err := s.Writer(ctx, "neg", WriterOpts{Total: -1})
	wantErr(t, err, errdefs.ErrInvalidArgument, "total", "negative")

	// Path-like refs are fine as refs but never become paths.
	for _, ref := range []string{"../../../../tmp/evil", "/etc/passwd", "a/b/c", "."} {
		w, err := s.Writer(ctx, ref, WriterOpts{})
		if err != nil {
			t.Fatalf("ref %q: %v", ref, err)
		}
		w.Write([]byte(ref))
		w.Close()
		if _, err := os.Stat(filepath.Join(s.ingestDir, ingestName(ref), "data")); err != nil {
			t.Fatalf("ref %q not stored under its hash: %v", ref, err)
		}
	}
	for _, e := range ingestEntries(t, s) {
		if !isIngestName(e) {
			t.Fatalf("unexpected ingest entry %q", e)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(s.Root()), "tmp")); err == nil {
		t.Fatal("path trick escaped the root")
	}
}

func TestCleanup(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for _, ref := range []string{"old", "new"} {
		w, err := s.Writer(ctx, ref, WriterOpts{})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("data"))
		w.Close()
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(s.ingestDir, ingestName("old"), "data"), old, old); err != nil {
		t.Fatal(err)
	}
	// A crash while creating an ingest leaves a temporary dir; a broken one
	// has no ref file.
	must(t, os.Mkdir(filepath.Join(s.ingestDir, tmpPrefix+ingestName("x")+"-abcdef"), 0o700))
	must(t, os.Mkdir(filepath.Join(s.ingestDir, ingestName("broken")), 0o700))
	must(t, os.WriteFile(filepath.Join(s.ingestDir, "junk"), nil, 0o600))

	if err := s.Cleanup(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	got := ingestEntries(t, s)
	if len(got) != 1 || got[0] != ingestName("new") {
		t.Fatalf("after cleanup: %v (want only %s)", got, ingestName("new"))
	}
	if err := s.Cleanup(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if got := ingestEntries(t, s); len(got) != 0 {
		t.Fatalf("after cleanup(0): %v", got)
	}
}

func TestBrokenIngestIsRestarted(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	// An ingest directory whose ref file is gone (fs damage) is discarded
	// when the ref is opened again.
	dir := filepath.Join(s.ingestDir, ingestName("r"))
	must(t, os.Mkdir(dir, 0o700))
	must(t, os.WriteFile(filepath.Join(dir, "data"), []byte("garbage"), 0o600))
	_, err := s.Status(ctx, "r")
	wantErr(t, err, errdefs.ErrDataLoss, "broken")
	w, err := s.Writer(ctx, "r", WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Offset() != 0 {
		t.Fatalf("offset %d", w.Offset())
	}
}

// The ingest's small files are not fsynced: a power loss can leave them
// empty (delayed allocation). Such an ingest is found broken and starts over;
// the blob it then commits is complete and verified.
func TestIngestWithEmptyMetadataAfterPowerLossStartsOver(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := randBytes(100<<10, 7)
	dgst := digest.FromBytes(data)
	w, err := s.Writer(ctx, "pl", WriterOpts{Total: int64(len(data)), Expected: dgst})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:50<<10]); err != nil {
		t.Fatal(err)
	}
	must(t, w.Close())
	dir := filepath.Join(s.ingestDir, ingestName("pl"))
	for _, name := range []string{fileRef, fileStartedAt, fileTotal, fileExpected} {
		must(t, os.Truncate(filepath.Join(dir, name), 0))
	}
	_, err = s.Status(ctx, "pl")
	wantErr(t, err, errdefs.ErrDataLoss, "broken")
	w, err = s.Writer(ctx, "pl", WriterOpts{Total: int64(len(data)), Expected: dgst})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Offset() != 0 {
		t.Fatalf("offset %d after the broken ingest, want a fresh start at 0", w.Offset())
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, int64(len(data)), dgst); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(s.blobsDir, dgst.Encoded()))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob after restart: %d bytes, err %v", len(got), err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

const killEnv = "EDGED_CONTENT_TEST_KILL_ROOT"

// killChild runs in the re-executed test binary: it writes the first half of
// the blob, tells the parent and waits to be SIGKILLed, without Close or
// Commit.
func killChild() {
	root := os.Getenv(killEnv)
	s, err := New(root)
	if err != nil {
		panic(err)
	}
	data := randBytes(3<<20+17, 42)
	w, err := s.Writer(context.Background(), "killed-ref", WriterOpts{Total: int64(len(data))})
	if err != nil {
		panic(err)
	}
	half := len(data) / 2
	for off := 0; off < half; off += 32 << 10 {
		if _, err := w.Write(data[off:min(off+32<<10, half)]); err != nil {
			panic(err)
		}
	}
	os.Stdout.WriteString("ready\n")
	time.Sleep(time.Hour) // until SIGKILLed (select{} would trip the deadlock detector)
	os.Exit(3)
}

func TestMain(m *testing.M) {
	if os.Getenv(killEnv) != "" {
		killChild()
	}
	os.Exit(m.Run())
}

func TestResumeAfterKill(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), killEnv+"="+root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: %q %v", line, err)
	}
	must(t, cmd.Process.Signal(syscall.SIGKILL))
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v", err)
	}

	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(3<<20+17, 42)
	half := len(data) / 2
	dgst := digest.FromBytes(data)
	if got := blobFiles(t, s); len(got) != 0 {
		t.Fatalf("blob visible after kill: %v", got)
	}
	st, err := s.Status(ctx, "killed-ref")
	if err != nil {
		t.Fatal(err)
	}
	if st.Offset != int64(half) || st.Total != int64(len(data)) {
		t.Fatalf("status after kill %+v, want offset %d", st, half)
	}
	// The flock died with the child: the ref can be reopened and resumes.
	w, err := s.Writer(ctx, "killed-ref", WriterOpts{Expected: dgst})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Offset() != int64(half) {
		t.Fatalf("resumed at %d, want %d", w.Offset(), half)
	}
	if w.Digest() != digest.FromBytes(data[:half]) {
		t.Fatal("resumed digest differs from the hash of the first half")
	}
	if _, err := io.Copy(w, bytes.NewReader(data[w.Offset():])); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, int64(len(data)), dgst); err != nil {
		t.Fatal(err)
	}
	r, err := s.ReaderAt(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, _ := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if !bytes.Equal(got, data) {
		t.Fatal("resumed blob differs")
	}
}

func TestCrossProcessFlock(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	w, err := s.Writer(ctx, "shared", WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// A second Store on the same root stands in for a second process: its
	// in-process lock table is separate, so only the flock protects the ref.
	s2, err := New(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	_, err = s2.Writer(ctx, "shared", WriterOpts{})
	wantErr(t, err, errdefs.ErrUnavailable, "locked by another process")
}

// TestIngestLockedByAnotherProcess: edged and its registry helper share the
// store. A Writer's flock is held per open file description, so a lock
// taken here through a second descriptor of the data file stands in for the
// helper's Writer: Abort and Cleanup leave such an ingest alone and a second
// Writer is told to wait.
func TestIngestLockedByAnotherProcess(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	w, err := s.Writer(ctx, "pull-x", WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	f, err := os.Open(filepath.Join(s.ingestPath("pull-x"), fileData))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(ctx, "pull-x"); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "another process") {
		t.Errorf("Abort: %v, want unavailable", err)
	}
	if _, err := s.Writer(ctx, "pull-x", WriterOpts{}); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("second Writer: %v, want unavailable", err)
	}
	if err := s.Cleanup(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Status(ctx, "pull-x"); err != nil {
		t.Errorf("Cleanup removed a locked ingest: %v", err)
	}
	// Unlocked, it is an ordinary stale ingest again.
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if err := s.Cleanup(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Status(ctx, "pull-x"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Cleanup kept a stale unlocked ingest: %v", err)
	}
}

// TestWriterAfterBlobCommittedElsewhere: a Writer for a blob already
// committed (by this process or another) gets ErrAlreadyExists and leaves no
// ingest behind. The race of a commit during the open is exercised with
// real helper processes in edged/registry (TestConcurrentPullsShareBlobs).
func TestWriterAfterBlobCommittedElsewhere(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	data := []byte("committed by someone else")
	d := digest.FromBytes(data)
	writeBlob(t, s, "other", data)
	if _, err := s.Writer(ctx, "pull-"+d.String(), WriterOpts{Expected: d}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("Writer: %v, want already exists", err)
	}
	if sts, _ := s.ListStatuses(ctx); len(sts) != 0 {
		t.Fatalf("ingests left: %+v", sts)
	}
}

// A resumable ingest left behind (its writer closed, or its process gone)
// for content that was then committed under another ref is removed by the
// next Writer for its ref that expects that content: the caller gets
// ErrAlreadyExists and no ingest stays until Cleanup finds it stale. An
// ingest that expects other content, and one whose writer is open, stay.
func TestWriterRemovesIngestOfCommittedContent(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	data := []byte("layer committed by another pull")
	d := digest.FromBytes(data)
	leftover := func(ref string, expected digest.Digest) *Writer {
		t.Helper()
		w, err := s.Writer(ctx, ref, WriterOpts{Expected: expected})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data[:10]); err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := leftover("pull-"+d.String(), d)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	other := digest.FromBytes([]byte("something else"))
	w = leftover("unrelated", other)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	open := leftover("pull-open", d)
	defer open.Close()

	writeBlob(t, s, "other", data)

	_, err := s.Writer(ctx, "pull-"+d.String(), WriterOpts{Expected: d})
	wantErr(t, err, errdefs.ErrAlreadyExists, d.String())
	if _, err := s.Status(ctx, "pull-"+d.String()); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the leftover ingest of committed content is still there: %v", err)
	}

	_, err = s.Writer(ctx, "unrelated", WriterOpts{Expected: d})
	wantErr(t, err, errdefs.ErrAlreadyExists, d.String())
	if st, err := s.Status(ctx, "unrelated"); err != nil || st.Expected != other || st.Offset != 10 {
		t.Fatalf("the ingest expecting other content: %+v, %v; want it kept", st, err)
	}

	_, err = s.Writer(ctx, "pull-open", WriterOpts{Expected: d})
	wantErr(t, err, errdefs.ErrAlreadyExists, d.String())
	if st, err := s.Status(ctx, "pull-open"); err != nil || st.Offset != 10 {
		t.Fatalf("the ingest with an open writer: %+v, %v; want it kept", st, err)
	}
	if _, err := open.Write(data[10:]); err != nil {
		t.Fatalf("the open writer after the other Writer call: %v", err)
	}
}

// TestResumeWithoutExpectedAfterBlobCommittedElsewhere: an ingest started
// with an expected digest, resumed by a Writer that does not repeat it, after
// the same content was committed under another ref: Writer fails with an
// *ExistsError naming the digest the ingest stored, since the caller does not
// know it and needs it to reference the blob, and the ingest is gone.
func TestResumeWithoutExpectedAfterBlobCommittedElsewhere(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	data := []byte("content the ingest expected")
	d := digest.FromBytes(data)
	w, err := s.Writer(ctx, "resume", WriterOpts{Expected: d})
	must(t, err)
	if _, err := w.Write(data[:5]); err != nil {
		t.Fatal(err)
	}
	must(t, w.Close())
	writeBlob(t, s, "other", data)

	_, err = s.Writer(ctx, "resume", WriterOpts{})
	var exists *ExistsError
	if !errors.As(err, &exists) || exists.Digest != d || !errors.Is(err, errdefs.ErrAlreadyExists) ||
		err.Error() != "content "+d.String()+": already exists" {
		t.Fatalf("Writer resuming without expected: %v, want an *ExistsError for %s", err, d)
	}
	if _, err := s.Status(ctx, "resume"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the ingest of committed content is still there: %v", err)
	}
	// The other ways to find the blob there name it the same way.
	_, err = s.Writer(ctx, "again", WriterOpts{Expected: d})
	if !errors.As(err, &exists) || exists.Digest != d {
		t.Fatalf("Writer with expected: %v, want an *ExistsError for %s", err, d)
	}
	w, err = s.Writer(ctx, "no-expectation", WriterOpts{})
	must(t, err)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, 0, ""); !errors.As(err, &exists) || exists.Digest != d {
		t.Fatalf("Commit: %v, want an *ExistsError for %s", err, d)
	}
}
