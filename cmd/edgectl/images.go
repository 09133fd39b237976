package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/internal/atomicfile"
	imagesapi "github.com/edged/edged/proto/services/images/v1"
)

func imagesCommand() *command {
	return &command{
		name: "images", aliases: []string{"image", "i"}, help: "manage images (pull, push, import, export, ...)",
		sub: []*command{
			imagesLsCommand(), imagesInspectCommand(), imagesRmCommand(), imagesTagCommand(),
			imagesPullCommand(), imagesPushCommand(), imagesImportCommand(), imagesExportCommand(),
			imagesUsageCommand(),
		},
	}
}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

func imagesLsCommand() *command {
	return &command{
		quick: true, name: "ls", aliases: []string{"list"}, usage: "[--filter FILTER]... [-q]", help: "list images",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			var filters stringList
			fs.Var(&filters, "filter", `filter, e.g. name==docker.io/library/busybox:latest, labels."k"==v (repeatable: any matches)`)
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
				list, err := c.ListImages(e.ctx, filters...)
				if err != nil {
					return err
				}
				if e.format == "json" {
					return writeJSON(e.stdout, list, true)
				}
				if *quiet {
					for _, im := range list {
						fmt.Fprintln(e.stdout, im.Name)
					}
					return nil
				}
				tw := newTable(e.stdout, "NAME", "DIGEST", "TYPE", "CREATED")
				for _, im := range list {
					kind := "-"
					if im.Target != nil {
						kind = mediaKind(im.Target.MediaType)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", im.Name, shortDigest(im.Target.GetDigest()), kind, formatTime(im.CreatedAt))
				}
				return tw.Flush()
			}
		},
	}
}

func mediaKind(mt string) string {
	switch {
	case strings.Contains(mt, "index") || strings.Contains(mt, "manifest.list"):
		return "index"
	case strings.Contains(mt, "manifest"):
		return "manifest"
	}
	return orDash(mt)
}

func imagesInspectCommand() *command {
	return &command{
		quick: true, name: "inspect", usage: "NAME...", help: "print images as a JSON array",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			return func(e *env, args []string) error {
				if len(args) == 0 {
					return fmt.Errorf("give at least one image name: %w", errUsage)
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				var out []*client.Image
				for _, n := range args {
					im, err := c.GetImage(e.ctx, n)
					if err != nil {
						return err
					}
					out = append(out, im)
				}
				return writeJSON(e.stdout, out, true) // an array, however many names
			}
		},
	}
}

func imagesRmCommand() *command {
	return &command{
		name: "rm", aliases: []string{"remove", "delete"}, usage: "[--force] [--sync] NAME...", help: "delete images (their unused blobs and snapshots are collected)",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			force := fs.Bool("force", false, "delete even if containers use the image (their snapshots stay)")
			sync := fs.Bool("sync", false, "collect the image's blobs and snapshots before returning")
			return func(e *env, args []string) error {
				if len(args) == 0 {
					return fmt.Errorf("give at least one image name: %w", errUsage)
				}
				done := names{e: e}
				return done.flush(e.eachArg(args, "give at least one image name", func(c *client.Client, n string) error {
					if err := c.DeleteImage(e.ctx, n, client.DeleteImageOpts{Force: *force, Sync: *sync}); err != nil {
						return err
					}
					done.add(n)
					return nil
				}))
			}
		},
	}
}

func imagesTagCommand() *command {
	return &command{
		name: "tag", usage: "SOURCE TARGET", help: "give an image another name",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			return func(e *env, args []string) error {
				if len(args) != 2 {
					return fmt.Errorf("give SOURCE and TARGET: %w", errUsage)
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				im, err := c.TagImage(e.ctx, args[0], args[1])
				if err != nil {
					return err
				}
				if e.format == "json" {
					return writeJSON(e.stdout, []*client.Image{im}, false)
				}
				fmt.Fprintln(e.stdout, im.Name)
				return nil
			}
		},
	}
}

func imagesPullCommand() *command {
	return &command{
		name: "pull", usage: "[--platform OS/ARCH[/VARIANT]] [--skip-unpack] [--user USER:PASSWORD] REF", help: "pull an image from a registry",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			platform := fs.String("platform", "", "platform to pull (default: the daemon's)")
			skip := fs.Bool("skip-unpack", false, "only fetch the content")
			user := fs.String("user", "", "USER:PASSWORD for the registry (default: the daemon's config.json)")
			return func(e *env, args []string) error {
				if len(args) != 1 {
					return fmt.Errorf("give one image reference: %w", errUsage)
				}
				creds, err := parseUser(*user)
				if err != nil {
					return err
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				pr := newProgressPrinter(e.stderr)
				im, err := c.Pull(e.ctx, args[0], client.PullOpts{Platform: *platform, SkipUnpack: *skip, Progress: pr.update, Credentials: creds})
				pr.finish()
				if err != nil {
					return err
				}
				if e.format == "json" {
					return writeJSON(e.stdout, []*client.Image{im}, false)
				}
				fmt.Fprintln(e.stdout, im.Name)
				return nil
			}
		},
	}
}

