// Package publisher forwards the shim's events to the daemon
// (containerd.services.events.ttrpc.v1.Events/Forward at TTRPC_ADDRESS).
//
// Events are queued (bounded) and delivered in order by one goroutine. When
// several are queued they go in one ForwardBatch call (an edged extension;
// against a daemon without it, containerd, one Forward each). When the
// daemon is unreachable the queue keeps them and delivery resumes, in
// order, with backoff reconnects. On overflow the oldest event that is not a
// task exit is dropped first. The connection is closed when idle.
package publisher

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/gogo/protobuf/proto"

	protorpc "github.com/edged/edged/proto/rpc"
	"github.com/edged/edged/shimd/rpc"
)

// Tunables of a Publisher; zero values select defaults.
type Options struct {
	// QueueSize bounds the events kept while the daemon is away (1024).
	QueueSize int
	// CallTimeout is the deadline of one Forward call (5s).
	CallTimeout time.Duration
	// MaxBackoff caps the reconnect delay (2s).
	MaxBackoff time.Duration
	// IdleClose closes the connection after this long without events (10s).
	IdleClose time.Duration
}

// forwardService is the daemon's ttrpc events service.
const forwardService = "containerd.services.events.ttrpc.v1.Events"

// Limits of one ForwardBatch call: well under the daemon's (and ttrpc's)
// 4 MiB message cap and edged's 256 envelopes.
const (
	maxBatch      = 128
	maxBatchBytes = 1 << 20
)

// ExitTopic is the topic never dropped before others.
const ExitTopic = "/tasks/exit"

// Publisher queues and forwards events.
type Publisher struct {
	address   string
	namespace string
	opts      Options
	log       *slog.Logger

	mu      sync.Mutex
	queue   []*envelope
	wake    chan struct{}
	idle    chan struct{} // closed and replaced when the queue drains
	dropped int
	done    chan struct{}
}

// New returns a Publisher forwarding to the ttrpc socket at address (a path
// or unix://path), stamping envelopes with namespace. Call Run.
func New(address, namespace string, opts Options, log *slog.Logger) *Publisher {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 5 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 2 * time.Second
	}
	if opts.IdleClose <= 0 {
		opts.IdleClose = 10 * time.Second
	}
	return &Publisher{
		address:   strings.TrimPrefix(address, "unix://"),
		namespace: namespace,
		opts:      opts,
		log:       log,
		wake:      make(chan struct{}, 1),
		idle:      make(chan struct{}),
		done:      make(chan struct{}),
	}
}

// Publish queues event under topic; it never blocks.
func (p *Publisher) Publish(topic string, event proto.Message) {
	data, err := proto.Marshal(event)
	if err != nil {
		p.log.Error("marshal event", "topic", topic, "error", err)
		return
	}
	env := &envelope{Topic: topic, request: forwardRequest(time.Now(), p.namespace, topic, proto.MessageName(event), data)}
	p.mu.Lock()
	if len(p.queue) >= p.opts.QueueSize {
		i := 0
		for i < len(p.queue)-1 && p.queue[i].Topic == ExitTopic {
			i++
		}
		p.log.Warn("event queue full, dropping event", "topic", p.queue[i].Topic)
		p.queue = append(p.queue[:i], p.queue[i+1:]...)
		p.dropped++
	}
	p.queue = append(p.queue, env)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// envelope is a queued event: its topic and its encoded ForwardRequest.
type envelope struct {
	Topic   string
	request []byte
}

// Dropped returns how many events were dropped because the queue was full.
func (p *Publisher) Dropped() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

// Run delivers queued events until ctx is done.
func (p *Publisher) Run(ctx context.Context) {
	defer close(p.done)
	var conn net.Conn
	var client *rpc.Client
	// single is set once the daemon answered ForwardBatch with
	// Unimplemented; it holds for the connection.
	single := false
	disconnect := func() {
		if client != nil {
			client.Close()
		}
		client, conn, single = nil, nil, false
	}
	defer disconnect()
	backoff := 50 * time.Millisecond
	idle := time.NewTimer(p.opts.IdleClose)
	defer idle.Stop()
	var batch []*envelope
	var buf []byte
	for {
		batch = p.next(batch[:0], single)
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
			case <-idle.C:
				disconnect()
			}
			continue
		}
		if client == nil {
			var err error
			d := net.Dialer{Timeout: p.opts.CallTimeout}
			if conn, err = d.DialContext(ctx, "unix", p.address); err != nil {
				p.log.Debug("events: connect failed", "address", p.address, "error", err)
				if !sleep(ctx, backoff) {
					return
				}
				backoff = min(backoff*2, p.opts.MaxBackoff)
				continue
			}
			client = rpc.NewClient(conn)
		}
		cctx, cancel := context.WithTimeout(ctx, p.opts.CallTimeout)
		// The response is google.protobuf.Empty: nothing to decode.
		var err error
		if len(batch) == 1 {
			_, err = client.Call(cctx, forwardService, "Forward", batch[0].request)
		} else {
			// A ForwardBatchRequest is its ForwardRequests concatenated.
			buf = buf[:0]
			for _, env := range batch {
				buf = append(buf, env.request...)
			}
			_, err = client.Call(cctx, forwardService, "ForwardBatch", buf)
		}
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if st := (*protorpc.StatusError)(nil); len(batch) > 1 && errors.As(err, &st) && st.Code == protorpc.CodeUnimplemented {
				// containerd: one event per call from now on.
				single = true
				continue
			}
			p.log.Warn("events: forward failed, will retry", "topic", batch[0].Topic, "events", len(batch), "error", err)
			disconnect()
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, p.opts.MaxBackoff)
			continue
		}
		backoff = 50 * time.Millisecond
		p.delivered(batch)
		clear(batch)
		if !idle.Stop() {
			select {
			case <-idle.C:
			default:
			}
		}
		idle.Reset(p.opts.IdleClose)
	}
}

// next appends to batch the events to send next, from the head of the
// queue: one when single, else as many as one ForwardBatch carries. When
// the queue is empty it marks the publisher idle.
func (p *Publisher) next(batch []*envelope, single bool) []*envelope {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		close(p.idle)
		p.idle = make(chan struct{})
		return batch
	}
	size := 0
	for _, env := range p.queue {
		if len(batch) > 0 && (single || len(batch) == maxBatch || size+len(env.request) > maxBatchBytes) {
			break
		}
		batch = append(batch, env)
		size += len(env.request)
	}
	return batch
}

// delivered removes the events of batch from the queue. Overflow may have
// dropped some of them meanwhile; those still queued are its head.
func (p *Publisher) delivered(batch []*envelope) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, env := range batch {
		if n < len(p.queue) && p.queue[n] == env {
			n++
		}
	}
	clear(p.queue[:n])
	p.queue = p.queue[n:]
}

// Flush waits until every queued event was delivered or ctx is done.
func (p *Publisher) Flush(ctx context.Context) error {
	for {
		p.mu.Lock()
		n, idle := len(p.queue), p.idle
		p.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), errors.New("events not delivered"))
		case <-idle:
		case <-p.done:
			return errors.New("publisher stopped with events queued")
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
