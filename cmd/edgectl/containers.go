package main

import (
	"flag"
	"fmt"

	"github.com/edged/edged/edged/client"
)

func containersCommand() *command {
	return &command{
		name: "containers", aliases: []string{"container", "c"}, help: "manage containers",
		sub: []*command{
			{
				name: "ls", aliases: []string{"list"}, usage: "[--filter FILTER]...", help: "list containers",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					var filters stringList
					fs.Var(&filters, "filter", `filter, e.g. image==busybox, labels."env"==prod, id==web (repeatable: any matches)`)
					quiet := fs.Bool("q", false, "print IDs only")
					return func(e *env, args []string) error {
						if len(args) != 0 {
							return fmt.Errorf("ls takes no arguments: %w", errUsage)
						}
						c, err := e.connect()
						if err != nil {
							return err
						}
						defer c.Close()
						list, err := c.ListContainers(e.ctx, filters...)
						if err != nil {
							return err
						}
						if e.format == "json" {
							return writeJSON(e.stdout, list, true)
						}
						if *quiet {
							for _, ctr := range list {
								fmt.Fprintln(e.stdout, ctr.Id)
							}
							return nil
						}
						tw := newTable(e.stdout, "ID", "IMAGE", "RUNTIME", "LABELS")
						for _, ctr := range list {
							rt := ""
							if ctr.Runtime != nil {
								rt = ctr.Runtime.Name
							}
							fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ctr.Id, orDash(ctr.Image), orDash(rt), formatLabels(ctr.Labels))
						}
						return tw.Flush()
					}
				},
			},
			{
				name: "info", aliases: []string{"inspect"}, usage: "ID", help: "show a container as JSON",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					return func(e *env, args []string) error {
						if len(args) != 1 {
							return fmt.Errorf("info takes one ID: %w", errUsage)
						}
						c, err := e.connect()
						if err != nil {
							return err
						}
						defer c.Close()
						ctr, err := c.GetContainer(e.ctx, args[0])
						if err != nil {
							return err
						}
						return writeJSON(e.stdout, []*client.Container{ctr}, false)
					}
				},
			},
			{
				name: "rm", aliases: []string{"remove", "delete"}, usage: "ID...", help: "remove containers",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					return func(e *env, args []string) error {
						if len(args) == 0 {
							return fmt.Errorf("rm needs at least one ID: %w", errUsage)
						}
						c, err := e.connect()
						if err != nil {
							return err
						}
						defer c.Close()
						var failed error
						for _, id := range args {
							if err := c.DeleteContainer(e.ctx, id); err != nil {
								fmt.Fprintf(e.stderr, "edgectl: %s\n", oneLine(err.Error()))
								failed = exitError(1)
								continue
							}
							fmt.Fprintln(e.stdout, id)
						}
						return failed
					}
				},
			},
			{
				name: "label", usage: "ID KEY=VALUE...", help: "set labels of a container (KEY= removes one)",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					return func(e *env, args []string) error {
						if len(args) < 2 {
							return fmt.Errorf("label needs ID and at least one KEY=VALUE: %w", errUsage)
						}
						l, err := parseLabels(args[1:])
						if err != nil {
							return err
						}
						c, err := e.connect()
						if err != nil {
							return err
						}
						defer c.Close()
						ctr, err := c.SetContainerLabels(e.ctx, args[0], l)
						if err != nil {
							return err
						}
						if e.format == "json" {
							return writeJSON(e.stdout, []*client.Container{ctr}, false)
						}
						fmt.Fprintf(e.stdout, "%s\t%s\n", ctr.Id, formatLabels(ctr.Labels))
						return nil
					}
				},
			},
		},
	}
}
