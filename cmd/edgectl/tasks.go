package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/client"
	tasksapi "github.com/edged/edged/proto/services/tasks/v1"
)

func taskCommand() *command {
	simple := func(name, help string, fn func(e *env, c *client.Client, id string) error) *command {
		return &command{
			name: name, usage: "ID...", help: help,
			flags: func(fs *flag.FlagSet) func(*env, []string) error {
				return func(e *env, args []string) error {
					done := names{e: e}
					return done.flush(e.eachArg(args, name+" needs at least one ID", func(c *client.Client, id string) error {
						if err := fn(e, c, id); err != nil {
							return err
						}
						done.add(id)
						return nil
					}))
				}
			},
		}
	}
	return &command{
		name: "task", aliases: []string{"tasks", "t"}, help: "manage running containers (tasks)",
		sub: []*command{
			taskMetricsCommand(),
			{
				quick: true, name: "ls", aliases: []string{"list"}, usage: "[--filter FILTER]...", help: "list tasks",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					var filters stringList
					fs.Var(&filters, "filter", "filter, e.g. status==RUNNING (repeatable)")
					return func(e *env, args []string) error {
						if len(args) != 0 {
							return fmt.Errorf("ls takes no arguments: %w", errUsage)
						}
						c, err := e.connect()
						if err != nil {
							return err
						}
						defer c.Close()
						list, err := c.ListTasks(e.ctx, filters...)
						if err != nil {
							return err
						}
						if e.format == "json" {
							return writeJSON(e.stdout, list, true)
						}
						tw := newTable(e.stdout, "ID", "PID", "STATUS", "EXIT", "IP")
						for _, p := range list {
							exit := "-"
							if p.Status == tasksapi.Status_STOPPED {
								exit = fmt.Sprint(p.ExitStatus)
							}
							fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", p.ContainerId, p.Pid, p.Status, exit, orDash(strings.Join(p.Ips, ",")))
						}
						return tw.Flush()
					}
				},
			},
			simple("start", "start a container's task in the background (output to its log)", func(e *env, c *client.Client, id string) error {
				// Created and started in one call; a failure leaves no task.
				_, err := c.CreateTask(e.ctx, id, client.TaskOpts{Start: true})
				return err
			}),
			{
				name: "kill", usage: "[-s SIGNAL] [--all] [--exec-id EXEC] ID...", help: "signal tasks (default SIGTERM)",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					sig := fs.String("s", "SIGTERM", "signal name or number")
					all := fs.Bool("all", false, "signal every process of the task")
					exec := fs.String("exec-id", "", "signal an exec process")
					return func(e *env, args []string) error {
						if len(args) == 0 {
							return fmt.Errorf("kill needs at least one ID: %w", errUsage)
						}
						n, err := parseSignal(*sig)
						if err != nil {
							return err
						}
						return e.eachArg(args, "kill needs at least one ID", func(c *client.Client, id string) error {
							return c.Kill(e.ctx, id, *exec, n, *all)
						})
					}
				},
			},
			{
				quick: true, name: "ps", usage: "ID", help: "list a task's processes",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					return func(e *env, args []string) error {
						if len(args) != 1 {
							return fmt.Errorf("ps takes one ID: %w", errUsage)
						}
						c, err := e.connect()
						if err != nil {
							return err
						}
						defer c.Close()
						list, err := c.Pids(e.ctx, args[0])
						if err != nil {
							return err
						}
						if e.format == "json" {
							return writeJSON(e.stdout, list, true)
						}
						tw := newTable(e.stdout, "PID", "EXEC")
						for _, p := range list {
							fmt.Fprintf(tw, "%d\t%s\n", p.Pid, orDash(p.ExecId))
						}
						return tw.Flush()
					}
				},
			},
			{
				name: "exec", argv: true, usage: "[-t] [-i] [--exec-id EXEC] [--user U] [--cwd DIR] [--env K=V] ID ARGS...", help: "run a process in a task; exits with its exit code",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					execID := fs.String("exec-id", "", "ID of the exec (default: generated)")
					tty := fs.Bool("t", false, "allocate a terminal")
					interactive := fs.Bool("i", false, "keep stdin open")
					cwd := fs.String("cwd", "", "working directory (default: the container's)")
					var envs stringList
					fs.Var(&envs, "env", "environment variable KEY=VALUE (repeatable)")
					user := fs.String("user", "", "numeric uid[:gid] (default: the container's user)")
					return func(e *env, args []string) error {
						if len(args) < 2 {
							return fmt.Errorf("exec needs ID and ARGS: %w", errUsage)
						}
						id := args[0]
						c, err := e.connect()
						if err != nil {
							return err
						}
						defer c.Close()
						ctr, err := c.GetContainer(e.ctx, id)
						if err != nil {
							return err
						}
						var spec specs.Spec
						if ctr.Spec == nil || jsonUnmarshal(ctr.Spec.Value, &spec) != nil || spec.Process == nil {
							return fmt.Errorf("container %q has no usable process spec", id)
						}
						p := *spec.Process
						p.Args = args[1:]
						p.Terminal = *tty
						p.Env = mergeEnv(p.Env, envs)
						if *cwd != "" {
							p.Cwd = *cwd
						}
						if *user != "" {
							u, err := parseNumericUser(*user)
							if err != nil {
								return err
							}
							p.User = u
						}
						eid := *execID
						if eid == "" {
							eid = fmt.Sprintf("exec-%d", nowNanos())
						}
						code, err := foreground(e, c, id, eid, *tty, *interactive, false, false, func(ctx context.Context, o client.TaskOpts) (bool, error) {
							return false, c.Exec(ctx, id, eid, &p, o)
						})
						if err != nil {
							return err
						}
						return exitCode(code)
					}
				},
			},
			simple("pause", "freeze tasks", func(e *env, c *client.Client, id string) error { return c.Pause(e.ctx, id) }),
			simple("resume", "thaw paused tasks", func(e *env, c *client.Client, id string) error { return c.Resume(e.ctx, id) }),
			{
				name: "rm", aliases: []string{"delete"}, usage: "[-f] ID...", help: "delete stopped tasks (-f: kill them first)",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					force := fs.Bool("f", false, "kill running tasks first")
					return func(e *env, args []string) error {
						type deleted struct {
							ID         string `json:"id"`
							ExitStatus uint32 `json:"exit_status"`
						}
						var list []deleted
						err := e.eachArg(args, "rm needs at least one ID", func(c *client.Client, id string) error {
							st, err := c.DeleteTask(e.ctx, id, *force)
							if err != nil {
								return err
							}
							if e.format == "json" {
								list = append(list, deleted{id, st.Code})
								return nil
							}
							fmt.Fprintf(e.stdout, "%s\t%d\n", id, st.Code)
							return nil
						})
						if e.format == "json" {
							if werr := writeValue(e.stdout, append([]deleted{}, list...)); werr != nil && err == nil {
								err = werr
							}
						}
						return err
					}
				},
			},
			{
				name: "wait", usage: "ID", help: "wait for a task to exit; exits with its exit code",
				flags: func(fs *flag.FlagSet) func(*env, []string) error {
					return func(e *env, args []string) error {
						if len(args) != 1 {
							return fmt.Errorf("wait takes one ID: %w", errUsage)
						}
						c, err := e.connect()
						if err != nil {
							return err
						}
						defer c.Close()
						st, err := c.Wait(e.ctx, args[0], "")
						if err != nil {
							return err
						}
						return exitCode(st.Code)
					}
				},
			},
		},
	}
}

func logsCommand() *command {
	return &command{
		name: "logs", usage: "[-f] [--tail N] ID", help: "show a detached container's output",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			follow := fs.Bool("f", false, "follow new output until the container exits")
			tail := fs.Int64("tail", -1, "only the last N lines")
			return func(e *env, args []string) error {
				if len(args) != 1 {
					return fmt.Errorf("logs takes one ID: %w", errUsage)
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				return c.Logs(e.ctx, args[0], *follow, *tail, e.stdout)
			}
		},
	}
}

func mergeEnv(base []string, add []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, old := range out {
			if ok, _, _ := strings.Cut(old, "="); ok == k {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}
