package pageout

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUnsupported is returned when the kernel has no MADV_PAGEOUT (before
// Linux 5.4).
var ErrUnsupported = errors.New("madvise MADV_PAGEOUT is not supported by this kernel")

// Stats describes one call of Executable.
type Stats struct {
	// Mappings is the number of read-only mappings of the executable advised.
	Mappings int
	// Bytes is their total size (not the resident part reclaimed).
	Bytes uint64
}

// Executable pages out the read-only (code and read-only data) mappings of
// the running executable and marks them for page-at-a-time faulting. Mappings
// that are writable (the executable's data) are left alone: their written
// pages are anonymous memory, which MADV_PAGEOUT would push to swap.
func Executable() (Stats, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return Stats{}, fmt.Errorf("pageout: stat executable: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return Stats{}, fmt.Errorf("pageout: %w", err)
	}
	defer f.Close()
	ranges, err := executableRanges(f, unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	if err != nil {
		return Stats{}, fmt.Errorf("pageout: /proc/self/maps: %w", err)
	}
	var s Stats
	for _, r := range ranges {
		if err := madvise(r.start, r.end-r.start, unix.MADV_RANDOM); err != nil {
			return s, fmt.Errorf("pageout: madvise MADV_RANDOM %#x-%#x: %w", r.start, r.end, err)
		}
		if err := madvise(r.start, r.end-r.start, unix.MADV_PAGEOUT); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return s, ErrUnsupported
			}
			return s, fmt.Errorf("pageout: madvise MADV_PAGEOUT %#x-%#x: %w", r.start, r.end, err)
		}
		s.Mappings++
		s.Bytes += uint64(r.end - r.start)
	}
	// MADV_PAGEOUT reclaims the pages mapped here; the executable's pages
	// that are cached but not mapped (read ahead at start-up, or written
	// when the binary was installed) would be mapped again by the kernel's
	// fault-around, so they are dropped from the page cache as well.
	// Pages mapped by any process are left alone by the kernel.
	if err := dropCache("/proc/self/exe"); err != nil {
		return s, err
	}
	return s, nil
}

func dropCache(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("pageout: open executable: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("pageout: fadvise POSIX_FADV_DONTNEED: %w", err)
	}
	return nil
}

type addrRange struct{ start, end uintptr }

// executableRanges returns the private, non-writable mappings of the file
// with the given device and inode listed in a /proc/PID/maps text.
func executableRanges(r io.Reader, major, minor uint32, ino uint64) ([]addrRange, error) {
	var out []addrRange
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), 64<<10)
	for sc.Scan() {
		// address perms offset dev inode [path]
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		perms := fields[1]
		if len(perms) != 4 || perms[1] == 'w' || perms[3] != 'p' {
			continue
		}
		if n, err := strconv.ParseUint(fields[4], 10, 64); err != nil || n != ino {
			continue
		}
		maj, min, ok := strings.Cut(fields[3], ":")
		if !ok {
			continue
		}
		dmaj, err1 := strconv.ParseUint(maj, 16, 32)
		dmin, err2 := strconv.ParseUint(min, 16, 32)
		if err1 != nil || err2 != nil || uint32(dmaj) != major || uint32(dmin) != minor {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			return nil, fmt.Errorf("malformed address range %q", fields[0])
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("malformed address range %q", fields[0])
		}
		out = append(out, addrRange{uintptr(start), uintptr(end)})
	}
	return out, sc.Err()
}

func madvise(addr, length uintptr, advice int) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_MADVISE, addr, length, uintptr(advice))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// PeakRSS returns this process's peak resident set size (VmHWM) in KiB, 0
// when unknown.
func PeakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// ResetPeakRSS makes PeakRSS start again from the current resident set
// (/proc/self/clear_refs "5", Linux ≥ 4.0), e.g. after Executable released
// what start-up faulted in.
func ResetPeakRSS() error {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return fmt.Errorf("pageout: reset peak RSS: %w", err)
	}
	return nil
}
