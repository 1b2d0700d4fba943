package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSimulateTeltonika: `simulate --protocol teltonika` sends packets of
// every codec to the Teltonika listener and gets each one's ACK; `tail`
// shows the records stored, one per AVL record, readably.
func TestSimulateTeltonika(t *testing.T) {
	cfg := loopbackConfig(t, "telt-demo")
	cfg.Devices.TeltonikaListen = "127.0.0.1:0"
	cfg.Devices.TeltonikaIMEIs = filepath.Join(t.TempDir(), "imeis")
	if err := os.WriteFile(cfg.Devices.TeltonikaIMEIs, []byte("*\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := runAppliance(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := newApp(nil, &out, &errOut).RunContext(ctx, []string{"edgegate", "simulate", "--protocol", "teltonika",
		"--addr", a.TeltonikaAddr(), "--controllers", "3", "--messages", "6", "--records", "3", "--reconnect"}); err != nil {
		t.Fatalf("simulate: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{"acked        18", "records      54", "ack order    ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("simulate output lacks %q:\n%s", want, out.String())
		}
	}
	t.Logf("simulate:\n%s", out.String())
	waitStored(t, a, 54)
	out.Reset()
	if err := newApp(nil, &out, &errOut).RunContext(ctx, []string{"edgegate", "tail", "--nats", a.NATSURL(),
		"--controller", "356000000000001", "--last", "18", "--count", "18"}); err != nil {
		t.Fatalf("tail: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	codecs := map[string]bool{}
	for _, l := range lines {
		if !strings.Contains(l, " imei=356000000000001 ts=") || !strings.Contains(l, " lat=54.") || !strings.Contains(l, " lon=25.") {
			t.Errorf("tail line %q", l)
		}
		if i := strings.LastIndex(l, " codec="); i >= 0 {
			codecs[l[i:]] = true
		}
	}
	t.Logf("tail, the first records:\n%s", strings.Join(lines[:min(3, len(lines))], "\n"))
	if len(lines) != 18 || len(codecs) != 3 {
		t.Errorf("tail printed %d records in %d codecs, want 18 in 3:\n%s", len(lines), len(codecs), out.String())
	}
}
