package measure

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Memory is a process's memory from /proc/PID/smaps_rollup and
// /proc/PID/status, in KiB.
type Memory struct {
	RSS, PSS, PSSAnon, PSSFile, PrivateClean, PrivateDirty int64
	HWM                                                    int64 // VmHWM: peak RSS
	Threads                                                int64
}

// MiB converts KiB to MiB.
func MiB(kib int64) float64 { return float64(kib) / 1024 }

// ReadMemory reads the memory of process pid.
func ReadMemory(pid int) (Memory, error) {
	roll, err := readKeyValues(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return Memory{}, err
	}
	status, err := readKeyValues(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	m := Memory{
		RSS: roll["Rss"], PSS: roll["Pss"], PSSAnon: roll["Pss_Anon"], PSSFile: roll["Pss_File"],
		PrivateClean: roll["Private_Clean"], PrivateDirty: roll["Private_Dirty"],
		HWM: status["VmHWM"], Threads: status["Threads"],
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("/proc/%d/smaps_rollup: no Rss", pid)
	}
	return m, nil
}

// VmRSS returns the resident set of pid in KiB from /proc/PID/status (0
// when it is gone): cheaper than ReadMemory, for sampling.
func VmRSS(pid int) int64 {
	kv, err := readKeyValues(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	return kv["VmRSS"]
}

// IO is a process's /proc/PID/io counters in bytes.
type IO struct {
	WriteBytes int64 // bytes the process caused to be sent to the storage layer (page cache pages dirtied)
	WChar      int64 // bytes passed to write-like system calls
	SyscW      int64 // write-like system calls
}

// Sub returns io - o.
func (io IO) Sub(o IO) IO {
	return IO{WriteBytes: io.WriteBytes - o.WriteBytes, WChar: io.WChar - o.WChar, SyscW: io.SyscW - o.SyscW}
}

// ReadIO reads /proc/PID/io.
func ReadIO(pid int) (IO, error) {
	kv, err := readKeyValues(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return IO{}, err
	}
	return IO{WriteBytes: kv["write_bytes"], WChar: kv["wchar"], SyscW: kv["syscw"]}, nil
}

// readKeyValues parses "Key:   123 kB" lines; values are the first number.
func readKeyValues(path string) (map[string]int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kv := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			kv[k] = n
		}
	}
	return kv, sc.Err()
}

// BinaryInfo describes an executable file.
type BinaryInfo struct {
	Size     int64
	Static   bool // no program interpreter and no shared libraries
	Stripped bool // no symbol table and no DWARF
}

// InspectBinary reads the size and linkage of the ELF file at path.
func InspectBinary(path string) (BinaryInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return BinaryInfo{}, err
	}
	f, err := elf.Open(path)
	if err != nil {
		return BinaryInfo{}, err
	}
	defer f.Close()
	bi := BinaryInfo{Size: st.Size(), Static: true, Stripped: true}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			bi.Static = false
		}
	}
	for _, s := range f.Sections {
		if s.Name == ".symtab" || strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			bi.Stripped = false
		}
	}
	return bi, nil
}

// Linkage describes bi, e.g. "static, stripped".
func (bi BinaryInfo) Linkage() string {
	s := "static"
	if !bi.Static {
		s = "DYNAMIC"
	}
	if bi.Stripped {
		return s + ", stripped"
	}
	return s + ", NOT stripped"
}

// WorkingSet sums /proc/PID/smaps: the resident and the referenced KiB of
// the mappings of the executable file and of anonymous memory (including
// the executable's written data pages). Referenced pages are those
// accessed since the last write to /proc/PID/clear_refs.
type WorkingSet struct {
	ExeRSS, ExeReferenced   int64
	AnonRSS, AnonReferenced int64
}

// ReadReferenced reads the WorkingSet of process pid.
func ReadReferenced(pid int) (WorkingSet, error) {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return WorkingSet{}, err
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return WorkingSet{}, err
	}
	var ws WorkingSet
	var inExe bool
	var rss, anon int64
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if !strings.HasSuffix(f[0], ":") { // a mapping header: addresses perms offset dev inode [path]
			inExe = len(f) >= 6 && f[5] == exe
			continue
		}
		if len(f) < 2 {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "Rss:":
			rss = n
		case "Anonymous:":
			anon = n
			ws.AnonRSS += anon
			if inExe {
				ws.ExeRSS += rss - anon
			}
		case "Referenced:":
			// Referenced pages of a mapping with anonymous (written) pages
			// are attributed to anonymous first.
			switch {
			case inExe:
				a := min(anon, n)
				ws.AnonReferenced += a
				ws.ExeReferenced += n - a
			case anon > 0:
				ws.AnonReferenced += min(anon, n)
			}
		}
	}
	return ws, sc.Err()
}

// MajorFaults returns the major page faults (pages read from disk) pid has
// taken: field 12 of /proc/PID/stat.
func MajorFaults(pid int) (int64, error) {
	fields, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(fields[majfltField-3], 10, 64)
}

// ProcessCPU returns the CPU time pid has used, user plus system, all its
// threads: fields 14 and 15 of /proc/PID/stat, in USER_HZ ticks (100 per
// second on Linux whatever the kernel's HZ), so to 10 ms.
func ProcessCPU(pid int) (time.Duration, error) {
	fields, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, f := range []int{utimeField, stimeField} {
		v, err := strconv.ParseInt(fields[f-3], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: field %d: %w", pid, f, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}

// SelfCPU returns the CPU time this process has used, user plus system.
func SelfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// Fields of /proc/PID/stat (numbered from 1 as in proc(5)).
const (
	majfltField = 12
	utimeField  = 14
	stimeField  = 15
	userHZ      = 100
)

// statFields returns the fields of /proc/PID/stat from field 3 on. The
// command name (field 2) may contain spaces; the fields after it start
// behind its closing parenthesis.
func statFields(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	return parseStat(pid, data)
}

func parseStat(pid int, data []byte) ([]string, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < stimeField-2 {
		return nil, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return fields, nil
}
