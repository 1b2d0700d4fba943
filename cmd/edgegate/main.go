// Command edgegate runs and exercises an edgegate appliance: run, simulate
// devices, tail the parsed output, status of the cluster, version.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/edgegate/edgegate/appliance"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	app := newApp(appliance.Run, os.Stdout, os.Stderr)
	if err := app.RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "edgegate:", err)
		stop()
		os.Exit(1)
	}
}

// newApp builds the command line; run is what `edgegate run` calls with
// the configuration (tests pass a recorder).
func newApp(run func(context.Context, appliance.Config) error, stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:                 "edgegate",
		Usage:                "an IoT edge gateway appliance: devices in, parsed messages out, in order per controller",
		Version:              version,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		HideVersion:          true,
		Commands: []*cli.Command{
			runCommand(run, stderr),
			simulateCommand(),
			tailCommand(),
			statusCommand(),
			versionCommand(),
		},
	}
}

func runCommand(run func(context.Context, appliance.Config) error, stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "run",
		Usage: "run the appliance",
		Description: "Every setting is a flag with its dotted name, an environment variable " +
			"EDGEGATE_<NAME> and a key of the --config YAML file; precedence flag > env > file > default.",
		Flags: configFlags(),
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			if cfg.Logger == nil {
				cfg.Logger = appliance.NewLogger(stderr, cfg.Log.Level, true)
			}
			return run(c.Context, cfg)
		},
	}
}
