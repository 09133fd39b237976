package ttrpcwire

import (
	"bytes"
	"strings"
	"testing"

	"github.com/containerd/ttrpc"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
)

// The hand-written envelopes encode and decode exactly as ttrpc's
// generated (protobuf-go) messages do.
func TestEnvelopesMatchTTRPC(t *testing.T) {
	long := strings.Repeat("m", 200)
	big := bytes.Repeat([]byte{1, 2}, 40000)
	for _, r := range []struct {
		service, method string
		payload         []byte
		timeout         int64
		md              []KeyValue
	}{
		{"containerd.task.v2.Task", "Create", []byte{0x0a, 0x01, 'x'}, 5e9, nil},
		{"s", "m", nil, 0, nil},
		{long, long, big, 1, nil},
		{"edged.services.version.v1.Version", "Version", nil, 30e9, []KeyValue{{"containerd-namespace-ttrpc", "default"}, {"k", ""}, {"", long}}},
	} {
		var md []*ttrpc.KeyValue
		for _, kv := range r.md {
			md = append(md, &ttrpc.KeyValue{Key: kv.Key, Value: kv.Value})
		}
		want, err := proto.Marshal(&ttrpc.Request{Service: r.service, Method: r.method, Payload: r.payload, TimeoutNano: r.timeout, Metadata: md})
		if err != nil {
			t.Fatal(err)
		}
		f := AppendRequest(NewFrame(3, TypeRequest, FlagRemoteOpen, RequestSize(r.service, r.method, r.payload, r.timeout, r.md)), r.service, r.method, r.payload, r.timeout, r.md)
		if got := f[HeaderLen:]; !bytes.Equal(got, want) || cap(f) != len(f) {
			t.Errorf("request %.20q/%.20q: got %d bytes (cap %d), want %d; equal %v", r.service, r.method, len(got), cap(f)-HeaderLen, len(want), bytes.Equal(got, want))
		}
		h, err := ReadHeader(bytes.NewReader(f), new([HeaderLen]byte))
		if err != nil || h != (Header{Length: uint32(len(want)), Stream: 3, Type: TypeRequest, Flags: FlagRemoteOpen}) {
			t.Errorf("header %+v, %v", h, err)
		}
		// Decoding gives back what ttrpc's client encoded, metadata in order.
		d, err := DecodeRequest(want)
		if err != nil || string(d.Service) != r.service || string(d.Method) != r.method || !bytes.Equal(d.Payload, r.payload) || d.TimeoutNano != r.timeout {
			t.Errorf("decodeRequest: %+v, %v", d, err)
		}
		if len(d.Metadata) != len(r.md) {
			t.Errorf("decodeRequest metadata: %q, want %q", d.Metadata, r.md)
		}
		for i := range min(len(d.Metadata), len(r.md)) {
			if d.Metadata[i] != r.md[i] {
				t.Errorf("decodeRequest metadata %d: %q, want %q", i, d.Metadata[i], r.md[i])
			}
		}
	}
	for _, r := range []struct {
		code    uint32
		message string
		payload []byte
	}{
		{0, "", nil},
		{0, "", []byte{0x0a, 0x00}},
		{5, `container "c": not found`, nil},
		{13, long, big},
	} {
		want, err := proto.Marshal(&ttrpc.Response{Status: &spb.Status{Code: int32(r.code), Message: r.message}, Payload: r.payload})
		if err != nil {
			t.Fatal(err)
		}
		f := AppendResponse(NewFrame(1, TypeResponse, 0, ResponseSize(r.code, r.message, r.payload)), r.code, r.message, r.payload)
		if got := f[HeaderLen:]; !bytes.Equal(got, want) || cap(f) != len(f) {
			t.Errorf("response %d %.20q: got %x (cap %d), want %x", r.code, r.message, got[:min(len(got), 40)], cap(f)-HeaderLen, want[:min(len(want), 40)])
		}
		d, err := DecodeResponse(want)
		if err != nil || d.Code != r.code || d.Message != r.message || !bytes.Equal(d.Payload, r.payload) {
			t.Errorf("decodeResponse: %+v, %v", d, err)
		}
	}
}

func TestDecodeRejectsTruncated(t *testing.T) {
	full, _ := proto.Marshal(&ttrpc.Request{Service: "svc", Method: "m", Payload: []byte("payload"), TimeoutNano: 300})
	// A cut between fields is a valid shorter message; a cut inside one
	// must fail.
	boundary := map[int]bool{}
	for rest := full; len(rest) > 0; {
		_, r, err := nextField(rest)
		if err != nil {
			t.Fatal(err)
		}
		rest = r
		boundary[len(full)-len(rest)] = true
	}
	for i := 1; i < len(full); i++ {
		if _, err := DecodeRequest(full[:i]); (err == nil) != boundary[i] {
			t.Errorf("decodeRequest of %d of %d bytes: %v", i, len(full), err)
		}
	}
	if _, err := DecodeRequest([]byte{0x0b}); err == nil || !strings.Contains(err.Error(), "wire type") {
		t.Errorf("group wire type: %v", err)
	}
	if _, err := DecodeRequest([]byte{0x00, 0x01}); err == nil || !strings.Contains(err.Error(), "field number") {
		t.Errorf("field number 0: %v", err)
	}
	// A metadata entry cut inside its key.
	if _, err := DecodeRequest([]byte{0x2a, 0x03, 0x0a, 0x05, 'k'}); err == nil || !strings.Contains(err.Error(), "metadata: truncated") {
		t.Errorf("truncated metadata entry: %v", err)
	}
}
