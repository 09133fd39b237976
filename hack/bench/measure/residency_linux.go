package measure

import (
	"bufio"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

type mapping struct {
	start, end uint64
	perms      string
	path       string
}

func readMaps(pid int) ([]mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("maps line %q", sc.Text())
		}
		m := mapping{start: s, end: e, perms: fields[1]}
		if len(fields) >= 6 {
			m.path = fields[5]
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// resident returns, per page of [start,end), whether it is present.
func resident(pagemap io.ReaderAt, start, end uint64, pageSize uint64) ([]bool, error) {
	n := (end - start) / pageSize
	buf := make([]byte, 8*n)
	if _, err := pagemap.ReadAt(buf, int64(start/pageSize*8)); err != nil && err != io.EOF {
		return nil, err
	}
	out := make([]bool, n)
	for i := range out {
		e := binary.LittleEndian.Uint64(buf[8*i:])
		out[i] = e&(1<<63) != 0
	}
	return out, nil
}

type sym struct {
	addr, size uint64
	pkg        string
}

// pkgOf returns the package of a Go symbol name.
func pkgOf(name string) string {
	name = strings.TrimPrefix(name, "type:")
	name = strings.TrimPrefix(name, "go:")
	name = strings.TrimLeft(name, "*")
	slash := strings.LastIndex(name, "/")
	rest := name[slash+1:]
	if dot := strings.Index(rest, "."); dot >= 0 {
		return name[:slash+1+dot]
	}
	return name
}

// Residency writes which parts of process pid are resident: per mapping,
// per ELF section of its executable, and per Go package (top packages by
// resident bytes), using the symbol table of elfPath, an unstripped build
// with the same layout as the running executable ("" = /proc/PID/exe).
// A page is counted for every package with a symbol on it.
func Residency(w io.Writer, pid int, elfPath string, top int) error {
	if elfPath == "" {
		elfPath = fmt.Sprintf("/proc/%d/exe", pid)
	}
	const pageSize = 4096
	maps, err := readMaps(pid)
	if err != nil {
		return err
	}
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return err
	}
	defer pm.Close()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return err
	}
	ef, err := elf.Open(elfPath)
	if err != nil {
		return err
	}
	defer ef.Close()

	present := map[uint64]bool{} // page address -> resident, executable's mappings
	fmt.Fprintf(w, "%-18s %-5s %9s %9s  %s\n", "MAPPING", "PERMS", "SIZE KiB", "RSS KiB", "PATH")
	var total uint64
	for _, m := range maps {
		if m.path == "[vsyscall]" {
			continue
		}
		res, err := resident(pm, m.start, m.end, pageSize)
		if err != nil {
			return fmt.Errorf("pagemap %x-%x: %w", m.start, m.end, err)
		}
		n := 0
		for i, r := range res {
			if r {
				n++
			}
			if m.path == exe {
				present[m.start+uint64(i)*pageSize] = r
			}
		}
		total += uint64(n) * 4
		if n > 0 || m.path == exe {
			fmt.Fprintf(w, "%-18x %-5s %9d %9d  %s\n", m.start, m.perms, (m.end-m.start)/1024, n*4, m.path)
		}
	}
	fmt.Fprintf(w, "total resident %d KiB\n\n", total)

	// Resident pages per ELF section.
	fmt.Fprintf(w, "%-16s %9s %9s\n", "SECTION", "SIZE KiB", "RSS KiB")
	for _, s := range ef.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Size == 0 {
			continue
		}
		n := 0
		for p := s.Addr &^ (pageSize - 1); p < s.Addr+s.Size; p += pageSize {
			if present[p] {
				n++
			}
		}
		fmt.Fprintf(w, "%-16s %9d %9d\n", s.Name, s.Size/1024, n*4)
	}

	// Resident pages per package, from the symbol table.
	syms, err := ef.Symbols()
	if err != nil {
		return fmt.Errorf("%s has no symbol table (pass an unstripped build): %w", elfPath, err)
	}
	var list []sym
	for _, s := range syms {
		if s.Size == 0 || s.Value == 0 {
			continue
		}
		list = append(list, sym{addr: s.Value, size: s.Size, pkg: pkgOf(s.Name)})
	}
	type stat struct {
		pkg                string
		size, pages, bytes uint64 // symbol bytes, resident pages touched, resident symbol bytes
	}
	byPkg := map[string]*stat{}
	seen := map[string]map[uint64]bool{}
	for _, s := range list {
		st := byPkg[s.pkg]
		if st == nil {
			st = &stat{pkg: s.pkg}
			byPkg[s.pkg] = st
			seen[s.pkg] = map[uint64]bool{}
		}
		st.size += s.size
		for p := s.addr &^ (pageSize - 1); p < s.addr+s.size; p += pageSize {
			if present[p] {
				lo, hi := max(p, s.addr), min(p+pageSize, s.addr+s.size)
				st.bytes += hi - lo
				if !seen[s.pkg][p] {
					seen[s.pkg][p] = true
					st.pages++
				}
			}
		}
	}
	stats := make([]*stat, 0, len(byPkg))
	for _, st := range byPkg {
		stats = append(stats, st)
	}
	sort.Slice(stats, func(i, j int) bool { return stats[i].bytes > stats[j].bytes })
	fmt.Fprintf(w, "\n%-48s %10s %12s %12s\n", "PACKAGE (symbols in .text/.data etc.)", "SIZE KiB", "RESIDENT KiB", "PAGES KiB")
	for i, st := range stats {
		if i >= top {
			break
		}
		fmt.Fprintf(w, "%-48s %10d %12d %12d\n", st.pkg, st.size/1024, st.bytes/1024, st.pages*4)
	}
	return nil
}
