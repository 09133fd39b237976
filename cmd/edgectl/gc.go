package main

import (
	"flag"
	"fmt"

	"github.com/edged/edged/edged/client"
)

func gcCommand() *command {
	return &command{
		name: "gc", usage: "", help: "remove blobs and snapshots no image, container or lease uses",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			return func(e *env, args []string) error {
				if len(args) != 0 {
					return fmt.Errorf("gc takes no arguments: %w", errUsage)
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				res, err := c.GarbageCollect(e.ctx)
				if err != nil {
					return err
				}
				if e.format == "json" {
					return writeJSON(e.stdout, []*client.GCResult{res}, false)
				}
				fmt.Fprintf(e.stdout, "removed %d blobs and %d snapshots, freed %s\n", res.RemovedBlobs, res.RemovedSnapshots, sizeString(res.FreedBytes))
				return nil
			}
		},
	}
}
