package main

import (
	"flag"
	"fmt"

	"github.com/edged/edged/edged/client"
	api "github.com/edged/edged/proto/services/netns/v1"
)

func netnsCommand() *command {
	return &command{
		name: "netns", help: "manage named network namespaces (join one with run --net ns:NAME)",
		sub: []*command{
			{
				name: "create", usage: "NAME", help: "create a network namespace with loopback up",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					return func(e *env, args []string) error {
						if len(args) != 1 {
							return fmt.Errorf("create takes one NAME: %w", errUsage)
						}
						c, err := e.connect()
						if err != nil {
							return err
						}
						defer c.Close()
						n, err := c.CreateNetns(e.ctx, args[0])
						if err != nil {
							return err
						}
						if e.format == "json" {
							return writeJSON(e.stdout, []*api.Namespace{n}, false)
						}
						fmt.Fprintln(e.stdout, n.Name)
						return nil
					}
				},
			},
			{
				quick: true, name: "ls", aliases: []string{"list"}, usage: "[-q]", help: "list network namespaces",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					quiet := fs.Bool("q", false, "print names only")
					return func(e *env, args []string) error {
						if len(args) != 0 {
							return fmt.Errorf("ls takes no arguments: %w", errUsage)
						}
						c, err := e.connect()
						if err != nil {
							return err
						}
						defer c.Close()
						list, err := c.ListNetns(e.ctx)
						if err != nil {
							return err
						}
						if e.format == "json" {
							return writeJSON(e.stdout, list, true)
						}
						if *quiet {
							for _, n := range list {
								fmt.Fprintln(e.stdout, n.Name)
							}
							return nil
						}
						tw := newTable(e.stdout, "NAME", "PATH")
						for _, n := range list {
							fmt.Fprintf(tw, "%s\t%s\n", n.Name, n.Path)
						}
						return tw.Flush()
					}
				},
			},
			{
				name: "rm", aliases: []string{"remove", "delete"}, usage: "NAME...", help: "remove network namespaces no task uses",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					return func(e *env, args []string) error {
						done := names{e: e}
						return done.flush(e.eachArg(args, "rm needs at least one NAME", func(c *client.Client, name string) error {
							if err := c.DeleteNetns(e.ctx, name); err != nil {
								return err
							}
							done.add(name)
							return nil
						}))
					}
				},
			},
		},
	}
}
