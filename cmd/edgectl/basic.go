package main

import (
	"flag"
	"fmt"

	"github.com/edged/edged/internal/buildinfo"
	versionapi "github.com/edged/edged/proto/services/version/v1"
)

func versionCommand() *command {
	return &command{
		name: "version", help: "show the versions of edgectl and edged",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			return func(e *env, args []string) error {
				if len(args) > 0 {
					return fmt.Errorf("version takes no arguments: %w", errUsage)
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				v, err := c.Version(e.ctx)
				if err != nil {
					return err
				}
				if e.format == "json" {
					return writeJSON(e.stdout, []*versionapi.VersionResponse{v}, false)
				}
				fmt.Fprintf(e.stdout, "Client:\n  Version:  %s\n  Revision: %s\nServer:\n  Version:  %s\n  Revision: %s\n  API:      %s\n  Go:       %s\n  Platform: %s\n",
					buildinfo.Version, buildinfo.Revision, v.Version, v.Revision, v.Api, v.GoVersion, v.OsArch)
				return nil
			}
		},
	}
}
