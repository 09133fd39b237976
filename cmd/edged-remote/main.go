// Command edged-remote is edged's registry helper: edged starts it for
// each image pull or push, sends the request on its stdin and reads
// progress and the result from its stdout (protocol in package
// edged/registry). It writes blobs straight into edged's content store.
// Keeping the registry client (HTTP, TLS, token auth) in this process keeps
// it out of the long-running daemon.
//
// It is not meant to be run by hand; `edged-remote -v` prints its version.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/edged/edged/edged/remotes"
	"github.com/edged/edged/internal/buildinfo"
	"github.com/edged/edged/internal/pageout"
)

func main() {
	if len(os.Args) > 1 {
		if os.Args[1] == "-v" || os.Args[1] == "--version" {
			fmt.Println(buildinfo.Version)
			return
		}
		fmt.Fprintf(os.Stderr, "usage: %s (started by edged; reads a request on stdin)\n", os.Args[0])
		os.Exit(2)
	}
	// Bounded memory on small devices: downloads stream through small
	// buffers, so a tighter heap target costs little CPU.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// Only the code a pull runs becomes resident, one page at a time:
	// start-up faulted in 64 KiB blocks all over the binary, and the
	// kernel's fault-around would keep mapping every cached page near the
	// code that runs (≈7 MiB instead of ≈2.5). The price is ≈600 page reads
	// from the binary per pull.
	start := pageout.PeakRSS()
	if _, err := pageout.Executable(); err != nil {
		log.Warn("registry helper: cannot page out start-up code", "error", err)
	} else if err := pageout.ResetPeakRSS(); err != nil {
		log.Warn("registry helper", "error", err)
	}
	if err := remotes.Serve(context.Background(), os.Stdin, os.Stdout, start); err != nil {
		log.Error("registry helper", "error", err)
		os.Exit(1)
	}
}
