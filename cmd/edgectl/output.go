package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gogo/protobuf/jsonpb"
	"github.com/gogo/protobuf/proto"
	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/protoconv"
)

// jsonMarshaler writes every field, zero values too: a script reading
// "exit_status" of a task that exited 0 must find it.
var jsonMarshaler = jsonpb.Marshaler{OrigName: true, EmitDefaults: true, Indent: "  "}

// protoJSON renders m as a JSON value to embed in another (compact; the
// enclosing writeValue indents).
func protoJSON(m proto.Message) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := (&jsonpb.Marshaler{OrigName: true, EmitDefaults: true}).Marshal(&buf, m); err != nil {
		return nil, fmt.Errorf("encode json: %w", err)
	}
	return buf.Bytes(), nil
}

// writeValue writes v as indented JSON (what commands print with
// --format json that is not a single API message or a list of them).
func writeValue(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// names prints what a command acted on: a name per line, or with --format
// json one array of them when the command is done (flush).
type names struct {
	e    *env
	list []string
}

func (n *names) add(name string) {
	if n.e.format == "json" {
		n.list = append(n.list, name)
		return
	}
	fmt.Fprintln(n.e.stdout, name)
}

// flush writes the JSON array; err is the command's result, returned
// as it is (a failed command prints what it did before failing).
func (n *names) flush(err error) error {
	if n.e.format != "json" {
		return err
	}
	if werr := writeValue(n.e.stdout, append([]string{}, n.list...)); werr != nil && err == nil {
		return werr
	}
	return err
}

// writeJSON writes one message, or a list of messages as a JSON array.
func writeJSON[T proto.Message](w io.Writer, msgs []T, list bool) error {
	return writeJSONWith(w, &jsonMarshaler, msgs, list)
}

// writeJSONLine writes like writeJSON on one line: a command that follows
// a stream (events, stats) prints one JSON document per line, which a
// reader can split without parsing.
func writeJSONLine[T proto.Message](w io.Writer, msgs []T, list bool) error {
	return writeJSONWith(w, &jsonpb.Marshaler{OrigName: true, EmitDefaults: true}, msgs, list)
}

func writeJSONWith[T proto.Message](w io.Writer, jm *jsonpb.Marshaler, msgs []T, list bool) error {
	sep := ",\n"
	if jm.Indent == "" {
		sep = ","
	}
	var buf bytes.Buffer
	if list {
		buf.WriteString("[")
	}
	for i, m := range msgs {
		if i > 0 {
			buf.WriteString(sep)
		} else if list && jm.Indent != "" {
			buf.WriteString("\n")
		}
		if err := jm.Marshal(&buf, m); err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
	}
	if list {
		if len(msgs) > 0 && jm.Indent != "" {
			buf.WriteString("\n")
		}
		buf.WriteString("]")
	}
	buf.WriteString("\n")
	_, err := w.Write(buf.Bytes())
	return err
}

func newTable(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

func formatLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + labels[k])
	}
	return b.String()
}

func formatTime(ts *ptypes.Timestamp) string {
	t := protoconv.Time(ts)
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func formatTimeRFC(ts *ptypes.Timestamp) string {
	t := protoconv.Time(ts)
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}
