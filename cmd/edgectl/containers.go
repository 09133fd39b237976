package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/edged/edged/edged/client"
)

func containersCommand() *command {
	return &command{
		name: "containers", aliases: []string{"container", "c"}, help: "manage containers",
		sub: []*command{
			{
				name: "create", argv: true, usage: "[flags] IMAGE ID [ARGS...]   (or --rootfs DIR ID [ARGS...])", help: "create a container (start it with task start)",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					var rf runFlags
					rf.add(fs)
					fs.BoolVar(&rf.tty, "t", false, "allocate a terminal")
					return func(e *env, args []string) error {
						req, err := rf.request(args)
						if err != nil {
							return err
						}
						c, err := e.connect()
						if err != nil {
							return err
						}
						defer c.Close()
						ctr, err := c.CreateFromImage(e.ctx, req)
						if err != nil {
							return err
						}
						if e.format == "json" {
							return writeContainersJSON(e.stdout, []*client.Container{ctr}, false)
						}
						fmt.Fprintln(e.stdout, ctr.Id)
						return nil
					}
				},
			},
			{
				quick: true, name: "ls", aliases: []string{"list"}, usage: "[--filter FILTER]... [-q]", help: "list containers",
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
							return writeContainersJSON(e.stdout, list, true)
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
				quick: true, name: "info", aliases: []string{"inspect"}, usage: "ID", help: "show a container as JSON",
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
						cj := toContainerJSON(ctr)
						// With a task: its status, pid and addresses.
						if p, err := c.GetTask(e.ctx, args[0], ""); err == nil {
							cj.Task = &taskJSON{Status: p.Status.String(), Pid: p.Pid, IPs: p.Ips}
						}
						enc := json.NewEncoder(e.stdout)
						enc.SetIndent("", "  ")
						return enc.Encode(cj)
					}
				},
			},
			{
				name: "rm", aliases: []string{"remove", "delete"}, usage: "ID...", help: "remove containers",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					return func(e *env, args []string) error {
						done := names{e: e}
						return done.flush(e.eachArg(args, "rm needs at least one ID", func(c *client.Client, id string) error {
							if err := c.DeleteContainer(e.ctx, id); err != nil {
								return err
							}
							done.add(id)
							return nil
						}))
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
							return writeContainersJSON(e.stdout, []*client.Container{ctr}, false)
						}
						fmt.Fprintf(e.stdout, "%s\t%s\n", ctr.Id, formatLabels(ctr.Labels))
						return nil
					}
				},
			},
		},
	}
}

// containerJSON is the JSON shape of a container for operators: the OCI
// spec inline as JSON, other Any values by type and size.
type containerJSON struct {
	ID          string            `json:"id"`
	Image       string            `json:"image,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Runtime     runtimeJSON       `json:"runtime"`
	Snapshotter string            `json:"snapshotter,omitempty"`
	SnapshotKey string            `json:"snapshot_key,omitempty"`
	Spec        json.RawMessage   `json:"spec,omitempty"`
	SpecType    string            `json:"spec_type,omitempty"`
	Extensions  map[string]string `json:"extensions,omitempty"`
	CreatedAt   string            `json:"created_at,omitempty"`
	UpdatedAt   string            `json:"updated_at,omitempty"`
	Task        *taskJSON         `json:"task,omitempty"`
}

type taskJSON struct {
	Status string   `json:"status"`
	Pid    uint32   `json:"pid"`
	IPs    []string `json:"ips,omitempty"`
}

type runtimeJSON struct {
	Name        string `json:"name"`
	OptionsType string `json:"options_type,omitempty"`
}

func toContainerJSON(c *client.Container) containerJSON {
	out := containerJSON{ID: c.Id, Image: c.Image, Labels: c.Labels, Snapshotter: c.Snapshotter, SnapshotKey: c.SnapshotKey,
		CreatedAt: formatTimeRFC(c.CreatedAt), UpdatedAt: formatTimeRFC(c.UpdatedAt)}
	if c.Runtime != nil {
		out.Runtime.Name = c.Runtime.Name
		if c.Runtime.Options != nil {
			out.Runtime.OptionsType = c.Runtime.Options.TypeUrl
		}
	}
	if c.Spec != nil {
		out.SpecType = c.Spec.TypeUrl
		if json.Valid(c.Spec.Value) {
			out.Spec = c.Spec.Value
		} else {
			b, _ := json.Marshal(fmt.Sprintf("(%d bytes, not JSON)", len(c.Spec.Value)))
			out.Spec = b
		}
	}
	for k, v := range c.Extensions {
		if out.Extensions == nil {
			out.Extensions = map[string]string{}
		}
		out.Extensions[k] = fmt.Sprintf("%s (%d bytes)", v.TypeUrl, len(v.Value))
	}
	return out
}

func writeContainersJSON(w io.Writer, list []*client.Container, asList bool) error {
	var v any
	if asList {
		l := make([]containerJSON, 0, len(list))
		for _, c := range list {
			l = append(l, toContainerJSON(c))
		}
		v = l
	} else {
		v = toContainerJSON(list[0])
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
