// Command memstudy measures the memory of one edged variant the way the
// budget table does (start, API calls, idle, smaps_rollup) and prints one
// line, so that builds, environments and configurations can be compared:
//
//	go run ./hack/bench/memstudy -edged bin/edged -env GOGC=100 -repeat 3
//	go run ./hack/bench/memstudy -edged /tmp/edged.unstripped -residency
//
// -drop-caches drops the page cache before each start (cold start from
// flash). -config passes a configuration file to edged.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/hack/bench/measure"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "memstudy: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	edged := flag.String("edged", "bin/edged", "edged binary")
	label := flag.String("label", "", "label of the output line (default: the binary and env)")
	var env []string
	flag.Func("env", "`VAR=value` for edged (repeatable)", func(s string) error { env = append(env, s); return nil })
	config := flag.String("config", "", "edged configuration file")
	calls := flag.Int("calls", 1000, "API calls before measuring")
	idle := flag.Duration("idle", 2*time.Second, "idle time after start and after the calls")
	repeat := flag.Int("repeat", 1, "runs (each a fresh edged); the line shows min/median/max RSS")
	drop := flag.Bool("drop-caches", false, "sync; echo 1 > /proc/sys/vm/drop_caches before each start")
	residency := flag.Bool("residency", false, "print the residency report (pass an unstripped -edged or -elf)")
	elfPath := flag.String("elf", "", "unstripped twin of -edged for -residency")
	workingSet := flag.Bool("working-set", false, "after the measurement, clear the referenced bits (/proc/PID/clear_refs), make the calls again and print the pages they referenced")
	hook := flag.String("exec", "", "shell command to run after the last measurement, with $PID set, before edged stops")
	keep := flag.Bool("keep", false, "keep the temp directories (edged.log, meta.db)")
	flag.Parse()
	if *label == "" {
		*label = *edged + " " + strings.Join(env, " ")
	}
	var args []string
	if *config != "" {
		args = append(args, "--config", *config)
	}
	spec, err := measure.BenchSpec()
	if err != nil {
		return err
	}
	var start, after []measure.Memory
	for i := 0; i < *repeat; i++ {
		dir, err := os.MkdirTemp("", "edged-memstudy-")
		if err != nil {
			return err
		}
		if *keep {
			fmt.Fprintf(os.Stderr, "memstudy: keeping %s\n", dir)
		} else {
			defer os.RemoveAll(dir)
		}
		if *drop {
			// Only clean pages are dropped: write back dirty ones first.
			syscall.Sync()
			if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
				return err
			}
		}
		d, err := measure.StartEdged(ctx, *edged, dir, env, args...)
		if err != nil {
			return err
		}
		stopErr := func() error {
			defer d.Stop()
			time.Sleep(*idle)
			m0, err := measure.ReadMemory(d.PID())
			if err != nil {
				return err
			}
			c, err := client.New(ctx, d.Socket)
			if err != nil {
				return err
			}
			err = measure.APICalls(ctx, c, *calls, spec, "")
			c.Close()
			if err != nil {
				return err
			}
			time.Sleep(*idle)
			m1, err := measure.ReadMemory(d.PID())
			if err != nil {
				return err
			}
			start, after = append(start, m0), append(after, m1)
			if *workingSet && i == *repeat-1 {
				if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", d.PID()), []byte("1"), 0); err != nil {
					return err
				}
				c, err := client.New(ctx, d.Socket)
				if err != nil {
					return err
				}
				err = measure.APICalls(ctx, c, *calls, spec, "ws")
				c.Close()
				if err != nil {
					return err
				}
				ws, err := measure.ReadReferenced(d.PID())
				if err != nil {
					return err
				}
				fmt.Printf("working set of %d more calls: executable %.2f MiB referenced of %.2f MiB resident; anonymous %.2f of %.2f MiB\n",
					*calls, measure.MiB(ws.ExeReferenced), measure.MiB(ws.ExeRSS), measure.MiB(ws.AnonReferenced), measure.MiB(ws.AnonRSS))
			}
			if *hook != "" && i == *repeat-1 {
				cmd := exec.CommandContext(ctx, "sh", "-c", *hook)
				cmd.Env = append(os.Environ(), fmt.Sprintf("PID=%d", d.PID()))
				cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
				if err := cmd.Run(); err != nil {
					return fmt.Errorf("-exec: %w", err)
				}
			}
			if *residency && i == *repeat-1 {
				elf := *elfPath
				if elf == "" {
					elf = *edged
				}
				return measure.Residency(os.Stdout, d.PID(), elf, 30)
			}
			return d.Alive()
		}()
		if stopErr != nil {
			return stopErr
		}
	}
	med := func(ms []measure.Memory, f func(measure.Memory) int64) string {
		vals := make([]int64, len(ms))
		for i, m := range ms {
			vals[i] = f(m)
		}
		lo, hi, mid := medianOf(vals)
		if len(vals) == 1 {
			return fmt.Sprintf("%5.2f", measure.MiB(mid))
		}
		return fmt.Sprintf("%5.2f (%.2f-%.2f)", measure.MiB(mid), measure.MiB(lo), measure.MiB(hi))
	}
	fmt.Printf("%-40s start RSS %s | after %d calls: RSS %s PSS %s anon %s file %s HWM %s\n", *label,
		med(start, func(m measure.Memory) int64 { return m.RSS }), *calls,
		med(after, func(m measure.Memory) int64 { return m.RSS }),
		med(after, func(m measure.Memory) int64 { return m.PSS }),
		med(after, func(m measure.Memory) int64 { return m.PSSAnon }),
		med(after, func(m measure.Memory) int64 { return m.PSSFile }),
		med(after, func(m measure.Memory) int64 { return m.HWM }))
	return nil
}

// medianOf returns the minimum, maximum and median of vals.
func medianOf(vals []int64) (lo, hi, mid int64) {
	s := append([]int64(nil), vals...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[0], s[len(s)-1], s[len(s)/2]
}
