package shimd

import (
	"context"

	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	"github.com/edged/edged/shimd/rpc"
)

// TaskServiceName is the ttrpc service of the task API.
const TaskServiceName = "containerd.task.v2.Task"

// RegisterTaskService registers svc on srv. The messages are encoded with
// their gogo code; the ttrpc envelopes by package rpc (see there why not
// github.com/containerd/ttrpc).
func RegisterTaskService(srv *rpc.Server, svc taskapi.TaskService) {
	srv.Register(TaskServiceName, map[string]rpc.Handler{
		"State":      method(svc.State),
		"Create":     method(svc.Create),
		"Start":      method(svc.Start),
		"Delete":     method(svc.Delete),
		"Pids":       method(svc.Pids),
		"Pause":      method(svc.Pause),
		"Resume":     method(svc.Resume),
		"Checkpoint": method(svc.Checkpoint),
		"Kill":       method(svc.Kill),
		"Exec":       method(svc.Exec),
		"ResizePty":  method(svc.ResizePty),
		"CloseIO":    method(svc.CloseIO),
		"Update":     method(svc.Update),
		"Wait":       method(svc.Wait),
		"Stats":      method(svc.Stats),
		"Connect":    method(svc.Connect),
		"Shutdown":   method(svc.Shutdown),
	})
}

// gogoMessage is a gogo-generated message with generated marshalling code.
type gogoMessage interface {
	Size() int
	MarshalToSizedBuffer([]byte) (int, error)
	Unmarshal([]byte) error
}

// method adapts one handler: Req is the request struct, *Req its message.
func method[Req any, PReq interface {
	*Req
	gogoMessage
}, Resp gogoMessage](h func(context.Context, PReq) (Resp, error)) rpc.Handler {
	return func(ctx context.Context, payload []byte) ([]byte, error) {
		req := PReq(new(Req))
		if err := req.Unmarshal(payload); err != nil {
			return nil, rpc.UnmarshalError(err)
		}
		resp, err := h(ctx, req)
		if err != nil {
			return nil, err
		}
		var none Resp // a nil response encodes as an empty message
		if any(resp) == any(none) {
			return nil, nil
		}
		return marshal(resp)
	}
}

func marshal(m gogoMessage) ([]byte, error) {
	n := m.Size()
	if n == 0 {
		return nil, nil
	}
	b := make([]byte, n)
	if _, err := m.MarshalToSizedBuffer(b); err != nil {
		return nil, rpc.MarshalError(err)
	}
	return b, nil
}
