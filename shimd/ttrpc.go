package shimd

import (
	"context"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/proto/rpc"
	taskapi "github.com/edged/edged/proto/runtime/task/v2"
)

// NewServer returns the shim's ttrpc server (package proto/rpc, not
// github.com/containerd/ttrpc: see there why) serving svc as the runtime
// v2 task API, containerd.task.v2.Task.
func NewServer(svc taskapi.TaskService) *rpc.Server {
	srv := rpc.NewServer(rpc.ServerConfig{Unary: statusInterceptor})
	taskapi.RegisterTaskService(srv, svc)
	return srv
}

// statusInterceptor gives an error of an errdefs kind its status code, so
// that edged sees errors.Is(err, errdefs.ErrNotFound); other errors get
// the codes ttrpc's server gives them (io.EOF, os.ErrNotExist, ...).
func statusInterceptor(ctx context.Context, unmarshal func(rpc.Message) error, info *rpc.UnaryServerInfo, m rpc.Method) (rpc.Message, error) {
	resp, err := m(ctx, unmarshal)
	if err != nil {
		if code := errdefs.StatusCode(err); code != rpc.CodeUnknown {
			return nil, &rpc.StatusError{Code: code, Message: err.Error()}
		}
	}
	return resp, err
}
