package pageout

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestExecutableRanges(t *testing.T) {
	const maps = `00400000-00c5c000 r-xp 00000000 fd:01 1234 /usr/bin/edged
00c5c000-01a1f000 r--p 0085c000 fd:01 1234 /usr/bin/edged
01a1f000-01a7c000 rw-p 0161f000 fd:01 1234 /usr/bin/edged
01a7c000-03a00000 rw-p 00000000 00:00 0
02000000-02001000 r--p 00000000 fd:01 1235 /usr/bin/other
03000000-03001000 r--p 00000000 fd:02 1234 /mnt/same-inode-other-device
04000000-04001000 r--s 00000000 fd:01 1234 /usr/bin/edged
b7000000-b7021000 r-xp 00000000 fd:01 1234 /usr/bin/edged (deleted)
bffd1000-bffd2000 rw-p 00000000 00:00 0                          [stack]
`
	got, err := executableRanges(strings.NewReader(maps), 0xfd, 1, 1234)
	if err != nil {
		t.Fatal(err)
	}
	want := []addrRange{{0x400000, 0xc5c000}, {0xc5c000, 0x1a1f000}, {0xb7000000, 0xb7021000}}
	if len(got) != len(want) {
		t.Fatalf("ranges = %x, want %x", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ranges = %x, want %x", got, want)
		}
	}
}

func TestExecutableRangesMalformed(t *testing.T) {
	_, err := executableRanges(strings.NewReader("zz-00400000 r-xp 00000000 fd:01 1234 /x\n"), 0xfd, 1, 1234)
	if err == nil || !strings.Contains(err.Error(), `malformed address range "zz-00400000"`) {
		t.Fatalf("err = %v, want a malformed address range error", err)
	}
}

// TestExecutablePagesOut pages out this test binary for real and checks that
// its resident code shrank, that the mappings are now marked random-read
// (VmFlags "rr"), and that code keeps running (this test continues).
func TestExecutablePagesOut(t *testing.T) {
	before, flagsBefore := exeResident(t)
	if before < 1<<20 {
		t.Fatalf("only %d KiB of the test binary resident before; expected megabytes", before>>10)
	}
	if strings.Contains(flagsBefore, " rr") {
		t.Fatalf("mappings already random-read: %q", flagsBefore)
	}
	// The test binary was just written by the linker: its dirty pages
	// cannot be dropped until written back (an installed binary is clean).
	if f, err := os.Open("/proc/self/exe"); err == nil {
		f.Sync()
		f.Close()
	}
	cachedBefore := cachedPages(t)
	s, err := Executable()
	if err == ErrUnsupported {
		t.Skip("kernel without MADV_PAGEOUT (Linux < 5.4)")
	}
	if err != nil {
		t.Fatal(err)
	}
	if s.Mappings < 2 || s.Bytes < uint64(before) {
		t.Fatalf("stats %+v: expected the code and read-only data mappings (≥ %d bytes)", s, before)
	}
	after, flagsAfter := exeResident(t)
	t.Logf("resident read-only executable pages: %d KiB before, %d KiB after", before>>10, after>>10)
	if after > before/2 {
		t.Fatalf("resident %d KiB after page-out, %d KiB before: expected less than half", after>>10, before>>10)
	}
	if !strings.Contains(flagsAfter, " rr") {
		t.Fatalf("VmFlags after page-out %q lack rr (MADV_RANDOM)", flagsAfter)
	}
	// The binary's pages left in the page cache are those still mapped
	// (the kernel's fault-around would map the others back in 64 KiB
	// blocks).
	cachedAfter := cachedPages(t)
	t.Logf("page cache of the binary: %d KiB before, %d KiB after", cachedBefore>>10, cachedAfter>>10)
	if cachedAfter > cachedBefore-(before-after)/2 {
		t.Fatalf("page cache of the binary: %d KiB before, %d KiB after (resident %d KiB): not dropped", cachedBefore>>10, cachedAfter>>10, after>>10)
	}
	// Running again brings pages back one at a time.
	if _, err := Executable(); err != nil {
		t.Fatalf("second call: %v", err)
	}
}

// exeResident sums Rss over this process's read-only private mappings of
// its executable and returns the VmFlags lines of those mappings.
func exeResident(t *testing.T) (int64, string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rss int64
	var flags strings.Builder
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			ino, _ := strconv.ParseUint(fields[4], 10, 64)
			in = ino == st.Ino && fields[1][1] != 'w' && fields[1][3] == 'p'
			continue
		}
		if !in {
			continue
		}
		switch fields[0] {
		case "Rss:":
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			rss += kb << 10
		case "VmFlags:":
			flags.WriteString(line[len("VmFlags:"):] + ";")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rss, flags.String()
}

func TestPeakRSSReset(t *testing.T) {
	const size = 16 << 20
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < size; i += 4096 {
		mem[i] = 1
	}
	peak := PeakRSS()
	if err := unix.Munmap(mem); err != nil {
		t.Fatal(err)
	}
	if peak < size>>10 {
		t.Fatalf("PeakRSS = %d KiB after touching %d KiB", peak, size>>10)
	}
	if err := ResetPeakRSS(); err != nil {
		t.Fatal(err)
	}
	if after := PeakRSS(); after > peak-(size>>10)/2 {
		t.Fatalf("PeakRSS after the reset = %d KiB, before %d KiB: not reset", after, peak)
	}
}

// cachedPages returns how many bytes of the running executable are in the
// page cache (mincore over a fresh read-only mapping of it).
func cachedPages(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+4095)/4096)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	var n int64
	for _, v := range vec {
		if v&1 != 0 {
			n += 4096
		}
	}
	return n
}