func imagesPushCommand() *command {
	return &command{
		name: "push", usage: "[--user USER:PASSWORD] NAME [REMOTE-REF]", help: "push an image to a registry",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			user := fs.String("user", "", "USER:PASSWORD for the registry (default: the daemon's config.json)")
			return func(e *env, args []string) error {
				if len(args) < 1 || len(args) > 2 {
					return fmt.Errorf("give an image name and optionally the remote reference: %w", errUsage)
				}
				creds, err := parseUser(*user)
				if err != nil {
					return err
				}
				remote := ""
				if len(args) == 2 {
					remote = args[1]
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				pr := newProgressPrinter(e.stderr)
				im, err := c.Push(e.ctx, args[0], client.PushOpts{RemoteRef: remote, Progress: pr.update, Credentials: creds})
				pr.finish()
				if err != nil {
					return err
				}
				if remote == "" {
					remote = im.Name
				}
				if e.format == "json" {
					return writeValue(e.stdout, map[string]string{"name": im.Name, "remote": remote})
				}
				fmt.Fprintln(e.stdout, remote)
				return nil
			}
		},
	}
}

func imagesImportCommand() *command {
	return &command{
		name: "import", usage: "[flags] FILE|-", help: "import an OCI layout or docker save tar (gzip allowed; - reads stdin)",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			var o client.ImportOpts
			fs.StringVar(&o.Platform, "platform", "", "platform to unpack (default: the daemon's)")
			fs.BoolVar(&o.AllPlatforms, "all-platforms", false, "keep every platform's content")
			fs.StringVar(&o.IndexName, "index-name", "", "name for an archive whose images carry no name")
			fs.BoolVar(&o.SkipUnpack, "skip-unpack", false, "only store the content")
			stream := fs.Bool("stream", false, "send the file through the socket even when edged could read it itself")
			return func(e *env, args []string) error {
				if len(args) != 1 {
					return fmt.Errorf("give one archive file, or - for stdin: %w", errUsage)
				}
				var r io.Reader = e.stdin
				if args[0] != "-" {
					f, err := os.Open(args[0])
					if err != nil {
						return err
					}
					defer f.Close()
					r = f
					// A regular local file: edged reads it itself, without
					// copying it through the socket.
					if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && !*stream {
						if abs, err := filepath.Abs(args[0]); err == nil {
							o.Path = abs
						}
					}
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				list, err := c.Import(e.ctx, r, o)
				if err != nil {
					return err
				}
				if e.format == "json" {
					return writeJSON(e.stdout, list, true)
				}
				for _, im := range list {
					fmt.Fprintln(e.stdout, im.Name)
				}
				return nil
			}
		},
	}
}

func imagesExportCommand() *command {
	return &command{
		name: "export", usage: "[--platform P] [--all-platforms] FILE|- NAME...", help: "export images as an OCI layout tar",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			var o client.ExportOpts
			fs.StringVar(&o.Platform, "platform", "", "platform to export (default: the daemon's)")
			fs.BoolVar(&o.AllPlatforms, "all-platforms", false, "export every platform (all must be present)")
			return func(e *env, args []string) error {
				if len(args) < 2 {
					return fmt.Errorf("give the output file (- for stdout) and at least one image: %w", errUsage)
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				if args[0] == "-" {
					return c.Export(e.ctx, e.stdout, args[1:], o)
				}
				// A temporary file renamed into place: a failed export
				// leaves no partial archive.
				if err := atomicfile.WriteStream(args[0], 0o644, func(w io.Writer) error {
					return c.Export(e.ctx, w, args[1:], o)
				}); err != nil {
					return err
				}
				return nil
			}
		},
	}
}

func imagesUsageCommand() *command {
	return &command{
		name: "usage", aliases: []string{"du"}, usage: "NAME...", help: "show the disk used by images",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			return func(e *env, args []string) error {
				if len(args) == 0 {
					return fmt.Errorf("give at least one image name: %w", errUsage)
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				var list []*client.ImageUsage
				for _, n := range args {
					u, err := c.ImageUsage(e.ctx, n)
					if err != nil {
						return err
					}
					list = append(list, u)
				}
				if e.format == "json" {
					items := make([]map[string]any, len(list))
					for i, u := range list {
						raw, err := protoJSON(u)
						if err != nil {
							return err
						}
						if err := json.Unmarshal(raw, &items[i]); err != nil {
							return fmt.Errorf("encode json: %w", err)
						}
						items[i]["name"] = args[i]
					}
					return writeValue(e.stdout, items)
				}
				tw := newTable(e.stdout, "NAME", "CONTENT", "SNAPSHOTS", "INODES")
				for i, u := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", args[i], sizeString(u.ContentBytes), sizeString(u.SnapshotBytes), u.SnapshotInodes)
				}
				return tw.Flush()
			}
		},
	}
}

