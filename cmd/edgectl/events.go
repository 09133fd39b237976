package main

import (
	"bytes"
	"flag"
	"fmt"
	"reflect"

	"github.com/gogo/protobuf/jsonpb"
	"github.com/gogo/protobuf/proto"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/identifiers"
	_ "github.com/edged/edged/proto/events" // registers event payload types for decoding
)

func eventsCommand() *command {
	return &command{
		name: "events", usage: "[--filter FILTER]...", help: "follow the event stream (of every namespace, unless one is given)",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			var filters stringList
			fs.Var(&filters, "filter", `filter, e.g. topic==/tasks/exit, namespace==default, topic~=^/containers/ (repeatable: any matches)`)
			return func(e *env, args []string) error {
				if len(args) != 0 {
					return fmt.Errorf("events takes no arguments: %w", errUsage)
				}
				if e.namespaceGiven {
					scoped, err := inNamespace(filters, e.namespace)
					if err != nil {
						return err
					}
					filters = scoped
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				envs, errc := c.Subscribe(e.ctx, filters...)
				for env := range envs {
					if e.format == "json" {
						if err := writeJSONLine(e.stdout, []*client.Envelope{env}, false); err != nil {
							return err
						}
						continue
					}
					fmt.Fprintf(e.stdout, "%s %s %s %s\n", formatTime(env.Timestamp), env.Namespace, env.Topic, payload(env))
				}
				return <-errc
			}
		},
	}
}

// inNamespace narrows filters (any of which matches) to events of
// namespace ns: each gets the condition too (a comma joins conditions
// that must all hold).
func inNamespace(filters []string, ns string) ([]string, error) {
	if err := identifiers.Validate("namespace", ns); err != nil {
		return nil, err
	}
	cond := `namespace=="` + ns + `"`
	if len(filters) == 0 {
		return []string{cond}, nil
	}
	out := make([]string, len(filters))
	for i, f := range filters {
		out[i] = f + "," + cond
	}
	return out, nil
}

// payload renders an event's payload as compact JSON when its type is known.
func payload(env *client.Envelope) string {
	if env.Event == nil {
		return "-"
	}
	t := proto.MessageType(env.Event.TypeUrl)
	if t == nil {
		return env.Event.TypeUrl
	}
	m := reflect.New(t.Elem()).Interface().(proto.Message)
	if err := proto.Unmarshal(env.Event.Value, m); err != nil {
		return env.Event.TypeUrl
	}
	var buf bytes.Buffer
	if err := (&jsonpb.Marshaler{OrigName: true}).Marshal(&buf, m); err != nil {
		return env.Event.TypeUrl
	}
	return buf.String()
}
