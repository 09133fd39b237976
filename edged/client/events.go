package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gogo/protobuf/proto"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/events"
	api "github.com/edged/edged/proto/services/events/v1"
)

// Envelope is an event with its namespace, topic and time.
type Envelope = api.Envelope

// Publish publishes an event payload under topic in the namespace of ctx
// (or the client's).
func (c *Client) Publish(ctx context.Context, topic string, ev proto.Message) error {
	a, err := events.MarshalAny(ev)
	if err != nil {
		return err
	}
	_, err = c.events.Publish(c.nsctx(ctx), &api.PublishRequest{Topic: topic, Event: a})
	return convertError(err)
}

// SubscriberPatience is how long Subscribe waits for a consumer whose
// channel is full before it ends the subscription.
const SubscriberPatience = time.Second

// Subscribe streams events matching any filter (e.g. "topic==/tasks/exit",
// `namespace==default`, "topic~=^/containers/") until ctx is done. The
// error channel receives one value when the stream ends: nil after ctx was
// cancelled, otherwise the reason; then both channels are closed.
func (c *Client) Subscribe(ctx context.Context, filters ...string) (<-chan *Envelope, <-chan error) {
	out := make(chan *Envelope, 64)
	errc := make(chan error, 1)
	go func() {
		defer close(out)
		defer close(errc)
		stream, err := c.events.Subscribe(ctx, &api.SubscribeRequest{Filters: filters})
		if err != nil {
			errc <- convertError(err)
			return
		}
		for {
			env, err := stream.Recv()
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, io.EOF) {
					errc <- nil
				} else {
					errc <- convertError(err)
				}
				return
			}
			select {
			case out <- env:
				continue
			default:
			}
			// The consumer is behind by a full buffer: give it a moment, then
			// end the subscription rather than buffer without bound.
			t := time.NewTimer(SubscriberPatience)
			select {
			case out <- env:
				t.Stop()
			case <-t.C:
				errc <- fmt.Errorf("event subscription dropped: the receiver fell behind by %d events: %w", cap(out), errdefs.ErrResourceExhausted)
				return
			case <-ctx.Done():
				t.Stop()
				errc <- nil
				return
			}
		}
	}()
	return out, errc
}

// UnmarshalEvent decodes an envelope's payload into dst.
func UnmarshalEvent(env *Envelope, dst proto.Message) error {
	return proto.Unmarshal(env.Event.Value, dst)
}