// sizeString formats a size in binary units.
func sizeString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// mib formats bytes as MiB with one decimal.
func mib(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<20)) }

// progressPrinter shows pull and push progress: on a terminal a bar per
// layer redrawn in place, otherwise a plain line per layer when its state
// changes (and every few seconds while bytes flow).
type progressPrinter struct {
	w     io.Writer
	tty   bool
	now   func() time.Time
	drawn int // lines drawn on the terminal
	state map[string]*layerState
	order []string
}

type layerState struct {
	status     string
	offset     int64
	total      int64
	rate       float64 // bytes/s
	lastOff    int64
	lastAt     time.Time
	lastPrint  time.Time
	lastStatus string
}

// plainInterval is how often a plain line repeats for a downloading blob.
const plainInterval = 2 * time.Second

func newProgressPrinter(w io.Writer) *progressPrinter {
	tty := false
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		tty = true
	}
	return &progressPrinter{w: w, tty: tty, now: time.Now, state: map[string]*layerState{}}
}

func (p *progressPrinter) update(m *client.Progress) {
	now := p.now()
	for _, l := range m.Layers {
		st, ok := p.state[l.Digest]
		if !ok {
			st = &layerState{lastAt: now, lastOff: l.Offset}
			p.state[l.Digest] = st
			p.order = append(p.order, l.Digest)
		}
		if dt := now.Sub(st.lastAt).Seconds(); dt >= 0.5 {
			st.rate = float64(l.Offset-st.lastOff) / dt
			st.lastOff, st.lastAt = l.Offset, now
		}
		st.status, st.offset, st.total = l.Status, l.Offset, l.Total
	}
	p.draw(now, false)
}

func (p *progressPrinter) finish() { p.draw(p.now(), true) }

func (p *progressPrinter) draw(now time.Time, final bool) {
	if p.tty {
		if p.drawn > 0 {
			fmt.Fprintf(p.w, "\x1b[%dA", p.drawn)
		}
		for _, d := range p.order {
			fmt.Fprintf(p.w, "\r\x1b[K%s\n", p.bar(d))
		}
		p.drawn = len(p.order)
		return
	}
	for _, d := range p.order {
		st := p.state[d]
		changed := st.status != st.lastStatus
		if !changed && !(st.status == "downloading" || st.status == "uploading") {
			continue
		}
		if !changed && now.Sub(st.lastPrint) < plainInterval && !final {
			continue
		}
		if !changed && final {
			continue
		}
		st.lastStatus, st.lastPrint = st.status, now
		fmt.Fprintf(p.w, "%s %s %s/%s MiB\n", d, st.status, mib(st.offset), mib(st.total))
	}
}

// bar renders "digest[:12] [====>    ] 12.3/45.6 MiB 3.2 MiB/s status".
func (p *progressPrinter) bar(d string) string {
	st := p.state[d]
	const width = 30
	fill := 0
	if st.total > 0 {
		fill = int(int64(width) * st.offset / st.total)
	}
	if fill > width {
		fill = width
	}
	b := strings.Repeat("=", fill)
	if fill < width {
		b += ">" + strings.Repeat(" ", width-fill-1)
	}
	rate := ""
	if st.status == "downloading" || st.status == "uploading" || st.status == "resuming" {
		rate = fmt.Sprintf(" %.1f MiB/s", st.rate/(1<<20))
	}
	return fmt.Sprintf("%s [%s] %s/%s MiB%s %s", shortDigest(d), b, mib(st.offset), mib(st.total), rate, st.status)
}

// parseUser parses --user USER:PASSWORD; PASSWORD may come from
// $EDGED_REGISTRY_PASSWORD so it stays out of the process list.
func parseUser(s string) (*imagesapi.Credentials, error) {
	if s == "" {
		return nil, nil
	}
	u, p, ok := strings.Cut(s, ":")
	if !ok {
		p = os.Getenv("EDGED_REGISTRY_PASSWORD")
	}
	if u == "" || p == "" {
		return nil, fmt.Errorf("--user %q: want USER:PASSWORD (or USER with $EDGED_REGISTRY_PASSWORD): %w", u, errUsage)
	}
	return client.Credentials(u, p), nil
}
