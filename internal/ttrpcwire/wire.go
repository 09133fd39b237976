// Package ttrpcwire encodes and decodes the wire format of
// github.com/containerd/ttrpc (its PROTOCOL.md) without protobuf-go: frame
// headers and the Request and Response envelopes, encoded by hand. ttrpc
// encodes its envelopes with protobuf-go, whose first use builds message
// descriptors and coder tables at run time, and whose packages (with
// grpc's status) make up most of a small binary; edged's server and
// client (package proto/rpc) and the shim's event publisher use this
// package instead. The messages inside the
// envelopes are gogo-generated and encode themselves.
//
// A frame is a 10-byte header (payload length and stream id, big endian
// uint32; message type; flags) followed by the payload. A client sends a
// Request on a new odd stream id; the server answers on the same id with a
// Response carrying a google.rpc.Status, after any Data frames of a
// streaming call.
package ttrpcwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	HeaderLen = 10
	// MaxMessage is the largest payload a frame may carry (ttrpc's limit).
	MaxMessage = 4 << 20

	TypeRequest  = 0x1
	TypeResponse = 0x2
	TypeData     = 0x3

	// FlagRemoteClosed on a Request or Data frame: the sender sends no
	// more data on the stream.
	FlagRemoteClosed = 0x1
	// FlagRemoteOpen on a Request: the client will send Data frames.
	FlagRemoteOpen = 0x2
	// FlagNoData on a Data frame: the frame carries no message.
	FlagNoData = 0x4
)

// Header is a decoded frame header.
type Header struct {
	Length uint32
	Stream uint32
	Type   byte
	Flags  byte
}

// ReadHeader reads one frame header from r into buf and decodes it.
func ReadHeader(r io.Reader, buf *[HeaderLen]byte) (Header, error) {
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return Header{}, err
	}
	return DecodeHeader(buf), nil
}

// DecodeHeader decodes a frame header.
func DecodeHeader(buf *[HeaderLen]byte) Header {
	return Header{
		Length: binary.BigEndian.Uint32(buf[0:4]),
		Stream: binary.BigEndian.Uint32(buf[4:8]),
		Type:   buf[8],
		Flags:  buf[9],
	}
}

// NewFrame returns a buffer holding the header of a frame of type typ
// with flags on stream whose payload, size bytes, the caller appends: one
// allocation per frame.
func NewFrame(stream uint32, typ, flags byte, size int) []byte {
	b := make([]byte, HeaderLen, HeaderLen+size)
	binary.BigEndian.PutUint32(b[0:4], uint32(size))
	binary.BigEndian.PutUint32(b[4:8], stream)
	b[8] = typ
	b[9] = flags
	return b
}

// Discard reads and drops n bytes of r without a heap buffer.
func Discard(r io.Reader, n int64) error {
	var buf [512]byte
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := io.ReadFull(r, buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// Protocol buffer wire types.
const (
	wireVarint = 0
	wireBytes  = 2
)

func appendTag(b []byte, field int, wt int) []byte {
	return binary.AppendUvarint(b, uint64(field)<<3|uint64(wt))
}

func appendBytesField(b []byte, field int, v []byte) []byte {
	b = appendTag(b, field, wireBytes)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendStringField(b []byte, field int, v string) []byte {
	b = appendTag(b, field, wireBytes)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendVarintField(b []byte, field int, v uint64) []byte {
	b = appendTag(b, field, wireVarint)
	return binary.AppendUvarint(b, v)
}

var errTruncated = errors.New("truncated protobuf message")

// field is one decoded protobuf field: its number, wire type and either
// its varint value or its length-delimited bytes.
type field struct {
	num   int
	wt    int
	value uint64
	bytes []byte
}

// nextField decodes the field at the start of b and returns the rest.
// Fixed 32- and 64-bit fields are skipped over (returned with no value).
func nextField(b []byte) (field, []byte, error) {
	key, n := binary.Uvarint(b)
	if n <= 0 {
		return field{}, nil, errTruncated
	}
	b = b[n:]
	f := field{num: int(key >> 3), wt: int(key & 7)}
	if f.num <= 0 {
		return field{}, nil, fmt.Errorf("invalid field number %d", f.num)
	}
	switch f.wt {
	case wireVarint:
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return field{}, nil, errTruncated
		}
		f.value, b = v, b[n:]
	case wireBytes:
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return field{}, nil, errTruncated
		}
		f.bytes, b = b[n:n+int(l)], b[n+int(l):]
	case 1: // fixed64
		if len(b) < 8 {
			return field{}, nil, errTruncated
		}
		b = b[8:]
	case 5: // fixed32
		if len(b) < 4 {
			return field{}, nil, errTruncated
		}
		b = b[4:]
	default:
		return field{}, nil, fmt.Errorf("field %d: unsupported wire type %d", f.num, f.wt)
	}
	return f, b, nil
}

// Request is ttrpc's Request message: service = 1, method = 2,
// payload = 3, timeout_nano = 4, metadata = 5. Service, Method and
// Payload alias the frame's bytes.
type Request struct {
	Service, Method []byte
	Payload         []byte
	TimeoutNano     int64
	Metadata        []KeyValue
}

// KeyValue is one entry of a Request's metadata (ttrpc's KeyValue: key =
// 1, value = 2).
type KeyValue struct {
	Key, Value string
}

// DecodeRequest decodes a Request envelope.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return Request{}, err
		}
		b = rest
		switch {
		case f.num == 1 && f.wt == wireBytes:
			r.Service = f.bytes
		case f.num == 2 && f.wt == wireBytes:
			r.Method = f.bytes
		case f.num == 3 && f.wt == wireBytes:
			r.Payload = f.bytes
		case f.num == 4 && f.wt == wireVarint:
			r.TimeoutNano = int64(f.value)
		case f.num == 5 && f.wt == wireBytes:
			kv, err := decodeKeyValue(f.bytes)
			if err != nil {
				return Request{}, fmt.Errorf("metadata: %w", err)
			}
			r.Metadata = append(r.Metadata, kv)
		}
	}
	return r, nil
}

