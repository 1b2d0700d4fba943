package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/edgegate/edgegate/bench"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure edgegate against the machine's ceilings (JetStream's own for the durable path), the seed's one-message-per-lock scheme and JetStream partitioned consumer groups",
		Description: `Runs every scenario --runs times at every controller count and prints the
medians with their spread, and the ratios. The appliance under test runs as a
child process (this binary), so its CPU and memory are measured apart from the
simulated devices. See BENCHMARKS.md.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "controllers", Usage: "controller counts, comma-separated", Value: "1,100,1000,10000"},
			&cli.IntFlag{Name: "messages", Usage: "messages per edgegate or peer run, spread over the controllers (the seed scheme gets a tenth)", Value: 200000},
			&cli.IntFlag{Name: "min-per-controller", Usage: "at least this many messages per controller", Value: 10},
			&cli.IntFlag{Name: "size", Usage: "payload bytes", Value: 64},
			&cli.IntFlag{Name: "workers", Usage: "parser workers (and peer workers)", Value: 16},
			&cli.IntFlag{Name: "runs", Usage: "runs per figure; the median is reported", Value: 3},
			&cli.StringFlag{Name: "loads", Usage: "fractions of the saturated throughput at which ACK latency is measured with paced devices", Value: "0.5,0.1"},
			&cli.StringFlag{Name: "load-handlers", Usage: "handlers whose ACK latency is measured at --loads: publish (JetStream, the default), discard", Value: "publish,discard"},
			&cli.StringFlag{Name: "redis", Usage: `Redis for the Redis scenarios: a redis:// URL, "auto" (start redis-server from PATH on a free port) or "" (skip them)`, Value: "auto"},
			&cli.StringFlag{Name: "scenarios", Usage: "groups to run: ceiling, edgegate, seed, peer (comma-separated)", Value: "ceiling,edgegate,seed,peer"},
			&cli.StringFlag{Name: "exe", Usage: "edgegate binary the appliance under test runs as (default: this one)", TakesFile: true},
			&cli.IntFlag{Name: "appliance-procs", Usage: "GOMAXPROCS of the appliance under test (0 = Go's default, every CPU); the simulated devices and Redis share the machine"},
			&cli.StringFlag{Name: "json", Usage: "write the report as JSON to this file", TakesFile: true},
			&cli.StringFlag{Name: "chart", Usage: "draw throughput and p99 latency to this .svg or .png file", TakesFile: true},
		},
		Action: func(c *cli.Context) error {
			var counts []int
			for _, f := range strings.Split(c.String("controllers"), ",") {
				n, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil || n < 1 {
					return fmt.Errorf("bench: --controllers: %q is not a positive number", f)
				}
				counts = append(counts, n)
			}
			var loads []float64
			for _, f := range splitList([]string{c.String("loads")}) {
				l, err := strconv.ParseFloat(f, 64)
				if err != nil || l <= 0 || l > 1 {
					return fmt.Errorf("bench: --loads: %q is not a fraction in (0, 1]", f)
				}
				loads = append(loads, l)
			}
			exe := c.String("exe")
			if exe == "" {
				var err error
				if exe, err = os.Executable(); err != nil {
					return fmt.Errorf("bench: %w", err)
				}
			}
			o := bench.Options{
				Exe: exe, ApplianceProcs: c.Int("appliance-procs"), Controllers: counts, Messages: c.Int("messages"), MinPerController: c.Int("min-per-controller"),
				Size: c.Int("size"), Workers: c.Int("workers"), Runs: c.Int("runs"), Loads: loads, Scenarios: splitList([]string{c.String("scenarios")}),
				LoadHandlers: splitList([]string{c.String("load-handlers")}),
				Progress:     func(line string) { fmt.Fprintln(c.App.ErrWriter, line) },
			}
			switch r := c.String("redis"); r {
			case "auto":
				srv, err := bench.StartRedis(c.Context)
				if err != nil {
					return err
				}
				defer srv.Stop()
				o.Redis = srv.URL()
			default:
				o.Redis = r
			}
			rep, err := bench.Run(c.Context, o)
			if err != nil {
				return err
			}
			rep.WriteText(c.App.Writer)
			if p := c.String("json"); p != "" {
				b, err := json.MarshalIndent(rep, "", "  ")
				if err != nil {
					return fmt.Errorf("bench: %w", err)
				}
				if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
					return err
				}
			}
			if p := c.String("chart"); p != "" {
				if err := rep.WriteChart(p); err != nil {
					return err
				}
			}
			if len(rep.Failures) > 0 {
				return fmt.Errorf("bench: %d runs failed (listed above)", len(rep.Failures))
			}
			return nil
		},
	}
}
