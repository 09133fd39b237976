package metadata

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// A commit in WAL mode appends one frame per changed page to the -wal
// file, and SQLite writes each frame with two write(2) calls: its 24-byte
// header, then the page. A container create changes about seven 1 KiB
// pages, a delete five, so a create+delete made 24 pwrite calls, each a
// trip through the kernel's page cache that the caller waits for.
//
// walVFS is a SQLite VFS that wraps the default one ("unix") and changes
// one thing: writes that append frames to a -wal file are gathered in a
// buffer and reach the file in one pwrite when the commit frame (the last
// frame of a transaction, whose header carries the database size) is
// complete. Every commit's frames are therefore in the kernel, exactly as
// before, when the commit returns: a kill of edged loses nothing more than
// it did. What the buffer holds is written first, before anything else is
// done to the file: another write that does not extend the buffer (SQLite
// rewriting a frame in place, or its checksums), a read (a checkpoint, or
// a page read back from the log), sync, truncate, size, file control and
// close. Writes to the database file itself and its other files go to the
// default VFS unchanged. Frames that a large transaction spills to the log
// before its commit may wait in the buffer while the transaction goes on;
// they are not committed, so losing them loses nothing.
//
// What reaches the disk is the same bytes at the same offsets; only the
// number of system calls changes: per container create+delete, 2 instead
// of 24, and edged's CPU time per pair fell from 428-466 to 372-386 µs
// (make bench; BenchmarkContainerCreateDelete: 221-235 to 173-176 µs).
//
// Frame padding: with synchronous=FULL and a device without powersafe
// overwrite, SQLite pads a commit to a sector boundary with copies of the
// commit frame and may split one at the sync point. Those copies are
// commit frames too, and a commit frame's bytes are flushed as soon as
// they arrive, so nothing stays behind the sync (the default unix VFS
// reports powersafe overwrite, so this does not happen with edged's
// settings anyway).
type walVFS struct {
	vfs    sqlite3.Tsqlite3_vfs // first: SQLite's pointer to the VFS points here
	orig   uintptr              // the wrapped VFS
	extOff int64                // where a file's walFile starts, past the wrapped VFS's part
	name   [32]byte             // NUL-terminated; vfs.FzName points here
	// raw is 1 when the wrapped VFS is SQLite's "unix" one, whose files
	// start with a unixFile holding the descriptor, and raw writes work
	// on this platform (see walFile.writeRaw).
	raw int32
	// slow is the duration in nanoseconds of a raw write that turns raw
	// writes off for pause if its thread slept (see
	// walFile.writeRaw).
	slow int64
	// pause is how long, in nanoseconds, raw writes stay off after a
	// slow one: walSlowPause, or less in tests.
	pause int64
	// timeOnly, when 1, makes a write slow on its duration alone, as if
	// its thread had slept (tests: a write that waits in the kernel
	// cannot be caused on demand).
	timeOnly int32
	// rawWrites and slowWrites count raw writes and the slow ones among
	// them, for tests. atomic.Int64 is 8-byte aligned on 32-bit platforms
	// too, which its atomic operations need there.
	rawWrites  atomic.Int64
	slowWrites atomic.Int64
}

// walFile follows the wrapped VFS's file structure in every file this VFS
// opens (see walVFS.vfs.FszOsFile); a -wal file's pMethods points to its
// io, so that the methods find their state from the file alone.
type walFile struct {
	io   sqlite3.Tsqlite3_io_methods // first: the -wal file's pMethods points here
	orig uintptr                     // the wrapped VFS's methods of this file
	buf  uintptr                     // walBufSize bytes of SQLite memory, 0 until first needed
	n    int32                       // bytes buffered
	// commit: the last frame header seen was a commit frame's, so the
	// writes that follow it (its page) are flushed at once.
	commit int32
	off    int64 // file offset of buf[0]
	// end is the end of the log as written through this file: a write
	// there appends a new frame, a write before it rewrites one. The WAL
	// header (offset 0) starts a new log, whose end is then the header's.
	end int64
	vfs *walVFS
	// rawAfter is when (time.Now().UnixNano()) raw writes resume after a
	// slow one; 0 when they are on.
	rawAfter int64
}

