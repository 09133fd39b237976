// Package events serves the Events API and the containerd-compatible
// Forward service that runtime v2 shims publish to.
package events

import (
	"context"

	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/events"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/proto/rpc"
	api "github.com/edged/edged/proto/services/events/v1"
	ttrpcapi "github.com/edged/edged/proto/services/ttrpcevents/v1"
)

type service struct{ ex *events.Exchange }

type forwarder struct{ ex *events.Exchange }

// Register adds the Events service and the shims' Forward service to srv.
func Register(srv rpc.Registrar, ex *events.Exchange) {
	api.RegisterEventsService(srv, &service{ex: ex})
	ttrpcapi.RegisterEventsService(srv, &forwarder{ex: ex})
}

func (s *service) Publish(ctx context.Context, r *api.PublishRequest) (*ptypes.Empty, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	env := &api.Envelope{Namespace: ns, Topic: r.Topic, Event: r.Event}
	if err := s.ex.Forward(ctx, env); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

func (s *service) Forward(ctx context.Context, r *api.ForwardRequest) (*ptypes.Empty, error) {
	if err := s.ex.Forward(ctx, r.Envelope); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

func (f *forwarder) Forward(ctx context.Context, r *ttrpcapi.ForwardRequest) (*ptypes.Empty, error) {
	if err := f.ex.Forward(ctx, r.Envelope); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

func (f *forwarder) ForwardBatch(ctx context.Context, r *ttrpcapi.ForwardBatchRequest) (*ptypes.Empty, error) {
	if err := f.ex.ForwardBatch(ctx, r.Envelopes); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

// Subscribe streams matching envelopes until the client goes away or falls
// too far behind.
func (s *service) Subscribe(ctx context.Context, r *api.SubscribeRequest, stream api.Events_SubscribeServer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	envs, errc, err := s.ex.Subscribe(ctx, r.Filters...)
	if err != nil {
		return errdefs.ToStatus(err)
	}
	for env := range envs {
		if err := stream.Send(env); err != nil {
			return err
		}
	}
	err = <-errc
	if ctx.Err() != nil {
		return nil
	}
	return errdefs.ToStatus(err)
}
