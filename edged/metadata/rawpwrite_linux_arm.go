package metadata

import "syscall"

// rawPwriteWorks reports whether rawPwrite is implemented here.
const rawPwriteWorks = true

// rawPwrite is pwrite(2) of n bytes at buf (SQLite memory) made as a raw
// system call (see walFile.writeRaw). The ARM EABI passes the 64-bit
// offset in an even register pair, after a padding argument.
func rawPwrite(fd int32, buf uintptr, n int32, off int64) (int32, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_PWRITE64, uintptr(fd), buf, uintptr(n), 0, uintptr(off), uintptr(off>>32))
	return int32(r), e
}
