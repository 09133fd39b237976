// Command residency shows which parts of a running Go program are resident
// in memory: for every mapping of /proc/PID/maps its resident pages (from
// /proc/PID/pagemap), the ELF sections of the executable they belong to, and
// the packages whose code and data occupy the resident pages of the
// executable (attributed with the symbol table of an unstripped build of
// the same binary).
//
//	go run ./hack/bench/residency -pid $(pidof edged) -elf /tmp/edged.unstripped
//
// Run the unstripped build itself (go build without -ldflags=-s -w) or pass
// the unstripped twin of the stripped binary that runs: -s -w drop only
// the symbol table and DWARF, which are not loaded, so the addresses agree.
// A page is attributed to every package with a symbol on it, so package
// totals overlap and sum to more than the resident pages.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/edged/edged/hack/bench/measure"
)

func main() {
	pid := flag.Int("pid", 0, "process to inspect")
	elfPath := flag.String("elf", "", "unstripped executable of the process (default /proc/PID/exe)")
	top := flag.Int("top", 25, "packages to list")
	flag.Parse()
	if *pid == 0 {
		fmt.Fprintln(os.Stderr, "residency: -pid is required")
		os.Exit(2)
	}
	if err := measure.Residency(os.Stdout, *pid, *elfPath, *top); err != nil {
		fmt.Fprintf(os.Stderr, "residency: %v\n", err)
		os.Exit(1)
	}
}
