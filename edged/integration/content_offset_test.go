package integration

import (
	"bytes"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	contentapi "github.com/edged/edged/proto/services/content/v1"
)

// TestContentWriteOffsets drives Write's offsets with raw stream messages.
// The first message's offset must be the ingest's current one (resume) or
// 0, which starts the ingest over, as containerd's content service does.
// A data message's offset, when given, must be where the ingest is; 0 means
// "where it is" (edged's client sends no offsets after the first message).
func TestContentWriteOffsets(t *testing.T) {
	d := startDaemon(t)
	cl := newClient(t, d)
	ctx := ctxT(t)
	api := contentapi.NewContentClient(cl.Caller())
	data := bytes.Repeat([]byte("edged!"), 1000)
	dgst := digest.FromBytes(data)
	// write sends msgs on one Write stream and returns the answer.
	write := func(msgs ...*contentapi.WriteContentRequest) (*contentapi.WriteContentResponse, error) {
		t.Helper()
		s, err := api.Write(ctx)
		if err != nil {
			t.Fatal(err)
		}
		msgs[0].Namespace = cl.Namespace()
		for _, m := range msgs {
			if err := s.Send(m); err != nil {
				break // the answer says why
			}
		}
		resp, err := s.CloseAndRecv()
		return resp, client.ConvertError(err)
	}

	if _, err := cl.WriteContent(ctx, "r", bytes.NewReader([]byte("garbage that is not the blob")), client.WriteContentOpts{NoCommit: true}); err != nil {
		t.Fatal(err)
	}
	// A first message at neither 0 nor the current offset (28).
	_, err := write(&contentapi.WriteContentRequest{Ref: "r", Offset: 5, Data: data})
	wantErr(t, err, errdefs.ErrFailedPrecondition, `ingest "r" is at offset 28, the write starts at 5; resume at the offset Status reports, or start at 0`)
	if st, err := cl.IngestStatus(ctx, "r"); err != nil || st.Offset != 28 {
		t.Fatalf("ingest after the refused write: %+v %v, want it untouched at 28", st, err)
	}
	// Offset 0 starts the ingest over: the garbage is gone.
	resp, err := write(&contentapi.WriteContentRequest{Ref: "r", Offset: 0, Expected: dgst.String()},
		&contentapi.WriteContentRequest{Offset: 0, Data: data[:100]},
		&contentapi.WriteContentRequest{Offset: 100, Data: data[100:]},
		&contentapi.WriteContentRequest{Commit: true, Total: int64(len(data)), Expected: dgst.String()})
	if err != nil || resp.Digest != dgst.String() || resp.Offset != int64(len(data)) || !resp.Committed {
		t.Fatalf("write started over: %+v %v", resp, err)
	}
	var buf bytes.Buffer
	if err := cl.ReadContent(ctx, dgst.String(), 0, 0, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("blob read back: %d bytes %v", buf.Len(), err)
	}
	// A data message at the wrong offset fails the write; the ingest keeps
	// what came before it.
	_, err = write(&contentapi.WriteContentRequest{Ref: "s"},
		&contentapi.WriteContentRequest{Data: []byte("abc")},
		&contentapi.WriteContentRequest{Offset: 7, Data: []byte("def")})
	wantErr(t, err, errdefs.ErrFailedPrecondition, "write: data at offset 7, but the ingest is at 3")
	if st, err := cl.IngestStatus(ctx, "s"); err != nil || st.Offset != 3 {
		t.Fatalf("ingest after the refused data: %+v %v, want 3 bytes", st, err)
	}
}
