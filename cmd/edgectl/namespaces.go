package main

import (
	"flag"
	"fmt"

	"github.com/edged/edged/edged/client"
	api "github.com/edged/edged/proto/services/namespaces/v1"
)

func namespacesCommand() *command {
	return &command{
		name: "namespaces", aliases: []string{"namespace", "ns"}, help: "manage namespaces",
		sub: []*command{
			{
				name: "create", usage: "NAME [--label KEY=VALUE]...", help: "create a namespace",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					var labels labelList
					fs.Var(&labels, "label", "label KEY=VALUE (repeatable)")
					return func(e *env, args []string) error {
						if len(args) != 1 {
							return fmt.Errorf("create takes one NAME: %w", errUsage)
						}
						l, err := parseLabels(labels)
						if err != nil {
							return err
						}
						c, err := e.connect()
						if err != nil {
							return err
						}
						defer c.Close()
						n, err := c.CreateNamespace(e.ctx, args[0], l)
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
				quick: true, name: "ls", aliases: []string{"list"}, usage: "[--filter FILTER]... [-q]", help: "list namespaces",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					var filters stringList
					fs.Var(&filters, "filter", `filter, e.g. name==prod or labels."site"==a (repeatable: any matches)`)
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
						list, err := c.ListNamespaces(e.ctx, filters...)
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
						tw := newTable(e.stdout, "NAME", "LABELS", "CREATED")
						for _, n := range list {
							fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Name, formatLabels(n.Labels), formatTime(n.CreatedAt))
						}
						return tw.Flush()
					}
				},
			},
			{
				name: "rm", aliases: []string{"remove", "delete"}, usage: "NAME...", help: "remove empty namespaces",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					return func(e *env, args []string) error {
						done := names{e: e}
						return done.flush(e.eachArg(args, "rm needs at least one NAME", func(c *client.Client, name string) error {
							if err := c.DeleteNamespace(e.ctx, name); err != nil {
								return err
							}
							done.add(name)
							return nil
						}))
					}
				},
			},
			{
				name: "label", usage: "NAME KEY=VALUE...", help: "set labels of a namespace (KEY= removes one)",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					return func(e *env, args []string) error {
						if len(args) < 2 {
							return fmt.Errorf("label needs NAME and at least one KEY=VALUE: %w", errUsage)
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
						n, err := c.SetNamespaceLabels(e.ctx, args[0], l)
						if err != nil {
							return err
						}
						if e.format == "json" {
							return writeJSON(e.stdout, []*api.Namespace{n}, false)
						}
						fmt.Fprintf(e.stdout, "%s\t%s\n", n.Name, formatLabels(n.Labels))
						return nil
					}
				},
			},
		},
	}
}
