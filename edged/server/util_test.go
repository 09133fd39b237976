package server

import (
	"strconv"

	"golang.org/x/sys/unix"
)

func dup3(oldfd, newfd int) error { return unix.Dup3(oldfd, newfd, 0) }

func itoa(i int) string { return strconv.Itoa(i) }
