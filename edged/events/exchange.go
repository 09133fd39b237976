// Package events is edged's event exchange: publishers put envelopes in,
// every subscriber receives each matching envelope once, in publish order.
//
// Delivery never blocks a publisher. Each subscriber has a bounded queue; a
// subscriber that falls further behind than its queue is cut off with an
// ErrResourceExhausted error, so a slow client can neither stall edged nor
// make it grow memory without bound.
package events

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/filters"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/edged/namespaces"
	eventsapi "github.com/edged/edged/proto/services/events/v1"
)

// DefaultQueue is the per-subscriber queue length.
const DefaultQueue = 1024

// MaxTopicLength bounds topics.
const MaxTopicLength = 256

// MaxEventBytes bounds the payload of one event.
const MaxEventBytes = 64 << 10

// Exchange fans envelopes out to subscribers.
type Exchange struct {
	queue int
	log   *slog.Logger

	mu   sync.Mutex
	subs map[*subscriber]struct{}
	now  func() time.Time
}

// New returns an exchange whose subscribers queue up to queue envelopes.
// Dropped subscribers are logged to log (nil: slog.Default()).
func New(queue int, log *slog.Logger) *Exchange {
	if queue <= 0 {
		queue = DefaultQueue
	}
	if log == nil {
		log = slog.Default()
	}
	return &Exchange{queue: queue, log: log, subs: map[*subscriber]struct{}{}, now: time.Now}
}

type subscriber struct {
	filters filters.Set
	ch      chan *eventsapi.Envelope
	errc    chan error
	done    bool
}

// TypeURL returns the type URL edged uses for an event payload:
// "containerd.events.TaskExit" for *eventtypes.TaskExit.
func TypeURL(ev proto.Message) string { return proto.MessageName(ev) }

// MarshalAny wraps an event payload in an Any with its type URL.
func MarshalAny(ev proto.Message) (*types.Any, error) {
	b, err := proto.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("marshal event %T: %w", ev, err)
	}
	return &types.Any{TypeUrl: TypeURL(ev), Value: b}, nil
}

// Publish publishes ev under topic in the namespace of ctx.
func (e *Exchange) Publish(ctx context.Context, topic string, ev proto.Message) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := ValidateTopic(topic); err != nil {
		return err
	}
	if e.Subscribers() == 0 {
		// Nobody listens (the usual case on a device): skip the marshaling.
		// A subscriber that arrives now would not have seen the event anyway.
		return nil
	}
	a, err := MarshalAny(ev)
	if err != nil {
		return err
	}
	return e.Forward(ctx, &eventsapi.Envelope{Timestamp: timestampNow(e.now()), Namespace: ns, Topic: topic, Event: a})
}

