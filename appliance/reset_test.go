package appliance_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/parser"
)

// TestSeqResetWhileBatchInFlight: a device that keeps its seq across
// sessions reboots and says so (HELLO seq reset) while a batch of its old
// session is still being handled. That batch's end must not write its
// done seq over the cleared record: the new session's messages reuse
// those seqs, and a done record covering them would have them
// acknowledged as duplicates without ever being handled.
func TestSeqResetWhileBatchInFlight(t *testing.T) {
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			const id, old, fresh = "reboot", 20, 10
			gate := make(chan struct{})
			j := newJournal(parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
				if string(m.Payload) == "old-5" {
					select {
					case <-gate:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return nil
			}))
			cfg := testConfig(t, "reset-"+store)
			if store == "redis" {
				cfg.Lease.Redis = redistest.Start(t).URL()
			}
			cfg.Handler = j
			a := start(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			c1 := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id, PersistentSeq: true})
			for i := 1; i <= old; i++ {
				if _, err := c1.Send(ctx, []byte(fmt.Sprintf("old-%d", i))); err != nil {
					t.Fatal(err)
				}
			}
			wait.True(t, 10*time.Second, "old-5 being handled", func() bool { return len(j.callsOf(id, false)) >= 5 })
			// The device reboots: a new session with its seq reset takes
			// the old one over while old-5's batch is held up.
			c2 := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id, PersistentSeq: true, ResetSeq: true})
			if w := c2.Welcome(); w.LastSeq != 0 {
				t.Fatalf("WELCOME after a seq reset says last_seq %d, want 0", w.LastSeq)
			}
			close(gate)
			for i := 1; i <= fresh; i++ {
				if _, err := c2.Send(ctx, []byte(fmt.Sprintf("new-%d", i))); err != nil {
					t.Fatal(err)
				}
			}
			if err := c2.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range j.callsOf(id, true) {
				if strings.HasPrefix(c.payload, "new-") {
					got = append(got, c.payload)
				}
			}
			if len(got) != fresh {
				t.Fatalf("the new session's %d messages were acknowledged, but the handler saw %d of them (%v): the rest were taken for duplicates", fresh, len(got), got)
			}
		})
	}
}
