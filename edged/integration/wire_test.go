package integration

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"

	"github.com/edged/edged/edged/namespaces"
)

// rawRequest encodes a ttrpc Request envelope around payload bytes.
func rawRequest(service, method string, payload []byte) []byte {
	b, err := proto.Marshal(&ttrpc.Request{
		Service:  service,
		Method:   method,
		Payload:  payload,
		Metadata: []*ttrpc.KeyValue{{Key: namespaces.TTRPCHeader, Value: "default"}},
	})
	if err != nil {
		panic(err)
	}
	return b
}

// writeFrame writes one ttrpc frame: a 10-byte header (length, stream id,
// type, flags) and the data.
func writeFrame(t *testing.T, w io.Writer, stream uint32, typ, flags byte, data []byte) {
	t.Helper()
	hdr := make([]byte, 10)
	binary.BigEndian.PutUint32(hdr[0:4], uint32(len(data)))
	binary.BigEndian.PutUint32(hdr[4:8], stream)
	hdr[8], hdr[9] = typ, flags
	if _, err := w.Write(append(hdr, data...)); err != nil {
		t.Fatal(err)
	}
}

// readResponse reads one frame and decodes it as a ttrpc Response.
func readResponse(t *testing.T, conn net.Conn) *ttrpc.Response {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		t.Fatalf("read response header: %v", err)
	}
	data := make([]byte, binary.BigEndian.Uint32(hdr[0:4]))
	if _, err := io.ReadFull(conn, data); err != nil {
		t.Fatalf("read response: %v", err)
	}
	var resp ttrpc.Response
	if err := proto.Unmarshal(data, &resp); err != nil {
		t.Fatalf("decode response: %v", err)
	}
	return &resp
}

// TestMalformedAndOversizedRequests sends bytes no client would: edged
// answers each with an error and keeps serving.
func TestMalformedAndOversizedRequests(t *testing.T) {
	d := startDaemon(t)
	conn, err := net.Dial("unix", d.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// A request whose payload is not a valid CreateContainerRequest.
	writeFrame(t, conn, 1, 1, 0, rawRequest("edged.services.containers.v1.Containers", "Create", []byte{0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01}))
	resp := readResponse(t, conn)
	if resp.Status == nil || resp.Status.Code != 3 /* InvalidArgument */ {
		t.Fatalf("malformed payload: status %v", resp.Status)
	}

	// A frame that is not a ttrpc Request at all.
	writeFrame(t, conn, 3, 1, 0, []byte{0xff, 0xfe, 0xfd})
	resp = readResponse(t, conn)
	if resp.Status == nil || resp.Status.Code != 3 || !strings.Contains(resp.Status.Message, "unmarshal request") {
		t.Fatalf("garbage request: status %v", resp.Status)
	}

	// An unknown service and method.
	writeFrame(t, conn, 5, 1, 0, rawRequest("edged.services.nope.v1.Nope", "Do", nil))
	resp = readResponse(t, conn)
	if resp.Status == nil || resp.Status.Code != 12 /* Unimplemented */ {
		t.Fatalf("unknown service: status %v", resp.Status)
	}

	// A message over the 4 MiB cap is refused without reading it into memory.
	big := make([]byte, 5<<20)
	writeFrame(t, conn, 7, 1, 0, rawRequest("edged.services.containers.v1.Containers", "Create", big))
	resp = readResponse(t, conn)
	if resp.Status == nil || resp.Status.Code != 8 /* ResourceExhausted */ || !strings.Contains(resp.Status.Message, "exceed maximum message size") {
		t.Fatalf("oversized: status %v", resp.Status)
	}

	// The daemon still serves, on this connection and on a new one.
	c := newClient(t, d)
	if _, err := c.Version(ctxT(t)); err != nil {
		t.Fatalf("edged stopped serving after bad input: %v", err)
	}
	if list, err := c.ListContainers(ctxT(t)); err != nil || len(list) != 0 {
		t.Fatalf("bad input created something: %v %v", list, err)
	}
}

// TestTruncatedFrameThenClose: a client that sends half a frame and hangs
// up does not disturb edged.
func TestTruncatedFrameThenClose(t *testing.T) {
	d := startDaemon(t)
	conn, err := net.Dial("unix", d.Address)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte{0, 0, 0, 100, 0, 0, 0, 1, 1, 0, 1, 2, 3})
	conn.Close()
	c := newClient(t, d)
	if _, err := c.Version(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}
