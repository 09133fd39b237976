package wire_test

import (
	"bytes"
	"testing"

	"github.com/gogo/protobuf/types"

	mounttypes "github.com/edged/edged/proto/types"
	"google.golang.org/protobuf/proto"

	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	"github.com/edged/edged/proto/wire"
)

// The adapter must produce exactly the gogo encoding and decode it back
// through protobuf-go's proto.Marshal/Unmarshal, as ttrpc's codec calls them.
func TestRoundTripThroughProtobufGo(t *testing.T) {
	in := &taskapi.CreateTaskRequest{
		Id: "c1", Bundle: "/b", Stdout: "file:///x", Terminal: true,
		Rootfs:  []*mounttypes.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/a"}}},
		Options: &types.Any{TypeUrl: "t", Value: []byte{1, 2}},
	}
	data, err := proto.Marshal(wire.Of(in))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := in.Marshal()
	if !bytes.Equal(data, want) {
		t.Fatalf("proto.Marshal = %x, gogo Marshal = %x", data, want)
	}
	out := &taskapi.CreateTaskRequest{Id: "stale", Checkpoint: "stale"}
	if err := proto.Unmarshal(data, wire.Of(out)); err != nil {
		t.Fatal(err)
	}
	if out.Id != "c1" || out.Checkpoint != "" || !out.Terminal || len(out.Rootfs) != 1 || out.Rootfs[0].Options[0] != "lowerdir=/a" || out.Options.TypeUrl != "t" {
		t.Fatalf("decoded %+v (Unmarshal must reset the message first)", out)
	}
	// Deterministic marshalling and appending to a buffer also work.
	b, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend([]byte("prefix"), wire.Of(in))
	if err != nil || !bytes.Equal(b, append([]byte("prefix"), want...)) {
		t.Fatalf("MarshalAppend = %q, %v", b, err)
	}
}

// An empty message encodes to zero bytes and decodes from them.
func TestEmpty(t *testing.T) {
	data, err := proto.Marshal(wire.Of(&types.Empty{}))
	if err != nil || len(data) != 0 {
		t.Fatalf("Marshal(Empty) = %x, %v", data, err)
	}
	if err := proto.Unmarshal(nil, wire.Of(&types.Empty{})); err != nil {
		t.Fatal(err)
	}
}

// Malformed input is an error, not a panic.
func TestUnmarshalError(t *testing.T) {
	err := proto.Unmarshal([]byte{0x0a, 0x10, 'x'}, wire.Of(&taskapi.CreateTaskRequest{}))
	if err == nil {
		t.Fatal("truncated message decoded without error")
	}
}
