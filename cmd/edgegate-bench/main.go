// Command edgegate-bench measures edgegate against the machine's ceilings
// (JetStream's own for the durable path), the seed's one-message-per-lock
// scheme and JetStream partitioned consumer groups. See BENCHMARKS.md.
//
// It is a command of its own, not a subcommand of edgegate, so that the
// shipped binary does not carry what only the benchmarks need: the chart
// library, its fonts and the peer's consumer-group library.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/edgegate/edgegate/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := newApp(os.Stdout, os.Stderr).RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "edgegate-bench:", err)
		stop()
		os.Exit(1)
	}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "edgegate-bench",
		UsageText: "edgegate-bench [--exe dist/edgegate] [options]",
		Usage:     "measure edgegate against the machine's ceilings (JetStream's own for the durable path), the seed's one-message-per-lock scheme and JetStream partitioned consumer groups",
		Writer:    stdout,
		ErrWriter: stderr,
		Description: `Runs every scenario --runs times at every controller count and prints the
medians with their spread, and the ratios. The appliance under test runs as a
child process (an edgegate binary, --exe), so its CPU and memory are measured
apart from the simulated devices. See BENCHMARKS.md.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "controllers", Usage: "controller counts, comma-separated", Value: "1,100,1000,10000"},
			&cli.IntFlag{Name: "messages", Usage: "messages per edgegate or peer run, spread over the controllers (the seed scheme gets a tenth)", Value: 200000},
			&cli.IntFlag{Name: "min-per-controller", Usage: "at least this many messages per controller", Value: 10},
			&cli.IntFlag{Name: "size", Usage: "payload bytes", Value: 64},
			&cli.IntFlag{Name: "workers", Usage: "parser workers (and peer workers)", Value: 16},
			&cli.IntFlag{Name: "runs", Usage: "runs per figure; the median is reported", Value: 3},
			&cli.StringFlag{Name: "loads", Usage: "fractions of the saturated throughput at which ACK latency is measured with paced devices; \"\" = none", Value: "0.5,0.1"},
			&cli.StringFlag{Name: "load-handlers", Usage: "handlers whose ACK latency is measured at --loads: publish (JetStream, the default), discard", Value: "publish,discard"},
			&cli.StringFlag{Name: "redis", Usage: `Redis for the Redis scenarios: a redis:// URL, "auto" (start redis-server from PATH on a free port) or "" (skip them)`, Value: "auto"},
			&cli.StringFlag{Name: "scenarios", Usage: "groups to run: ceiling, edgegate, seed, peer (comma-separated)", Value: "ceiling,edgegate,seed,peer"},
			&cli.StringFlag{Name: "exe", Usage: "edgegate binary the appliance under test runs as (default: edgegate beside this program, else on the PATH)", TakesFile: true},
			&cli.IntFlag{Name: "appliance-procs", Usage: "GOMAXPROCS of the appliance under test (0 = Go's default, every CPU); the simulated devices and Redis share the machine"},
			&cli.StringFlag{Name: "json", Usage: "write the report as JSON to this file", TakesFile: true},
			&cli.StringFlag{Name: "chart", Usage: "draw throughput and p99 latency to this .svg or .png file", TakesFile: true},
		},
		Action: run,
	}
}

func run(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("unexpected argument %q (edgegate-bench takes only flags; --help lists them)", c.Args().First())
	}
	var counts []int
	for _, f := range strings.Split(c.String("controllers"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("--controllers: %q is not a positive number", f)
		}
		counts = append(counts, n)
	}
	loads := []float64{} // not nil: bench.Options takes nil for its default
	for _, f := range splitList(c.String("loads")) {
		l, err := strconv.ParseFloat(f, 64)
		if err != nil || l <= 0 || l > 1 {
			return fmt.Errorf("--loads: %q is not a fraction in (0, 1]", f)
		}
		loads = append(loads, l)
	}
	exe := c.String("exe")
	if exe == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		if exe, err = findEdgegate(self); err != nil {
			return err
		}
	}
	progress := func(line string) { fmt.Fprintln(c.App.ErrWriter, line) }
	progress("the appliance under test: " + exe)
	o := bench.Options{
		Exe: exe, ApplianceProcs: c.Int("appliance-procs"), Controllers: counts, Messages: c.Int("messages"), MinPerController: c.Int("min-per-controller"),
		Size: c.Int("size"), Workers: c.Int("workers"), Runs: c.Int("runs"), Loads: loads, Scenarios: splitList(c.String("scenarios")),
		LoadHandlers: splitList(c.String("load-handlers")),
		Progress:     progress,
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
			return err
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
		return fmt.Errorf("%d runs failed (listed above)", len(rep.Failures))
	}
	return nil
}

// findEdgegate is the appliance under test when --exe is not given: the
// edgegate beside self (both built into one directory, or installed
// together), else the one on the PATH.
func findEdgegate(self string) (string, error) {
	beside := filepath.Join(filepath.Dir(self), "edgegate")
	if fi, err := os.Stat(beside); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return beside, nil
	}
	p, err := exec.LookPath("edgegate")
	if err != nil {
		return "", errors.New("no edgegate binary beside edgegate-bench or on the PATH: build one (make build) and give it with --exe dist/edgegate")
	}
	return p, nil
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
