package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/edgegate/edgegate/coord"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the cluster: appliances, parser pools, controllers in flight with their leases, queues",
		Flags: append(natsFlags("NATS URL of any appliance of the cluster"),
			&cli.DurationFlag{Name: "wait", Usage: "how long to collect answers", Value: 500 * time.Millisecond},
			&cli.BoolFlag{Name: "json", Usage: "print the answers as JSON"},
		),
		Action: func(c *cli.Context) error {
			nc, err := connectNATS(c, "edgegate status")
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			defer nc.Close()
			answers, err := collectStatus(nc, c.Duration("wait"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				b, _ := json.MarshalIndent(answers, "", "  ")
				fmt.Fprintln(c.App.Writer, string(b))
				return nil
			}
			printStatus(c.App.Writer, answers)
			return nil
		},
	}
}

// collectStatus asks every socket and parser pool of the cluster for its
// status and gathers the answers for wait.
func collectStatus(nc *nats.Conn, wait time.Duration) ([]coord.Status, error) {
	inbox := nats.NewInbox()
	ch := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(coord.SubjectStatus, inbox, nil); err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	var out []coord.Status
	deadline := time.After(wait)
	for {
		select {
		case m := <-ch:
			var st coord.Status
			if err := json.Unmarshal(m.Data, &st); err == nil {
				out = append(out, st)
			}
		case <-deadline:
			sort.Slice(out, func(i, j int) bool {
				if out[i].Appliance != out[j].Appliance {
					return out[i].Appliance < out[j].Appliance
				}
				return out[i].Kind < out[j].Kind
			})
			if len(out) == 0 {
				return nil, fmt.Errorf("status: no appliance answered within %v", wait)
			}
			return out, nil
		}
	}
}

func printStatus(w io.Writer, answers []coord.Status) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APPLIANCE\tPART\tWORKERS (FREE/BUSY)\tDEVICES\tQUEUED\tIN FLIGHT\tNOTE")
	for _, a := range answers {
		switch a.Kind {
		case "pool":
			fmt.Fprintf(tw, "%s\tparser\t%d (%d/%d)\t\t\t\t%d batches, %d lease lost\n", a.Appliance, a.Workers, a.Free, a.Busy,
				a.Counters["batches"], a.Counters["lease_lost"])
		case "socket":
			note := fmt.Sprintf("%d acked, %d redispatched", a.Counters["acked"], a.Counters["redispatched"])
			if a.Paused {
				note += ", dispatch PAUSED (leases lost)"
			}
			fmt.Fprintf(tw, "%s\tsocket\t\t%d\t%d\t%d\t%s\n", a.Appliance, a.Connections, a.Queued, a.InFlight, note)
		}
	}
	tw.Flush()
	var rows []coord.ControllerStatus
	for _, a := range answers {
		rows = append(rows, a.Controllers...)
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTROLLER\tSTATE\tQUEUED\tBATCH\tHOLDER\tFENCE\tLEASE AGE\tLAST HEARTBEAT\tDONE")
	for _, r := range rows {
		age, hb := "", ""
		if r.Locked {
			age = (time.Duration(r.LeaseAgeMs) * time.Millisecond).String()
			hb = (time.Duration(r.HeartbeatAgoMs) * time.Millisecond).String() + " ago"
		}
		fence, done := "", ""
		if r.Fence != 0 {
			fence, done = fmt.Sprint(r.Fence), fmt.Sprint(r.Done)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.State, r.Queued, r.Batch, r.Holder, fence, age, hb, done)
	}
	tw.Flush()
}
