package metadata

import (
	"syscall"
	"unsafe"
)

// threadSleeps returns how many times the calling thread has given up its
// CPU of its own accord (the voluntary context switches of getrusage(2)
// with RUSAGE_THREAD): a system call that waited, for the disk or for a
// lock, adds one; a thread preempted by the scheduler (or a vCPU by its
// hypervisor) does not. It is a raw system call (see walFile.writeRaw),
// and -1 if the call fails.
func threadSleeps() int64 {
	var ru syscall.Rusage
	if _, _, e := syscall.RawSyscall(syscall.SYS_GETRUSAGE, rusageThread, uintptr(unsafe.Pointer(&ru)), 0); e != 0 {
		return -1
	}
	return int64(ru.Nvcsw)
}

// rusageThread is RUSAGE_THREAD (Linux 2.6.26).
const rusageThread = 1