const (
	// walBufSize bounds what is gathered: a create's frames take about
	// 7 KiB. A larger transaction (an image import) is written in pieces
	// of this size.
	walBufSize = 32 << 10
	// walFrameHeader is the size of a WAL frame header; bytes 4-7 hold
	// the database size in pages for a commit frame, 0 for others.
	walFrameHeader = 24
	// walHeader is the size of the WAL file header at offset 0.
	walHeader = 32
	// walSlowWrite is the default of walVFS.slow: a write to the page
	// cache takes microseconds; one that slept and took a millisecond
	// waited for the disk (dirty page throttling, memory reclaim, the
	// journal).
	walSlowWrite = time.Millisecond
	// walSlowPause is how long writes take the ordinary path after a slow
	// raw write.
	walSlowPause = 10 * time.Second
)

// registerWALVFS registers a walVFS wrapping the default VFS under a name
// of its own and returns that name (for the vfs= URI parameter), the VFS
// (in SQLite memory) and a function that unregisters and frees it, to call
// after every connection using it is closed. slow is the duration of a
// slow raw write (see walFile.writeRaw); 0 means walSlowWrite.
func registerWALVFS(slow time.Duration) (string, *walVFS, func(), error) {
	tls := libc.NewTLS()
	defer tls.Close()
	orig := sqlite3.Xsqlite3_vfs_find(tls, 0)
	if orig == 0 {
		return "", nil, nil, fmt.Errorf("no default SQLite VFS")
	}
	p := sqlite3.Xsqlite3_malloc64(tls, uint64(unsafe.Sizeof(walVFS{})))
	if p == 0 {
		return "", nil, nil, fmt.Errorf("register SQLite VFS: out of memory")
	}
	v := (*walVFS)(cptr(p))
	*v = walVFS{vfs: *(*sqlite3.Tsqlite3_vfs)(cptr(orig)), orig: orig, slow: int64(slow)}
	if slow <= 0 {
		v.slow = int64(walSlowWrite)
	}
	v.pause = int64(walSlowPause)
	if rawPwriteWorks && libc.GoString(v.vfs.FzName) == "unix" && v.vfs.FszOsFile == int32(unsafe.Sizeof(sqlite3.TunixFile{})) {
		v.raw = 1
	}
	// The wrapped VFS's file comes first, then ours, 8-byte aligned.
	v.extOff = (int64(v.vfs.FszOsFile) + 7) &^ 7
	v.vfs.FszOsFile = int32(v.extOff) + int32(unsafe.Sizeof(walFile{}))
	v.vfs.FpNext = 0
	// The address makes the name unique among the VFSes registered at a
	// time (one per open database).
	name := fmt.Sprintf("edged-wal-%x", p)
	copy(v.name[:len(v.name)-1], name)
	v.vfs.FzName = uintptr(unsafe.Pointer(&v.name[0]))
	*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&v.vfs.FxOpen)) = walOpen
	if rc := sqlite3.Xsqlite3_vfs_register(tls, p, 0); rc != sqlite3.SQLITE_OK {
		sqlite3.Xsqlite3_free(tls, p)
		return "", nil, nil, fmt.Errorf("register SQLite VFS: error %d", rc)
	}
	return name, v, func() {
		tls := libc.NewTLS()
		defer tls.Close()
		sqlite3.Xsqlite3_vfs_unregister(tls, p)
		sqlite3.Xsqlite3_free(tls, p)
	}, nil
}

// walOpen opens a file through the wrapped VFS and, for a -wal file,
// interposes the buffering methods.
func walOpen(tls *libc.TLS, pVfs, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	v := (*walVFS)(cptr(pVfs))
	ov := (*sqlite3.Tsqlite3_vfs)(cptr(v.orig))
	rc := (*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&ov.FxOpen)))(tls, v.orig, zName, pFile, flags, pOutFlags)
	f := (*sqlite3.Tsqlite3_file)(cptr(pFile))
	if rc != sqlite3.SQLITE_OK || f.FpMethods == 0 || flags&sqlite3.SQLITE_OPEN_WAL == 0 {
		return rc
	}
	w := (*walFile)(cptr(pFile + uintptr(v.extOff)))
	*w = walFile{io: *(*sqlite3.Tsqlite3_io_methods)(cptr(f.FpMethods)), orig: f.FpMethods, vfs: v}
	// The log's current end: a write there appends.
	if rc := w.callFileSize(tls, pFile, uintptr(unsafe.Pointer(&w.end))); rc != sqlite3.SQLITE_OK {
		w.end = -1 // unknown: nothing is gathered until the next WAL header
	}
	*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&w.io.FxClose)) = walClose
	*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&w.io.FxRead)) = walRead
	*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&w.io.FxWrite)) = walWrite
	*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&w.io.FxTruncate)) = walTruncate
	*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&w.io.FxSync)) = walSync
	*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&w.io.FxFileSize)) = walFileSize
	*(*func(*libc.TLS, uintptr, int32, uintptr) int32)(unsafe.Pointer(&w.io.FxFileControl)) = walFileControl
	f.FpMethods = uintptr(unsafe.Pointer(&w.io))
	return sqlite3.SQLITE_OK
}

