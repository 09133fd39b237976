//go:build !linux

package rpc

import (
	"io"
	"net"
)

// readWriter returns conn: raw socket I/O (rawio_linux.go) is Linux's.
func readWriter(conn net.Conn) io.ReadWriter { return conn }
