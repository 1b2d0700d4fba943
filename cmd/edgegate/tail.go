package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/parser"
)

func tailCommand() *cli.Command {
	return &cli.Command{
		Name:  "tail",
		Usage: "print parsed records (or dead letters) as they are published, and stored ones with --since or --last",
		Flags: append(natsFlags("NATS URL of an appliance"),
			&cli.StringFlag{Name: "controller", Usage: "only this controller"},
			&cli.BoolFlag{Name: "dead", Usage: "dead letters instead of parsed records"},
			&cli.IntFlag{Name: "count", Usage: "exit after this many records (stored ones included); 0 = run until interrupted"},
			&cli.BoolFlag{Name: "json", Usage: "one JSON object per line"},
			&cli.StringFlag{Name: "since", Usage: "first the stored records from this time on: a duration back from now (10m, 2h) or an RFC 3339 time; needs nats.jetstream"},
			&cli.IntFlag{Name: "last", Usage: "first the last N stored records (of --controller, else of all controllers); needs nats.jetstream"},
		),
		Action: func(c *cli.Context) error {
			if c.IsSet("since") && c.IsSet("last") {
				return errors.New("tail: --since and --last go one at a time")
			}
			if c.IsSet("last") && c.Int("last") < 1 {
				return fmt.Errorf("tail: --last %d: want at least 1", c.Int("last"))
			}
			var since time.Time
			if c.IsSet("since") {
				var err error
				if since, err = parseSince(c.String("since"), time.Now()); err != nil {
					return err
				}
			}
			nc, err := connectNATS(c, "edgegate tail", nats.MaxReconnects(-1))
			if err != nil {
				return fmt.Errorf("tail: %w", err)
			}
			defer nc.Close()
			id := c.String("controller")
			if id == "" {
				id = ">"
			}
			subject, stream := coord.ParsedSubject(id), parser.StreamParsed
			if c.Bool("dead") {
				subject, stream = coord.DeadSubject(id), parser.StreamDead
			}
			if c.IsSet("since") || c.IsSet("last") {
				return tailStored(c, nc, stream, subject, since)
			}
			msgs := make(chan *nats.Msg, 1024)
			sub, err := nc.ChanSubscribe(subject, msgs)
			if err != nil {
				return fmt.Errorf("tail: subscribe %s: %w", subject, err)
			}
			defer sub.Unsubscribe()
			if err := nc.Flush(); err != nil {
				return fmt.Errorf("tail: %w", err)
			}
			fmt.Fprintf(c.App.ErrWriter, "tail: %s on %s\n", subject, redactNATS(c.String("nats")))
			count := c.Int("count")
			for n := 0; count == 0 || n < count; n++ {
				select {
				case <-c.Context.Done():
					return nil
				case m := <-msgs:
					printRecord(c, m)
				}
			}
			return nil
		},
	}
}

func printRecord(c *cli.Context, m *nats.Msg) {
	h := m.Header
	recv := ""
	if ms, err := strconv.ParseInt(h.Get(parser.HeaderReceived), 10, 64); err == nil {
		recv = time.UnixMilli(ms).UTC().Format("15:04:05.000")
	}
	if c.Bool("json") {
		rec := map[string]any{
			"controller": h.Get(parser.HeaderController), "seq": h.Get(parser.HeaderSeq),
			"fence": h.Get(parser.HeaderFence), "received": h.Get(parser.HeaderReceived),
			"subject": m.Subject,
		}
		if json.Valid(m.Data) && len(m.Data) > 0 {
			rec["payload"] = json.RawMessage(m.Data)
		} else {
			rec["payload_text"] = string(m.Data)
		}
		if e := h.Get(parser.HeaderError); e != "" {
			rec["error"] = e
		}
		b, _ := json.Marshal(rec)
		fmt.Fprintln(c.App.Writer, string(b))
		return
	}
	body := string(m.Data)
	if !utf8.Valid(m.Data) || containsControl(body) {
		body = strconv.Quote(body)
	}
	if s, ok := teltonikaSummary(m.Data); ok {
		body = s
	}
	line := fmt.Sprintf("%s %s seq=%s fence=%s %s", recv, h.Get(parser.HeaderController), h.Get(parser.HeaderSeq), h.Get(parser.HeaderFence), body)
	if e := h.Get(parser.HeaderError); e != "" {
		line += "  error=" + strconv.Quote(e)
	}
	fmt.Fprintln(c.App.Writer, line)
}

// containsControl reports whether s holds a rune that is not printable:
// C0 and C1 controls, and formatting such as the bidi overrides, with
// which a device could make its line on an operator's terminal look like
// something else.
func containsControl(s string) bool {
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return true
		}
	}
	return false
}
