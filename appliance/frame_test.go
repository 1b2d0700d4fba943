package appliance_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/parser"
)

// TestLargestFrameStored: with devices.max_frame at the largest value the
// configuration takes, frames of that size are stored as records and
// acknowledged. A bound above what one NATS message carries would accept
// frames no record could hold.
func TestLargestFrameStored(t *testing.T) {
	cfg := testConfig(t, "bigframe")
	cfg.NATS.JetStream = true
	cfg.Devices.MaxFrame = appliance.MaxFrameLimit
	a := start(t, cfg)
	var acks ackLog
	c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "big-1", OnAck: acks.onAck})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	payloads := [][]byte{
		bytes.Repeat([]byte{'a'}, appliance.MaxFrameLimit-8), // the body is the seq and the payload
		bytes.Repeat([]byte{'b'}, appliance.MaxFrameLimit-8),
	}
	for _, p := range payloads {
		if _, err := c.Send(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, st := acks.get(); st[1] != egp.StatusProcessed || st[2] != egp.StatusProcessed {
		t.Fatalf("ACK statuses %v, want both processed", st)
	}
	recs := readStream(t, a, parser.StreamParsed, 2)
	for i, r := range recs {
		if !bytes.Equal(r.Data, payloads[i]) {
			t.Fatalf("record %d: %d bytes, want the %d of the frame", i+1, len(r.Data), len(payloads[i]))
		}
	}
}
