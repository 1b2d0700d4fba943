package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/edgegate/edgegate/device"
)

func simulateCommand() *cli.Command {
	return &cli.Command{
		Name:  "simulate",
		Usage: "connect simulated devices, send messages, report throughput and ACK latency",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "addr", Usage: "gateway EGP/1 address (repeat for several)", Value: cli.NewStringSlice("127.0.0.1:7400")},
			&cli.IntFlag{Name: "controllers", Usage: "simulated devices, one connection each", Value: 1},
			&cli.IntFlag{Name: "messages", Usage: "messages per controller", Value: 1000},
			&cli.IntFlag{Name: "size", Usage: "payload bytes", Value: 64},
			&cli.Float64Flag{Name: "rate", Usage: "messages per second per controller; 0 = as fast as the window allows"},
			&cli.IntFlag{Name: "window", Usage: "unacknowledged messages per controller", Value: 256},
			&cli.StringFlag{Name: "prefix", Usage: "controller ID prefix", Value: "sim-"},
			&cli.BoolFlag{Name: "persistent", Usage: "devices keep their seq across sessions (HELLO flag bit1)"},
			&cli.StringFlag{Name: "token", Usage: "HELLO token"},
			&cli.BoolFlag{Name: "reconnect", Usage: "reconnect and resend on connection loss"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			&cli.BoolFlag{Name: "progress", Usage: "print progress every second on stderr"},
			&cli.StringFlag{Name: "protocol", Usage: "egp, or teltonika: Teltonika trackers (IMEI --prefix digits + number) sending a packet per message to --addr (default 127.0.0.1:5027), rotating Codec 8, 8E and 16", Value: "egp"},
			&cli.IntFlag{Name: "records", Usage: "teltonika: AVL records per packet", Value: 4},
		},
		Action: func(c *cli.Context) error {
			cfg := device.SimConfig{
				Addrs:         c.StringSlice("addr"),
				Controllers:   c.Int("controllers"),
				Messages:      c.Int("messages"),
				Size:          c.Int("size"),
				Rate:          c.Float64("rate"),
				Window:        c.Int("window"),
				Prefix:        c.String("prefix"),
				PersistentSeq: c.Bool("persistent"),
				Reconnect:     c.Bool("reconnect"),
			}
			cfg.Protocol, cfg.Records = c.String("protocol"), c.Int("records")
			if cfg.Protocol == "teltonika" && !c.IsSet("addr") {
				cfg.Addrs = []string{"127.0.0.1:5027"}
			}
			if t := c.String("token"); t != "" {
				cfg.Token = []byte(t)
			}
			var progress func(device.SimReport)
			if c.Bool("progress") {
				progress = func(r device.SimReport) {
					fmt.Fprintf(c.App.ErrWriter, "acked %d/%d  %.0f msg/s  p99 %v\n",
						r.Acked, cfg.Controllers*cfg.Messages, r.Throughput, r.P99)
				}
			}
			r, err := device.Simulate(c.Context, cfg, progress)
			if c.Bool("json") {
				b, _ := json.MarshalIndent(r, "", "  ")
				fmt.Fprintln(c.App.Writer, string(b))
			} else {
				fmt.Fprint(c.App.Writer, r.String())
			}
			if err != nil {
				return err
			}
			want := int64(cfg.Controllers) * int64(cfg.Messages)
			if r.OrderErrors > 0 {
				return fmt.Errorf("simulate: %d ACKs out of order", r.OrderErrors)
			}
			if r.Acked < want {
				return fmt.Errorf("simulate: %d of %d messages acknowledged", r.Acked, want)
			}
			return nil
		},
	}
}
