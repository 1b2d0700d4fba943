// Command edgegate runs and exercises an edgegate appliance: run, simulate
// devices, tail the parsed output, status of the cluster, version.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/edgegate/edgegate/appliance"
)

// version and commit are set at build time:
// -ldflags "-X main.version=1.2.3 -X main.commit=abc123". Without them the
// commit comes from the Go build information, when it has it.
var (
	version = "dev"
	commit  = ""
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	app := newApp(func(ctx context.Context, cfg appliance.Config) error {
		// go-redis has one logger for the whole process, so it is set here,
		// where the process is known to run one appliance, and not by the
		// appliance package, of which a process (a test) may run several.
		redis.SetLogger(redisLogger{cfg.Logger.With("component", "redis")})
		cfg.Build = appliance.BuildInfo{Version: version, Commit: buildCommit()}
		return appliance.Run(ctx, cfg)
	}, os.Stdout, os.Stderr)
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
		// urfave/cli's own --version prints through a package variable;
		// this one prints what `edgegate version` prints.
		HideVersion: true,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "version", Usage: "print the version (as the version command does)"},
		},
		Action: func(c *cli.Context) error {
			if c.Bool("version") {
				return versionCommand().Action(c)
			}
			if c.Args().Present() {
				return fmt.Errorf("no command %q (edgegate --help lists them)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		Commands: []*cli.Command{
			runCommand(run, stderr),
			checkConfigCommand(),
			simulateCommand(),
			tailCommand(),
			statusCommand(),
			devicesCommand(stdout, stderr),
			versionCommand(),
			completionCommand(),
			manCommand(),
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
			cfg, err := checkedConfig(c)
			if err != nil {
				return err
			}
			cfg.Logger = appliance.NewLogger(stderr, cfg.LogLevel, cfg.Log.Format)
			cfg.Logger.Info("edgegate starting", append([]any{"version", version, "commit", buildCommit(),
				"go", runtime.Version(), "nats_server", server.VERSION}, cfg.Summary()...)...)

			// SIGHUP re-reads the configuration file (flags and variables
			// stay as given); a bad file keeps the running configuration.
			reload := make(chan appliance.Config, 1)
			cfg.Reload = reload
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			stopped := make(chan struct{})
			defer close(stopped)
			go func() {
				for {
					select {
					case <-stopped:
						return
					case <-hup:
					}
					next, err := loadConfig(c)
					if err != nil {
						cfg.Logger.Error("reload: the configuration file is bad, the running configuration stays", "err", err)
						continue
					}
					select {
					case reload <- next:
					default:
					}
				}
			}()
			// The collector's headroom, for the process that runs the
			// appliance (see gcHeadroom).
			gctx, gcancel := context.WithCancel(c.Context)
			gcDone := make(chan struct{})
			go func() {
				defer close(gcDone)
				gcHeadroomLoop(gctx, gcHeadroom)
			}()
			defer func() {
				gcancel()
				<-gcDone
			}()
			return run(c.Context, cfg)
		},
	}
}

// checkedConfig is the configuration `run` starts with: loaded, validated,
// and with its log level. check-config calls it too, so both accept and
// refuse the same configurations with the same messages.
func checkedConfig(c *cli.Context) (appliance.Config, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	cfg.LogLevel = new(slog.LevelVar)
	if err := cfg.LogLevel.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		return cfg, fmt.Errorf("config: log.level: %w", err)
	}
	return cfg, nil
}

func checkConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "check-config",
		Usage: "check the configuration as run would, without starting anything",
		Description: "Takes the flags, variables and --config file of run, loads and validates them as run does, " +
			"prints \"configuration OK\" and exits 0, or prints the error and exits 1. " +
			"Files the settings name (certificates, tokens) and the listeners are checked only at start.",
		Flags: configFlags(),
		Action: func(c *cli.Context) error {
			if _, err := checkedConfig(c); err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, "configuration OK")
			return nil
		},
	}
}