func walOf(pFile uintptr) *walFile {
	return (*walFile)(cptr((*sqlite3.Tsqlite3_file)(cptr(pFile)).FpMethods))
}

func (w *walFile) methods() *sqlite3.Tsqlite3_io_methods {
	return (*sqlite3.Tsqlite3_io_methods)(cptr(w.orig))
}

func (w *walFile) callWrite(tls *libc.TLS, pFile, buf uintptr, n int32, off int64) int32 {
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&w.methods().FxWrite)))(tls, pFile, buf, n, off)
}

func (w *walFile) callFileSize(tls *libc.TLS, pFile, pSize uintptr) int32 {
	return (*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&w.methods().FxFileSize)))(tls, pFile, pSize)
}

// flush writes what is buffered.
func (w *walFile) flush(tls *libc.TLS, pFile uintptr) int32 {
	if w.n == 0 {
		return sqlite3.SQLITE_OK
	}
	n := w.n
	w.n = 0
	if w.vfs.raw != 0 {
		if w.rawAfter == 0 || time.Now().UnixNano() >= w.rawAfter {
			w.rawAfter = 0
			return w.writeRaw(pFile, n)
		}
	}
	return w.callWrite(tls, pFile, w.buf, n, w.off)
}

// writeRaw writes the n buffered bytes with pwrite(2) made as a raw
// system call, which the Go scheduler does not see.
//
// Why: the ordinary path (SQLite's unixWrite, modernc's libc, the syscall
// package) tells the scheduler that the call may block, and when edged
// was idle a moment before, as it is between the calls of a sequential
// client, that wakes the runtime's monitor thread (sysmon), which then
// polls every 20 µs for a while. The commit's write is the only system
// call of an API call that changes something besides the socket's, whose
// reads and writes are raw too (proto/rpc's rawIO); with all three raw,
// edged no longer pays a thread wake-up per call: its CPU time per
// container create+delete fell from 381 to 334 µs and the sequential rate
// rose from 1,983/s to 2,076/s (medians of interleaved runs; with the
// socket raw but this write not, edged's CPU time rose instead, to 412 µs).
//
// The price: a raw call that blocks keeps its P (the scheduler's
// processor) the whole time, and a stop-the-world of the garbage
// collector waits for it. A write to the page cache takes microseconds,
// but one that has to wait for the disk (dirty page throttling, memory
// reclaim, a full journal) can take a good part of a second on an SD
// card. So a raw write that waited (its thread slept in the kernel, see
// threadSleeps) and took w.vfs.slow or more turns raw writes off for
// w.vfs.pause (walSlowPause): while the disk is that slow, writes take the ordinary
// path, which hands the P over. A write that took as long without
// sleeping was preempted, not blocked: its thread was runnable and the
// scheduler (or, in a VM, the hypervisor) ran something else. That says
// nothing of the disk, and raw writes stay on; on a busy host that
// happens every few seconds, and a pause on time alone kept raw writes
// off most of the time. The thread is locked for the write so that the
// two counts of its sleeps are of the same thread.
func (w *walFile) writeRaw(pFile uintptr, n int32) int32 {
	f := (*sqlite3.TunixFile)(cptr(pFile))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sleeps := threadSleeps()
	start := time.Now()
	buf, off := w.buf, w.off
	for n > 0 {
		wrote, errno := rawPwrite(f.Fh, buf, n, off)
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.ENOSPC || errno == 0 && wrote == 0:
			f.FlastErrno = int32(errno)
			return sqlite3.SQLITE_FULL
		case errno != 0:
			f.FlastErrno = int32(errno)
			return sqlite3.SQLITE_IOERR_WRITE
		}
		buf += uintptr(wrote)
		off += int64(wrote)
		n -= wrote
	}
	w.vfs.rawWrites.Add(1)
	if d := time.Since(start); int64(d) >= w.vfs.slow && w.vfs.slept(sleeps) {
		w.vfs.slowWrites.Add(1)
		w.rawAfter = start.Add(d).UnixNano() + w.vfs.pause
	}
	return sqlite3.SQLITE_OK
}

