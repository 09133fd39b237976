// Package version serves the Version API.
package version

import (
	"context"
	"runtime"

	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/proto/rpc"
	api "github.com/edged/edged/proto/services/version/v1"
)

// Info is what the Version call returns.
type Info struct {
	Version, Revision string
}

// APIVersion is the version of the edged API.
const APIVersion = "1"

type service struct{ resp api.VersionResponse }

// Register adds the Version service to srv.
func Register(srv rpc.Registrar, info Info) {
	api.RegisterVersionService(srv, &service{resp: api.VersionResponse{
		Version:   info.Version,
		Revision:  info.Revision,
		Api:       APIVersion,
		GoVersion: runtime.Version(),
		OsArch:    runtime.GOOS + "/" + runtime.GOARCH,
	}})
}

func (s *service) Version(context.Context, *ptypes.Empty) (*api.VersionResponse, error) {
	r := s.resp
	return &r, nil
}
