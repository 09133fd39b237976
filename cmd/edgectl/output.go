package main

import (
	"bytes"
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

var jsonMarshaler = jsonpb.Marshaler{OrigName: true, Indent: "  "}

// writeJSON writes one message, or a list of messages as a JSON array.
func writeJSON[T proto.Message](w io.Writer, msgs []T, list bool) error {
	var buf bytes.Buffer
	if list {
		buf.WriteString("[")
	}
	for i, m := range msgs {
		if i > 0 {
			buf.WriteString(",\n")
		} else if list {
			buf.WriteString("\n")
		}
		if err := jsonMarshaler.Marshal(&buf, m); err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
	}
	if list {
		if len(msgs) > 0 {
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
