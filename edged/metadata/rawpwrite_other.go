//go:build !linux || !(amd64 || arm64 || arm || riscv64 || ppc64 || ppc64le || s390x || loong64 || mips64 || mips64le)

package metadata

import "syscall"

// rawPwriteWorks reports whether rawPwrite is implemented here: not on
// this platform, where the WAL is written through SQLite's own path.
const rawPwriteWorks = false

func rawPwrite(fd int32, buf uintptr, n int32, off int64) (int32, syscall.Errno) {
	return 0, syscall.ENOSYS
}
