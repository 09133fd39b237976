//go:build linux && (amd64 || arm64 || riscv64 || ppc64 || ppc64le || s390x || loong64 || mips64 || mips64le)

package metadata

import "syscall"

// rawPwriteWorks reports whether rawPwrite is implemented here.
const rawPwriteWorks = true

// rawPwrite is pwrite(2) of n bytes at buf (SQLite memory) made as a raw
// system call (see walFile.writeRaw).
func rawPwrite(fd int32, buf uintptr, n int32, off int64) (int32, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_PWRITE64, uintptr(fd), buf, uintptr(n), uintptr(off), 0, 0)
	return int32(r), e
}
