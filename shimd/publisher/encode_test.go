package publisher

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"

	eventsapi "github.com/edged/edged/proto/services/events/v1"
	"github.com/edged/edged/proto/services/ttrpcevents/v1"
)

// forwardRequest encodes exactly what the generated code does.
func TestForwardRequestMatchesGenerated(t *testing.T) {
	for _, c := range []struct {
		ts                    time.Time
		namespace, topic, url string
		value                 []byte
	}{
		{time.Unix(1700000000, 123456789), "default", "/tasks/exit", "edged.events.TaskExit", []byte{0x0a, 0x02, 'i', 'd'}},
		{time.Unix(0, 0), "", "", "", nil},
		{time.Unix(5, 0), "ns", strings.Repeat("t", 300), "u", bytes.Repeat([]byte{7}, 70000)},
	} {
		want, err := (&ttrpcevents.ForwardRequest{Envelope: &eventsapi.Envelope{
			Timestamp: &types.Timestamp{Seconds: c.ts.Unix(), Nanos: int32(c.ts.Nanosecond())},
			Namespace: c.namespace,
			Topic:     c.topic,
			Event:     &types.Any{TypeUrl: c.url, Value: c.value},
		}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		got := forwardRequest(c.ts, c.namespace, c.topic, c.url, c.value)
		if !bytes.Equal(got, want) {
			t.Errorf("forwardRequest(%v, %q, %.10q, %q, %d bytes):\n got %x\nwant %x", c.ts, c.namespace, c.topic, c.url, len(c.value), got[:min(len(got), 64)], want[:min(len(want), 64)])
		}
		if cap(got) != len(got) {
			t.Errorf("buffer sized %d for %d bytes", cap(got), len(got))
		}
	}
}