// slept reports whether the calling thread slept since threadSleeps
// returned before; when that cannot be told, it did.
func (v *walVFS) slept(before int64) bool {
	if v.timeOnly != 0 || before < 0 {
		return true
	}
	after := threadSleeps()
	return after < 0 || after != before
}

func walWrite(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	w := walOf(pFile)
	if iOfst == 0 && iAmt == walHeader {
		// A new log begins; its frames follow the header.
		w.end = 0
		w.commit = 0
	}
	if w.n > 0 && iOfst != w.off+int64(w.n) {
		if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	if iOfst != w.end || iAmt <= 0 || iAmt > walBufSize {
		// Not an append (a rewrite in place): written now, after what the
		// buffer held.
		if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
			return rc
		}
		if e := iOfst + int64(iAmt); e > w.end && w.end >= 0 {
			w.end = e
		}
		return w.callWrite(tls, pFile, zBuf, iAmt, iOfst)
	}
	if w.n+iAmt > walBufSize {
		if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	if w.buf == 0 {
		if w.buf = sqlite3.Xsqlite3_malloc64(tls, walBufSize); w.buf == 0 {
			w.end += int64(iAmt)
			return w.callWrite(tls, pFile, zBuf, iAmt, iOfst)
		}
	}
	if w.n == 0 {
		w.off = iOfst
	}
	src := unsafe.Slice((*byte)(cptr(zBuf)), iAmt)
	copy(unsafe.Slice((*byte)(cptr(w.buf+uintptr(w.n))), iAmt), src)
	w.n += iAmt
	w.end += int64(iAmt)
	if iAmt == walFrameHeader && iOfst >= walHeader {
		// A frame header: is it a commit frame's?
		w.commit = 0
		if binary.BigEndian.Uint32(src[4:8]) != 0 {
			w.commit = 1
		}
		return sqlite3.SQLITE_OK
	}
	if w.commit != 0 {
		return w.flush(tls, pFile)
	}
	return sqlite3.SQLITE_OK
}

func walRead(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	w := walOf(pFile)
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&w.methods().FxRead)))(tls, pFile, zBuf, iAmt, iOfst)
}

func walTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	w := walOf(pFile)
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	rc := (*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&w.methods().FxTruncate)))(tls, pFile, size)
	if rc == sqlite3.SQLITE_OK && size < w.end {
		w.end = size
	}
	return rc
}

func walSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	w := walOf(pFile)
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&w.methods().FxSync)))(tls, pFile, flags)
}

func walFileSize(tls *libc.TLS, pFile, pSize uintptr) int32 {
	w := walOf(pFile)
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return w.callFileSize(tls, pFile, pSize)
}

func walFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	w := walOf(pFile)
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int32, uintptr) int32)(unsafe.Pointer(&w.methods().FxFileControl)))(tls, pFile, op, pArg)
}

func walClose(tls *libc.TLS, pFile uintptr) int32 {
	w := walOf(pFile)
	rc := w.flush(tls, pFile)
	if w.buf != 0 {
		sqlite3.Xsqlite3_free(tls, w.buf)
		w.buf = 0
	}
	// The wrapped close gets the file as its VFS made it.
	orig := w.orig
	(*sqlite3.Tsqlite3_file)(cptr(pFile)).FpMethods = orig
	if rc2 := (*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&(*sqlite3.Tsqlite3_io_methods)(cptr(orig)).FxClose)))(tls, pFile); rc == sqlite3.SQLITE_OK {
		rc = rc2
	}
	return rc
}

// cptr converts the address of SQLite (C) memory, which the Go garbage
// collector neither moves nor frees, to a pointer.
func cptr(p uintptr) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&p))
}