func decodeKeyValue(b []byte) (KeyValue, error) {
	var kv KeyValue
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return KeyValue{}, err
		}
		b = rest
		switch {
		case f.num == 1 && f.wt == wireBytes:
			kv.Key = string(f.bytes)
		case f.num == 2 && f.wt == wireBytes:
			kv.Value = string(f.bytes)
		}
	}
	return kv, nil
}

// RequestSize is the encoded size of a request (see AppendRequest).
func RequestSize(service, method string, payload []byte, timeoutNano int64, md []KeyValue) int {
	n := bytesFieldSize(len(service)) + bytesFieldSize(len(method))
	if len(payload) > 0 {
		n += bytesFieldSize(len(payload))
	}
	if timeoutNano != 0 {
		n += 1 + uvarintLen(uint64(timeoutNano))
	}
	for _, kv := range md {
		n += bytesFieldSize(keyValueSize(kv))
	}
	return n
}

func keyValueSize(kv KeyValue) int {
	n := 0
	if kv.Key != "" {
		n += bytesFieldSize(len(kv.Key))
	}
	if kv.Value != "" {
		n += bytesFieldSize(len(kv.Value))
	}
	return n
}

// bytesFieldSize is the encoded size of a length-delimited field numbered
// below 16 with n bytes.
func bytesFieldSize(n int) int { return 1 + uvarintLen(uint64(n)) + n }

// AppendRequest appends the Request envelope to b, encoded as
// protobuf-go encodes ttrpc's generated Request (empty fields omitted).
func AppendRequest(b []byte, service, method string, payload []byte, timeoutNano int64, md []KeyValue) []byte {
	b = appendStringField(b, 1, service)
	b = appendStringField(b, 2, method)
	if len(payload) > 0 {
		b = appendBytesField(b, 3, payload)
	}
	if timeoutNano != 0 {
		b = appendVarintField(b, 4, uint64(timeoutNano))
	}
	for _, kv := range md {
		b = appendTag(b, 5, wireBytes)
		b = binary.AppendUvarint(b, uint64(keyValueSize(kv)))
		if kv.Key != "" {
			b = appendStringField(b, 1, kv.Key)
		}
		if kv.Value != "" {
			b = appendStringField(b, 2, kv.Value)
		}
	}
	return b
}

// statusSize is the encoded size of a google.rpc.Status (code = 1,
// message = 2).
func statusSize(code uint32, message string) int {
	size := 0
	if code != 0 {
		size += 1 + uvarintLen(uint64(code))
	}
	if message != "" {
		size += bytesFieldSize(len(message))
	}
	return size
}

// ResponseSize is the encoded size of a response (see AppendResponse).
func ResponseSize(code uint32, message string, payload []byte) int {
	n := bytesFieldSize(statusSize(code, message))
	if len(payload) > 0 {
		n += bytesFieldSize(len(payload))
	}
	return n
}

// AppendResponse appends ttrpc's Response message: status = 1 (a
// google.rpc.Status: code = 1, message = 2; always present, as ttrpc sends
// it) and payload = 2.
func AppendResponse(b []byte, code uint32, message string, payload []byte) []byte {
	size := statusSize(code, message)
	b = appendTag(b, 1, wireBytes)
	b = binary.AppendUvarint(b, uint64(size))
	if code != 0 {
		b = appendVarintField(b, 1, uint64(code))
	}
	if message != "" {
		b = appendStringField(b, 2, message)
	}
	if len(payload) > 0 {
		b = appendBytesField(b, 2, payload)
	}
	return b
}

// Response is a decoded Response envelope: the status's code and message
// (its details are not decoded) and the payload, which aliases b.
type Response struct {
	Code    uint32
	Message string
	Payload []byte
}

// DecodeResponse decodes a Response envelope.
func DecodeResponse(b []byte) (Response, error) {
	var r Response
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return Response{}, err
		}
		b = rest
		switch {
		case f.num == 1 && f.wt == wireBytes:
			st := f.bytes
			for len(st) > 0 {
				sf, srest, err := nextField(st)
				if err != nil {
					return Response{}, fmt.Errorf("status: %w", err)
				}
				st = srest
				switch {
				case sf.num == 1 && sf.wt == wireVarint:
					r.Code = uint32(sf.value)
				case sf.num == 2 && sf.wt == wireBytes:
					r.Message = string(sf.bytes)
				}
			}
		case f.num == 2 && f.wt == wireBytes:
			r.Payload = f.bytes
		}
	}
	return r, nil
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
