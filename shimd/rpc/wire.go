// Package rpc is the shim's own ttrpc server and client: the wire protocol
// of github.com/containerd/ttrpc (unary calls only) without its
// google.golang.org/protobuf message machinery. ttrpc encodes its request
// and response envelopes with protobuf-go, whose first use builds message
// descriptors and coder tables at run time, and runs two goroutines per
// connection; in a shim that idles with a few KiB of live heap, that
// garbage and those stacks stay resident for the shim's life (every heap
// size class touched keeps a span). Here the envelopes are encoded by hand
// and a connection has one goroutine, plus one per call in progress.
//
// Protocol (ttrpc PROTOCOL.md): a frame is a 10-byte header (payload
// length and stream id, big endian uint32; message type; flags) followed by
// the payload. A client sends a Request on a new odd stream id; the server
// answers on the same id with a Response carrying a google.rpc.Status.
package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	headerLen = 10
	// MaxMessage is the largest payload a frame may carry (ttrpc's limit).
	MaxMessage = 4 << 20

	typeRequest  = 0x1
	typeResponse = 0x2
	typeData     = 0x3
)

// header is a decoded frame header.
type header struct {
	length uint32
	stream uint32
	typ    byte
	flags  byte
}

func readHeader(r io.Reader, buf *[headerLen]byte) (header, error) {
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return header{}, err
	}
	return header{
		length: binary.BigEndian.Uint32(buf[0:4]),
		stream: binary.BigEndian.Uint32(buf[4:8]),
		typ:    buf[8],
		flags:  buf[9],
	}, nil
}

// newFrame returns a buffer holding the header of a frame of type typ on
// stream whose payload, size bytes, the caller appends: one allocation
// per frame.
func newFrame(stream uint32, typ byte, size int) []byte {
	b := make([]byte, headerLen, headerLen+size)
	binary.BigEndian.PutUint32(b[0:4], uint32(size))
	binary.BigEndian.PutUint32(b[4:8], stream)
	b[8] = typ
	return b
}

// discard reads and drops n bytes of r without a heap buffer.
func discard(r io.Reader, n int64) error {
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

// request is ttrpc's Request message: service = 1, method = 2,
// payload = 3, timeout_nano = 4, metadata = 5 (ignored by the shim).
// service and method alias the frame's bytes.
type request struct {
	service, method []byte
	payload         []byte
	timeoutNano     int64
}

func decodeRequest(b []byte) (request, error) {
	var r request
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return request{}, err
		}
		b = rest
		switch {
		case f.num == 1 && f.wt == wireBytes:
			r.service = f.bytes
		case f.num == 2 && f.wt == wireBytes:
			r.method = f.bytes
		case f.num == 3 && f.wt == wireBytes:
			r.payload = f.bytes
		case f.num == 4 && f.wt == wireVarint:
			r.timeoutNano = int64(f.value)
		}
	}
	return r, nil
}

// requestSize is the encoded size of a request (see appendRequest).
func requestSize(service, method string, payload []byte, timeoutNano int64) int {
	n := bytesFieldSize(len(service)) + bytesFieldSize(len(method))
	if len(payload) > 0 {
		n += bytesFieldSize(len(payload))
	}
	if timeoutNano != 0 {
		n += 1 + uvarintLen(uint64(timeoutNano))
	}
	return n
}

// bytesFieldSize is the encoded size of a length-delimited field numbered
// below 16 with n bytes.
func bytesFieldSize(n int) int { return 1 + uvarintLen(uint64(n)) + n }

func appendRequest(b []byte, service, method string, payload []byte, timeoutNano int64) []byte {
	b = appendStringField(b, 1, service)
	b = appendStringField(b, 2, method)
	if len(payload) > 0 {
		b = appendBytesField(b, 3, payload)
	}
	if timeoutNano != 0 {
		b = appendVarintField(b, 4, uint64(timeoutNano))
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

// responseSize is the encoded size of a response (see appendResponse).
func responseSize(code uint32, message string, payload []byte) int {
	n := bytesFieldSize(statusSize(code, message))
	if len(payload) > 0 {
		n += bytesFieldSize(len(payload))
	}
	return n
}

// appendResponse appends ttrpc's Response message: status = 1 (a
// google.rpc.Status: code = 1, message = 2; always present, as ttrpc sends
// it) and payload = 2.
func appendResponse(b []byte, code uint32, message string, payload []byte) []byte {
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

// response is a decoded Response.
type response struct {
	code    uint32
	message string
	payload []byte
}

func decodeResponse(b []byte) (response, error) {
	var r response
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return response{}, err
		}
		b = rest
		switch {
		case f.num == 1 && f.wt == wireBytes:
			st := f.bytes
			for len(st) > 0 {
				sf, srest, err := nextField(st)
				if err != nil {
					return response{}, fmt.Errorf("status: %w", err)
				}
				st = srest
				switch {
				case sf.num == 1 && sf.wt == wireVarint:
					r.code = uint32(sf.value)
				case sf.num == 2 && sf.wt == wireBytes:
					r.message = string(sf.bytes)
				}
			}
		case f.num == 2 && f.wt == wireBytes:
			r.payload = f.bytes
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
