package publisher

import (
	"encoding/binary"
	"time"
)

// forwardRequest encodes a containerd.services.events.ttrpc.v1.ForwardRequest
// by hand, in one allocation: envelope = 1, an edged.services.events.v1.
// Envelope (timestamp = 1, a google.protobuf.Timestamp; namespace = 2;
// topic = 3; event = 4, a google.protobuf.Any with type_url = 1 and
// value = 2). The shim would otherwise link the generated events service
// packages for this one message, and their type registrations cost every
// shim heap.
func forwardRequest(ts time.Time, namespace, topic, typeURL string, value []byte) []byte {
	secs, nanos := uint64(ts.Unix()), uint64(ts.Nanosecond())
	tsSize := 0
	if secs != 0 {
		tsSize += 1 + uvarintLen(secs)
	}
	if nanos != 0 {
		tsSize += 1 + uvarintLen(nanos)
	}
	anySize := optionalSize(len(typeURL)) + optionalSize(len(value))
	envSize := fieldSize(tsSize) + optionalSize(len(namespace)) + optionalSize(len(topic)) + fieldSize(anySize)

	b := make([]byte, 0, fieldSize(envSize))
	b = appendHeader(b, 1, envSize)
	b = appendHeader(b, 1, tsSize)
	if secs != 0 {
		b = binary.AppendUvarint(append(b, 1<<3), secs)
	}
	if nanos != 0 {
		b = binary.AppendUvarint(append(b, 2<<3), nanos)
	}
	if namespace != "" {
		b = append(appendHeader(b, 2, len(namespace)), namespace...)
	}
	if topic != "" {
		b = append(appendHeader(b, 3, len(topic)), topic...)
	}
	b = appendHeader(b, 4, anySize)
	if typeURL != "" {
		b = append(appendHeader(b, 1, len(typeURL)), typeURL...)
	}
	if len(value) > 0 {
		b = append(appendHeader(b, 2, len(value)), value...)
	}
	return b
}

// appendHeader appends the key and length of a length-delimited field
// (numbered below 16).
func appendHeader(b []byte, field, n int) []byte {
	return binary.AppendUvarint(append(b, byte(field<<3|2)), uint64(n))
}

// fieldSize is the size of a length-delimited field with n bytes; embedded
// messages are encoded even when empty, as gogo does for a set pointer.
func fieldSize(n int) int { return 1 + uvarintLen(uint64(n)) + n }

// optionalSize is fieldSize for a string or bytes field, left out when
// empty.
func optionalSize(n int) int {
	if n == 0 {
		return 0
	}
	return fieldSize(n)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
