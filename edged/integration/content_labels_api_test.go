package integration

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	snapshotsapi "github.com/edged/edged/proto/services/snapshots/v1"
	ptypes "github.com/gogo/protobuf/types"
)

// TestContentResumeAfterBlobCommittedElsewhere: a write resumed without the
// expected digest its ingest was started with, after the same bytes were
// committed under another ref (here by another namespace), succeeds as a
// commit, as a Write of an existing blob does: the namespace gets a
// reference to the blob, with the labels of the write, and the ingest is
// gone. (containerd answers the same for a blob another namespace holds; it
// shares the blob on commit.)
func TestContentResumeAfterBlobCommittedElsewhere(t *testing.T) {
	d := startDaemon(t)
	cl := newClient(t, d)
	ctx := ctxT(t)
	data := bytes.Repeat([]byte("0123456789"), 100)
	dgst := digest.FromBytes(data)

	_, err := cl.WriteContent(ctx, "r", bytes.NewReader(data[:500]), client.WriteContentOpts{Total: int64(len(data)), Expected: dgst.String(), NoCommit: true})
	if err != nil {
		t.Fatal(err)
	}
	other := cl.WithNamespace(ctx, "other")
	if got, err := cl.WriteContent(other, "b", bytes.NewReader(data), client.WriteContentOpts{Expected: dgst.String()}); err != nil || got != dgst.String() {
		t.Fatalf("write in other: %q %v", got, err)
	}
	// The client resumes at the ingest's offset and sends no digest.
	got, err := cl.WriteContent(ctx, "r", bytes.NewReader(data), client.WriteContentOpts{Labels: map[string]string{"resumed": "yes"}})
	if err != nil || got != dgst.String() {
		t.Fatalf("resuming an ingest whose blob now exists: %q, %v; want %s", got, err, dgst)
	}
	info, err := cl.ContentInfo(ctx, dgst.String())
	if err != nil || info.Size_ != int64(len(data)) || info.Labels["resumed"] != "yes" {
		t.Fatalf("info after the resumed write: %+v %v", info, err)
	}
	_, err = cl.IngestStatus(ctx, "r")
	wantErr(t, err, errdefs.ErrNotFound, `ingest "r"`)
}

// TestSnapshotLabelLimitsAPI: the Snapshots service applies the label limits
// of every object (README: 256 labels, 64 KiB, 256-byte keys) to Prepare,
// View, Commit and Update; Update checks the label set it would produce.
func TestSnapshotLabelLimitsAPI(t *testing.T) {
	d := startDaemon(t)
	cl := newClient(t, d)
	ctx := ctxT(t)
	sn := cl.Snapshots()
	many := func(n, valueSize int) map[string]string {
		m := make(map[string]string, n)
		for i := 0; i < n; i++ {
			m[fmt.Sprintf("key-%03d", i)] = strings.Repeat("v", valueSize)
		}
		return m
	}
	wantMsg := func(what string, err error, msg string) {
		t.Helper()
		err = client.ConvertError(err)
		if !errdefs.IsInvalidArgument(err) || err.Error() != msg {
			t.Errorf("%s: err = %v, want InvalidArgument %q", what, err, msg)
		}
	}
	const tooMany = "labels: 257 labels is more than the maximum of 256: invalid argument"

	_, err := sn.Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Key: "many", Labels: many(257, 1)})
	wantMsg("Prepare with 257 labels", err, tooMany)
	_, err = sn.View(ctx, &snapshotsapi.ViewSnapshotRequest{Key: "heavy", Labels: many(17, 4000)})
	wantMsg("View with 68 KB of labels", err, `labels: key "key-016": labels total more than the maximum of 65536 bytes: invalid argument`)
	_, err = sn.Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Key: "longkey", Labels: map[string]string{strings.Repeat("x", 3000): "v"}})
	wantMsg("Prepare with a 3000-byte key", err, `labels: key "`+strings.Repeat("x", 64)+`"... is 3000 bytes, must be 1 to 256: invalid argument`)

	for _, key := range []string{"a", "b"} {
		if _, err := sn.Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Key: key}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = sn.Commit(ctx, &snapshotsapi.CommitSnapshotRequest{Name: "c", Key: "a", Labels: many(257, 1)})
	wantMsg("Commit with 257 labels", err, tooMany)

	var last error
	for i := 0; i < 300 && last == nil; i++ {
		k := fmt.Sprintf("key-%03d", i)
		_, last = sn.Update(ctx, &snapshotsapi.UpdateSnapshotRequest{
			Info:       &snapshotsapi.Info{Name: "b", Labels: map[string]string{k: "v"}},
			UpdateMask: &ptypes.FieldMask{Paths: []string{"labels." + k}},
		})
	}
	wantMsg("Update adding a 257th label", last, tooMany)
	if info, err := cl.StatSnapshot(ctx, "b"); err != nil || len(info.GetLabels()) != 256 {
		t.Fatalf("snapshot b after the updates: %d labels, %v; want 256", len(info.GetLabels()), err)
	}
}

// Label text must be valid UTF-8 without NUL bytes, for every object: a
// namespace and a snapshot here (containers, images, leases and content
// share the check in edged/metadata/labels). Nothing is created.
func TestLabelTextAPI(t *testing.T) {
	d := startDaemon(t)
	cl := newClient(t, d)
	ctx := ctxT(t)
	_, err := cl.CreateNamespace(ctx, "badlabels", map[string]string{"k": "a\xffb"})
	if err = client.ConvertError(err); !errdefs.IsInvalidArgument(err) || err.Error() != `labels: value of key "k" is not valid UTF-8: invalid argument` {
		t.Errorf("namespace with an invalid UTF-8 label: %v", err)
	}
	if _, err := cl.GetNamespace(ctx, "badlabels"); !errdefs.IsNotFound(err) {
		t.Errorf("namespace created despite its label: %v", err)
	}
	_, err = cl.Snapshots().Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Key: "nul", Labels: map[string]string{"a\x00": "v"}})
	if err = client.ConvertError(err); !errdefs.IsInvalidArgument(err) || err.Error() != `labels: key "a\x00" contains a NUL byte: invalid argument` {
		t.Errorf("snapshot with a NUL in a label key: %v", err)
	}
}
