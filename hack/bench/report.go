package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Status is the verdict of one row.
type Status string

// Row verdicts.
const (
	Pass  Status = "PASS"  // measured and within its target
	Fail  Status = "FAIL"  // measured and outside its target
	Info  Status = "INFO"  // measured, no target
	Skip  Status = "SKIP"  // not measured: a prerequisite is absent
	Error Status = "ERROR" // not measured: the measurement failed
)

// Target is a budget: the value must be Op ("<=" or ">=") Limit, in the
// row's unit.
type Target struct {
	Op    string  `json:"op"`
	Limit float64 `json:"limit"`
}

// Row is one line of the budget table.
type Row struct {
	Section string  `json:"section"`
	Name    string  `json:"name"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	Target  *Target `json:"target,omitempty"`
	// Comparison is a reference figure, e.g. containerd's measured in the
	// same run; empty when there is none.
	Comparison string `json:"comparison,omitempty"`
	// Note says what was measured, or why a row was skipped or failed.
	Note   string `json:"note,omitempty"`
	Status Status `json:"status"`
	// OK is false only for FAIL and ERROR rows.
	OK bool `json:"ok"`
}

// budget returns a row checked against op limit.
func budget(name string, value float64, unit, op string, limit float64) Row {
	r := Row{Name: name, Value: value, Unit: unit, Target: &Target{Op: op, Limit: limit}}
	ok := value <= limit
	if op == ">=" {
		ok = value >= limit
	}
	r.Status, r.OK = Fail, ok
	if ok {
		r.Status = Pass
	}
	return r
}

// info returns a row without a target.
func info(name string, value float64, unit string) Row {
	return Row{Name: name, Value: value, Unit: unit, Status: Info, OK: true}
}

// skipped returns a row for a measurement that could not run.
func skipped(name, why string) Row {
	return Row{Name: name, Note: why, Status: Skip, OK: true}
}

// failed returns a row for a measurement that broke.
func failed(name string, err error) Row {
	return Row{Name: name, Note: err.Error(), Status: Error}
}

// with returns r with a comparison and note.
func (r Row) with(comparison, note string) Row {
	r.Comparison, r.Note = comparison, note
	return r
}

// formatValue prints v with a precision that suits unit.
func formatValue(v float64, unit string) string {
	switch unit {
	case "ms", "MiB", "×": // a ratio of 1.32 against a limit of 1.3 must not print as 1.3
		return fmt.Sprintf("%.2f", v)
	case "KiB":
		return fmt.Sprintf("%.1f", v)
	case "µs":
		return fmt.Sprintf("%.0f", v)
	default:
		if v == float64(int64(v)) {
			return fmt.Sprintf("%d", int64(v))
		}
		return fmt.Sprintf("%.1f", v)
	}
}

func (t *Target) String() string {
	if t == nil {
		return ""
	}
	op := "≤"
	if t.Op == ">=" {
		op = "≥"
	}
	return op + " " + strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", t.Limit), "0"), ".")
}

// writeTable prints rows grouped by section as an aligned text table.
func writeTable(w io.Writer, rows []Row) error {
	var b strings.Builder
	t := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, "MEASUREMENT\tVALUE\tUNIT\tTARGET\tCOMPARISON\tSTATUS\t")
	section := ""
	for _, r := range rows {
		if r.Section != section {
			section = r.Section
			fmt.Fprintf(t, "[%s]\t\t\t\t\t\t\n", section)
		}
		value := ""
		if r.Status != Skip && r.Status != Error {
			value = formatValue(r.Value, r.Unit)
		}
		fmt.Fprintf(t, "  %s\t%s\t%s\t%s\t%s\t%s\t\n", r.Name, value, r.Unit, r.Target, r.Comparison, r.Status)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	notes := notesOf(rows)
	if notes != "" {
		b.WriteString("\nNotes:\n")
		b.WriteString(notes)
	}
	pass, fail, errs := 0, 0, 0
	for _, r := range rows {
		switch r.Status {
		case Pass:
			pass++
		case Fail:
			fail++
		case Error:
			errs++
		}
	}
	fmt.Fprintf(&b, "\n%d budgets: %d PASS, %d FAIL", pass+fail, pass, fail)
	if errs > 0 {
		fmt.Fprintf(&b, ", %d measurements broke (ERROR)", errs)
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func notesOf(rows []Row) string {
	var b strings.Builder
	for _, r := range rows {
		if r.Note != "" {
			fmt.Fprintf(&b, "  %s: %s\n", r.Name, r.Note)
		}
	}
	return b.String()
}

// writeJSON prints rows as a JSON document.
func writeJSON(w io.Writer, rows []Row) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(struct {
		Rows []Row `json:"rows"`
	}{rows})
}

// stealThreshold is the CPU steal above which a row's latency and
// throughput figures are flagged as read on a busy host.
const stealThreshold = 0.05

// stealRow reports the host's CPU steal (a share, 0 to 1) while something
// was measured.
func stealRow(name string, share float64) Row {
	note := "CPU time the hypervisor gave to other guests (/proc/stat steal)"
	if share > stealThreshold {
		note += fmt.Sprintf("; above %.0f%%: the host is busy, latency and throughput figures here read low", stealThreshold*100)
	}
	return info(name, share*100, "%").with("", note)
}

// stealNote is appended to the note of a latency or throughput row.
func stealNote(share float64) string {
	s := fmt.Sprintf("; host CPU steal meanwhile %.1f%%", share*100)
	if share > stealThreshold {
		s += " (busy host: reads low)"
	}
	return s
}
