package integration

import (
	"bytes"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
)

// TestContentWriteResumeReadLabels drives the Content, Snapshots and Leases
// services of the real daemon: a write interrupted after some bytes is
// resumed at the offset Status reports; an abort removes the partial
// ingest; reads stream; labels are stored; namespaces see only their blobs.
func TestContentWriteResumeReadLabels(t *testing.T) {
	d := startDaemon(t)
	cl := newClient(t, d)
	ctx := ctxT(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 200<<10) // 3.2 MiB
	dgst := digest.FromBytes(data)

	// Write half, without committing.
	_, err := cl.WriteContent(ctx, "blob-1", bytes.NewReader(data[:len(data)/2]), client.WriteContentOpts{Total: int64(len(data)), Expected: dgst.String(), NoCommit: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.IngestStatus(ctx, "blob-1")
	if err != nil || st.Offset != int64(len(data)/2) || st.Total != int64(len(data)) {
		t.Fatalf("status %+v %v", st, err)
	}
	// Resume: the client skips what the daemon has.
	got, err := cl.WriteContent(ctx, "blob-1", bytes.NewReader(data), client.WriteContentOpts{Total: int64(len(data)), Expected: dgst.String(), Labels: map[string]string{"containerd.io/gc.root": "x"}})
	if err != nil || got != dgst.String() {
		t.Fatalf("resumed write: %q %v", got, err)
	}
	_, err = cl.IngestStatus(ctx, "blob-1")
	wantErr(t, err, errdefs.ErrNotFound, `ingest "blob-1"`)
	info, err := cl.ContentInfo(ctx, dgst.String())
	if err != nil || info.Size_ != int64(len(data)) || info.Labels["containerd.io/gc.root"] != "x" {
		t.Fatalf("info %+v %v", info, err)
	}
	var buf bytes.Buffer
	if err := cl.ReadContent(ctx, dgst.String(), 16, 32, &buf); err != nil || buf.String() != string(data[16:48]) {
		t.Fatalf("read %q %v", buf.String(), err)
	}
	buf.Reset()
	if err := cl.ReadContent(ctx, dgst.String(), 0, 0, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("full read: %d bytes %v", buf.Len(), err)
	}
	// gc keeps the gc.root-labelled blob.
	if _, err := cl.GarbageCollect(ctx); err != nil {
		t.Fatal(err)
	}
	if list, err := cl.ListContent(ctx); err != nil || len(list) != 1 {
		t.Fatalf("list %v %v", list, err)
	}

	// Another namespace does not see it; writing the same bytes there
	// only adds a reference.
	other := cl.WithNamespace(ctx, "other")
	_, err = cl.ContentInfo(other, dgst.String())
	wantErr(t, err, errdefs.ErrNotFound, "")
	if got, err := cl.WriteContent(other, "b", bytes.NewReader(data), client.WriteContentOpts{Expected: dgst.String()}); err != nil || got != dgst.String() {
		t.Fatalf("write in other: %q %v", got, err)
	}

	// Abort, and errors.
	_, err = cl.WriteContent(ctx, "blob-2", bytes.NewReader(data[:100]), client.WriteContentOpts{NoCommit: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.AbortIngest(ctx, "blob-2"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, cl.AbortIngest(ctx, "blob-2"), errdefs.ErrNotFound, `ingest "blob-2"`)
	_, err = cl.WriteContent(ctx, "blob-3", bytes.NewReader([]byte("abc")), client.WriteContentOpts{Expected: digest.FromString("other").String()})
	wantErr(t, err, errdefs.ErrFailedPrecondition, "unexpected commit digest")
	_, err = cl.WriteContent(ctx, "", bytes.NewReader(nil), client.WriteContentOpts{})
	wantErr(t, err, errdefs.ErrInvalidArgument, "ref: must not be empty")
	wantErr(t, cl.ReadContent(ctx, dgst.String(), int64(len(data))+1, 0, &buf), errdefs.ErrInvalidArgument, "offset")
	wantErr(t, cl.ReadContent(ctx, digest.FromString("nope").String(), 0, 0, &buf), errdefs.ErrNotFound, "")

	// Snapshots and leases.
	_, err = cl.StatSnapshot(ctx, "nothere")
	wantErr(t, err, errdefs.ErrNotFound, `snapshot "nothere" in namespace "default"`)
	wantErr(t, cl.RemoveSnapshot(ctx, "nothere"), errdefs.ErrNotFound, "")
	l, err := cl.CreateLease(ctx, "", map[string]string{"k": "v"}, 60)
	if err != nil || l.ExpiresAt == nil {
		t.Fatalf("lease %+v %v", l, err)
	}
	if err := cl.AddLeaseResource(ctx, l.Id, client.LeaseResource{Id: dgst.String(), Type: "content"}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, cl.AddLeaseResource(ctx, l.Id, client.LeaseResource{Id: "x", Type: "bogus"}), errdefs.ErrInvalidArgument, "resource.type")
	if rs, err := cl.ListLeaseResources(ctx, l.Id); err != nil || len(rs) != 1 || rs[0].Type != "content" {
		t.Fatalf("resources %v %v", rs, err)
	}
	if err := cl.DeleteLease(ctx, l.Id, true); err != nil {
		t.Fatal(err)
	}
	wantErr(t, cl.DeleteLease(ctx, l.Id, false), errdefs.ErrNotFound, "")
}
