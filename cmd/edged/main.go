// Command edged is the edged container runtime daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/edged/edged/configs"
	"github.com/edged/edged/edged/config"
	"github.com/edged/edged/edged/server"
	versionsvc "github.com/edged/edged/edged/services/version"
	"github.com/edged/edged/internal/buildinfo"
)

const defaultConfigPath = "/etc/edged/edged.toml"

const usage = `usage: edged [flags]            run the daemon
       edged config default     print the default configuration
       edged version            print the version

flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edged", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	configPath := fs.String("config", defaultConfigPath, "configuration file (missing default file: embedded defaults)")
	root := fs.String("root", "", "persistent data directory (default from config: /var/lib/edged)")
	state := fs.String("state", "", "runtime state directory (default from config: /run/edged)")
	address := fs.String("address", "", "API unix socket (default from config: /run/edged/edged.sock)")
	logLevel := fs.String("log-level", "", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch rest := fs.Args(); {
	case len(rest) == 2 && rest[0] == "config" && rest[1] == "default":
		fmt.Fprint(stdout, configs.DefaultTOML)
		return 0
	case len(rest) == 1 && rest[0] == "version":
		fmt.Fprintf(stdout, "edged %s %s\n", buildinfo.Version, buildinfo.Revision)
		return 0
	case len(rest) > 0:
		fmt.Fprintf(stderr, "edged: unknown command %q\n", rest)
		fs.Usage()
		return 2
	}

	explicit := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "config" {
			explicit = true
		}
	})
	cfg, err := config.Load(*configPath, !explicit)
	if err != nil {
		fmt.Fprintf(stderr, "edged: %v\n", err)
		return 1
	}
	for _, o := range []struct {
		flag string
		dst  *string
	}{{*root, &cfg.Root}, {*state, &cfg.State}, {*address, &cfg.Address}, {*logLevel, &cfg.Log.Level}} {
		if o.flag != "" {
			*o.dst = o.flag
		}
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "edged: %v\n", err)
		return 1
	}
	level, _ := config.ParseLevel(cfg.Log.Level)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	// A small heap target: edged idles in a few MiB on devices with 256 MB.
	// GOGC in the environment overrides it.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	if cfg.MaxProcs > 0 && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(cfg.MaxProcs)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := server.New(ctx, cfg, log, versionsvc.Info{Version: buildinfo.Version, Revision: buildinfo.Revision})
	if err != nil {
		log.Error("start failed", "error", err)
		return 1
	}
	defer srv.Close()
	if err := srv.Recover(ctx); err != nil {
		log.Error("recovery failed", "error", err)
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		log.Error("serve failed", "error", err)
		return 1
	}
	log.Info("edged stopped")
	return 0
}
