package client_test

import (
	"net"
	"testing"
	"time"

	"github.com/edged/edged/edged/client"
)

// Calls poll for their answer for DefaultBusyPoll unless WithBusyPoll
// says otherwise; 0 and negative values turn polling off.
func TestWithBusyPoll(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []client.Opt
		want time.Duration
	}{
		{"default", nil, client.DefaultBusyPoll},
		{"set", []client.Opt{client.WithBusyPoll(50 * time.Microsecond)}, 50 * time.Microsecond},
		{"off", []client.Opt{client.WithBusyPoll(0)}, 0},
		{"negative", []client.Opt{client.WithBusyPoll(-time.Millisecond)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			c := client.NewFromConn(a, tc.opts...)
			defer c.Close()
			if got := c.BusyPoll(); got != tc.want {
				t.Fatalf("BusyPoll() = %v, want %v", got, tc.want)
			}
		})
	}
}
