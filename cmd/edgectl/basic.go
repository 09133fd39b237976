package main

import (
	"encoding/json"
	"flag"
	"fmt"

	"github.com/edged/edged/internal/buildinfo"
)

func versionCommand() *command {
	return &command{
		quick: true, name: "version", help: "show the versions of edgectl and edged",
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
					server, err := protoJSON(v)
					if err != nil {
						return err
					}
					type clientVersion struct {
						Version  string `json:"version"`
						Revision string `json:"revision"`
					}
					return writeValue(e.stdout, struct {
						Client clientVersion   `json:"client"`
						Server json.RawMessage `json:"server"`
					}{clientVersion{buildinfo.Version, buildinfo.Revision}, server})
				}
				fmt.Fprintf(e.stdout, "Client:\n  Version:  %s\n  Revision: %s\nServer:\n  Version:  %s\n  Revision: %s\n  API:      %s\n  Go:       %s\n  Platform: %s\n",
					buildinfo.Version, buildinfo.Revision, v.Version, v.Revision, v.Api, v.GoVersion, v.OsArch)
				return nil
			}
		},
	}
}
