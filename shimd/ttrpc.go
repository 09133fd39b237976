package shimd

import (
	"context"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"

	taskapi "github.com/edged/edged/proto/runtime/task/v2"
	"github.com/edged/edged/proto/wire"
)

// TaskServiceName is the ttrpc service of the task API.
const TaskServiceName = "containerd.task.v2.Task"

// RegisterTaskService registers svc on srv like the generated
// taskapi.RegisterTaskService, but encodes the messages with their gogo
// code through wire.Message instead of protoadapt's reflection adapters,
// which cost every shim hundreds of KiB of heap (see package wire).
func RegisterTaskService(srv *ttrpc.Server, svc taskapi.TaskService) {
	srv.RegisterService(TaskServiceName, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
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
	}})
}

// method adapts one handler: Req is the request struct, *Req its message.
func method[Req any, PReq interface {
	*Req
	wire.Gogo
}, Resp wire.Gogo](h func(context.Context, PReq) (Resp, error)) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(any) error) (any, error) {
		req := PReq(new(Req))
		if err := unmarshal(wire.Of(req)); err != nil {
			return nil, err
		}
		resp, err := h(ctx, req)
		if err != nil {
			return nil, err
		}
		var none Resp // a nil response encodes as an empty message
		if any(resp) == any(none) {
			return wire.Of(&types.Empty{}), nil
		}
		return wire.Of(resp), nil
	}
}
