// Package wire lets ttrpc carry gogo-generated messages without the
// reflection-built adapters of google.golang.org/protobuf.
//
// ttrpc's codec requires protobuf-go (APIv2) messages. The generated ttrpc
// code wraps gogo messages with protoadapt.MessageV2Of, which builds, per
// message type, a legacy MessageInfo by reflection and gunzips the type's
// file descriptor: tens of KiB of lasting heap per type plus a burst of
// garbage, paid by every shim. Message instead hands protobuf-go the
// message's own generated Size/MarshalTo/Unmarshal through the
// protoiface.Methods fast path, which proto.Marshal and proto.Unmarshal use
// before anything else; no descriptor is ever loaded.
package wire

import (
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/runtime/protoiface"

	"github.com/edged/edged/proto/rpc"
)

// Gogo is a gogo-generated message with generated marshalling code.
type Gogo = rpc.Message

// Message adapts a gogo message to the protobuf-go proto.Message interface
// for encoding only: ttrpc's codec calls proto.Marshal and proto.Unmarshal,
// which take the fast path. The reflection methods of protoreflect.Message
// are not implemented (the embedded interface is nil) and panic if called.
type Message struct {
	protoreflect.Message
	m Gogo
}

// Of wraps m.
func Of(m Gogo) *Message { return &Message{m: m} }

// ProtoReflect implements proto.Message.
func (w *Message) ProtoReflect() protoreflect.Message { return w }

// Interface implements protoreflect.Message.
func (w *Message) Interface() protoreflect.ProtoMessage { return w }

// IsValid implements protoreflect.Message.
func (w *Message) IsValid() bool { return w != nil && w.m != nil }

// Reset resets the wrapped message (proto.Unmarshal calls it).
func (w *Message) Reset() { w.m.Reset() }

// ProtoMethods implements the fast path of protoreflect.Message.
func (w *Message) ProtoMethods() *protoiface.Methods { return &fastPath }

// fastPath is read-only: the encoding functions of every Message.
var fastPath = protoiface.Methods{
	Flags:            protoiface.SupportMarshalDeterministic | protoiface.SupportUnmarshalDiscardUnknown,
	Size:             size,
	Marshal:          marshal,
	Unmarshal:        unmarshal,
	CheckInitialized: checkInitialized,
}

func gogoOf(m protoreflect.Message) Gogo { return m.(*Message).m }

func size(in protoiface.SizeInput) protoiface.SizeOutput {
	return protoiface.SizeOutput{Size: gogoOf(in.Message).Size()}
}

func marshal(in protoiface.MarshalInput) (protoiface.MarshalOutput, error) {
	m := gogoOf(in.Message)
	n := m.Size()
	b := in.Buf
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		b = nb
	}
	w, err := m.MarshalTo(b[len(b) : len(b)+n])
	if err != nil {
		return protoiface.MarshalOutput{Buf: in.Buf}, err
	}
	return protoiface.MarshalOutput{Buf: b[:len(b)+w]}, nil
}

func unmarshal(in protoiface.UnmarshalInput) (protoiface.UnmarshalOutput, error) {
	if err := gogoOf(in.Message).Unmarshal(in.Buf); err != nil {
		return protoiface.UnmarshalOutput{}, err
	}
	return protoiface.UnmarshalOutput{Flags: protoiface.UnmarshalInitialized}, nil
}

// checkInitialized: proto3 messages have no required fields.
func checkInitialized(protoiface.CheckInitializedInput) (protoiface.CheckInitializedOutput, error) {
	return protoiface.CheckInitializedOutput{}, nil
}
