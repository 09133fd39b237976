package wire

import (
	"context"

	"github.com/containerd/ttrpc"

	"github.com/edged/edged/proto/rpc"
)

// Server adapts a ttrpc server to the generated registration code
// (RegisterXService(wire.Server(s), impl)). Each handler finds the
// request's ttrpc metadata in its context as rpc metadata.
func Server(s *ttrpc.Server) rpc.Registrar { return server{s} }

type server struct{ s *ttrpc.Server }

func incoming(ctx context.Context) context.Context {
	if md, ok := ttrpc.GetMetadata(ctx); ok {
		return rpc.WithMetadata(ctx, rpc.MD(md))
	}
	return ctx
}

func (a server) RegisterService(name string, desc *rpc.ServiceDesc) {
	td := &ttrpc.ServiceDesc{}
	if len(desc.Methods) > 0 {
		td.Methods = make(map[string]ttrpc.Method, len(desc.Methods))
	}
	for n, m := range desc.Methods {
		td.Methods[n] = func(ctx context.Context, unmarshal func(any) error) (any, error) {
			resp, err := m(incoming(ctx), func(req rpc.Message) error { return unmarshal(Of(req)) })
			if err != nil || resp == nil {
				return nil, err
			}
			return Of(resp), nil
		}
	}
	if len(desc.Streams) > 0 {
		td.Streams = make(map[string]ttrpc.Stream, len(desc.Streams))
	}
	for n, st := range desc.Streams {
		td.Streams[n] = ttrpc.Stream{
			Handler: func(ctx context.Context, ss ttrpc.StreamServer) (any, error) {
				resp, err := st.Handler(incoming(ctx), streamServer{ss})
				if err != nil || resp == nil {
					return nil, err
				}
				return Of(resp), nil
			},
			StreamingClient: st.StreamingClient,
			StreamingServer: st.StreamingServer,
		}
	}
	a.s.RegisterService(name, td)
}

type streamServer struct{ s ttrpc.StreamServer }

func (s streamServer) SendMsg(m rpc.Message) error { return s.s.SendMsg(Of(m)) }
func (s streamServer) RecvMsg(m rpc.Message) error { return s.s.RecvMsg(Of(m)) }

// Client adapts a ttrpc client to the generated client code
// (NewXClient(wire.Client(c))). The rpc metadata of a call's context goes
// out as its ttrpc metadata.
func Client(c *ttrpc.Client) rpc.Caller { return client{c} }

type client struct{ c *ttrpc.Client }

func outgoing(ctx context.Context) context.Context {
	if md, ok := rpc.GetMetadata(ctx); ok {
		return ttrpc.WithMetadata(ctx, ttrpc.MD(md))
	}
	return ctx
}

func (a client) Call(ctx context.Context, service, method string, req, resp rpc.Message) error {
	return a.c.Call(outgoing(ctx), service, method, Of(req), Of(resp))
}

func (a client) NewStream(ctx context.Context, desc *rpc.StreamDesc, service, method string, req rpc.Message) (rpc.ClientStream, error) {
	var r any
	if req != nil {
		r = Of(req)
	}
	s, err := a.c.NewStream(outgoing(ctx), &ttrpc.StreamDesc{StreamingClient: desc.StreamingClient, StreamingServer: desc.StreamingServer}, service, method, r)
	if err != nil {
		return nil, err
	}
	return clientStream{s}, nil
}

type clientStream struct{ s ttrpc.ClientStream }

func (s clientStream) CloseSend() error            { return s.s.CloseSend() }
func (s clientStream) SendMsg(m rpc.Message) error { return s.s.SendMsg(Of(m)) }
func (s clientStream) RecvMsg(m rpc.Message) error { return s.s.RecvMsg(Of(m)) }