// Forward publishes an envelope as it is, after validating it.
func (e *Exchange) Forward(ctx context.Context, env *eventsapi.Envelope) error {
	if err := Validate(env); err != nil {
		return err
	}
	if env.Timestamp == nil {
		env.Timestamp = timestampNow(e.now())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.forwardLocked(env)
	return nil
}

// MaxBatch is the most envelopes ForwardBatch takes in one call.
const MaxBatch = 256

// ForwardBatch publishes envs in order, all or none: when one is invalid
// none is published and the error names its index. Subscribers see the
// batch without another publisher's envelopes in between.
func (e *Exchange) ForwardBatch(ctx context.Context, envs []*eventsapi.Envelope) error {
	if len(envs) == 0 {
		return errdefs.InvalidArgument("envelopes", "must not be empty")
	}
	if len(envs) > MaxBatch {
		return errdefs.InvalidArgument("envelopes", "%d envelopes is more than the maximum of %d", len(envs), MaxBatch)
	}
	for i, env := range envs {
		if err := Validate(env); err != nil {
			return fmt.Errorf("envelopes[%d]: %w", i, err)
		}
	}
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, env := range envs {
		if env.Timestamp == nil {
			env.Timestamp = timestampNow(now)
		}
		e.forwardLocked(env)
	}
	return nil
}

// forwardLocked hands env to every matching subscriber; e.mu is held.
func (e *Exchange) forwardLocked(env *eventsapi.Envelope) {
	for s := range e.subs {
		if !s.filters.Match(adaptor{env}) {
			continue
		}
		select {
		case s.ch <- env:
		default:
			// The subscriber is too slow: cut it off rather than block or buffer.
			e.log.Warn("event subscriber dropped: fell behind", "queue", e.queue, "topic", env.Topic)
			e.dropLocked(s, fmt.Errorf("subscriber fell more than %d events behind and was dropped: %w", e.queue, errdefs.ErrResourceExhausted))
		}
	}
}

// Validate checks an envelope from a client.
func Validate(env *eventsapi.Envelope) error {
	if env == nil {
		return errdefs.InvalidArgument("envelope", "must be set")
	}
	if err := identifiers.Validate("envelope.namespace", env.Namespace); err != nil {
		return err
	}
	if err := ValidateTopic(env.Topic); err != nil {
		return err
	}
	if env.Event == nil || env.Event.TypeUrl == "" {
		return errdefs.InvalidArgument("envelope.event", "must be set with a type_url")
	}
	if len(env.Event.Value) > MaxEventBytes {
		return errdefs.InvalidArgument("envelope.event", "%d bytes is more than the maximum of %d", len(env.Event.Value), MaxEventBytes)
	}
	return nil
}

// ValidateTopic checks that a topic is "/"-prefixed, bounded and clean.
func ValidateTopic(topic string) error {
	switch {
	case topic == "" || topic[0] != '/':
		return errdefs.InvalidArgument("topic", "%q must start with '/'", topic)
	case len(topic) > MaxTopicLength:
		return errdefs.InvalidArgument("topic", "%d bytes is longer than the maximum of %d", len(topic), MaxTopicLength)
	case strings.Contains(topic, "//") || strings.HasSuffix(topic, "/"):
		return errdefs.InvalidArgument("topic", "%q has an empty component", topic)
	}
	for _, r := range topic {
		if r < 0x21 || r > 0x7e {
			return errdefs.InvalidArgument("topic", "%q has a character outside printable ASCII", topic)
		}
	}
	return nil
}

// Subscribe returns a channel of matching envelopes and a channel that
// receives one error when the subscription ends: ctx.Err() when ctx is done,
// or ErrResourceExhausted when the subscriber fell too far behind. The
// envelope channel is closed after the error is sent.
func (e *Exchange) Subscribe(ctx context.Context, fs ...string) (<-chan *eventsapi.Envelope, <-chan error, error) {
	set, err := filters.Parse(fs...)
	if err != nil {
		return nil, nil, err
	}
	s := &subscriber{filters: set, ch: make(chan *eventsapi.Envelope, e.queue), errc: make(chan error, 1)}
	e.mu.Lock()
	e.subs[s] = struct{}{}
	e.mu.Unlock()
	go func() {
		<-ctx.Done()
		e.mu.Lock()
		e.dropLocked(s, ctx.Err())
		e.mu.Unlock()
	}()
	return s.ch, s.errc, nil
}

func (e *Exchange) dropLocked(s *subscriber, err error) {
	if s.done {
		return
	}
	s.done = true
	delete(e.subs, s)
	s.errc <- err
	close(s.ch)
}

// Subscribers returns the number of active subscribers.
func (e *Exchange) Subscribers() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.subs)
}

type adaptor struct{ env *eventsapi.Envelope }

func (a adaptor) Field(path []string) (string, bool) {
	if len(path) != 1 {
		if path[0] == "event" && len(path) == 2 && path[1] == "type" {
			return a.env.Event.TypeUrl, true
		}
		return "", false
	}
	switch path[0] {
	case "topic":
		return a.env.Topic, true
	case "namespace":
		return a.env.Namespace, true
	}
	return "", false
}

func timestampNow(t time.Time) *types.Timestamp {
	return &types.Timestamp{Seconds: t.Unix(), Nanos: int32(t.Nanosecond())}
}
